"""trajloom.data.outputs: atomic writes, one writer per folder, writability checked first."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from trajloom.data.outputs import (
    OutputError,
    OutputLock,
    atomic_write_json,
    atomic_write_text,
    check_writable,
)


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = atomic_write_json(tmp_path / "a" / "s.json", {"x": np.float32(1.5), "n": np.arange(2)})
    assert json.loads(path.read_text()) == {"x": 1.5, "n": [0, 1]}
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n" and sorted(p.name for p in path.parent.iterdir()) == [
        "s.json"
    ]


def test_read_only_folder_is_refused_before_work(read_only_dir):
    with pytest.raises(OutputError, match="not writable"):
        check_writable(read_only_dir / "out")
    with pytest.raises(OutputError, match="not writable"):
        OutputLock(read_only_dir).__enter__()


def test_full_disk_keeps_the_previous_summary(full_disk_dir):
    path = atomic_write_text(full_disk_dir / "summary.json", "{}\n")
    with pytest.raises(OutputError, match="No space left"):
        atomic_write_text(path, "x" * (1 << 20))
    assert path.read_text() == "{}\n" and [p.name for p in full_disk_dir.iterdir()] == [
        "summary.json"
    ]


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "s.json", "old")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputError, match=r"could not write .*No space left"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from trajloom.data.outputs import OutputLock\n"
            f"with OutputLock({str(tmp_path)!r}):\n"
            "    print('locked', flush=True); time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = f"run folder {tmp_path} is in use by another process \\(PID {holder.pid}\\)"
        with pytest.raises(OutputError, match=busy), OutputLock(tmp_path, what="run folder"):
            pass
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: the folder is free again
    with OutputLock(tmp_path), OutputLock(tmp_path):  # re-entrant in one process
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())

"""Fixtures for every test folder: output folders that fail like real disks do, and a
trained set that follows pins."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# apps/train launches one process per core by default (--procs auto); the tests train in
# one process unless they ask for more (tests/apps/test_train_launch.py tests the launch).
os.environ.setdefault("TRAJLOOM_TRAIN_PROCS", "1")


def _mount_tmpfs(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'})")


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


@pytest.fixture
def read_only_dir(tmp_path) -> Iterator[Path]:
    """A folder no process can write into: a read-only tmpfs as root, else mode 0500."""
    target = tmp_path / "read-only"
    if os.geteuid() == 0:
        _mount_tmpfs(target, "ro,size=1m")
        yield target
        _umount(target)
    else:
        target.mkdir()
        target.chmod(0o500)
        yield target
        target.chmod(0o700)


@pytest.fixture
def full_disk_dir(tmp_path) -> Iterator[Path]:
    """A writable folder on a 256 KiB tmpfs (root only; skipped elsewhere with the reason)."""
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a small tmpfs, which only root can mount")
    target = tmp_path / "full-disk"
    _mount_tmpfs(target, "size=256k")
    yield target
    _umount(target)


@pytest.fixture(scope="session")
def pinnable_trained_set(tmp_path_factory) -> Path:
    """A trained-set folder whose futures can be steered onto pins: the tiny pipeline of
    tests/flow/test_guidance.py (its ``trained`` fixture, where pins are met within 1 px;
    128x96, stride 16, 9 + 9 frames, no visibility head), saved as apps/train saves one.

    The module is loaded by path, as tests/faults loads tests/apps/conftest.py: test
    folders are not packages.
    """
    path = Path(__file__).parent / "flow" / "test_guidance.py"
    spec = importlib.util.spec_from_file_location("guidance_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pipe, _hist, _vis = module.trained.__wrapped__()  # the fixture's own function
    return pipe.save_pretrained(tmp_path_factory.mktemp("pinnable") / "trained")

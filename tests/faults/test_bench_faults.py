"""Fault injection for apps/bench: corrupt and truncated shards, a NaN model, a malicious
checkpoint, unusable output folders, a second writer, and a truncated source video.

Each case asserts the exit code, the one-line message or the named failures, and that
the good clips were still evaluated.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trajloom.data.shards import write_shards
from trajloom.flow.pipeline import TrajLoomPipeline

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "apps" / "bench" / "__main__.py"
_kit = importlib.util.spec_from_file_location(
    "sample_faults", Path(__file__).with_name("test_sample_faults.py")
)
kit = importlib.util.module_from_spec(_kit)
_kit.loader.exec_module(kit)


def _cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(MAIN), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A synthetic bench: 6 clips in 3 shards of 2, 160x160 at stride 32, 16 + 16 frames."""
    root = tmp_path_factory.mktemp("bench") / "bench"
    result = _cli("build", root, "--source", "synthetic=6", "--width", 160, "--height", 160,
                  "--history", 16, "--future", 16, "--maxcount", 2, "--no-store-video",
                  "--quiet", cwd=root.parent)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root


def _eval(bench: Path, out: Path, *method: str, cwd: Path) -> subprocess.CompletedProcess:
    methods = [x for m in (method or ("static=baseline:static",)) for x in ("--method", m)]
    focus = ("--no-baselines", "--dev-fraction", "0")  # the methods given, every clip
    return _cli("eval", bench, *methods, "--clip-len", 8, "--out", out, "--quiet", *focus, cwd=cwd)


def test_corrupt_and_truncated_shards_fail_their_clips_only(bench, tmp_path):
    broken = tmp_path / "bench"
    shutil.copytree(bench, broken)
    src = broken / "synthetic"
    kit.truncate(src / "shard-000000.tar", 0.5)  # the reproduction: a shard cut in half
    (src / "shard-000001.tar").write_bytes(b"not a tar" * 100)
    result = _eval(broken, tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    failures = json.loads((tmp_path / "out" / "results.json").read_text())["failures"]
    text = " | ".join(failures)
    assert "shard-000000.tar: shard breaks off" in text and "its manifest lists 2" in text
    assert "shard-000001.tar: not a readable shard tar" in text
    runs = tmp_path / "out" / "runs" / "static" / "synthetic"
    # the cut shard's first sample is whole and still evaluated, as are the third shard's
    names = sorted(p.name for p in runs.iterdir())
    assert names == ["synthetic_00000", "synthetic_00004", "synthetic_00005"]
    assert "2 failed" in result.stdout or f"{len(failures)} failed" in result.stdout


def test_bad_samples_inside_a_shard_are_counted_and_the_rest_scored(bench, tmp_path):
    broken = tmp_path / "bench"
    shutil.copytree(bench, broken)
    from trajloom.data.shards import iter_shard_samples

    good = list(iter_shard_samples(broken / "synthetic" / "shard-000002.tar"))
    bad = kit.write_bad_shard(broken / "synthetic" / "shard-000002.tar", good)
    result = _eval(broken, tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    failures = json.loads((tmp_path / "out" / "results.json").read_text())["failures"]
    assert len(failures) == len(bad) == 4
    for key in bad:
        assert any(f"shard-000002.tar:{key}" in f for f in failures), key
    runs = tmp_path / "out" / "runs" / "static" / "synthetic"
    assert len(list(runs.iterdir())) == 6  # the four good ones and both around the bad


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A NaN copy of the tiny trained set, its released layout, and a bench on its window."""
    root = tmp_path_factory.mktemp("tiny")
    trained = kit._tiny_trained_set(root / "trained")
    pipe = TrajLoomPipeline.from_pretrained(trained)
    with torch.no_grad():
        for p in pipe.generator.parameters():
            p.fill_(float("nan"))
    pipe.save_pretrained(root / "nan")
    bench = root / "bench"
    source = bench / "synthetic"
    write_shards(kit._samples("tiny", 2, frames=34), source, maxcount=8)
    manifest = json.loads((source / "manifest.json").read_text())
    index = {"config": {"width": 128, "height": 96, "stride": 32, "history": 17, "future": 17},
             "sources": {"synthetic": {"path": "synthetic", "num_samples": manifest["num_samples"]}}}  # fmt: skip
    (bench / "bench.json").write_text(json.dumps(index))
    return {"nan": root / "nan", "released": root / "released", "bench": bench}


def test_a_nan_model_fails_instead_of_tying_with_static(tiny, tmp_path):
    result = _eval(tiny["bench"], tmp_path / "out", f"nan={tiny['nan']}", "static=baseline:static",
                   cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr
    failures = json.loads((tmp_path / "out" / "results.json").read_text())["failures"]
    nan = [f for f in failures if f.startswith("nan/")]
    assert len(nan) == 3  # two clips, then a source with nothing to score
    assert all("not finite" in f for f in nan[:2]) and "tiny0" in nan[0] and "tiny1" in nan[1]
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert results["nan"] == {} and results["static"]["synthetic"]["flow_tv"] is not None


def test_a_malicious_checkpoint_is_one_line_exit_2(tiny, tmp_path):
    released = tmp_path / "released"
    shutil.copytree(tiny["released"], released)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    pt = released / "checkpoints" / "trajloom_vae.pt"
    pt.write_bytes(pickle.dumps({"vae": Payload()}, protocol=2))
    result = _eval(tiny["bench"], tmp_path / "out", f"r=released:{released}", cwd=tmp_path)
    assert result.returncode == 2
    line = kit.one_line_error(result)
    assert str(pt) in line and "nothing was run" in line and not marker.exists()


def test_unusable_output_folders_and_a_second_writer(bench, tmp_path, read_only_dir):
    result = _eval(bench, read_only_dir, cwd=tmp_path)
    assert result.returncode == 2 and "not writable" in kit.one_line_error(result)
    result = _cli("build", read_only_dir, "--source", "synthetic=1", cwd=tmp_path)
    assert result.returncode == 2 and "not writable" in kit.one_line_error(result)
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom trajloom.data.outputs import OutputLock\n"
         f"with OutputLock({str(out)!r}):\n    print('locked', flush=True); time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = _eval(bench, out, cwd=tmp_path)
        build = _cli("build", out, "--source", "synthetic=1", cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    for r in (result, build):
        assert r.returncode == 2
        assert f"in use by another process (PID {holder.pid})" in kit.one_line_error(r)


def test_a_full_disk_keeps_the_previous_results(bench, tmp_path, full_disk_dir):
    out = full_disk_dir / "out"
    assert _eval(bench, out, cwd=tmp_path).returncode == 0
    before = (out / "results.json").read_text()
    kit.fill(full_disk_dir)
    result = _eval(bench, out, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "could not write" in kit.one_line_error(result)
    assert (out / "results.json").read_text() == before


def test_build_counts_windows_asked_and_made_and_damaged_videos(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    kit._faststart_video(src / "whole.mp4", 60)
    kit.truncate(kit._faststart_video(src / "cut.mp4", 60), 0.35)
    bench = tmp_path / "bench"
    result = _cli("build", bench, "--source", f"cam={src}", "--width", 64, "--height", 64,
                  "--history", 8, "--future", 8, "--windows-per-video", 4, "--no-store-video",
                  cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr  # the damaged video is a failed item
    assert "1 unreadable or damaged videos" in result.stderr
    manifest = json.loads((bench / "cam" / "manifest.json").read_text())
    videos = {Path(v["video"]).name: v for v in manifest["videos"]}
    assert videos["whole.mp4"]["windows_made"] == 3 and videos["cut.mp4"]["windows_made"] == 1
    assert manifest["windows_asked"] == 8 and manifest["windows_made"] == 4
    (damaged,) = manifest["damaged"]
    assert "cut.mp4" in damaged and "header says 60 frames" in damaged
    assert "windows asked 8, made 4, 1 damaged videos" in result.stdout
    assert "cut.mp4: 1 of 4 windows" in result.stdout and "damaged: " in result.stdout


# --------------------------------------------------------------------------- input safety (issue 25)


def test_a_method_name_that_is_a_path_is_refused_nothing_outside_out(bench, tmp_path):
    box, out = kit._sandbox(tmp_path)
    before = kit.snapshot(box, out)
    for method in ("../../v=baseline:static", "/tmp/x=baseline:static", ".h=baseline:static"):
        result = _eval(bench, out, method, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "--method name" in kit.one_line_error(result) and "not a safe name" in result.stderr
    assert kit.snapshot(box, out) == before and not out.exists()


def test_a_source_name_that_is_a_path_is_refused_before_anything_is_replaced(tmp_path):
    box, out = kit._sandbox(tmp_path)
    (box / "victim2" / "shard-000000.tar").write_text("keep")
    before = kit.snapshot(box, out)
    result = _cli("build", out, "--source", "../victim2=5", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "--source name '../victim2' is not a safe name" in kit.one_line_error(result)
    assert kit.snapshot(box, out) == before and not out.exists()


def test_a_bench_index_naming_a_path_as_source_is_refused(bench, tmp_path):
    evil = tmp_path / "evil"
    shutil.copytree(bench, evil)
    index = json.loads((evil / "bench.json").read_text())
    index["sources"] = {"../../v": index["sources"]["synthetic"]}
    (evil / "bench.json").write_text(json.dumps(index))
    box, out = kit._sandbox(tmp_path)
    before = kit.snapshot(box, out)
    result = _eval(evil, out, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "source name '../../v' is not a safe name" in kit.one_line_error(result)
    assert kit.snapshot(box, out) == before


def test_a_shard_id_that_is_a_path_fails_its_clip_only(bench, tmp_path):
    evil = tmp_path / "evil"
    shutil.copytree(bench, evil)
    src = evil / "synthetic"
    kit.write_evil_shard(src / "shard-000002.tar", "../../../victim3")  # replaces 2 clips
    manifest = json.loads((src / "manifest.json").read_text())
    box, out = kit._sandbox(tmp_path)
    before = kit.snapshot(box, out)
    result = _eval(evil, out, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    failures = json.loads((out / "results.json").read_text())["failures"]
    assert any("'../../../victim3' is not a safe name" in f for f in failures), failures
    assert kit.snapshot(box, out) == before
    runs = out / "runs" / "static" / "synthetic"
    assert len(list(runs.iterdir())) == manifest["num_samples"] - 2  # the other shards' clips


def test_build_on_an_empty_folder_is_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no video here")
    result = _cli("build", tmp_path / "b", "--source", f"cam={tmp_path / 'empty'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "holds no video file" in kit.one_line_error(result)
    assert not (tmp_path / "b" / "cam").exists()


def test_two_videos_of_one_stem_give_two_samples_not_a_partial_shard(tmp_path):
    src = tmp_path / "cam"
    src.mkdir()
    kit._faststart_video(src / "a.mp4", 12)
    kit._faststart_video(src / "a.mkv", 12)
    bench = tmp_path / "b"
    result = _cli("build", bench, "--source", f"cam={src}", "--width", 64, "--height", 64,
                  "--stride", 16, "--history", 4, "--future", 4, "--quiet", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((bench / "cam" / "manifest.json").read_text())
    assert manifest["num_samples"] == 2
    ids = sorted(s.id for s in kit.iter_shard_samples(bench / "cam" / "shard-000000.tar"))
    assert ids == ["a", "a-2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--steps", "0"], "--steps must be >= 1"),
        (["eval", "--samples", "10000"], "--samples must be 1 to 64"),
        (["eval", "--seed", str(2**63)], "--seed must be 0 to 2**62"),
        (["build", "--fps", "inf"], "--fps must be a finite number > 0"),
        (["ablate", "--bench", "/nonexistent"], "--bench /nonexistent: no such folder"),
    ],
)
def test_bad_options_are_one_line_exit_2_up_front(bench, args, message, tmp_path):
    out = tmp_path / "out"
    command, *rest = args
    if command == "eval":
        full = ["eval", bench, "--method", "s=baseline:static", "--out", out, *rest]
    elif command == "build":
        full = ["build", out, "--source", "synthetic=1", *rest]
    else:
        full = ["ablate", "--out", out, *rest]
    result = _cli(*full, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in kit.one_line_error(result)
    assert not out.exists()

"""Fault injection for apps/sample: corrupt shards of every kind, damaged videos, broken,
truncated and malicious checkpoints, unusable output folders and a second writer.

Each case asserts the exit code, the one-line message, the counts in summary.json, and
that nothing good was dropped (the good clips after a bad one are there).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from trajloom.data.shards import ShardSample, iter_shard_samples, write_shards
from trajloom.data.synthetic import SceneConfig, make_scene
from trajloom.flow.pipeline import TrajLoomPipeline

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "apps" / "sample" / "__main__.py"
WINDOW = ["--width", "128", "--height", "96", "--history", "12", "--future", "12"]
BASELINE = ["--checkpoint", "baseline:constvel", *WINDOW, "--num-samples", "1", "--no-render"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(MAIN), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    try:
        with (folder / "filler").open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _samples(prefix: str, count: int, frames: int = 24, seed: int = 0) -> list[ShardSample]:
    cfg = SceneConfig(128, 96, 32, num_frames=frames, render_frames=False)
    out = []
    for i in range(count):
        scene = make_scene(seed + i, cfg)
        out.append(ShardSample(f"{prefix}{i}", scene.tracks, scene.visibility, meta=scene.meta))
    return out


def write_bad_shard(path: Path, good: list[ShardSample]) -> list[str]:
    """A shard: a good sample, then a garbage member, a missing member, NaN tracks, bad
    JSON, then a good sample again; returns the bad keys."""
    first, last = good
    nan = first.tracks.copy()
    nan[2, 3, 0] = np.nan
    meta = json.dumps(first.meta).encode()
    members = [
        (first.id, "tracks.npy", _npy(first.tracks)),
        (first.id, "visibility.npy", _npy(first.visibility)),
        (first.id, "meta.json", json.dumps({**first.meta, "id": first.id}).encode()),
        ("garbage", "tracks.npy", b"garbage"),
        ("garbage", "visibility.npy", _npy(first.visibility)),
        ("garbage", "meta.json", meta),
        ("missing", "tracks.npy", _npy(first.tracks)),
        ("missing", "meta.json", meta),
        ("nan", "tracks.npy", _npy(nan)),
        ("nan", "visibility.npy", _npy(first.visibility)),
        ("nan", "meta.json", meta),
        ("badjson", "tracks.npy", _npy(first.tracks)),
        ("badjson", "visibility.npy", _npy(first.visibility)),
        ("badjson", "meta.json", b"{not json"),
        (last.id, "tracks.npy", _npy(last.tracks)),
        (last.id, "visibility.npy", _npy(last.visibility)),
        (last.id, "meta.json", json.dumps({**last.meta, "id": last.id}).encode()),
    ]
    with tarfile.open(path, "w") as tar:
        for key, name, payload in members:
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return ["garbage", "missing", "nan", "badjson"]


def truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.fixture
def faulty_shards(tmp_path) -> Path:
    """good.tar (3), bad.tar (2 good around 4 bad), cut.tar (3, cut in half), notatar.tar."""
    folder = tmp_path / "shards"
    write_shards(_samples("good", 3), folder / "g", maxcount=8, prefix="good")
    (folder / "g" / "good-000000.tar").rename(folder / "good.tar")
    write_bad_shard(folder / "bad.tar", _samples("b", 2, seed=10))
    write_shards(_samples("cut", 3, seed=20), folder / "c", maxcount=8, prefix="cut")
    (folder / "c" / "cut-000000.tar").rename(folder / "cut.tar")
    truncate(folder / "cut.tar", 0.5)
    (folder / "notatar.tar").write_bytes(b"this is not a tar file at all" * 40)
    return folder


def test_corrupt_shards_are_skipped_named_and_counted(faulty_shards, tmp_path):
    out = tmp_path / "out"
    result = _cli(*sorted(faulty_shards.glob("*.tar")), *BASELINE, "--out", out, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    done = {d["id"] for d in summary["done"]}
    # every good sample is there, also those after the bad ones, and the cut shard's first
    assert {"good0", "good1", "good2", "b0", "b1"} <= done
    assert any(d.startswith("cut") for d in done)
    reasons = " | ".join(f["reason"] for f in summary["failed"])
    for key in ("garbage", "missing", "nan", "badjson"):
        assert f"bad.tar:{key}" in reasons, key
    assert "cut.tar: shard breaks off" in reasons
    assert "notatar.tar: not a readable shard tar" in reasons
    assert summary["totals"]["failed"] == len(summary["failed"]) == 6
    assert summary["totals"]["done"] == len(done)
    assert f"{len(done)} clips done, 6 failed" in result.stdout
    for k in ("b1", "good2"):
        assert (out / "runs" / "sample_000" / k / "pred_tracks.npy").is_file()


def _faststart_video(path: Path, frames: int, size: int = 64) -> Path:
    """An H.264 MP4 with its index first (a truncated copy still opens): noise frames, so
    every frame takes bytes and a cut keeps only the first ones."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=16)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_a_truncated_video_is_said_damaged_and_counted(tmp_path):
    video = _faststart_video(tmp_path / "cut.mp4", 60)
    truncate(video, 0.35)
    out = tmp_path / "out"
    result = _cli(video, *BASELINE, "--out", out, cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # damaged input is a bad item
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"] == {"done": 1, "failed": 0, "damaged": 1}
    (note,) = summary["damaged"]
    assert "cut.mp4" in note["reason"] and "header says 60 frames" in note["reason"]
    assert "ground-truth future is left out" in note["reason"]
    assert summary["done"][0]["has_ground_truth"] is False
    assert "1 damaged" in result.stdout and "DAMAGED" in result.stdout


def test_unwritable_out_is_refused_before_work(read_only_dir, faulty_shards, tmp_path):
    result = _cli(faulty_shards / "good.tar", *BASELINE, "--out", read_only_dir, cwd=tmp_path)
    assert result.returncode == 2
    assert "not writable" in one_line_error(result)


def test_a_full_disk_keeps_the_previous_summary(full_disk_dir, faulty_shards, tmp_path):
    out = full_disk_dir / "out"
    first = _cli(faulty_shards / "good.tar", *BASELINE, "--out", out, "--no-gif", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = (out / "summary.json").read_text()
    fill(full_disk_dir)
    result = _cli(faulty_shards / "good.tar", *BASELINE, "--out", out, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "could not write" in one_line_error(result)
    assert (out / "summary.json").read_text() == before  # whole, never 0 bytes
    assert not list((out / "runs" / "sample_000").glob(".*tmp*"))


def test_a_second_writer_is_refused_with_the_holders_pid(faulty_shards, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom trajloom.data.outputs import OutputLock\n"
            f"with OutputLock({str(out)!r}):\n    print('locked', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = _cli(faulty_shards / "good.tar", *BASELINE, "--out", out, cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert f"in use by another process (PID {holder.pid})" in one_line_error(result)
    assert not (out / "runs").exists()


def test_a_second_run_into_the_same_out_replaces_folders_whole(faulty_shards, tmp_path):
    out = tmp_path / "out"
    assert _cli(faulty_shards / "good.tar", *BASELINE, "--out", out, cwd=tmp_path).returncode == 0
    stale = out / "runs" / "sample_000" / "good0" / "stale_from_run_1.npy"
    np.save(stale, np.zeros(1))
    shard = faulty_shards / "bad.tar"
    again = _cli(faulty_shards / "good.tar", shard, *BASELINE, "--out", out, "--seed", "5",
                 cwd=tmp_path)  # fmt: skip
    assert again.returncode == 1  # bad.tar's bad samples
    assert not stale.exists()  # the folder was replaced whole, never a mix of two runs
    meta = json.loads((out / "runs" / "sample_000" / "good0" / "meta.json").read_text())
    assert meta["noise_seed"] == 5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 5 and "this run only" in summary["covers"]
    third = _cli(faulty_shards / "good.tar", *BASELINE, "--out", out, cwd=tmp_path)
    assert third.returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["other_run_folders"] == ["sample_000/b0", "sample_000/b1"]


# --------------------------------------------------------------------------- checkpoints


def _tiny_trained_set(folder: Path) -> Path:
    spec = importlib.util.spec_from_file_location("apps_conftest", ROOT / "tests/apps/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_tiny_trained_set(folder)
    module.write_released_layout(folder, folder.parent / "released")
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A tiny trained set, its released layout, a NaN copy, a shard on its window."""
    root = tmp_path_factory.mktemp("ckpt")
    trained = _tiny_trained_set(root / "trained")
    pipe = TrajLoomPipeline.from_pretrained(trained)
    with torch.no_grad():
        for p in pipe.generator.parameters():
            p.fill_(float("nan"))
    pipe.save_pretrained(root / "nan")
    write_shards(_samples("tiny", 2, frames=34), root / "shard", maxcount=8)
    return {
        "trained": trained,
        "released": root / "released",
        "nan": root / "nan",
        "shard": root / "shard" / "shard-000000.tar",
    }


def test_a_nan_model_fails_every_clip_naming_method_and_clip(checkpoints, tmp_path):
    out = tmp_path / "out"
    result = _cli(checkpoints["shard"], "--checkpoint", checkpoints["nan"], "--num-samples", 1,
                  "--steps", 2, "--no-render", "--out", out, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"] == {"done": 0, "failed": 2, "damaged": 0}
    for f, clip in zip(summary["failed"], ("tiny0", "tiny1"), strict=True):
        assert f"on clip {clip}" in f["reason"] and "not finite" in f["reason"]
        assert str(checkpoints["nan"]) in f["reason"]
    assert not (out / "runs").exists()  # no run folder of zeros passes as a future


def test_a_malicious_checkpoint_is_refused_without_running_it(checkpoints, tmp_path):
    released = tmp_path / "released"
    subprocess.run(["cp", "-r", str(checkpoints["released"]), str(released)], check=True)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    gen = released / "checkpoints" / "trajloom_generator.pt"
    gen.write_bytes(pickle.dumps({"generator": Payload()}, protocol=2))
    result = _cli(checkpoints["shard"], "--checkpoint", f"released:{released}", "--out",
                  tmp_path / "out", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    line = one_line_error(result)
    assert str(gen) in line and "weights-only" in line and "nothing was run" in line
    assert not marker.exists()


def test_a_truncated_checkpoint_is_one_line_exit_2(checkpoints, tmp_path):
    trained = tmp_path / "trained"
    subprocess.run(["cp", "-r", str(checkpoints["trained"]), str(trained)], check=True)
    weights = trained / "generator" / "model.safetensors"
    truncate(weights, 0.5)
    for spec in (str(trained), f"vae:{trained}"):
        result = _cli(checkpoints["shard"], "--checkpoint", spec, "--out", tmp_path / "o",
                      cwd=tmp_path)  # fmt: skip
        if spec.startswith("vae:"):
            assert result.returncode in (0, 1)  # the VAE itself is intact
            continue
        assert result.returncode == 2
        line = one_line_error(result)
        assert str(weights) in line and "truncated" in line
    pt = checkpoints["released"] / "checkpoints" / "trajloom_vae.pt"
    released = tmp_path / "released"
    subprocess.run(["cp", "-r", str(checkpoints["released"]), str(released)], check=True)
    truncate(released / "checkpoints" / pt.name, 0.5)
    result = _cli(checkpoints["shard"], "--checkpoint", f"released:{released}", "--out",
                  tmp_path / "o2", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert str(released / "checkpoints" / pt.name) in one_line_error(result)


# --------------------------------------------------------------------------- input safety (issue 25)


__all__ = ["iter_shard_samples"]  # used by tests/faults/test_bench_faults.py through this module


def snapshot(root: Path, out: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under ``root`` but ``out`` (and what is inside it), with its kind, size
    and modification time: two equal snapshots mean nothing outside ``out`` was created,
    changed or removed."""
    found = {}
    for p in sorted(root.rglob("*")):
        if p == out or out in p.parents:
            continue
        st = p.lstat()
        found[str(p.relative_to(root))] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return found


def _sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """``box/`` with victim files beside the output folder ``box/out`` (not created)."""
    box = tmp_path / "box"
    for victim in ("victim3", "victim2", "v"):
        (box / victim).mkdir(parents=True)
        (box / victim / "keep.txt").write_text("precious")
    (box / "v.json").write_text("{}")
    return box, box / "out"


def write_evil_shard(path: Path, evil_id: str = "../../../victim3") -> None:
    """A shard: a good sample, then one whose meta.json ``id`` is a path out of OUT."""
    good, evil = _samples("ok", 2)
    members = []
    for key, sample, sid in (("ok0", good, good.id), ("evil", evil, evil_id)):
        members += [
            (key, "tracks.npy", _npy(sample.tracks)),
            (key, "visibility.npy", _npy(sample.visibility)),
            (key, "meta.json", json.dumps({**sample.meta, "id": sid}).encode()),
        ]
    with tarfile.open(path, "w") as tar:
        for key, name, payload in members:
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_a_shard_id_that_is_a_path_is_skipped_and_counted_nothing_outside_out(tmp_path):
    box, out = _sandbox(tmp_path)
    shard = tmp_path / "evil.tar"
    write_evil_shard(shard)
    before = snapshot(box, out)
    result = _cli(shard, *BASELINE, "--out", out, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"] == {"done": 1, "failed": 1, "damaged": 0}
    (failed,) = summary["failed"]
    assert "shard sample id '../../../victim3' is not a safe name" in failed["reason"]
    assert snapshot(box, out) == before
    assert (out / "runs" / "sample_000" / "ok0" / "pred_tracks.npy").is_file()


def test_same_stem_inputs_get_distinct_stable_names(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        _faststart_video(tmp_path / folder / "clip.mp4", 30)
    out = tmp_path / "out"
    args = [tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4", *BASELINE]
    result = _cli(*args, "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    done = json.loads((out / "summary.json").read_text())["done"]
    assert [(d["id"], Path(d["source"]).parent.name) for d in done] == [
        ("clip", "a"),
        ("clip-2", "b"),
    ]
    for name in ("clip", "clip-2"):
        assert (out / "runs" / "sample_000" / name / "pred_tracks.npy").is_file()
        assert (out / "wanmove" / "sample_000" / f"{name}_tracks.npy").is_file()
    assert "2 clips done" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", str(2**63)], "--seed must be 0 to 2**62"),
        (["--wanmove-frames", "0"], "--wanmove-frames must be >= 2"),
        (["--wanmove-frames", "99"], "--wanmove-frames must be 2 to 13"),
        (["--num-samples", "10000"], "--num-samples must be 1 to 64"),
        (["--pin", "0,0,1,1,1e308"], None),
    ],
)
def test_bad_options_are_one_line_exit_2_before_any_work(args, message, tmp_path):
    box, out = _sandbox(tmp_path)
    shard = tmp_path / "good.tar"
    write_shards(_samples("g", 1), tmp_path / "s", maxcount=8)
    (tmp_path / "s" / "shard-000000.tar").rename(shard)
    before = snapshot(box, out)
    base = (
        [a for a in BASELINE if a not in ("--num-samples", "1")]
        if "--num-samples" in args
        else BASELINE
    )
    result = _cli(shard, *base, *args, "--out", out, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    if message is not None:
        assert message in line, line
    assert snapshot(box, out) == before
    assert not (out / "runs").exists()


def test_hostile_pins_files_are_one_line_exit_2(tmp_path):
    shard = tmp_path / "good.tar"
    write_shards(_samples("g", 1), tmp_path / "s", maxcount=8)
    (tmp_path / "s" / "shard-000000.tar").rename(shard)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    heavy = tmp_path / "heavy.json"
    heavy.write_text(json.dumps([{"point": 0, "frame": 0, "target": [1, 1], "weight": 1e308}]))
    many = tmp_path / "many.json"
    many.write_text(json.dumps([{"point": 0, "frame": 0, "target": [1, 1]}] * 5000))
    for pins, message in ((deep, "nested too deeply"), (heavy, "weight must be > 0 and at most"),
                          (many, "5000 pins, more than the 4096 allowed")):  # fmt: skip
        result = _cli(shard, *BASELINE, "--pins", pins, "--out", tmp_path / "o", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert message in one_line_error(result)
    assert not (tmp_path / "o").exists()


def test_conflicting_pins_on_one_point_and_frame_are_refused():
    from trajloom.encoding import GridSpec
    from trajloom.flow.pins import PinError, check_pins, parse_pin

    grid = GridSpec(128, 96, 32)
    agree = [parse_pin("3,2,10,10"), parse_pin("3,2,10,10"), parse_pin("3,4,20,20")]
    check_pins(agree, grid, 12)  # the same target twice, or other frames: met together
    for second in ("3,2,11,10", "3,2,outside"):
        with pytest.raises(PinError, match="point 3 at frame 2 is already pinned"):
            check_pins([parse_pin("3,2,10,10"), parse_pin(second)], grid, 12)


def test_a_video_past_the_pixel_limit_fails_before_decoding(tmp_path):
    video = _faststart_video(tmp_path / "big.mp4", 30)
    out = tmp_path / "out"
    result = _cli(video, *BASELINE, "--max-pixels", 1000, "--out", out, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    (failed,) = json.loads((out / "summary.json").read_text())["failed"]
    assert "64x64 frames (4096 pixels) are more than the 1000 pixels per frame" in failed["reason"]


def test_a_window_past_the_frame_limit_is_refused_before_decoding(tmp_path):
    video = _faststart_video(tmp_path / "long.mp4", 30)
    out = tmp_path / "out"
    result = _cli(video, *BASELINE, "--max-frames", 8, "--out", out, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert "frames per input, more than --max-frames 8" in line
    assert not list(out.glob("**/*.npy"))
    bad = _cli(video, *BASELINE, "--max-frames", 1, "--out", out, cwd=tmp_path)
    assert bad.returncode == 2 and "--max-frames must be >= 2" in one_line_error(bad)


def test_a_config_far_larger_than_its_weights_fails_fast_with_one_line(checkpoints, tmp_path):
    trained = tmp_path / "trained"
    subprocess.run(["cp", "-r", str(checkpoints["trained"]), str(trained)], check=True)
    config = trained / "generator" / "config.json"
    payload = json.loads(config.read_text())
    payload["config"]["depth"] = 20000
    config.write_text(json.dumps(payload))
    start = time.perf_counter()
    result = _cli(checkpoints["shard"], "--checkpoint", trained, "--out", tmp_path / "o",
                  cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert "describes a far larger model than the weights hold" in line and str(config) in line
    assert time.perf_counter() - start < 120  # built block by block it takes minutes and GBs


def test_int8_weights_are_refused(checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    trained = tmp_path / "trained"
    subprocess.run(["cp", "-r", str(checkpoints["trained"]), str(trained)], check=True)
    weights = trained / "generator" / "model.safetensors"
    state = {k: v.to(torch.int8) for k, v in load_file(str(weights)).items()}
    save_file(state, str(weights))
    result = _cli(checkpoints["shard"], "--checkpoint", trained, "--out", tmp_path / "o",
                  cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert str(weights) in line and "dtypes differ" in line and "I8 in the weights" in line

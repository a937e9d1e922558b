"""Fault injection for apps/train: divergence, damaged checkpoints and logs, stale
temporaries, a second writer, unwritable run folders and corrupt shards.

Each case asserts the exit code, the one-line message, and that nothing good was lost.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from trajloom.data.shards import ShardSample, write_shards
from trajloom.data.synthetic import make_scene
from trajloom_train.checkpoint import list_checkpoints
from trajloom_train.config import apply_overrides
from trajloom_train.data import scene_config
from trajloom_train.distributed import Dist
from trajloom_train.recipes import ci
from trajloom_train.stages import RunContext, run_stage

MAIN = Path(__file__).resolve().parents[2] / "apps" / "train" / "__main__.py"
VAE_SHORT = ["vae.steps=6", "vae.log_every=1", "vae.save_every=2", "vae.val_every=3"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(MAIN), *args, "--no-progress"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _ctx(run: Path, extra: tuple[str, ...] = (), stop_after: int | None = None) -> RunContext:
    recipe = apply_overrides(ci(), [*VAE_SHORT, *extra])
    return RunContext(recipe, run, Dist(), stop_after=stop_after, progress=False)


def _train_losses(stage_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "split" not in r]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight")
    run_stage(_ctx(run), "vae")
    return run


def test_divergence_stops_the_stage_and_keeps_the_last_checkpoint(tmp_path):
    runs = tmp_path / "runs"
    result = _cli(
        "vae", "--recipe", "ci", "--runs-dir", str(runs),
        "--set", "vae.optim.lr=1e30", "--set", "vae.optim.clip_grad_norm=0",
        "--set", "vae.save_every=1", "--set", "vae.optim.warmup_steps=0",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    line = _one_line_error(result)
    assert "stage 'vae' diverged at step" in line and "last checkpoint is kept" in line
    step = int(line.split("diverged at step ")[1].split(":")[0])
    stage = runs / "ci" / "vae"
    assert not (stage / "DONE.json").exists()
    kept = list_checkpoints(stage)
    assert kept and int(kept[-1].name.split("-")[1]) == step - 1  # the last finite step


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(straight, tmp_path):
    run = tmp_path / "run"
    run_stage(_ctx(run, stop_after=4), "vae")  # checkpoints at steps 2 and 4
    latest = run / "vae" / "checkpoints" / "step-00000004"
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.warns(UserWarning, match="step-00000004: damaged checkpoint skipped"):
        summary = run_stage(_ctx(run), "vae")
    assert summary["finished"]
    assert _train_losses(run / "vae") == _train_losses(straight / "vae")


def test_every_checkpoint_damaged_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    run_stage(_ctx(run, stop_after=2), "vae")
    for ckpt in list_checkpoints(run / "vae"):
        (ckpt / "train_state.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"every checkpoint .* damaged"):
        run_stage(_ctx(run), "vae")


def test_torn_log_line_stale_temporary_and_lost_validation_are_survived(straight, tmp_path):
    run = tmp_path / "run"
    run_stage(_ctx(run, stop_after=2), "vae")
    stage = run / "vae"
    # a crash mid-write: a torn log line, a half-written checkpoint of a dead process
    with (stage / "metrics.jsonl").open("a") as f:
        f.write('{"stage": "vae", "step": 3, "lo')
    stale = stage / "checkpoints" / ".step-00000003.tmp-999999999"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 10)
    with pytest.warns(UserWarning, match="metrics.jsonl:3: unreadable log line dropped"):
        run_stage(_ctx(run), "vae")
    assert not stale.exists()
    assert _train_losses(stage) == _train_losses(straight / "vae")


def test_validation_lost_after_a_checkpoint_is_run_on_resume(tmp_path):
    run = tmp_path / "run"
    extra = ("vae.save_every=3",)
    run_stage(_ctx(run, extra, stop_after=3), "vae")  # checkpoint at 3, then validation at 3
    log = run / "vae" / "metrics.jsonl"
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    # the process dies after the checkpoint, before its validation line is written
    log.write_text("".join(json.dumps(r) + "\n" for r in rows if r.get("split") != "val"))
    run_stage(_ctx(run, extra), "vae")
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("split") == "val"] == [3, 6]


def test_a_second_writer_of_a_run_folder_is_refused(tmp_path):
    run_dir = tmp_path / "runs" / "ci"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom trajloom.data.outputs import OutputLock\n"
            f"with OutputLock({str(run_dir)!r}):\n    print('locked', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = _cli("vae", "--recipe", "ci", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert f"in use by another process (PID {holder.pid})" in _one_line_error(result)
    assert not (run_dir / "vae").exists()


def test_an_unwritable_run_folder_is_refused_before_training(read_only_dir, tmp_path):
    result = _cli("vae", "--recipe", "ci", "--runs-dir", str(read_only_dir), cwd=tmp_path)
    assert result.returncode == 2
    assert "not writable" in _one_line_error(result)


def _corrupt_shards(folder: Path) -> Path:
    data = ci().data
    cfg = scene_config(data)
    samples = []
    for i in range(6):
        scene = make_scene(200 + i, cfg)
        samples.append(ShardSample(f"clip-{i}", scene.tracks, scene.visibility, meta=scene.meta))
    write_shards(samples, folder, maxcount=3)
    (folder / "manifest.json").unlink()  # the run lists the tars itself, the bad one too
    # one more shard: a garbage member, a NaN track, a missing member, bad JSON
    bad = folder / "bad-000000.tar"
    good = samples[0]
    with tarfile.open(bad, "w") as tar:
        for key, name, payload in [
            ("g", "tracks.npy", b"garbage"),
            ("g", "visibility.npy", b"garbage"),
            ("g", "meta.json", b"{}"),
            ("m", "tracks.npy", _npy(good.tracks)),
            ("j", "tracks.npy", _npy(good.tracks)),
            ("j", "visibility.npy", _npy(good.visibility)),
            ("j", "meta.json", b"{not json"),
        ]:
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return folder


def _npy(array) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_corrupt_shard_samples_are_counted_in_the_stage_summary(tmp_path):
    shards = _corrupt_shards(tmp_path / "shards")
    recipe = ci()
    recipe = replace(
        recipe,
        data=replace(
            recipe.data,
            source="shards",
            shards=tuple(str(p) for p in sorted(shards.glob("*.tar"))),
            shuffle_buffer=0,
            holdout=0.0,  # every sample in training: the counts below are of all of them
        ),
    )
    overrides = ["vae.steps=4", "vae.val_every=0", "vae.batch_size=4", "vae.micro_batch_size=4"]
    # tracks-only shards: no video context (shards without video.mp4 are refused for it)
    recipe = apply_overrides(recipe, [*overrides, "conditioning.video=none"])
    with pytest.warns(UserWarning, match="skipped"):
        summary = run_stage(RunContext(recipe, tmp_path / "run", Dist(), progress=False), "vae")
    data = summary["data"]
    assert data["samples_skipped"] >= 3 and sum(data["skipped"].values()) == data["samples_skipped"]
    done = json.loads((tmp_path / "run" / "vae" / "DONE.json").read_text())
    assert done["data"] == data
    # the cache stage reads every shard once and counts the same bad samples
    ctx = RunContext(recipe, tmp_path / "run", Dist(), progress=False)
    with pytest.warns(UserWarning, match="skipped"):
        run_stage(ctx, "stats")
        cache = run_stage(ctx, "cache")
    assert cache["samples_skipped"] == 3 and cache["windows"] == 6
    shutil.rmtree(tmp_path / "run")

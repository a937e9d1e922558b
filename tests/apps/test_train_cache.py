"""apps/train cache stage: latents encoded once, training without the VAE in the loop."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from trajloom.data.latents import LATENTS_NAME, read_latent_index
from trajloom.data.shards import ShardSample, write_shards
from trajloom.data.stream import heldout_key
from trajloom.data.synthetic import make_scene
from trajloom.data.video import write_video
from trajloom.vae import TrajLoomVAE
from trajloom_train.config import apply_overrides
from trajloom_train.data import scene_config
from trajloom_train.distributed import Dist
from trajloom_train.latents import vae_fingerprint
from trajloom_train.recipes import ci
from trajloom_train.stages import RunContext, run_stage

SHORT = [
    "vae.steps=2",
    "stats.clips=8",
    "flow.steps=3",
    "flow.val_every=0",
    "flow.preview_every=0",
    "vis.steps=2",
    "vis.val_every=0",
]


def _shards(folder: Path, count: int = 8, video: bool = True) -> Path:
    """Shards of synthetic scenes, with their videos (the built-in video context's input)."""
    cfg = scene_config(ci().data, render_frames=video)
    samples = []
    for i in range(count):
        scene = make_scene(300 + i, cfg)
        meta = {**scene.meta, "caption": f"clip {i}"}
        mp4 = None
        if video:
            mp4 = write_video(
                folder.parent / "tmp.mp4", scene.frames, preset="ultrafast"
            ).read_bytes()
        samples.append(
            ShardSample(f"clip-{i}", scene.tracks, scene.visibility, meta=meta, video=mp4)
        )
    write_shards(samples, folder, maxcount=3)
    (folder.parent / "tmp.mp4").unlink(missing_ok=True)
    return folder


def _ctx(run: Path, shards: Path | None = None, extra=()) -> RunContext:
    recipe = ci()
    if shards is not None:
        data = replace(recipe.data, source="shards", shards=(str(shards),), shuffle_buffer=0)
        recipe = replace(recipe, data=data)
    recipe = apply_overrides(recipe, [*SHORT, *extra])
    return RunContext(recipe, run, Dist(), progress=False)


@pytest.fixture(scope="module")
def shard_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cache")
    shards = _shards(root / "shards")
    run = root / "run"
    for stage in ("vae", "stats", "cache"):
        run_stage(_ctx(run, shards), stage)
    return run, shards


def _count_encodes(monkeypatch) -> list[int]:
    calls = [0]
    original = TrajLoomVAE.encode_tracks

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TrajLoomVAE, "encode_tracks", counted)
    return calls


def test_cache_writes_every_training_window_with_the_vae_fingerprint(shard_run):
    run, _ = shard_run
    # the held-out split (data.holdout, by key) is left for the evaluation
    train = sum(not heldout_key(f"clip-{i}", ci().data.holdout) for i in range(8))
    assert 0 < train < 8
    index = json.loads((run / "cache" / LATENTS_NAME).read_text())
    assert index["total"] == train and index["vae_fingerprint"] == vae_fingerprint(run)
    assert index["context"] == ci().conditioning.manifest()
    assert len(read_latent_index(run / "cache", vae_fingerprint=vae_fingerprint(run))) == 1
    assert json.loads((run / "cache" / "DONE.json").read_text())["windows"] == train


@pytest.mark.parametrize("stage", ["flow", "vis"])
def test_training_from_latent_shards_never_calls_the_vae_per_step(
    shard_run, tmp_path, monkeypatch, stage
):
    run, shards = shard_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    if stage == "vis":
        shutil.copytree(run / "cache", copy / "cache", dirs_exist_ok=True)
    calls = _count_encodes(monkeypatch)
    summary = run_stage(_ctx(copy, shards), stage)
    assert summary["finished"] and summary["data"]["samples_skipped"] == 0
    # no encode per training step: only the final validation's (the pipeline encodes the
    # history of the validation clips; the visibility head's validation latents: both windows)
    assert calls[0] == {"flow": 1, "vis": 2}[stage]


def test_synthetic_pool_latents_come_from_the_cache(tmp_path, monkeypatch):
    run = tmp_path / "run"
    for stage in ("vae", "stats", "cache"):
        run_stage(_ctx(run), stage)
    assert json.loads((run / "cache" / LATENTS_NAME).read_text())["total"] == ci().data.scene_pool
    calls = _count_encodes(monkeypatch)
    run_stage(_ctx(run), "flow")
    assert calls[0] == 1  # the final validation only


def test_a_cache_of_another_vae_is_refused(shard_run, tmp_path):
    run, shards = shard_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    index = copy / "cache" / LATENTS_NAME
    body = json.loads(index.read_text())
    index.write_text(json.dumps({**body, "vae_fingerprint": "0" * 64}))
    with pytest.raises(ValueError, match=r"made by another VAE.*rerun `apps/train cache`"):
        run_stage(_ctx(copy, shards), "flow")


def test_flow_without_the_cache_stage_is_refused(shard_run, tmp_path):
    run, shards = shard_run
    copy = tmp_path / "run"
    for prior in ("vae", "stats"):
        shutil.copytree(run / prior, copy / prior)
    with pytest.raises(FileNotFoundError, match="needs the finished 'cache' stage"):
        run_stage(_ctx(copy, shards), "flow")


def test_a_corrupt_latent_shard_is_skipped_and_counted(shard_run, tmp_path):
    run, shards = shard_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    first = sorted((copy / "cache").glob("latents-*.tar"))[0]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    with pytest.warns(UserWarning, match="skipped"):
        summary = run_stage(_ctx(copy, shards), "flow")
    assert summary["finished"] and summary["data"]["samples_skipped"] >= 1


def test_shards_without_video_are_refused_for_the_video_context(shard_run, tmp_path):
    shards = _shards(tmp_path / "plain", count=3, video=False)
    run = tmp_path / "run"
    for prior in ("vae", "stats"):
        shutil.copytree(shard_run[0] / prior, run / prior)
    with (
        pytest.warns(UserWarning, match="missing_video"),
        pytest.raises(ValueError, match=r"missing_video.*conditioning\.video=none"),
    ):
        run_stage(_ctx(run, shards), "cache")
    summary = run_stage(_ctx(run, shards, ["conditioning.video=none"]), "cache")
    assert summary["windows"] == 3

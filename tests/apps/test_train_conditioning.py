"""Video and caption context that trains: cache contents, the trained encoders at
inference, a caption that measurably steers the futures, and the paper recipe end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import trajloom_train.trainer as trainer
from trajloom.data.latents import LatentStream, read_latent_index
from trajloom.data.shards import ShardSample, shard_key, write_shards
from trajloom.data.stream import StreamConfig, heldout_key
from trajloom.data.synthetic import CameraPath, SceneConfig, make_scene, synthetic_shard_samples
from trajloom.flow.conditioners import context_frames
from trajloom.flow.forecast import PipelineForecaster, forecast_clip
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom.vae import TrajLoomVAE
from trajloom_train.config import apply_overrides
from trajloom_train.data import TRAIN, SyntheticSplit
from trajloom_train.distributed import Dist
from trajloom_train.evaluate import export_trained_set
from trajloom_train.latents import vae_fingerprint
from trajloom_train.recipes import ci
from trajloom_train.stages import STAGES, RunContext, run_stage

SHORT = [
    "vae.steps=2",
    "stats.clips=8",
    "flow.steps=2",
    "flow.val_every=0",
    "flow.preview_every=0",
    "onpolicy.steps=1",
    "vis.steps=1",
]


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> tuple[Path, object]:
    """The ci recipe (built-in video and caption context) through every stage, exported."""
    recipe = apply_overrides(ci(), SHORT)
    run = tmp_path_factory.mktemp("cond") / "run"
    ctx = RunContext(recipe, run, Dist(), progress=False)
    for stage in STAGES:
        run_stage(ctx, stage)
    export_trained_set(run, recipe)
    return run, recipe


def test_cache_holds_the_context_frames_of_every_window(synthetic_run):
    run, recipe = synthetic_run
    urls = read_latent_index(
        run / "cache", vae_fingerprint=vae_fingerprint(run), context=recipe.conditioning.manifest()
    )
    clips = list(LatentStream(StreamConfig(urls=tuple(urls), shuffle_shards=False, strict=True)))
    assert len(clips) == recipe.data.scene_pool
    grid, cell = recipe.data.grid, recipe.conditioning.video_cell
    split = SyntheticSplit(recipe.data, recipe.seed, TRAIN)
    first = clips[0]
    assert first.video_frames.shape == (
        recipe.data.history,
        grid.grid_h * cell,
        grid.grid_w * cell,
        3,
    )
    # exactly the reduction the encoder applies to full frames at inference
    scene = next(split.sample(g, frames=True) for g in range(64) if split.clip_id(g) == first.id)
    full = torch.from_numpy(scene.frames[: recipe.data.history])[None]
    expected = context_frames(full, (grid.grid_h * cell, grid.grid_w * cell))[0].numpy()
    np.testing.assert_array_equal(first.video_frames, expected)
    assert first.caption == scene.caption and "camera" in first.caption


def test_a_cache_for_another_context_is_refused(synthetic_run):
    run, recipe = synthetic_run
    other = replace(recipe.conditioning, video="none")
    with pytest.raises(ValueError, match=r"cached for the context .* rerun `apps/train cache`"):
        read_latent_index(run / "cache", context=other.manifest())


def test_the_caption_and_the_frames_change_the_forecast(synthetic_run):
    """Through ``forecast_clip``, the one layer apps/sample and apps/bench forecast with."""
    run, recipe = synthetic_run
    pipe = TrajLoomPipeline.from_pretrained(run / "trained")
    forecaster = PipelineForecaster(pipe, solver="euler", steps=2, origin="trained")
    assert forecaster.wants_frames
    clip = SyntheticSplit(recipe.data, recipe.seed, TRAIN).sample(0, frames=True)

    def forecast(**changes) -> np.ndarray:
        return forecast_clip(forecaster, replace(clip, **changes), num_samples=1, seed=0).tracks

    base = forecast()
    np.testing.assert_array_equal(base, forecast())  # deterministic
    assert np.abs(base - forecast(caption="the camera tilts up quickly")).max() > 1e-4
    # the barely trained video pathway moves the futures little, but it moves them
    assert not np.array_equal(base, forecast(frames=clip.frames[:, ::-1].copy()))
    assert not np.array_equal(base, forecast(frames=None))


# ----------------------------------------------------------------------------- caption test


def _pan_scene(i: int, data) -> object:
    """A still history, then the camera pans left or right (i odd) in the future: only the
    caption (the scene's own, which names the pan) can tell which way."""
    cfg = SceneConfig(
        data.width,
        data.height,
        data.stride,
        num_frames=data.history + data.future,
        min_objects=0,
        max_objects=2,
        render_frames=False,
    )
    pan = 0.03 if i % 2 else -0.03
    return make_scene(1000 + i, cfg, camera=CameraPath(pan=pan, start=data.history - 1))


def _contradict(caption: str) -> str:
    swapped = caption.replace("pans left", "@").replace("pans right", "pans left")
    return swapped.replace("@", "pans right")


@pytest.mark.slow
def test_the_right_caption_gives_futures_closer_to_the_truth(tmp_path):
    base = ci()
    data = base.data
    train = [_pan_scene(i, data) for i in range(32)]
    samples = [
        ShardSample(f"pan-{i}", s.tracks, s.visibility, meta={**s.meta, "id": f"pan-{i}"})
        for i, s in enumerate(train)
    ]
    write_shards(samples, tmp_path / "shards")
    recipe = replace(base, data=replace(data, source="shards", shards=(str(tmp_path / "shards"),)))
    recipe = apply_overrides(
        recipe,
        [
            "conditioning.video=none",  # tracks-only shards: the caption alone is tested
            "vae.steps=60",
            "vae.val_every=0",
            "stats.clips=32",
            "flow.steps=300",
            "flow.val_every=0",
            "flow.preview_every=0",
            "flow.optim.warmup_steps=10",
        ],
    )
    ctx = RunContext(recipe, tmp_path / "run", Dist(), progress=False)
    for stage in ("vae", "stats", "cache", "flow"):
        run_stage(ctx, stage)
    pipe = TrajLoomPipeline.from_pretrained(export_trained_set(tmp_path / "run", recipe))
    th = data.history
    errors: dict[str, list[float]] = {"right": [], "contradicting": []}
    for i in range(32, 48):  # held-out scenes
        scene = _pan_scene(i, data)
        hist, hvis = torch.from_numpy(scene.tracks[:th]), torch.from_numpy(scene.visibility[:th])
        truth, tvis = torch.from_numpy(scene.tracks[th:]), torch.from_numpy(scene.visibility[th:])
        assert ("pans left" in scene.caption) != ("pans right" in scene.caption)
        for kind, caption in (
            ("right", scene.caption),
            ("contradicting", _contradict(scene.caption)),
        ):
            out = pipe(hist, hvis, caption=caption, num_samples=4, seed=i)
            errors[kind].append(float((out.tracks[0] - truth).norm(dim=-1)[:, tvis].mean()))
    right, wrong = np.mean(errors["right"]), np.mean(errors["contradicting"])
    print(f"mean error over the future: right caption {right:.2f} px, contradicting {wrong:.2f} px")
    assert right < 0.7 * wrong


# ----------------------------------------------------------------------------- paper recipe


def _video_shards(folder: Path, data, count: int) -> Path:
    cfg = SceneConfig(
        data.width, data.height, data.stride, num_frames=data.history + data.future, fps=8.0
    )
    write_shards(synthetic_shard_samples(count, cfg, seed=5, preset="ultrafast"), folder)
    return folder


def _count_vae_calls_in_steps(monkeypatch) -> dict[str, int]:
    """VAE forwards (encode or decode) made inside a training step, by stage."""
    calls: dict[str, int] = {}
    current: list[str] = []
    original_step = trainer.train_step

    def step(task, *args, **kwargs):
        current.append(task.name)
        try:
            return original_step(task, *args, **kwargs)
        finally:
            current.pop()

    def counted(method):
        def wrapper(self, *args, **kwargs):
            if current:
                calls[current[-1]] = calls.get(current[-1], 0) + 1
            return method(self, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(trainer, "train_step", step)
    for name in ("encode", "decode"):
        monkeypatch.setattr(TrajLoomVAE, name, counted(getattr(TrajLoomVAE, name)))
    return calls


# The paper recipe as it is (81 + 81 frames, optimizers, losses, on-policy settings, EMA,
# conditioning, evaluation) on a small frame, with small widths, one step per stage and
# batches of 2.
PAPER_SMOKE = (
    "data.width=128",
    "data.height=64",
    "data.stride=16",
    "data.val_clips=2",
    "data.shuffle_buffer=0",
    "vae_model.num_heads=2",
    "vae_model.hidden_size=32",
    "vae_model.encoder_depth=2",
    "vae_model.decoder_depth=2",
    "vae_model.pos_embed_dim=8",
    "generator.num_heads=2",
    "generator.hidden_size=32",
    "generator.depth=2",
    "conditioning.video_hidden=8",
    "conditioning.text_dim=16",
    "visibility_model.hidden=8",
    "stats.clips=4",
    "stats.batch_size=4",
    "vae.batch_size=2",
    "vae.micro_batch_size=2",
    "flow.batch_size=2",
    "flow.micro_batch_size=2",
    "onpolicy.batch_size=2",
    "onpolicy.micro_batch_size=2",
    "vis.batch_size=2",
    "vis.micro_batch_size=2",
    "eval.clips=2",
    "eval.preview_clips=1",
)


def test_paper_recipe_smoke_run_with_video_and_captions(tmp_path, monkeypatch):
    """cache -> flow -> onpolicy -> vis -> eval on shards with videos, every stage of the
    paper recipe, trained with the built-in video and caption context, and no VAE forward
    in any training step after the cache stage."""
    from trajloom_train.cli import ProcessOptions, RunOptions, _train_all, resolve_run

    shards = _video_shards(tmp_path / "shards", replace(ci().data, history=81, future=81), 6)
    options = RunOptions(
        recipe="paper",
        name="paper-smoke",
        runs_dir=tmp_path,
        overrides=PAPER_SMOKE,
        data=(str(shards),),
        steps_scale=1e-6,
    )
    recipe, run = resolve_run(options)
    assert recipe.name == "paper" and recipe.flow.steps == 1 and recipe.vis.steps == 1
    assert recipe.generator.use_video_cond and recipe.generator.use_text_cond
    assert recipe.conditioning.video == "light" and recipe.conditioning.text == "hashed"
    calls = _count_vae_calls_in_steps(monkeypatch)
    _train_all(options, ProcessOptions(device="cpu", progress=False))
    assert calls.get("vae", 0) > 0  # the counter counts
    assert {k: v for k, v in calls.items() if k != "vae"} == {}
    # one window per sample; the held-out split (data.holdout) is never cached
    kept = [i for i in range(6) if not heldout_key(shard_key(f"synthetic-5-{i}"), 0.1)]
    assert recipe.data.holdout == 0.1 and 0 < len(kept) < 6
    assert json.loads((run / "cache" / "DONE.json").read_text())["windows"] == len(kept)
    meta = json.loads((run / "trained" / "pipeline.json").read_text())
    assert meta["video_encoder"]["kind"] == "light" and meta["text_encoder"]["kind"] == "hashed"
    results = json.loads((run / "eval" / "metrics.json").read_text())["results"]
    assert np.isfinite(results["trajloom"]["vepe"])


def test_released_conditioner_options_refuse_clearly(tmp_path, monkeypatch):
    import importlib.util

    from trajloom_train.cli import RunOptions, resolve_run

    missing = tmp_path / "no-such-weights"
    with pytest.raises(ValueError, match=r"--video-encoder .*not found.*nothing is downloaded"):
        resolve_run(RunOptions(recipe="ci", runs_dir=tmp_path, video_encoder=missing))
    with pytest.raises(ValueError, match=r"--text-encoder .*not found"):
        resolve_run(RunOptions(recipe="ci", runs_dir=tmp_path, text_encoder=missing))
    weights = tmp_path / "Wan2.1_VAE.pth"
    weights.write_bytes(b"")
    # as where the extra is not installed
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("diffusers", "transformers") else find_spec(name, *a),
    )
    with pytest.raises(ValueError, match=r"needs 'diffusers'.*trajloom-flow\[wan\]"):
        resolve_run(RunOptions(recipe="ci", runs_dir=tmp_path, video_encoder=weights))
    with pytest.raises(ValueError, match=r"needs 'transformers'.*trajloom-flow\[wan\]"):
        resolve_run(RunOptions(recipe="ci", runs_dir=tmp_path, text_encoder=tmp_path))
    with pytest.raises(ValueError, match=r"video='wan' goes with video_path"):
        apply_overrides(ci(), ["conditioning.video=wan"])

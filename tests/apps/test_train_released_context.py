"""apps/train with the released conditioners (``--video-encoder``/``--text-encoder``) on tiny
local Wan2.1 VAE and umT5 models (fixture ``tiny_wan21`` in tests/conftest.py): the cache
stores Wan latents and pooled umT5 embeddings, the generator trains from them, and the
trained set feeds the same context at inference."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from trajloom.data.latents import LatentStream, read_latent_index
from trajloom.data.stream import StreamConfig
from trajloom.flow.conditioners import UMT5TextEncoder, WanVideoEncoder
from trajloom.flow.forecast import PipelineForecaster, forecast_clip, load_method, parse_method
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom_train.config import apply_overrides
from trajloom_train.data import TRAIN, SyntheticSplit
from trajloom_train.latents import CacheContext, vae_fingerprint

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

SHORT = (
    "data.scene_pool=6",
    "vae.steps=2",
    "stats.clips=6",
    "flow.steps=2",
    "flow.val_every=2",  # validation runs once, through the frozen released encoders
    "flow.preview_every=0",
    "onpolicy.steps=1",
    "vis.steps=1",
    "eval.clips=2",
)


@pytest.fixture(scope="module")
def wan_run(tiny_wan21, tmp_path_factory):
    """`apps/train all --recipe ci --video-encoder .../vae --text-encoder .../text_encoder`:
    every stage, the export, the evaluation and the preview."""
    from trajloom_train.cli import ProcessOptions, RunOptions, _train_all, resolve_run

    options = RunOptions(
        recipe="ci",
        name="wan",
        runs_dir=tmp_path_factory.mktemp("runs"),
        overrides=SHORT,
        video_encoder=tiny_wan21 / "vae",
        text_encoder=tiny_wan21 / "text_encoder",
    )
    recipe, run = resolve_run(options)
    _train_all(options, ProcessOptions(device="cpu", progress=False))
    return run, recipe


def _cached(run, recipe) -> dict:
    urls = read_latent_index(
        run / "cache", vae_fingerprint=vae_fingerprint(run), context=recipe.conditioning.manifest()
    )
    clips = LatentStream(StreamConfig(urls=tuple(urls), shuffle_shards=False, strict=True))
    return {c.id: c for c in clips}


def _scene(recipe, clip_id: str):
    split = SyntheticSplit(recipe.data, recipe.seed, TRAIN)
    g = next(g for g in range(64) if split.clip_id(g) == clip_id)
    return split.sample(g, frames=True)


def test_the_options_choose_the_released_context(wan_run, tiny_wan21):
    _, recipe = wan_run
    cond, gen = recipe.conditioning, recipe.generator
    assert (cond.video, cond.text) == ("wan", "umt5")
    assert cond.video_path == str((tiny_wan21 / "vae").resolve())  # absolute
    assert gen.use_video_cond and gen.video_latent_channels == 16  # Wan2.1 latents
    assert gen.use_text_cond and gen.text_embed_dim == 24  # the tiny umT5's d_model


def test_the_cache_holds_wan_latents_and_umt5_embeddings(wan_run, tiny_wan21):
    run, recipe = wan_run
    clips = _cached(run, recipe)
    assert len(clips) == recipe.data.scene_pool
    grid, th = recipe.data.grid, recipe.data.history
    wan = WanVideoEncoder(tiny_wan21 / "vae", grid=grid)
    umt5 = UMT5TextEncoder(tiny_wan21 / "text_encoder")
    for clip in list(clips.values())[:2]:
        assert clip.video_frames is None
        assert clip.video_latent.shape == (1 + (th - 1) // 4, grid.num_points, 16)
        scene = _scene(recipe, clip.id)
        frames = torch.from_numpy(scene.frames[:th])[None]
        np.testing.assert_allclose(clip.video_latent, wan(frames)[0].numpy(), atol=1e-5)
        assert clip.caption == scene.caption and clip.caption.strip()
        np.testing.assert_allclose(clip.text_emb, umt5([clip.caption])[0].numpy(), atol=1e-5)
    assert json.loads((run / "flow" / "DONE.json").read_text())["finished"]
    # the final evaluation forecast held-out clips with the same context
    results = json.loads((run / "eval" / "metrics.json").read_text())["results"]
    assert np.isfinite(results["trajloom"]["vepe"]) and (run / "preview.mp4").is_file()


def test_the_trained_set_feeds_the_cached_context(wan_run, tiny_wan21):
    run, recipe = wan_run
    meta = json.loads((run / "trained" / "pipeline.json").read_text())
    assert meta["video_encoder"] == {
        "kind": "wan",
        "path": str((tiny_wan21 / "vae").resolve()),
        "resize_factor": 2,  # stride 16 / 8
    }
    assert meta["text_encoder"]["kind"] == "umt5"
    assert meta["text_encoder"]["path"] == str((tiny_wan21 / "text_encoder").resolve())
    pipe = TrajLoomPipeline.from_pretrained(run / "trained")
    assert isinstance(pipe.video_encoder, WanVideoEncoder)
    assert isinstance(pipe.text_encoder, UMT5TextEncoder)
    clip = next(iter(_cached(run, recipe).values()))
    scene = _scene(recipe, clip.id)
    th = recipe.data.history
    cond, _ = pipe.condition(
        torch.from_numpy(scene.hist_tracks),
        torch.from_numpy(scene.hist_vis),
        frames=torch.from_numpy(scene.frames[:th]),
        caption=scene.caption,
    )
    np.testing.assert_allclose(cond.video[0].numpy(), clip.video_latent, atol=1e-5)
    np.testing.assert_allclose(cond.text[0].numpy(), clip.text_emb, atol=1e-5)
    # loaded as apps/sample and apps/bench load a method: it reads the frames for the context
    forecaster = load_method(parse_method(str(run)), torch.device("cpu"), steps=2)
    assert isinstance(forecaster, PipelineForecaster) and forecaster.wants_frames
    assert isinstance(forecaster.pipe.video_encoder, WanVideoEncoder)
    a = forecast_clip(forecaster, scene, num_samples=1, seed=0).tracks
    b = forecast_clip(forecaster, replace(scene, caption=""), num_samples=1, seed=0).tracks
    assert np.isfinite(a).all() and not np.array_equal(a, b)


def test_a_cache_for_another_video_context_is_refused(wan_run, tiny_wan21):
    run, recipe = wan_run
    cond = recipe.conditioning
    light = replace(cond, video="light", video_path="")
    other = replace(cond, video_path=str((tiny_wan21 / "Wan2.1_VAE.pth").resolve()))
    hashed = replace(cond, text="hashed", text_path="")
    for context in (light, other, hashed):
        with pytest.raises(ValueError, match=r"cached for the context .* rerun `apps/train cache`"):
            read_latent_index(run / "cache", context=context.manifest())


def test_a_window_without_caption_caches_the_null_embedding(wan_run):
    _, recipe = wan_run
    context = CacheContext(
        replace(recipe, conditioning=replace(recipe.conditioning, video="none", video_path=""))
    )
    batch = SyntheticSplit(recipe.data, recipe.seed, TRAIN).batch([0, 1])
    text = context.arrays(replace(batch, captions=["", batch.captions[1]]))["text_emb"]
    assert text.shape == (2, 24)
    assert not text[0].any() and text[1].any()  # the pipeline's null for an empty caption


def test_the_released_context_sets_the_generator_widths_and_absolute_paths(
    tiny_wan21, tmp_path, monkeypatch
):
    from trajloom_train.cli import RunOptions, resolve_run

    monkeypatch.chdir(tiny_wan21)
    recipe, _ = resolve_run(
        RunOptions(
            recipe="ci",
            runs_dir=tmp_path,
            overrides=("generator.video_latent_channels=8", "generator.text_embed_dim=8"),
            video_encoder=Path("Wan2.1_VAE.pth"),  # relative to the working directory
            text_encoder=Path("text_encoder"),
        )
    )
    cond, gen = recipe.conditioning, recipe.generator
    assert cond.video_path == str(tiny_wan21.resolve() / "Wan2.1_VAE.pth")
    assert cond.text_path == str(tiny_wan21.resolve() / "text_encoder")
    assert (gen.video_latent_channels, gen.text_embed_dim) == (16, 24)  # Wan2.1, umT5 width
    with pytest.raises(ValueError, match=r"stride 12 must be a multiple of 8"):
        apply_overrides(recipe, ["data.width=96", "data.height=48", "data.stride=12"])

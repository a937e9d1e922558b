"""TrajLoomPipeline: shapes, determinism per seed, released conventions, persistence, WHN mode."""

import pytest
import torch

from trajloom.encoding import GridSpec, query_points
from trajloom.flow.conditioners import LightVideoEncoder, LightVideoEncoderConfig
from trajloom.flow.config import generator_preset
from trajloom.flow.model import TrajLoomGenerator, latent_visibility
from trajloom.flow.path import draw_source
from trajloom.flow.pipeline import PipelineConfig, TrajLoomPipeline
from trajloom.flow.visibility import VisibilityConfig, VisibilityPredictor
from trajloom.vae import LatentStats, TrajLoomVAE, vae_preset
from trajloom.vae.released import released_kwargs

T = 17  # tiny VAE: 17 frames -> 5 latent steps, 128 x 96 at stride 32 -> 12 tokens


def _perturb(module, seed):
    # fresh generators zero-initialize some projections; random weights make every input count
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module


def _pipeline(*, config=PipelineConfig(), video=True, vis_head=True, seed=0):
    torch.manual_seed(seed)
    vae = TrajLoomVAE(vae_preset("tiny"))
    gen = TrajLoomGenerator(generator_preset("tiny", video_latent_channels=4).for_vae(vae.config))
    _perturb(gen, seed + 1)
    stats = LatentStats(torch.linspace(-0.1, 0.1, 8), torch.linspace(0.5, 1.5, 8))
    vis = VisibilityPredictor(VisibilityConfig(latent_channels=8, hidden=8)) if vis_head else None
    enc = None
    if video:
        enc = LightVideoEncoder(
            LightVideoEncoderConfig(width=128, height=96, stride=32, hidden=4, out_channels=4)
        ).eval()
    return TrajLoomPipeline(vae, gen, stats, visibility=vis, video_encoder=enc, config=config)


def _history(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = query_points(vae_preset("tiny").grid)
    drift = torch.cumsum(torch.randn(b, T, 12, 2, generator=g), dim=1)
    tracks = (q + drift).clamp(0, 127)
    vis = torch.rand(b, T, 12, generator=g) > 0.2
    frames = torch.randint(0, 256, (b, T, 96, 128, 3), generator=g, dtype=torch.uint8)
    return tracks, vis, frames


def test_shapes_and_ranges():
    pipe = _pipeline()
    tracks, vis, frames = _history(b=2)
    out = pipe(tracks, vis, frames=frames, num_samples=3, steps=4)
    assert out.tracks.shape == (2, 3, T, 12, 2)
    assert out.visibility.shape == (2, 3, T, 12) and out.visibility.dtype == torch.bool
    assert out.visibility_prob.shape == (2, 3, T, 12)
    assert out.latents.shape == (2, 3, 5, 12, 8) and out.nfe == 4
    assert float(out.tracks[..., 0].max()) <= 127 - 1e-3 + 1e-6 and float(out.tracks.min()) >= 0
    single = pipe(tracks[0], vis[0], frames=frames[0], steps=2)
    assert single.tracks.shape == (1, 1, T, 12, 2)


def test_reproducible_per_seed_and_independent_of_batch_composition():
    pipe = _pipeline()
    tracks, vis, frames = _history(b=2)
    a = pipe(tracks, vis, frames=frames, num_samples=2, steps=3, seed=5)
    b = pipe(tracks, vis, frames=frames, num_samples=2, steps=3, seed=5)
    assert torch.equal(a.tracks, b.tracks) and torch.equal(a.visibility, b.visibility)
    c = pipe(tracks, vis, frames=frames, num_samples=2, steps=3, seed=6)
    assert not torch.allclose(a.latents, c.latents)
    # sample j of seed s is sample 0 of seed s + j
    torch.testing.assert_close(a.latents[:, 1], c.latents[:, 0], atol=1e-5, rtol=1e-5)
    # clip 1 alone gives what it gave inside the batch
    alone = pipe(tracks[1], vis[1], frames=frames[1], num_samples=2, steps=3, seed=5)
    torch.testing.assert_close(alone.latents[0], a.latents[1], atol=1e-5, rtol=1e-5)


def test_source_state_is_the_released_draw():
    pipe = _pipeline(video=False)
    tracks, vis, _ = _history(b=1)
    _, anchor = pipe.condition(tracks, vis)
    x0 = pipe._source(anchor, 1, 42, None)
    expected = draw_source(anchor, 5, generator=torch.Generator().manual_seed(42))
    assert torch.equal(x0, expected)
    no_anchor = _pipeline(video=False, config=PipelineConfig(anchor=False))
    assert torch.equal(
        no_anchor._source(anchor, 1, 42, None),
        torch.randn(1, 5, 12, 8, generator=torch.Generator().manual_seed(42)),
    )


def test_history_visibility_is_passed_unless_released_behaviour_is_asked():
    tracks, vis, _ = _history(b=1)
    passed, _ = _pipeline(video=False).condition(tracks, vis)
    torch.testing.assert_close(passed.hist_vis, latent_visibility(vis, 4))
    released, _ = _pipeline(
        video=False, config=PipelineConfig(pass_history_visibility=False)
    ).condition(tracks, vis)
    assert released.hist_vis is None
    a = _pipeline(video=False)(tracks, vis, steps=2)
    b = _pipeline(video=False, config=PipelineConfig(pass_history_visibility=False))(
        tracks, vis, steps=2
    )
    assert not torch.allclose(a.latents, b.latents)


def test_dopri5_reports_evaluations_and_agrees_with_fine_euler():
    pipe = _pipeline(video=False, vis_head=False)
    tracks, vis, _ = _history(b=1)
    seen = []
    out = pipe(tracks, vis, solver="dopri5", callback=seen.append)
    assert out.nfe >= 8 and out.nfe == seen[-1].nfe
    assert out.visibility_prob is None
    fine = pipe(tracks, vis, steps=40)
    assert float((fine.latents - out.latents).abs().max()) < 0.05


def test_save_and_load_trained_set(tmp_path):
    pipe = _pipeline()
    tracks, vis, frames = _history(b=1)
    pipe.save_pretrained(tmp_path / "set")
    assert {p.name for p in (tmp_path / "set").iterdir()} >= {
        "pipeline.json",
        "latent_stats.json",
        "vae",
        "generator",
        "visibility",
        "video_encoder",
    }
    loaded = TrajLoomPipeline.from_pretrained(tmp_path / "set")
    a = pipe(tracks, vis, frames=frames, steps=3, seed=1)
    b = loaded(tracks, vis, frames=frames, steps=3, seed=1)
    torch.testing.assert_close(a.tracks, b.tracks)
    assert torch.equal(a.visibility, b.visibility)
    with pytest.raises(FileNotFoundError, match=r"pipeline\.json"):
        TrajLoomPipeline.from_pretrained(tmp_path)


def test_whn_mode_sees_only_the_boundary_frame():
    pipe = _pipeline(config=PipelineConfig.whn())
    tracks, vis, frames = _history(b=1)
    base = pipe(tracks, vis, frames=frames, steps=2)
    other_tracks, other_vis, _ = _history(b=1, seed=9)
    same = pipe(other_tracks, other_vis, frames=frames, steps=2)
    torch.testing.assert_close(base.latents, same.latents)
    earlier = frames.clone()
    earlier[:, :-1] = 255 - earlier[:, :-1]
    torch.testing.assert_close(pipe(tracks, vis, frames=earlier, steps=2).latents, base.latents)
    last = frames.clone()
    last[:, -1] = 255 - last[:, -1]
    assert not torch.allclose(pipe(tracks, vis, frames=last, steps=2).latents, base.latents)
    cond, anchor = pipe.condition(tracks, vis, frames=frames)
    assert float(cond.z_hist.abs().max()) == 0.0 and cond.hist_vis is None
    # the anchor is the latent of the static query grid
    grid = query_points(pipe.grid).expand(1, T, -1, -1)
    expected = pipe.latent_stats.normalize(pipe.vae.encode_tracks(grid).mean)
    torch.testing.assert_close(anchor, expected)


def test_history_fusion_switch_removes_the_fusion_path():
    cfg = generator_preset("tiny")
    x = torch.randn(1, cfg.fut_latent_frames, cfg.num_tokens, cfg.latent_channels)
    from trajloom.flow.model import FlowCondition

    cond = FlowCondition(
        z_hist=torch.randn(1, cfg.hist_latent_frames, cfg.num_tokens, cfg.latent_channels)
    )
    for fusion in (True, False):
        torch.manual_seed(0)
        gen = _perturb(TrajLoomGenerator(cfg.replace(use_history_fusion=fusion)), 3).eval()
        with torch.no_grad():
            before = gen(x, torch.tensor([0.3]), cond)
            gen.track_fusion_scale.add_(1.0)
            after = gen(x, torch.tensor([0.3]), cond)
        assert torch.allclose(before, after) != fusion


def test_input_errors():
    pipe = _pipeline(video=False)
    tracks, vis, frames = _history(b=1)
    with pytest.raises(ValueError, match="history"):
        pipe(tracks[:, :5], vis[:, :5])
    with pytest.raises(ValueError, match="no video encoder"):
        pipe(tracks, vis, frames=frames)
    with pytest.raises(ValueError, match="no text encoder"):
        pipe(tracks, vis, caption="a dog runs")
    with pytest.raises(ValueError, match="solver"):
        pipe(tracks, vis, solver="rk4")


def test_a_generator_for_another_vae_is_refused_naming_the_fields():
    pipe = _pipeline(video=False, vis_head=False)
    other = generator_preset("tiny", num_frames=9, grid=GridSpec(128, 64, 32))
    with pytest.raises(
        ValueError,
        match=r"generator.grid=GridSpec\(width=128, height=64.*generator.num_frames=9 vs vae 17",
    ):
        TrajLoomPipeline(pipe.vae, TrajLoomGenerator(other), pipe.latent_stats)
    head = VisibilityPredictor(VisibilityConfig(latent_channels=4, temporal_factor=2))
    with pytest.raises(ValueError, match=r"visibility.latent_channels=4 vs vae 8.*temporal_factor"):
        TrajLoomPipeline(pipe.vae, pipe.generator, pipe.latent_stats, visibility=head)


def test_from_released_checkpoints_give_the_same_futures(tmp_path):
    import json

    pipe = _pipeline(video=False, config=PipelineConfig(pass_history_visibility=False))
    torch.save({"vae": pipe.vae.state_dict()}, tmp_path / "vae.pt")
    torch.save({"generator": pipe.generator.state_dict()}, tmp_path / "gen.pt")
    torch.save({"model": pipe.visibility.state_dict()}, tmp_path / "vis.pt")
    gen_cfg = {
        "generator": pipe.generator.config.to_dict(),
        "train": {"x0_mode": "anchor_first", "x0_noise_std": 0.1, "latent_stats_key": "z_all"},
    }
    (tmp_path / "gen.json").write_text(json.dumps(gen_cfg))
    vc = pipe.visibility.config
    vis_cfg = {
        "predictor": {
            "latent_channels": vc.latent_channels,
            "hidden": vc.hidden,
            "depth": vc.depth,
        },
        "temp_stride": 4,
    }
    (tmp_path / "vis.json").write_text(json.dumps(vis_cfg))
    pipe.latent_stats.to_json(tmp_path / "stats.json")
    released = TrajLoomPipeline.from_released(
        tmp_path / "vae.pt",
        released_kwargs(pipe.vae.config),
        tmp_path / "gen.pt",
        tmp_path / "gen.json",
        tmp_path / "stats.json",
        vis_ckpt=tmp_path / "vis.pt",
        vis_cfg=tmp_path / "vis.json",
        config=PipelineConfig(pass_history_visibility=False),
    )
    tracks, vis, _ = _history(b=1)
    a = pipe(tracks, vis, steps=2, seed=42)
    b = released(tracks, vis, steps=2, seed=42)
    torch.testing.assert_close(a.tracks, b.tracks)
    torch.testing.assert_close(a.visibility_prob, b.visibility_prob)
    with pytest.raises(ValueError, match="together"):
        TrajLoomPipeline.from_released(
            tmp_path / "vae.pt",
            {},
            tmp_path / "gen.pt",
            tmp_path / "gen.json",
            tmp_path / "stats.json",
            vis_ckpt=tmp_path / "vis.pt",
        )


def test_hashed_caption_encoder_null_caption_and_round_trip(tmp_path):
    from trajloom.flow.conditioners import HashedTextConfig, HashedTextEncoder

    torch.manual_seed(0)
    vae = TrajLoomVAE(vae_preset("tiny"))
    gen = TrajLoomGenerator(
        generator_preset("tiny", use_video_cond=False, text_embed_dim=8).for_vae(vae.config)
    )
    _perturb(gen, 1)
    stats = LatentStats(torch.zeros(8), torch.ones(8))
    pipe = TrajLoomPipeline(vae, gen, stats, text_encoder=HashedTextEncoder(HashedTextConfig(8)))
    tracks, vis, _ = _history(b=1)
    # generated latents: the untrained tiny VAE decodes them all to the same tracks
    null = pipe(tracks, vis, caption="", steps=2).latents
    assert torch.equal(null, pipe(tracks, vis, caption=torch.zeros(1, 8), steps=2).latents)
    said = pipe(tracks, vis, caption="the camera pans left", steps=2).latents
    assert not torch.equal(said, null)
    back = TrajLoomPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "set"))
    assert isinstance(back.text_encoder, HashedTextEncoder)
    assert torch.equal(back(tracks, vis, caption="the camera pans left", steps=2).latents, said)

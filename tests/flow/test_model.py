"""The TrajLoom-Flow generator: shapes, training, gradients, ablation switch, pieces."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from trajloom.encoding import (
    DEFAULT_GRID,
    DEFAULT_HISTORY,
    DEFAULT_TEMPORAL_FACTOR,
    GridSpec,
    rasterize,
)
from trajloom.flow.config import (
    GENERATOR_PRESETS,
    GeneratorConfig,
    check_matches_vae,
    generator_preset,
)
from trajloom.flow.io import load_generator, save_pretrained
from trajloom.flow.model import (
    CrossAttention,
    FlowCondition,
    TrajLoomGenerator,
    block_mean_pool,
    generator_flops,
    latent_visibility,
    sinusoidal_embedding,
)
from trajloom.flow.released import generator_config_from_section
from trajloom.vae.config import vae_preset


@pytest.fixture(autouse=True)
def one_thread():
    # These tensors are tiny: one thread is faster, and far faster on a busy machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_batch(config: GeneratorConfig, b: int = 2, seed: int = 0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    c = config
    shape = (b, c.fut_latent_frames, c.num_tokens, c.latent_channels)
    hist = (b, c.hist_latent_frames, c.num_tokens)
    x = torch.randn(shape, generator=gen)
    cond = FlowCondition(
        z_hist=torch.randn(*hist, c.latent_channels, generator=gen),
        hist_vis=(torch.rand(hist, generator=gen) > 0.2).float(),
        video=torch.randn(*hist, c.video_latent_channels, generator=gen)
        if c.use_video_cond
        else None,
        text=torch.randn(b, c.text_embed_dim, generator=gen) if c.use_text_cond else None,
    )
    t = torch.rand(b, generator=gen)
    return x.to(device), t.to(device), cond.to(device)


def perturb_zero_init(model: TrajLoomGenerator, seed: int = 0) -> None:
    # adaLN weights and hist_vis_proj start at zero, which blocks gradients to what feeds
    # them (the conditioning path, alpha_hist_vis); move them off zero as training would.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN" in name or "hist_vis_proj" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))


# --- shapes -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GENERATOR_PRESETS))
def test_shapes_for_every_preset(name):
    config = generator_preset(name)
    # the big presets run on the meta device: shapes without the arithmetic
    device = "cpu" if name == "tiny" else "meta"
    with torch.device(device):
        model = TrajLoomGenerator(config)
    x, t, cond = make_batch(config, b=2)
    x, t, cond = x.to(device), t.to(device), cond.to(device)
    v = model(x, t, cond)
    assert v.shape == x.shape
    assert v.device.type == device
    # without the optional inputs
    v = model(x, t, FlowCondition(cond.z_hist))
    assert v.shape == x.shape


def test_paper_preset_is_the_released_architecture():
    c = generator_preset("paper")
    assert (c.depth, c.hidden_size, c.num_heads, c.mlp_ratio) == (16, 768, 12, 4.0)
    assert (c.num_tokens, c.grid_h, c.grid_w) == (390, 15, 26)
    assert (c.hist_latent_frames, c.fut_latent_frames, c.latent_channels) == (21, 21, 16)
    assert (c.video_ctx_mode, c.track_fusion, c.spatial_ctx_pool) == (
        "concat",
        "add_last_plus_vel",
        1,
    )
    assert c.grid == GridSpec()


def test_scalar_time_broadcasts():
    config = generator_preset("tiny")
    model = TrajLoomGenerator(config).eval()
    x, _, cond = make_batch(config)
    with torch.no_grad():
        a = model(x, torch.tensor(0.3), cond)
        b = model(x, torch.full((2,), 0.3), cond)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_inputs_are_reported():
    config = generator_preset("tiny")
    model = TrajLoomGenerator(config)
    x, t, cond = make_batch(config)
    with pytest.raises(ValueError, match="x must be"):
        model(x[:, :-1], t, cond)
    with pytest.raises(ValueError, match="z_hist"):
        model(x, t, FlowCondition(cond.z_hist[:, :-1]))
    with pytest.raises(ValueError, match="hist_vis"):
        model(x, t, FlowCondition(cond.z_hist, hist_vis=cond.hist_vis[..., :-1]))
    with pytest.raises(ValueError, match="video"):
        model(x, t, FlowCondition(cond.z_hist, video=cond.video[..., :-1]))
    with pytest.raises(ValueError, match="text"):
        model(x, t, FlowCondition(cond.z_hist, text=cond.text[:, :-1]))
    with pytest.raises(ValueError, match="t must be"):
        model(x, t[:1], cond)


def test_batch_elements_are_independent():
    config = generator_preset("tiny")
    model = TrajLoomGenerator(config).eval()
    perturb_zero_init(model)
    x, t, cond = make_batch(config, b=3)
    with torch.no_grad():
        full = model(x, t, cond)
        one = model(
            x[1:2],
            t[1:2],
            FlowCondition(cond.z_hist[1:2], cond.hist_vis[1:2], cond.video[1:2], cond.text[1:2]),
        )
    torch.testing.assert_close(full[1:2], one, rtol=1e-5, atol=1e-6)


# --- training ---------------------------------------------------------------------


def test_tiny_generator_overfits_one_batch():
    # Rectified flow on one batch: x_t = (1 - t) x0 + t x1, target x1 - x0, with the noise
    # and times fixed, so that the regression has an exact solution to overfit.
    torch.manual_seed(0)
    config = generator_preset("tiny")
    model = TrajLoomGenerator(config)
    x1, _, cond = make_batch(config, b=2, seed=1)
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(x1.shape, generator=gen)
    t = torch.tensor([0.25, 0.7])
    xt = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * x1
    target = x1 - x0
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = (model(xt, t, cond) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.02 * losses[0], (losses[0], losses[-1])


def test_gradients_reach_every_parameter():
    config = generator_preset("tiny", video_fusion="add_last")
    model = TrajLoomGenerator(config)
    perturb_zero_init(model)
    x, t, cond = make_batch(config)
    model(x, t, cond).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_activation_checkpointing_gives_the_same_outputs_and_gradients():
    config = generator_preset("tiny")
    torch.manual_seed(0)
    plain = TrajLoomGenerator(config)
    perturb_zero_init(plain)
    ckpt = TrajLoomGenerator(config.replace(activation_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.activation_checkpointing
    x, t, cond = make_batch(config)
    out_a = plain(x, t, cond)
    out_b = ckpt(x, t, cond)
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    out_a.square().mean().backward()
    out_b.square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)


# --- the history-fusion ablation switch -------------------------------------------


def _fusion_pair():
    config = generator_preset("tiny")
    torch.manual_seed(3)
    on = TrajLoomGenerator(config)
    torch.manual_seed(3)
    off = TrajLoomGenerator(config.replace(use_history_fusion=False))
    perturb_zero_init(on)
    off.load_state_dict(on.state_dict())
    return config, on, off


def test_history_fusion_switch_keeps_parameters():
    config = generator_preset("tiny")
    torch.manual_seed(3)
    on = TrajLoomGenerator(config).state_dict()
    torch.manual_seed(3)
    off = TrajLoomGenerator(config.replace(use_history_fusion=False)).state_dict()
    # same keys, same initial values: the switch changes no weight, only the forward pass
    assert on.keys() == off.keys()
    for k in on:
        torch.testing.assert_close(on[k], off[k], rtol=0, atol=0, msg=k)


def test_history_fusion_adds_exactly_the_boundary_hint():
    config, on, _ = _fusion_pair()
    _, _, cond = make_batch(config)
    ctx_track, ctx_video = on.history_context(cond)
    added = on.history_fusion(ctx_track, ctx_video)
    # by hand: c = hist_track_proj(z_hist) + alpha * hist_vis_proj(vis)
    c = on.hist_track_proj(cond.z_hist) + on.alpha_hist_vis * on.hist_vis_proj(
        cond.hist_vis[..., None]
    )
    tf = config.fut_latent_frames
    expected = torch.stack(
        [
            on.track_fusion_scale
            * torch.sigmoid(on.track_fusion_gate_logit[k])
            * (c[:, -1] + (k / (tf - 1)) * (c[:, -1] - c[:, -2]))
            for k in range(tf)
        ],
        dim=1,
    )
    torch.testing.assert_close(added, expected, rtol=1e-5, atol=1e-6)


def test_history_fusion_switch_changes_only_the_fusion():
    config, on, off = _fusion_pair()
    x, t, cond = make_batch(config)
    assert off.history_fusion(*off.history_context(cond)) is None
    with torch.no_grad():
        v_on, v_off = on(x, t, cond), off(x, t, cond)
        assert (v_on - v_off).abs().max() > 1e-4  # the switch matters...
        on.track_fusion_scale.zero_()  # ...and is exactly the fusion term: without it, equal
        torch.testing.assert_close(on(x, t, cond), v_off, rtol=0, atol=0)
    # off: the fusion parameters get no gradient, everything else the same as before
    off(x, t, cond).square().mean().backward()
    assert off.track_fusion_scale.grad is None
    assert off.track_fusion_gate_logit.grad is None


def test_add_last_mode_has_no_velocity_term():
    config = generator_preset("tiny", track_fusion="add_last")
    model = TrajLoomGenerator(config)
    _, _, cond = make_batch(config)
    ctx_track, _ = model.history_context(cond)
    added = model.history_fusion(ctx_track, None)
    gate = torch.sigmoid(model.track_fusion_gate_logit).view(1, -1, 1, 1)
    torch.testing.assert_close(added, model.track_fusion_scale * gate * ctx_track[:, -1:])


# --- pieces -------------------------------------------------------------------------


def test_condition_vector_formula():
    config = generator_preset("tiny")
    model = TrajLoomGenerator(config)
    _, t, cond = make_batch(config)
    d = config.hidden_size
    temb = sinusoidal_embedding(t, d)
    expected = (
        model.time_mlp(temb)
        + model.text_proj(cond.text)
        + model.beta_video_cond * model.video_global_proj(cond.video.mean(dim=(1, 2)))
        + model.beta_track_cond
        * model.track_global_proj(
            torch.cat([cond.z_hist.mean(dim=(1, 2)), cond.z_hist[:, -1].mean(dim=1)], dim=-1)
        )
    )
    torch.testing.assert_close(model.condition_vector(t, cond), expected)


def test_sinusoidal_embedding_is_cos_then_sin_with_t_unscaled():
    t = torch.tensor([0.0, 0.5, 1.0])
    emb = sinusoidal_embedding(t, 8)
    freqs = torch.tensor([10000 ** (-k / 4) for k in range(4)])
    torch.testing.assert_close(emb[:, :4], torch.cos(t[:, None] * freqs))
    torch.testing.assert_close(emb[:, 4:], torch.sin(t[:, None] * freqs))
    assert sinusoidal_embedding(t, 7).shape == (3, 7)
    assert (sinusoidal_embedding(t, 7)[:, -1] == 0).all()


def test_absolute_time_embeddings_put_the_future_after_the_history():
    c = generator_preset("tiny")
    model = TrajLoomGenerator(c)
    hist = torch.arange(c.hist_latent_frames) * 4.0
    fut = c.num_frames + torch.arange(c.fut_latent_frames) * 4.0
    torch.testing.assert_close(model.abs_time_embed_hist, sinusoidal_embedding(hist, c.hidden_size))
    torch.testing.assert_close(model.abs_time_embed_fut, sinusoidal_embedding(fut, c.hidden_size))
    # non-persistent, as released: not in the state dict
    assert not any("abs_time" in k for k in model.state_dict())


def test_initialization_follows_the_release():
    c = generator_preset("tiny")
    model = TrajLoomGenerator(c)
    d = c.hidden_size
    for block in model.blocks:
        assert (block.adaLN[1].weight == 0).all()
        bias = block.adaLN[1].bias.view(9, d)
        assert (bias[[2, 5, 8]] == 1).all() and (bias[[0, 1, 3, 4, 6, 7]] == 0).all()
    torch.testing.assert_close(
        torch.sigmoid(model.track_fusion_gate_logit),
        torch.linspace(0.95, 0.35, c.fut_latent_frames),
    )
    assert model.track_fusion_scale.item() == pytest.approx(0.1)
    assert (model.hist_vis_proj.weight == 0).all() and (model.hist_vis_proj.bias == 0).all()


def test_shared_context_cross_attention_equals_per_group():
    torch.manual_seed(0)
    xattn = CrossAttention(32, 4)
    x = torch.randn(2, 5, 7, 32)
    ctx = torch.randn(2, 1, 9, 32)
    shared = xattn(x, ctx)
    per_group = xattn(x, ctx.expand(2, 5, 9, 32).contiguous())
    torch.testing.assert_close(shared, per_group, rtol=1e-5, atol=1e-6)


def test_block_mean_pool_ceil_semantics():
    x = torch.arange(3 * 4, dtype=torch.float32).view(1, 3, 4, 1)
    pooled = block_mean_pool(x, 2)[0, ..., 0]
    expected = torch.tensor(
        [[(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4], [(8 + 9) / 2, (10 + 11) / 2]]
    )
    torch.testing.assert_close(pooled, expected)


def test_latent_visibility_any_over_frame_blocks():
    gen = torch.Generator().manual_seed(0)
    vis = torch.rand(2, 81, 6, generator=gen) > 0.9
    lat = latent_visibility(vis)
    assert lat.shape == (2, 21, 6) and lat.dtype == torch.float32
    for k in range(21):
        block = vis[:, 4 * k : 4 * k + 4]
        torch.testing.assert_close(lat[:, k], block.any(dim=1).float())
    assert (lat[:, 20] == vis[:, 80].float()).all()  # the last block is frame 80 alone


def test_latent_visibility_patch_any_is_a_no_op_on_the_grid():
    # The release then takes any-visible over each stride x stride patch of the dense
    # visibility raster; the raster copies each point's flag over its cell, so that is the
    # point's own flag.
    spec = GridSpec(width=128, height=96, stride=32)
    gen = torch.Generator().manual_seed(1)
    tracks = torch.rand(1, 9, spec.num_points, 2, generator=gen) * torch.tensor([127.0, 95.0])
    vis = torch.rand(1, 9, spec.num_points, generator=gen) > 0.5
    _, mask = rasterize(tracks, vis, spec)  # "b t h w"
    patches = mask.view(1, 9, spec.grid_h, 32, spec.grid_w, 32).any(dim=5).any(dim=3)
    assert torch.equal(patches.reshape(1, 9, -1), vis)


# --- config -------------------------------------------------------------------------


def test_config_json_round_trip_and_validation():
    for name in GENERATOR_PRESETS:
        c = generator_preset(name)
        assert GeneratorConfig.from_json(c.to_json()) == c
        json.loads(c.to_json())
    with pytest.raises(ValueError, match="depth"):
        GeneratorConfig(depth=3)
    with pytest.raises(ValueError, match="num_heads"):
        GeneratorConfig(hidden_size=100, num_heads=12)
    with pytest.raises(ValueError, match="multiples of stride"):
        generator_preset("paper", input_width=810)  # a previous key, mapped to grid.width
    with pytest.raises(ValueError, match=r"GeneratorConfig.num_frames: num_frames=80"):
        GeneratorConfig(num_frames=80)
    with pytest.raises(ValueError, match=r"GeneratorConfig.grid must be a"):
        GeneratorConfig(grid=(832, 480, 32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="video_ctx_mode"):
        GeneratorConfig(video_ctx_mode="mean")
    with pytest.raises(ValueError, match="unknown keys"):
        GeneratorConfig.from_dict({"hidden_sise": 8})
    with pytest.raises(ValueError, match="unknown generator preset"):
        generator_preset("huge")
    # released spelling: one T for both, track_fusion "none", legacy "dropout"
    released = {"num_frames_latent": 9, "num_frames_in": 33, "track_fusion": "none", "dropout": 0.1}
    c = generator_config_from_section(released)
    assert (c.hist_latent_frames, c.fut_latent_frames, c.use_history_fusion) == (9, 9, False)
    with pytest.raises(ValueError, match="num_frames_latent=9 does not match"):
        generator_config_from_section({"num_frames_latent": 9, "num_frames_in": 81})
    with pytest.raises(ValueError, match="generator_config_from_section"):
        GeneratorConfig.from_dict(released)


def test_geometry_defaults_and_presets():
    paper, small, tiny = (generator_preset(n) for n in ("paper", "small", "tiny"))
    assert (paper.grid, paper.num_frames, paper.temporal_factor) == (
        DEFAULT_GRID,
        DEFAULT_HISTORY,
        DEFAULT_TEMPORAL_FACTOR,
    )
    assert (paper.num_tokens, paper.hist_latent_frames, paper.fut_latent_frames) == (390, 21, 21)
    assert (small.grid, small.num_frames, small.hist_latent_frames) == (
        GridSpec(256, 192, 32),
        33,
        9,
    )
    assert (tiny.grid, tiny.num_frames, tiny.fut_latent_frames) == (GridSpec(128, 96, 32), 17, 5)
    assert tiny.latent_channels == 8 and small.latent_channels == 16
    # each preset pairs with the VAE preset of its name
    for name in GENERATOR_PRESETS:
        check_matches_vae(vae_preset(name), generator_preset(name))


# config.json as save_pretrained wrote the tiny generator before issue 13.
PREVIOUS_TINY = {
    **{k: v for k, v in generator_preset("tiny").to_dict().items() if k != "grid"},
    "input_width": 128,
    "input_height": 96,
    "patch_size": 32,
    "hist_latent_frames": 5,
    "fut_latent_frames": 5,
    "latent_time_stride": 4,
}
PREVIOUS_TINY["num_frames_in"] = PREVIOUS_TINY.pop("num_frames")
PREVIOUS_TINY.pop("temporal_factor")


def test_previous_config_layout_still_loads(tmp_path):
    assert "grid" not in PREVIOUS_TINY and "num_frames_in" in PREVIOUS_TINY
    assert GeneratorConfig.from_dict(PREVIOUS_TINY) == generator_preset("tiny")
    c = generator_preset("tiny", num_frames_in=9, hist_latent_frames=3, fut_latent_frames=3)
    assert (c.num_frames, c.hist_latent_frames) == (9, 3)
    with pytest.raises(
        ValueError, match=r"hist_latent_frames=4 does not follow from num_frames=17"
    ):
        GeneratorConfig.from_dict({**PREVIOUS_TINY, "hist_latent_frames": 4})
    # the old aliases read the new fields
    t = generator_preset("tiny")
    assert (t.input_width, t.input_height, t.patch_size) == (128, 96, 32)
    assert (t.num_frames_in, t.latent_time_stride) == (17, 4)
    # a generator folder saved in the previous layout loads
    folder = save_pretrained(TrajLoomGenerator(t), tmp_path / "gen")
    payload = json.loads((folder / "config.json").read_text())
    payload["config"] = PREVIOUS_TINY
    (folder / "config.json").write_text(json.dumps(payload))
    assert load_generator(folder).config == t


def test_for_vae_derives_the_geometry():
    vae = vae_preset("small")
    gen = generator_preset("tiny").for_vae(vae)
    assert (gen.grid, gen.num_frames, gen.latent_channels) == (vae.grid, 33, 16)
    assert gen.hidden_size == generator_preset("tiny").hidden_size
    no_tc = vae.replace(temporal_compression=False, num_frames=6)
    gen = generator_preset("tiny").for_vae(no_tc)
    assert gen.temporal_factor == 1 and gen.hist_latent_frames == no_tc.latent_frames == 6
    with pytest.raises(ValueError, match=r"generator.latent_channels=8 vs vae 16"):
        check_matches_vae(vae, generator_preset("small", latent_channels=8))


# --- FLOPs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"video_ctx_mode": "sum"},
        {"spatial_ctx_pool": 2, "spatial_ctx_last_k": 2},
        {"spatial_ctx_mode": "time_mean"},
        {"spatial_ctx_mode": "none"},
        {"use_video_cond": False, "use_text_cond": False, "use_hist_vis_cond": False},
    ],
)
def test_generator_flops_equal_measured_matmul_flops(overrides):
    # torch's FlopCounterMode counts exactly the matmuls and attention the docstring lists
    config = generator_preset("tiny", **overrides)
    model = TrajLoomGenerator(config)
    x, t, cond = make_batch(config, b=3)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t, cond)
    assert generator_flops(config, batch=3) == counter.get_total_flops()


def test_mixed_precision_hands_one_dtype_to_attention(monkeypatch):
    # Under autocast q and k leave their RMSNorm in float32 on CUDA; the model casts them
    # back to v's dtype. Here: bfloat16 autocast on the CPU, every attention call recorded.
    import trajloom.flow.model as model_module

    seen = []
    real = model_module.attention

    def recording(q, k, v, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(model_module, "attention", recording)
    config = generator_preset("tiny")
    model = TrajLoomGenerator(config)
    x, t, cond = make_batch(config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = model(x, t, cond)
    assert torch.isfinite(v.float()).all()
    assert len(seen) == 2 * config.depth  # self + cross attention in every block
    assert all(q == k == v for q, k, v in seen)
    q, k = model_module._qk_norm(torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8), torch.bfloat16)
    assert q.dtype == k.dtype == torch.bfloat16


def test_condition_helpers_and_gate_statistic():
    config = generator_preset("tiny")
    model = TrajLoomGenerator(config).eval()
    perturb_zero_init(model)
    x, t, cond = make_batch(config, b=2)
    rep = cond.repeat_interleave(3)
    assert rep.batch_size == 6 and torch.equal(
        rep.z_hist[3:6], cond.z_hist[1:2].expand(3, -1, -1, -1)
    )
    half = cond.to(dtype=torch.float64)
    assert half.z_hist.dtype == torch.float64 and half.text.dtype == torch.float64
    with torch.no_grad():
        v = model(x.repeat_interleave(3, 0), t.repeat_interleave(3), rep)
        torch.testing.assert_close(v[::3], model(x, t, cond), rtol=1e-5, atol=1e-6)
    # the released diagnostic: mean |gate_xattn| over spatial (even) and temporal (odd) blocks
    spatial, temporal = model.xattn_gates(t, cond)
    vec = model.condition_vector(t, cond)
    gates = [blk.adaLN(vec).chunk(9, dim=-1)[5].abs().mean() for blk in model.blocks]
    torch.testing.assert_close(spatial, torch.stack(gates[0::2]).mean())
    torch.testing.assert_close(temporal, torch.stack(gates[1::2]).mean())


@pytest.mark.slow
def test_compiles_as_one_graph():
    # torch.compile(fullgraph=True) fails on any graph break: the generator stays compilable
    # (minutes on 2 CPU cores, hence slow).
    config = generator_preset("tiny")
    model = TrajLoomGenerator(config)
    x, t, cond = make_batch(config)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x, t, cond), model(x, t, cond), rtol=1e-4, atol=1e-5)

"""Released-checkpoint compatibility of the generator, without the released code.

The released key names and shapes are written out here from reading the released
``models/trajloom_generator.py``; a checkpoint in the released format is built from
them (random tensors, not from our model), loaded strictly through ``from_released``,
and the outputs are compared with a reference forward pass written here, step by step,
from the released formulas (repeated conditioning per token group, expanded spatial
context, plain softmax attention), in float64.
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
import torch.nn.functional as F

from trajloom.flow.config import generator_preset
from trajloom.flow.model import FlowCondition, TrajLoomGenerator
from trajloom.flow.released import (
    from_released,
    generator_config_from_section,
    read_released_state_dict,
)

# A tiny released-style "generator" section (legacy "dropout" included), as in the file.
TINY_RELEASED = {
    "latent_channels": 4,
    "num_frames_latent": 5,
    "input_height": 96,
    "input_width": 128,
    "patch_size": 32,
    "hidden_size": 32,
    "num_heads": 4,
    "depth": 2,
    "mlp_ratio": 4.0,
    "dropout": 0.0,
    "video_latent_channels": 3,
    "use_video_cond": True,
    "text_embed_dim": 12,
    "use_text_cond": True,
    "num_frames_in": 17,
    "latent_time_stride": 4,
    "use_overlap": False,
    "temporal_first": True,
    "spatial_ctx_mode": "pooled_last",
    "spatial_ctx_pool": 1,
    "spatial_ctx_last_k": 1,
    "spatial_ctx_include_video": True,
    "video_ctx_mode": "concat",
    "track_fusion": "add_last_plus_vel",
    "track_fusion_scale_init": 0.1,
    "track_fusion_use_time_gate": True,
    "video_fusion": "none",
    "video_fusion_scale_init": 0.05,
    "use_hist_vis_cond": True,
    "hist_vis_scale_init": 1.0,
}


@pytest.fixture(autouse=True)
def one_thread():
    # These tensors are tiny: one thread is faster, and far faster on a busy machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def released_shapes(g: dict) -> dict[str, tuple[int, ...]]:
    """Every persistent state-dict entry of the released TrajLoomGenerator, with its shape."""
    d, c, cv = g["hidden_size"], g["latent_channels"], g["video_latent_channels"]
    n = (g["input_height"] // g["patch_size"]) * (g["input_width"] // g["patch_size"])
    t = g["num_frames_latent"]
    hidden = int(d * g["mlp_ratio"])
    s: dict[str, tuple[int, ...]] = {}

    def linear(name, i, o):
        s[f"{name}.weight"] = (o, i)
        s[f"{name}.bias"] = (o,)

    linear("in_proj", c, d)
    linear("hist_track_proj", c, d)
    if g["use_hist_vis_cond"]:
        linear("hist_vis_proj", 1, d)
        s["alpha_hist_vis"] = ()
    if g["use_video_cond"]:
        linear("hist_video_proj", cv, d)
        s["alpha_video_ctx"] = ()
    s["pos_embed"] = (1, n, d)
    s["seg_embed"] = (2, d)
    linear("time_mlp.0", d, 4 * d)
    linear("time_mlp.2", 4 * d, d)
    if g["use_text_cond"]:
        linear("text_proj", g["text_embed_dim"], d)
    if g["use_video_cond"]:
        linear("video_global_proj", cv, d)
        s["beta_video_cond"] = ()
    linear("track_global_proj", 2 * c, d)
    s["beta_track_cond"] = ()
    for i in range(g["depth"]):
        p = f"blocks.{i}"
        linear(f"{p}.attn.qkv", d, 3 * d)
        linear(f"{p}.attn.proj", d, d)
        linear(f"{p}.xattn.q", d, d)
        linear(f"{p}.xattn.kv", d, 2 * d)
        linear(f"{p}.xattn.proj", d, d)
        linear(f"{p}.mlp.fc1", d, hidden)
        linear(f"{p}.mlp.fc2", hidden, d)
        linear(f"{p}.adaLN.1", d, 9 * d)
    linear("out_proj", d, c)
    s["track_fusion_scale"] = ()
    if g["track_fusion_use_time_gate"]:
        s["track_fusion_gate_logit"] = (t,)
    if g["use_video_cond"] and g["video_fusion"] != "none":
        s["video_fusion_scale"] = ()
    return s


def random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        fan_in = shape[-1] if len(shape) == 2 else 1
        state[name] = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        if name.endswith("adaLN.1.bias"):
            state[name] = state[name] * 0.3 + 0.5  # gates well away from zero
    return state


# ---------------------------------------------------------------------------
# Reference forward pass from the released formulas
# ---------------------------------------------------------------------------


def ref_rms(x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def ref_linear(sd, name, x):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def ref_sincos(pos, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)
    args = pos.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def ref_mha(q, k, v, heads):
    """q: [B, Lq, D], k, v: [B, Lk, D]; QK RMSNorm per head; softmax attention."""
    b, lq, d = q.shape
    e = d // heads
    q = ref_rms(q.view(b, lq, heads, e).permute(0, 2, 1, 3))
    k = ref_rms(k.view(b, -1, heads, e).permute(0, 2, 1, 3))
    v = v.view(b, -1, heads, e).permute(0, 2, 1, 3)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(e), dim=-1)
    return (w @ v).permute(0, 2, 1, 3).reshape(b, lq, d)


def ref_block(sd, p, x, cond, ctx, heads):
    """x: [B', L, D]; cond: [B', D] (already repeated per group); ctx: [B', Lc, D] or None."""
    mods = ref_linear(sd, f"{p}.adaLN.1", F.silu(cond)).chunk(9, dim=-1)
    sh_a, sc_a, g_a, sh_x, sc_x, g_x, sh_m, sc_m, g_m = (m[:, None] for m in mods)
    h = ref_rms(x) * (1 + sc_a) + sh_a
    qkv = ref_linear(sd, f"{p}.attn.qkv", h)
    q, k, v = qkv.chunk(3, dim=-1)
    x = x + g_a * ref_linear(sd, f"{p}.attn.proj", ref_mha(q, k, v, heads))
    if ctx is not None:
        h = ref_rms(x) * (1 + sc_x) + sh_x
        q = ref_linear(sd, f"{p}.xattn.q", h)
        k, v = ref_linear(sd, f"{p}.xattn.kv", ctx).chunk(2, dim=-1)
        x = x + g_x * ref_linear(sd, f"{p}.xattn.proj", ref_mha(q, k, v, heads))
    h = ref_rms(x) * (1 + sc_m) + sh_m
    mlp = ref_linear(sd, f"{p}.mlp.fc2", F.gelu(ref_linear(sd, f"{p}.mlp.fc1", h)))
    return x + g_m * mlp


def ref_pool(x, pool):
    """Released deterministic ceil mean pooling, [B, C, H, W] -> [B, C, ceil(H/p), ceil(W/p)].

    Like the release, it sums in float32 whatever the input dtype.
    """
    orig = x.dtype
    x = x.float()
    b, c, h, w = x.shape
    ph, pw = (-h) % pool, (-w) % pool
    xs = F.pad(x, (0, pw, 0, ph))
    m = F.pad(torch.ones(b, 1, h, w, dtype=x.dtype), (0, pw, 0, ph))
    ho, wo = (h + ph) // pool, (w + pw) // pool
    sums = xs.reshape(b, c, ho, pool, wo, pool).sum(dim=(3, 5))
    cnt = m.reshape(b, 1, ho, pool, wo, pool).sum(dim=(3, 5)).clamp_min(1.0)
    return (sums / cnt).to(orig)


def ref_forward(sd, g, z_t, t, z_hist, hist_vis, z_video, text):
    """The released TrajLoomGenerator.forward, from its formulas, with dtype float64."""
    B, T, N, _ = z_t.shape
    D, H = g["hidden_size"], g["num_heads"]
    gh, gw = g["input_height"] // g["patch_size"], g["input_width"] // g["patch_size"]
    dt = sd["in_proj.weight"].dtype
    if g["use_video_cond"] and z_video is None:
        z_video = torch.zeros(B, T, N, g["video_latent_channels"], dtype=dt)
    x = ref_linear(sd, "in_proj", z_t)
    ctx_track = ref_linear(sd, "hist_track_proj", z_hist)
    if g["use_hist_vis_cond"]:
        vis = torch.zeros(B, T, N, 1, dtype=dt) if hist_vis is None else hist_vis[..., None]
        ctx_track = ctx_track + sd["alpha_hist_vis"] * ref_linear(sd, "hist_vis_proj", vis)
    ctx_video = ref_linear(sd, "hist_video_proj", z_video) if g["use_video_cond"] else None
    ctx_hist = ctx_track
    if ctx_video is not None:
        if g["video_ctx_mode"] == "sum":
            ctx_hist = ctx_track + sd["alpha_video_ctx"] * ctx_video
        else:
            ctx_hist = torch.cat([ctx_track, sd["alpha_video_ctx"] * ctx_video], dim=1)
    if g["track_fusion"] != "none":
        gate = 1.0
        if g["track_fusion_use_time_gate"]:
            gate = torch.sigmoid(sd["track_fusion_gate_logit"]).view(1, T, 1, 1)
        last = ctx_track[:, -1:]
        if g["track_fusion"] == "add_last":
            fused = last
        else:
            vel = (ctx_track[:, -1] - ctx_track[:, -2])[:, None]
            fused = last + torch.linspace(0, 1, T, dtype=dt).view(1, T, 1, 1) * vel
        x = x + (sd["track_fusion_scale"] * gate) * fused
    if g["use_video_cond"] and g["video_fusion"] == "add_last":
        gate = 1.0
        if g["track_fusion_use_time_gate"]:
            gate = torch.sigmoid(sd["track_fusion_gate_logit"]).view(1, T, 1, 1)
        x = x + (sd["video_fusion_scale"] * gate) * ctx_video[:, -1:]

    # conditioning vector
    temb = ref_sincos(t, D).to(dt)
    cond = ref_linear(sd, "time_mlp.2", F.silu(ref_linear(sd, "time_mlp.0", temb)))
    if g["use_text_cond"] and text is not None:
        cond = cond + ref_linear(sd, "text_proj", text)
    if g["use_video_cond"]:
        cond = cond + sd["beta_video_cond"] * ref_linear(
            sd, "video_global_proj", z_video.mean(dim=(1, 2))
        )
    gsum = torch.cat([z_hist.mean(dim=(1, 2)), z_hist[:, -1].mean(dim=1)], dim=-1)
    cond = cond + sd["beta_track_cond"] * ref_linear(sd, "track_global_proj", gsum)

    # embeddings
    stride = g["latent_time_stride"]
    fut_start = g["num_frames_in"] - 1 if g["use_overlap"] else g["num_frames_in"]
    hist_te = ref_sincos(torch.arange(T, dtype=torch.float32) * stride, D).to(dt)
    fut_te = ref_sincos(fut_start + torch.arange(T, dtype=torch.float32) * stride, D).to(dt)
    x = x + fut_te[None, :, None] + sd["seg_embed"][1] + sd["pos_embed"][:, None]
    ctx = ctx_hist
    tctx = ctx.shape[1]
    ctx = ctx + hist_te.repeat(tctx // T, 1)[None, :, None]
    ctx = ctx + sd["seg_embed"][0]
    ctx_temp = ctx.permute(0, 2, 1, 3).reshape(B * N, tctx, D)
    mode = g["spatial_ctx_mode"]
    if mode == "none":
        ctx_sp = None
    elif mode == "time_mean":
        ctx_sp = ctx.mean(dim=2)[:, None].expand(-1, T, -1, -1).reshape(B * T, tctx, D)
    else:
        k = max(1, min(g["spatial_ctx_last_k"], T))
        parts = [ctx[:, :T][:, -k:]]
        if g["spatial_ctx_include_video"] and tctx >= 2 * T:
            parts.append(ctx[:, T : 2 * T][:, -k:])
        sel = torch.cat(parts, dim=1)
        K = sel.shape[1]
        grid = sel.reshape(B * K, gh, gw, D).permute(0, 3, 1, 2)
        grid = ref_pool(grid, g["spatial_ctx_pool"])
        ho, wo = grid.shape[-2:]
        tokens = grid.permute(0, 2, 3, 1).reshape(B, K * ho * wo, D)
        pos = ref_pool(
            sd["pos_embed"].reshape(1, gh, gw, D).permute(0, 3, 1, 2), g["spatial_ctx_pool"]
        )
        tokens = tokens + pos.permute(0, 2, 3, 1).reshape(1, ho * wo, D).repeat(1, K, 1)
        ctx_sp = tokens[:, None].expand(-1, T, -1, -1).reshape(B * T, -1, D)

    def temporal(i, x):
        xt = x.permute(0, 2, 1, 3).reshape(B * N, T, D)
        xt = ref_block(sd, f"blocks.{i}", xt, cond.repeat_interleave(N, 0), ctx_temp, H)
        return xt.reshape(B, N, T, D).permute(0, 2, 1, 3)

    def spatial(i, x):
        xs = x.reshape(B * T, N, D)
        xs = ref_block(sd, f"blocks.{i}", xs, cond.repeat_interleave(T, 0), ctx_sp, H)
        return xs.reshape(B, T, N, D)

    for i in range(0, g["depth"], 2):
        if g["temporal_first"]:
            x = spatial(i, temporal(i + 1, x))
        else:
            x = temporal(i + 1, spatial(i, x))
    return ref_linear(sd, "out_proj", ref_rms(x))


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def _inputs(g, seed, *, with_vis=True, with_video=True, with_text=True):
    gen = torch.Generator().manual_seed(seed)
    n = (g["input_height"] // g["patch_size"]) * (g["input_width"] // g["patch_size"])
    shape = (2, g["num_frames_latent"], n, g["latent_channels"])
    z_t = torch.randn(shape, generator=gen, dtype=torch.float64)
    z_hist = torch.randn(shape, generator=gen, dtype=torch.float64)
    vis = (torch.rand(shape[:3], generator=gen) > 0.3).double() if with_vis else None
    video = None
    if with_video and g["use_video_cond"]:
        video = torch.randn(
            *shape[:3], g["video_latent_channels"], generator=gen, dtype=torch.float64
        )
    text = None
    if with_text and g["use_text_cond"]:
        text = torch.randn(2, g["text_embed_dim"], generator=gen, dtype=torch.float64)
    t = torch.tensor([0.13, 0.77], dtype=torch.float64)
    return z_t, t, z_hist, vis, video, text


def _write_released(tmp_path, g, seed=0):
    state = random_state(released_shapes(g), seed)
    ckpt = tmp_path / "trajloom_generator.pt"
    torch.save({"generator": state, "step": 123}, ckpt)
    full = {"data": {"hist_len": 81}, "generator": g, "train": {"x0_mode": "anchor_first"}}
    cfg = tmp_path / "trajloom_generator_config.json"
    cfg.write_text(json.dumps(full))
    return ckpt, cfg, state


VARIANTS = {
    "released": {},
    "sum_pool2_addlast": {
        "video_ctx_mode": "sum",
        "spatial_ctx_pool": 2,
        "spatial_ctx_last_k": 2,
        "track_fusion": "add_last",
        "video_fusion": "add_last",
    },
    "time_mean_spatial_first_overlap": {
        "spatial_ctx_mode": "time_mean",
        "temporal_first": False,
        "use_overlap": True,
        "track_fusion_use_time_gate": False,
    },
    "no_video_no_text_no_fusion": {
        "use_video_cond": False,
        "use_text_cond": False,
        "use_hist_vis_cond": False,
        "track_fusion": "none",
        "spatial_ctx_mode": "none",
    },
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_strict_released_load_matches_reference(tmp_path, variant):
    g = {**TINY_RELEASED, **VARIANTS[variant]}
    ckpt, cfg, state = _write_released(tmp_path, g)
    model = from_released(ckpt, cfg)
    # strict: exactly the released keys, nothing more (non-persistent buffers excluded)
    assert set(model.state_dict()) == set(state)
    model = model.double()
    sd = {k: v.double() for k, v in state.items()}
    flag_sets = [{}]
    if variant == "released":  # and the inputs the released sampling script leaves out
        flag_sets.append({"with_vis": False, "with_video": False, "with_text": False})
    for flags in flag_sets:
        z_t, t, z_hist, vis, video, text = _inputs(g, seed=1, **flags)
        with torch.no_grad():
            ours = model(z_t, t, FlowCondition(z_hist, vis, video, text))
        ref = ref_forward(sd, g, z_t, t, z_hist, vis, video, text)
        # Pooling sums in float32 (as released); with pool > 1 the order of that float32
        # sum is the kernel's, so allow float32 rounding there.
        tol = 1e-9 if g["spatial_ctx_pool"] == 1 else 1e-6
        torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)


def test_reference_depends_on_every_released_tensor():
    # Guards the comparison above: the reference output depends on every released tensor
    # (a nonzero gradient for each), so equality with it checks every loaded weight.
    # (the other variants switch paths off, leaving some released tensors unused by design)
    for variant in ("released", "sum_pool2_addlast"):
        g = {**TINY_RELEASED, **VARIANTS[variant]}
        state = {
            k: v.double().requires_grad_() for k, v in random_state(released_shapes(g), 0).items()
        }
        z_t, t, z_hist, vis, video, text = _inputs(g, seed=1)
        out = ref_forward(state, g, z_t, t, z_hist, vis, video, text)
        weights = torch.randn(
            out.shape, generator=torch.Generator().manual_seed(2), dtype=out.dtype
        )
        grads = torch.autograd.grad((out * weights).sum(), list(state.values()), allow_unused=True)
        for name, grad in zip(state, grads, strict=True):
            assert grad is not None and grad.abs().sum() > 0, name


def test_paper_preset_has_the_released_keys_and_shapes():
    released = json.loads(json.dumps(TINY_RELEASED))
    released.update(
        latent_channels=16,
        num_frames_latent=21,
        input_height=480,
        input_width=832,
        hidden_size=768,
        num_heads=12,
        depth=16,
        video_latent_channels=16,
        text_embed_dim=4096,
        num_frames_in=81,
    )
    # the released configs/trajloom_generator_config.json "generator" section == "paper"
    assert generator_config_from_section(released) == generator_preset("paper")
    with torch.device("meta"):
        model = TrajLoomGenerator(generator_preset("paper"))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == released_shapes(released)
    assert sum(v.numel() for v in model.state_dict().values()) > 2e8


def test_missing_or_unexpected_keys_are_errors(tmp_path):
    g = dict(TINY_RELEASED)
    state = random_state(released_shapes(g), 0)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"generator": g}))
    missing = dict(state)
    missing.pop("blocks.1.xattn.kv.weight")
    torch.save({"generator": missing}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="missing keys"):
        from_released(tmp_path / "a.pt", cfg)
    extra = dict(state, **{"blocks.0.norm1.weight": torch.ones(32)})
    torch.save({"generator": extra}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="unexpected keys"):
        from_released(tmp_path / "b.pt", cfg)


def test_checkpoint_layouts_and_weights_only(tmp_path):
    state = {"w": torch.ones(2)}
    torch.save({"model": state}, tmp_path / "m.pt")
    assert set(read_released_state_dict(tmp_path / "m.pt")) == {"w"}
    torch.save(state, tmp_path / "bare.pt")
    assert set(read_released_state_dict(tmp_path / "bare.pt")) == {"w"}

    # a pickled argparse namespace beside the weights: weights_only refuses to unpickle it
    torch.save({"generator": state, "args": argparse.Namespace(lr=1.0)}, tmp_path / "pickled.pt")
    with pytest.raises(Exception, match=r"(?i)weights_only|unsupported|global"):
        read_released_state_dict(tmp_path / "pickled.pt")

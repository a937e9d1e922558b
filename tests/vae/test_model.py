"""TrajLoom-VAE model: shapes, per-cell == dense input path, patch layout, gradients."""

from __future__ import annotations

import math

import pytest
import torch

import trajloom.vae as tv
from trajloom.encoding import (
    cell_anchors,
    denormalize,
    normalize,
    rasterize,
    read_back,
    unpatchify,
)


def _perturbed(config: tv.VAEConfig, seed: int = 0) -> tv.TrajLoomVAE:
    """A model whose zero-initialized gates and output layer are made non-zero, so that
    every parameter influences the output."""
    torch.manual_seed(seed)
    model = tv.TrajLoomVAE(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gate" in name or name.startswith("final_layer"):
                p.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_shapes(preset, make_tracks):
    cfg = tv.vae_preset(preset)
    model = tv.TrajLoomVAE(cfg)
    tracks, vis = make_tracks(cfg.grid, cfg.num_frames, batch=1)
    with torch.no_grad():
        out = model(normalize(tracks, cfg.grid), vis)
    n, s2 = cfg.num_tokens, cfg.stride**2
    assert out.posterior.mean.shape == (1, cfg.latent_frames, n, cfg.latent_channels)
    assert out.z.shape == out.posterior.mean.shape
    assert out.recon.shape == (1, cfg.num_frames, n, s2, 2)
    assert model.decode_tracks(out.z).shape == tracks.shape
    for term in ("total", "recon", "kl", "velocity", "neighbor"):
        assert torch.isfinite(getattr(out.losses, term))


def test_paper_shapes_on_meta_device():
    cfg = tv.vae_preset("paper")
    with torch.device("meta"):
        model = tv.TrajLoomVAE(cfg)
        post = model.encode(torch.zeros(1, 81, 390, 2))
        recon = model.decode(post.mean)
    assert post.mean.shape == (1, 21, 390, 16)
    assert recon.shape == (1, 81, 390, 32 * 32, 2)
    n_params = sum(p.numel() for p in model.parameters())
    assert 100e6 < n_params < 115e6  # ~107M: 32 blocks of 12 d^2 plus the heads


@pytest.mark.parametrize("use_offsets", [True, False])
def test_per_cell_input_equals_dense_input(use_offsets, make_tracks):
    cfg = tv.vae_preset("tiny", use_offsets=use_offsets)
    model = _perturbed(cfg)
    tracks, vis = make_tracks(cfg.grid, cfg.num_frames)
    field, _ = rasterize(tracks, vis, cfg.grid)
    with torch.no_grad():
        a = model.encode(normalize(tracks, cfg.grid))
        b = model.encode_dense(field)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.logvar, b.logvar, rtol=1e-5, atol=1e-5)


def test_decoder_patch_layout_is_row_column_xy():
    """Output unit f of final_layer lands at (row, col, xy) = divmod chain of f, like the
    released unpatchify (view(.., p, p, c).permute(0, 5, 1, 3, 2, 4))."""
    cfg = tv.vae_preset("tiny", use_offsets=False)
    model = tv.TrajLoomVAE(cfg)
    s = cfg.stride
    with torch.no_grad():
        model.final_layer.bias.copy_(torch.arange(s * s * 2, dtype=torch.float32))
        z = torch.zeros(1, cfg.latent_frames, cfg.num_tokens, cfg.latent_channels)
        dense = unpatchify(model.decode(z), cfg.grid)  # "b t 2 h w"
    for row, col, xy in [(0, 0, 0), (0, 1, 1), (1, 0, 0), (3, 17, 1), (s - 1, s - 1, 1)]:
        expected = (row * s + col) * 2 + xy
        # every cell holds the same pattern; check cell (1, 2)
        assert dense[0, 0, xy, s + row, 2 * s + col] == expected


def test_offsets_switch():
    """Zero output layer: with offsets the reconstruction is the anchor grid, without it 0."""
    for use_offsets in (True, False):
        cfg = tv.vae_preset("tiny", use_offsets=use_offsets)
        model = tv.TrajLoomVAE(cfg)
        assert ("offset_anchor_grid" in model.state_dict()) == use_offsets
        z = torch.randn(1, cfg.latent_frames, cfg.num_tokens, cfg.latent_channels)
        with torch.no_grad():
            recon = model.decode(z)
        expected = (
            cell_anchors(cfg.grid).expand_as(recon) if use_offsets else torch.zeros_like(recon)
        )
        torch.testing.assert_close(recon, expected)


def test_decode_query_and_tracks_read_the_query_pixel():
    cfg = tv.vae_preset("tiny")
    model = _perturbed(cfg)
    z = 3 * torch.randn(2, cfg.latent_frames, cfg.num_tokens, cfg.latent_channels)
    with torch.no_grad():
        full = model.decode(z)
        query = model.decode_query(z)
        tracks = model.decode_tracks(z)
    torch.testing.assert_close(query, full[..., 0, :], rtol=1e-5, atol=1e-6)
    dense = unpatchify(full, cfg.grid).clamp(-1, 1)
    expected = denormalize(read_back(dense, cfg.grid), cfg.grid)
    torch.testing.assert_close(tracks, expected, rtol=1e-5, atol=1e-4)  # pixels
    assert tracks.min() >= 0 and tracks[..., 0].max() <= cfg.width


def test_gradients_reach_every_parameter(make_tracks):
    cfg = tv.vae_preset("tiny")
    model = _perturbed(cfg)
    tracks, vis = make_tracks(cfg.grid, cfg.num_frames)
    out = model(normalize(tracks, cfg.grid), vis, torch.Generator().manual_seed(0))
    out.losses.total.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"
        else:  # the release's frozen tables, and the unused norm2
            assert name in {"pos_embed", "temp_embed_in", "patch_pos_lff.w"} or ".norm2." in name


def test_gradient_checkpointing_gives_the_same_gradients(make_tracks):
    cfg = tv.vae_preset("tiny")
    tracks, vis = make_tracks(cfg.grid, cfg.num_frames, batch=1)
    grads = []
    for ckpt in (False, True):
        model = _perturbed(cfg.replace(gradient_checkpointing=ckpt))
        model.train()
        out = model(normalize(tracks, cfg.grid), vis, torch.Generator().manual_seed(0))
        out.losses.total.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-7)


def test_sampling_is_driven_by_the_generator(make_tracks):
    cfg = tv.vae_preset("tiny")
    model = _perturbed(cfg)
    tracks, _ = make_tracks(cfg.grid, cfg.num_frames, batch=1)
    x = normalize(tracks, cfg.grid)
    with torch.no_grad():
        a = model(x, generator=torch.Generator().manual_seed(5)).z
        b = model(x, generator=torch.Generator().manual_seed(5)).z
        c = model(x, generator=torch.Generator().manual_seed(6)).z
        m = model(x, sample=False)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    torch.testing.assert_close(m.z, m.posterior.mean)
    # the released posterior scale: softplus(0.5 * logvar) + 1e-8
    lv = m.posterior.logvar
    torch.testing.assert_close(m.posterior.std, torch.log1p(torch.exp(0.5 * lv)) + 1e-8)


def test_wrong_shapes_are_refused_with_the_expected_shape():
    cfg = tv.vae_preset("tiny")
    model = tv.TrajLoomVAE(cfg)
    with pytest.raises(ValueError, match=f"t={cfg.num_frames}"):
        model.encode(torch.zeros(1, cfg.num_frames - 4, cfg.num_tokens, 2))
    with pytest.raises(ValueError, match="z must be"):
        model.decode(torch.zeros(1, cfg.latent_frames, cfg.num_tokens, cfg.latent_channels + 1))
    with pytest.raises(ValueError, match="field must be"):
        model.encode_dense(torch.zeros(1, cfg.num_frames, 2, cfg.height, cfg.width + 32))


def _vepe(model, tracks, vis):
    with torch.no_grad():
        pred = model.decode_tracks(model.encode_tracks(tracks).mean)
    return (pred - tracks).norm(dim=-1)[vis].mean().item()


@pytest.mark.slow
def test_tiny_vae_overfits_one_batch(make_tracks):
    """The training path (posterior samples, full objective) fits one clip to < 0.5 px."""
    cfg = tv.vae_preset("tiny")
    torch.manual_seed(0)
    model = tv.TrajLoomVAE(cfg)
    tracks, vis = make_tracks(cfg.grid, cfg.num_frames, batch=1)
    x = normalize(tracks, cfg.grid)
    steps = 300
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps))
    )
    gen = torch.Generator().manual_seed(0)
    start = _vepe(model, tracks, vis)
    for _ in range(steps):
        loss = model(x, vis, gen).losses.total
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    end = _vepe(model, tracks, vis)
    assert start > 2.0  # the untrained model outputs the anchors: the motion is the error
    assert end < 0.5, f"VEPE after {steps} steps: {end:.3f} px (from {start:.2f})"


@pytest.mark.parametrize("changes", [{}, {"temporal_compression": False, "num_frames": 6}])
def test_analytic_flops_match_torch_flop_counter(changes):
    from torch.utils.flop_counter import FlopCounterMode

    from trajloom.vae.model import vae_flops

    cfg = tv.vae_preset("tiny", **changes)
    model = tv.TrajLoomVAE(cfg)
    x = torch.rand(2, cfg.num_frames, cfg.num_tokens, 2) * 2 - 1
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.decode(model.encode(x).mean)
    assert vae_flops(cfg, 2) == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_bf16_autocast_keeps_the_input_stage_and_anchors_in_fp32():
    cfg = tv.vae_preset("tiny")
    model = tv.TrajLoomVAE(cfg)
    with torch.no_grad():  # silence the Fourier-feature branch, a bf16 Linear under autocast
        model.patch_pos_proj.weight.zero_()
    x = torch.rand(1, cfg.num_frames, cfg.num_tokens, 2) * 2 - 1
    captured = []
    model.encoder_blocks[0].register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    with torch.no_grad():
        model.encode(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.encode(x)
            recon = model.decode(torch.zeros(1, cfg.latent_frames, cfg.num_tokens, 8))
    # the first block's input (patch embedding + positions) is exactly the fp32 one
    assert captured[1].dtype == torch.float32
    torch.testing.assert_close(captured[1], captured[0], rtol=0, atol=0)
    assert recon.dtype == torch.float32  # fp32 anchors: the zero-init offsets + exact anchors
    torch.testing.assert_close(recon, cell_anchors(cfg.grid).expand_as(recon))

"""VAE losses against hand-computed values on tiny inputs, and the ablation switches."""

from __future__ import annotations

import math

import pytest
import torch

import trajloom.vae as tv
from trajloom.encoding import GridSpec, broadcast_cells
from trajloom.vae.losses import (
    VAELossConfig,
    kl_loss,
    masked_huber,
    neighbor_consistency,
    vae_losses,
    velocity_consistency,
)
from trajloom.vae.model import DiagonalGaussian


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_masked_huber_by_hand():
    # one cell of k = 2 pixels, two frames; frame 1 is invisible and wildly wrong
    target = _t([[[[0.0, 0.0]], [[0.0, 0.0]]]])  # "b t n 2" = 1 2 1 2
    recon = _t([[[[[0.5, 0.0], [2.0, 0.0]]], [[[9.0, 9.0], [9.0, 9.0]]]]])  # 1 2 1 2 2
    vis = torch.tensor([[[True], [False]]])
    # Huber(0.5) = 0.125, Huber(2) = 2 - 0.5 = 1.5; / (1 cell * 2 px * 2 coords)
    torch.testing.assert_close(masked_huber(recon, target, vis), _t([(0.125 + 1.5) / 4]))


def test_velocity_consistency_by_hand():
    target = _t([[[[0, 0]], [[1, 0]], [[2, 0]]]])  # 1 3 1 2
    recon = _t([[[[0, 0]], [[1.5, 0]], [[2, 0.2]]]]).unsqueeze(-2)  # 1 3 1 1 2
    vis = torch.ones(1, 3, 1, dtype=torch.bool)
    # velocity errors (0.5, 0) and (-0.5, 0.2): Huber 0.125 + 0.125 + 0.02 over 2 pairs x 2 coords
    torch.testing.assert_close(velocity_consistency(recon, target, vis), _t([0.27 / 4]))
    vis[0, 2, 0] = False  # only the pair (0, 1) is valid
    torch.testing.assert_close(velocity_consistency(recon, target, vis), _t([0.125 / 2]))


def test_neighbor_consistency_by_hand():
    spec = GridSpec(width=3, height=1, stride=1)  # a row of three cells
    target = _t([[[[0, 0], [1, 0], [2, 0]]]])  # 1 1 3 2
    recon = _t([[[[0, 0], [1, 0], [3, 0]]]]).unsqueeze(-2)  # 1 1 3 1 2
    vis = torch.ones(1, 1, 3, dtype=torch.bool)
    # hop 1 (w 1): pairs (0,1) err 0, (1,2) err 1 -> 0.5; hop 2 (w 0.5): pair (0,2) err 1 -> 0.5
    # weighted: (1 * 0.5 + 0.5 * 0.5) / (1 * 2 pairs * 2 + 0.5 * 1 pair * 2) = 0.75 / 5
    got = neighbor_consistency(recon, target, vis, spec, hops=(1, 2), hop_weights=(1.0, 0.5))
    torch.testing.assert_close(got, _t([0.15]))
    vis[0, 0, 2] = False  # only (0, 1) is a valid pair, and it is exact
    got = neighbor_consistency(recon, target, vis, spec, hops=(1, 2), hop_weights=(1.0, 0.5))
    torch.testing.assert_close(got, _t([0.0]))


def test_neighbor_consistency_vertical_and_translation_invariant():
    spec = GridSpec(width=2, height=4, stride=1)
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 3, 8, 2, generator=g)
    vis = torch.rand(2, 3, 8, generator=g) > 0.3
    shifted = (target + torch.randn(2, 3, 1, 2, generator=g)).unsqueeze(-2)
    # a reconstruction that moves every point of a frame by the same amount keeps all relations
    torch.testing.assert_close(
        neighbor_consistency(shifted, target, vis, spec), torch.zeros(2), atol=1e-6, rtol=0
    )
    bent = shifted.clone()
    bent[:, :, 6] += 1.0  # cell (3, 0): only vertical pairs touch it at hops 1 and 2
    assert (neighbor_consistency(bent, target, torch.ones_like(vis), spec) > 0).all()


def test_kl_by_hand():
    mean = torch.ones(1, 1, 1, 1)
    post = DiagonalGaussian(mean, torch.zeros_like(mean))  # std = softplus(0) + 1e-8 = ln 2
    s = math.log(2) + 1e-8
    expected = 0.5 * (s * s + 1 - 1 - math.log(s * s))
    torch.testing.assert_close(kl_loss(post), _t([expected]))


def test_patch_level_terms_equal_dense_sums():
    """A reconstruction constant on each cell gives the same values as its query pixel."""
    spec = GridSpec(width=8, height=4, stride=2)
    g = torch.Generator().manual_seed(1)
    target = torch.randn(1, 5, spec.num_points, 2, generator=g)
    vis = torch.rand(1, 5, spec.num_points, generator=g) > 0.3
    per_cell = target + 0.3 * torch.randn(target.shape, generator=g)
    patch = broadcast_cells(per_cell, spec)
    query = per_cell.unsqueeze(-2)
    for fn in (masked_huber, velocity_consistency):
        torch.testing.assert_close(fn(patch, target, vis), fn(query, target, vis))
    torch.testing.assert_close(
        neighbor_consistency(patch, target, vis, spec),
        neighbor_consistency(query, target, vis, spec),
    )


def test_every_term_is_finite_when_nothing_is_visible():
    cfg = tv.vae_preset("tiny")
    model = tv.TrajLoomVAE(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05) if p.requires_grad else None
    x = torch.rand(1, cfg.num_frames, cfg.num_tokens, 2) * 2 - 1
    vis = torch.zeros(1, cfg.num_frames, cfg.num_tokens, dtype=torch.bool)
    out = model(x, vis, torch.Generator().manual_seed(0))
    for term in ("recon", "velocity", "neighbor"):
        assert getattr(out.losses, term).item() == 0.0
    assert torch.isfinite(out.losses.total)
    out.losses.total.backward()
    for p in model.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all()


def _fixture(seed=0):
    cfg = tv.vae_preset("tiny")
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, cfg.num_frames, cfg.num_tokens, 2, generator=g) * 2 - 1
    recon = broadcast_cells(target, cfg.grid) + 0.1 * torch.randn(
        2, cfg.num_frames, cfg.num_tokens, cfg.stride**2, 2, generator=g
    )
    vis = torch.rand(2, cfg.num_frames, cfg.num_tokens, generator=g) > 0.2
    post = DiagonalGaussian(
        torch.randn(2, 5, cfg.num_tokens, 8, generator=g), torch.zeros(2, 5, cfg.num_tokens, 8)
    )
    return cfg, recon.requires_grad_(True), target, vis, post


def test_paper_weights_and_the_regularizer_switch():
    cfg, recon, target, vis, post = _fixture()
    full = vae_losses(recon, target, vis, post, cfg.grid)
    assert VAELossConfig().velocity_weight == 0.1 and VAELossConfig().neighbor_weight == 0.2
    expected = full.recon + 5e-5 * full.kl + 0.1 * full.velocity + 0.2 * full.neighbor
    torch.testing.assert_close(full.total, expected)
    assert full.velocity > 0 and full.neighbor > 0

    off = vae_losses(recon, target, vis, post, cfg.grid, VAELossConfig(use_regularizer=False))
    torch.testing.assert_close(off.total, off.recon + 5e-5 * off.kl)
    torch.testing.assert_close(off.velocity, full.velocity)  # still reported
    assert not off.velocity.requires_grad and not off.neighbor.requires_grad


def test_query_pixel_mode_uses_only_the_query_pixel():
    cfg, recon, target, vis, post = _fixture()
    q = VAELossConfig(consistency_pixels="query")
    a = vae_losses(recon, target, vis, post, cfg.grid, q)
    noisy = recon.detach().clone()
    noisy[..., 1:, :] += 5.0  # move every pixel but the query pixel
    b = vae_losses(noisy, target, vis, post, cfg.grid, q)
    torch.testing.assert_close(a.velocity, b.velocity)
    torch.testing.assert_close(a.neighbor, b.neighbor)
    assert b.recon > a.recon  # the reconstruction term still sees every pixel


def test_loss_config_is_validated():
    with pytest.raises(ValueError, match="hop_weights"):
        VAELossConfig(hops=(1, 2), hop_weights=(1.0,))
    with pytest.raises(ValueError, match="consistency_pixels"):
        VAELossConfig(consistency_pixels="dense")
    with pytest.raises(ValueError, match="visibility"):
        masked_huber(torch.zeros(1, 2, 3, 4, 2), torch.zeros(1, 2, 3, 2), torch.ones(1, 2, 3))

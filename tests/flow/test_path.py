"""Flow path: boundary-anchored source, linear interpolation, velocity target."""

import pytest
import torch

from trajloom.flow.path import anchor_source, draw_source, interpolate, velocity_target


def _latents(b=2, t=5, n=6, c=3, seed=0):
    return torch.randn(b, t, n, c, generator=torch.Generator().manual_seed(seed))


def test_anchor_source_replaces_first_slice_only():
    noise, z_hist = _latents(seed=1), _latents(t=4, seed=2)
    xi = torch.randn(2, 1, 6, 3)
    x0 = anchor_source(noise, z_hist, xi, anchor_std=0.1)
    torch.testing.assert_close(x0[:, 0], z_hist[:, -1] + 0.1 * xi[:, 0])
    assert torch.equal(x0[:, 1:], noise[:, 1:])


def test_anchor_source_general_form_repeats_boundary_latent():
    noise, z_hist = _latents(seed=1), _latents(t=4, seed=2)
    x0 = anchor_source(noise, z_hist, torch.zeros(2, 5, 6, 3), anchor_std=0.1, anchor_slices=5)
    assert torch.equal(x0, z_hist[:, -1:].expand_as(noise))


def test_draw_source_follows_released_draw_order():
    z_hist = _latents(t=4, seed=3)
    x0 = draw_source(z_hist, 5, generator=torch.Generator().manual_seed(42))
    g = torch.Generator().manual_seed(42)
    expected = torch.randn(2, 5, 6, 3, generator=g)
    expected[:, 0:1] = z_hist[:, -1:] + torch.randn(2, 1, 6, 3, generator=g) * 0.1
    assert torch.equal(x0, expected)


def test_draw_source_without_anchoring_is_plain_noise():
    z_hist = _latents(t=4, seed=3) + 100.0
    x0 = draw_source(z_hist, 5, generator=torch.Generator().manual_seed(7), anchor=False)
    assert torch.equal(x0, torch.randn(2, 5, 6, 3, generator=torch.Generator().manual_seed(7)))


def test_interpolate_ends_and_midpoint():
    x0, x1 = _latents(seed=4), _latents(seed=5)
    torch.testing.assert_close(interpolate(x0, x1, torch.zeros(2)), x0)
    torch.testing.assert_close(interpolate(x0, x1, torch.ones(2)), x1)
    mid = interpolate(x0, x1, torch.tensor([0.5, 0.25]))
    torch.testing.assert_close(mid[0], 0.5 * (x0[0] + x1[0]))
    torch.testing.assert_close(mid[1], 0.75 * x0[1] + 0.25 * x1[1])


def test_interpolate_derivative_is_velocity_target():
    x0, x1 = _latents(seed=4), _latents(seed=5)
    t = torch.tensor([0.3, 0.6], requires_grad=True)
    xt = interpolate(x0, x1, t)
    (grad,) = torch.autograd.grad(xt.sum(), t)
    torch.testing.assert_close(grad, velocity_target(x0, x1).sum(dim=(1, 2, 3)))


def test_tube_noise_adds_sigma_noise():
    x0, x1, eps = _latents(seed=4), _latents(seed=5), _latents(seed=6)
    t = torch.tensor([0.2, 0.9])
    diff = interpolate(x0, x1, t, sigma=0.05, noise=eps) - interpolate(x0, x1, t)
    torch.testing.assert_close(diff, 0.05 * eps)
    with pytest.raises(ValueError, match="needs noise"):
        interpolate(x0, x1, t, sigma=0.05)

"""Samplers: Euler exact on a constant field, DOPRI5 against closed forms, grids."""

import math

import pytest
import torch

from trajloom.flow.samplers import (
    logit_time_grid,
    sample_dopri5,
    sample_euler,
    uniform_time_grid,
)


def test_uniform_grid_is_released_grid():
    grid = uniform_time_grid(10)
    assert grid.shape == (11,)
    assert torch.equal(grid, torch.linspace(0, 1, 11))


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_logit_grid_ends_monotone_and_denser_at_ends(steps):
    grid = logit_time_grid(steps, scale=3.0)
    assert grid[0] == 0.0 and grid[-1] == 1.0
    assert bool((grid[1:] > grid[:-1]).all())
    # symmetric about 1/2
    torch.testing.assert_close(grid, 1 - grid.flip(0), atol=1e-6, rtol=0)
    if steps >= 4:
        gaps = grid.diff()
        assert gaps[0] < gaps[steps // 2] and gaps[-1] < gaps[steps // 2]


def test_logit_grid_tends_to_uniform_for_small_scale():
    torch.testing.assert_close(
        logit_time_grid(8, scale=1e-4), uniform_time_grid(8), atol=1e-6, rtol=0
    )


def test_euler_exact_on_constant_field():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 5, 7, 2, generator=g)
    c = torch.randn(1, 5, 7, 2, generator=g)
    seen = []
    x1 = sample_euler(lambda x, t: c.expand_as(x), x0, logit_time_grid(7), callback=seen.append)
    torch.testing.assert_close(x1, x0 + c, atol=1e-6, rtol=0)
    assert [p.step for p in seen] == list(range(1, 8))
    assert seen[-1].t == pytest.approx(1.0) and seen[-1].total_steps == 7


def test_euler_passes_batch_times_from_the_grid():
    grid = uniform_time_grid(4)
    times = []

    def v(x, t):
        assert t.shape == (x.shape[0],)
        times.append(float(t[0]))
        return torch.zeros_like(x)

    sample_euler(v, torch.zeros(2, 3), grid)
    assert times == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_euler_first_order_on_linear_ode():
    # dx/dt = x: Euler with N steps gives exactly (1 + 1/N)^N
    x1 = sample_euler(lambda x, t: x, torch.ones(1, 1, dtype=torch.float64), uniform_time_grid(10))
    assert float(x1) == pytest.approx((1 + 0.1) ** 10, rel=1e-12)


def test_dopri5_matches_closed_form_linear_ode():
    # dx/dt = A x with a rotation-plus-decay A: x(1) = expm(A) x0
    a = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)
    x0 = torch.tensor([[1.0, -0.3], [0.2, 0.7]], dtype=torch.float64)
    seen = []
    x1, stats = sample_dopri5(lambda x, t: x @ a.T, x0, atol=1e-9, rtol=1e-9, callback=seen.append)
    exact = x0 @ torch.linalg.matrix_exp(a).T
    torch.testing.assert_close(x1, exact, atol=1e-8, rtol=0)
    assert stats.nfe == 2 + 6 * (stats.accepted + stats.rejected)
    assert stats.accepted == len(seen) and seen[-1].t == 1.0


def test_dopri5_time_dependent_closed_form_and_tolerance():
    # dx/dt = -2 t x: x(1) = x0 exp(-1)
    x0 = torch.linspace(-1, 2, 6, dtype=torch.float64).view(2, 3)

    def f(x, t):
        return -2 * t.to(x.dtype).view(-1, 1) * x

    loose, s_loose = sample_dopri5(f, x0, atol=1e-3, rtol=1e-3)
    tight, s_tight = sample_dopri5(f, x0, atol=1e-10, rtol=1e-10)
    exact = x0 * math.exp(-1)
    assert (tight - exact).abs().max() < 1e-9
    assert (loose - exact).abs().max() < 1e-3
    assert s_tight.nfe > s_loose.nfe


def test_dopri5_constant_field_is_cheap_and_exact():
    x0 = torch.randn(2, 4)
    c = torch.randn(2, 4)
    x1, stats = sample_dopri5(lambda x, t: c, x0)
    torch.testing.assert_close(x1, x0 + c)
    # zero error estimate: every step accepted and grown by the maximum factor 10
    assert stats.rejected == 0 and stats.accepted <= 6


def test_bad_grids_and_intervals_raise():
    with pytest.raises(ValueError, match="strictly increasing"):
        sample_euler(lambda x, t: x, torch.zeros(1, 1), torch.tensor([0.0, 0.5, 0.5, 1.0]))
    with pytest.raises(ValueError, match="t1 > t0"):
        sample_dopri5(lambda x, t: x, torch.zeros(1, 1), 1.0, 0.0)
    with pytest.raises(ValueError, match="positive int"):
        uniform_time_grid(0)

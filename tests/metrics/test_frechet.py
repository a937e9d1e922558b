"""Fréchet distance and Gaussian statistics: closed forms and streaming."""

from __future__ import annotations

import numpy as np
import pytest

from trajloom.metrics import GaussianAccumulator, GaussianStats, frechet_distance, gaussian_stats


def test_one_dimensional_closed_form():
    a = gaussian_stats(np.array([[0.0], [2.0]]))  # mean 1, variance 2 (N - 1)
    b = gaussian_stats(np.array([[1.0], [3.0], [5.0]]))  # mean 3, variance 4
    assert a.cov[0, 0] == 2.0 and b.cov[0, 0] == 4.0
    eps = 1e-5
    expect = (1 - 3) ** 2 + 2 + 4 - 2 * np.sqrt((2 + eps) * (4 + eps))
    for method in ("eigh", "sqrtm"):
        assert frechet_distance(a, b, method=method) == pytest.approx(expect, rel=1e-12)


def test_diagonal_gaussians_closed_form():
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 0.0])
    a = GaussianStats(np.zeros(3), s1, 10)
    b = GaussianStats(np.ones(3), s2, 10)
    expect = 3 + 14 + 5 - 2 * (2 + 2 + 0)
    assert frechet_distance(a, b, eps=0.0) == pytest.approx(expect, abs=1e-12)


def test_accumulator_matches_two_pass(rng):
    x = rng.normal(size=(103, 7)) * [1, 10, 100, 1e3, 1, 1, 1] + 1e4
    acc = GaussianAccumulator(buffer_rows=10)
    for chunk in np.array_split(x, 13):
        acc.update(chunk)
    got, ref = acc.stats(), gaussian_stats(x)
    assert got.count == 103
    np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-13)
    np.testing.assert_allclose(got.cov, ref.cov, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ref.cov, np.cov(x, rowvar=False), rtol=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 samples"):
        gaussian_stats(np.zeros((1, 3)))
    acc = GaussianAccumulator()
    acc.update(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="dimension 3"):
        acc.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="at least 2 feature rows"):
        acc.stats()
    a = gaussian_stats(np.eye(3))
    b = gaussian_stats(np.eye(4))
    with pytest.raises(ValueError, match="same dimension"):
        frechet_distance(a, b)
    with pytest.raises(ValueError, match="method"):
        frechet_distance(a, a, method="svd")


def test_low_rank_subspace_route_equals_full_route(rng):
    # 6 + 7 samples in 40 dimensions: both covariances are rank-deficient.
    x1 = rng.normal(size=(6, 40)) * np.linspace(0.1, 3, 40)
    x2 = rng.normal(size=(7, 40)) + 0.5
    low1, low2 = gaussian_stats(x1), gaussian_stats(x2)
    assert low1.factor is not None and low1.cov is None
    full1 = GaussianStats(low1.mean, low1.covariance(), low1.count)
    full2 = GaussianStats(low2.mean, low2.covariance(), low2.count)
    np.testing.assert_allclose(full1.cov, np.cov(x1, rowvar=False), rtol=1e-12, atol=1e-14)
    for eps in (1e-5, 1e-2):
        assert frechet_distance(low1, low2, eps=eps) == pytest.approx(
            frechet_distance(full1, full2, eps=eps), rel=1e-9
        )


def _histogram_like(rng, rows: int, dim: int) -> np.ndarray:
    """Sparse non-negative rows with many all-zero columns, like FVMD's motion histograms:
    covariances of rank < d whose spectra span many decades."""
    x = rng.gamma(0.3, size=(rows, dim)) * (rng.random((rows, dim)) < 0.2)
    x[:, rng.random(dim) < 0.3] = 0.0  # bins no clip ever fills
    return x * np.logspace(-3, 2, dim)


@pytest.mark.parametrize("dim", [30, 240])
def test_cholesky_route_equals_the_released_eigh_formula(rng, dim):
    from trajloom.metrics.frechet import (
        _add_to_diagonal,
        _trace_sqrt_product_eigh,
        _trace_sqrt_product_released,
    )

    for rows in (dim // 2, 3 * dim):  # rank-deficient and full-rank covariances
        s1 = np.cov(_histogram_like(rng, rows, dim), rowvar=False)
        s2 = np.cov(_histogram_like(rng, rows, dim) + 0.01, rowvar=False)
        for eps in (1e-5, 1e-2):
            a, b = _add_to_diagonal(s1, eps), _add_to_diagonal(s2, eps)
            new, old = _trace_sqrt_product_eigh(a, b), _trace_sqrt_product_released(a, b)
            assert new == pytest.approx(old, rel=1e-8)
            stats1 = GaussianStats(np.zeros(dim), s1, rows)
            stats2 = GaussianStats(np.ones(dim), s2, rows)
            d = frechet_distance(stats1, stats2, eps=eps)
            traces = np.trace(s1) + np.trace(s2)
            # The distance is a difference of terms of the size of the traces: the released
            # formula's own rounding (~1e-9 relative on Tr sqrt, e.g. swapping s1 and s2)
            # reaches it at that scale.
            assert d == pytest.approx(dim + traces - 2 * old, abs=1e-8 * traces)


def test_singular_covariance_without_eps_falls_back_to_the_released_route():
    from trajloom.metrics.frechet import _trace_sqrt_product_eigh

    s1 = np.diag([4.0, 0.0, 1.0])  # singular: no Cholesky factor
    s2 = np.diag([1.0, 9.0, 16.0])
    assert _trace_sqrt_product_eigh(s1, s2) == pytest.approx(2.0 + 0.0 + 4.0, rel=1e-12)

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


def _levels(rng, rows: int, dim: int, top: int = 40) -> np.ndarray:
    """Integer histogram levels like FVMD's (before the division by 8), some columns empty."""
    x = rng.integers(0, top, size=(rows, dim)) * (rng.random((rows, dim)) < 0.6)
    x[:, rng.random(dim) < 0.2] = 0
    return x.astype(np.float64)


def test_integer_accumulator_is_the_correctly_rounded_covariance(rng):
    from fractions import Fraction

    from trajloom.metrics.frechet import IntegerGaussianAccumulator

    x = _levels(rng, 23, 5)
    acc = IntegerGaussianAccumulator(scale=8.0, buffer_rows=4)
    for chunk in np.array_split(x, 6):
        acc.update(chunk)
    got = acc.stats()
    n = x.shape[0]
    cols = [[Fraction(int(v)) / 8 for v in x[:, j]] for j in range(5)]
    means = [sum(c) / n for c in cols]
    for i in range(5):
        assert got.mean[i] == float(means[i])
        for j in range(5):
            exact = sum(
                (a - means[i]) * (b - means[j]) for a, b in zip(cols[i], cols[j], strict=True)
            ) / (n - 1)
            assert got.cov[i, j] == float(exact)  # float(Fraction) rounds to nearest


def test_integer_accumulator_equals_two_pass_and_ignores_chunking(rng):
    from trajloom.metrics.frechet import IntegerGaussianAccumulator

    x = _levels(rng, 700, 60)
    ref = gaussian_stats(x / 8.0)
    results = []
    for buffer_rows, parts in ((4096, 1), (64, 7), (1, 50)):
        acc = IntegerGaussianAccumulator(scale=8.0, buffer_rows=buffer_rows)
        for chunk in np.array_split(x, parts):
            acc.update(chunk)
        results.append(acc.stats())
    for got in results:  # exact sums: every chunking gives the same bits
        assert got.count == 700
        np.testing.assert_array_equal(got.cov, results[0].cov)
        np.testing.assert_array_equal(got.mean, results[0].mean)
    np.testing.assert_allclose(results[0].mean, ref.mean, rtol=1e-14)
    np.testing.assert_allclose(results[0].cov, ref.cov, rtol=1e-12, atol=1e-14)


def test_integer_accumulator_large_levels_take_the_float64_product(rng):
    from trajloom.metrics.frechet import IntegerGaussianAccumulator

    # 5000^2 * 700 rows is far above 2^24: float32 would round, float64 does not.
    x = _levels(rng, 700, 20, top=5000)
    acc = IntegerGaussianAccumulator()
    acc.update(x)
    got = acc.stats()
    gram = x.T @ x  # exact: every sum is below 2^53
    s = x.sum(axis=0)
    expect = (700 * gram - np.outer(s, s)) / (700.0 * 699.0)
    np.testing.assert_array_equal(got.cov, expect)


def test_integer_accumulator_keeps_rows_while_low_rank(rng):
    from trajloom.metrics.frechet import IntegerGaussianAccumulator

    x = _levels(rng, 30, 80)  # fewer rows than dimensions: the low-rank factor, as before
    acc = IntegerGaussianAccumulator(scale=8.0, buffer_rows=4)
    for chunk in np.array_split(x, 5):
        acc.update(chunk)
    got, ref = acc.stats(), gaussian_stats(x / 8.0)
    assert got.cov is None and got.factor is not None
    np.testing.assert_array_equal(got.factor, ref.factor)
    np.testing.assert_array_equal(got.mean, ref.mean)


def test_integer_accumulator_refuses_fractions():
    from trajloom.metrics.frechet import IntegerGaussianAccumulator

    acc = IntegerGaussianAccumulator()
    with pytest.raises(ValueError, match="integer values"):
        acc.update(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \[b, d\]"):
        acc.update(np.zeros(3))


@pytest.mark.parametrize("dim", [1, 2, 7, 64])
def test_lower_congruence_equals_the_full_product(rng, dim):
    from trajloom.metrics.frechet import _lower_congruence

    s = np.cov(rng.normal(size=(3 * dim + 2, dim)), rowvar=False).reshape(dim, dim)
    low = np.linalg.cholesky(
        np.cov(rng.normal(size=(3 * dim + 2, dim)), rowvar=False).reshape(dim, dim)
    )
    full = low.T @ s @ low
    got = _lower_congruence(low, s)
    np.testing.assert_allclose(np.tril(got), np.tril(full), rtol=1e-12, atol=1e-12)
    h = dim // 2
    assert not got[:h, h:].any()  # the upper-right block is never formed
    np.testing.assert_allclose(
        np.linalg.eigvalsh(got, UPLO="L"), np.linalg.eigvalsh(full), rtol=1e-12, atol=1e-12
    )


def test_integer_accumulator_beyond_int64_uses_exact_python_integers(rng):
    from fractions import Fraction

    from trajloom.metrics.frechet import IntegerGaussianAccumulator

    # 120 rows of levels up to 4.5e7 (a few rows per float64 product stay below 2^53):
    # n * G reaches ~1e19 > 2^62, past int64.
    n = 120
    x = rng.integers(0, 45_000_000, size=(n, 3)).astype(np.float64)
    acc = IntegerGaussianAccumulator(buffer_rows=1)
    for row in x:
        acc.update(row[None])
    got = acc.stats()
    assert n * max(sum(int(v) ** 2 for v in x[:, j]) for j in range(3)) > 2**62
    cols = [[int(v) for v in x[:, j]] for j in range(3)]
    for i in range(3):
        for j in range(3):
            centred = n * sum(a * b for a, b in zip(cols[i], cols[j], strict=True))
            centred -= sum(cols[i]) * sum(cols[j])
            exact = Fraction(centred, n * (n - 1))
            assert got.cov[i, j] == pytest.approx(float(exact), rel=5e-16)  # two roundings

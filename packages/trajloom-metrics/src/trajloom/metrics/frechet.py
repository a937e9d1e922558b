"""Gaussian statistics of feature sets and the Fréchet distance between them.

`frechet_distance` defaults to the computation of the released
`benchmark/compute_fvmd_from_trajectory.py` (zewei-Zhang/TrajLoom): epsilon 1e-5
added to both covariances, `Tr sqrt(S1 S2)` as the sum of square roots of the
eigenvalues of `sqrt(S1) S2 sqrt(S1)` (symmetric eigendecompositions, negative
eigenvalues clipped to 0). `method="sqrtm"` follows the PyPI `fvmd` package
(`scipy.linalg.sqrtm` of the regularized product, real part). Both use the
covariance with `N - 1`. With fewer samples than dimensions (FVMD-Long) the
covariances are rank-deficient and the two methods differ by about 1e-5 relative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

__all__ = ["GaussianAccumulator", "GaussianStats", "frechet_distance", "gaussian_stats"]

DEFAULT_EPS = 1e-5  # added to both covariance diagonals (released FVMD and PyPI fvmd)


@dataclass(frozen=True)
class GaussianStats:
    """Mean `[d]` and covariance `[d, d]` (N - 1 normalization) of `count` samples."""

    mean: np.ndarray
    cov: np.ndarray
    count: int

    def block(self, start: int, stop: int) -> GaussianStats:
        """Statistics of the feature slice `[start, stop)` (a diagonal block)."""
        return GaussianStats(self.mean[start:stop], self.cov[start:stop, start:stop], self.count)


def _as_features(name: str, features: np.ndarray) -> np.ndarray:
    x = np.asarray(features)
    if x.ndim < 1:
        raise ValueError(f"{name} must have shape [b, ...] (one row per sample); got a scalar")
    return x.reshape(x.shape[0], -1).astype(np.float64, copy=False)


def gaussian_stats(features: np.ndarray) -> GaussianStats:
    """Mean and covariance of `features: [b, ...]` (flattened to `[b, d]`), two-pass.

    Needs b >= 2; raises a `ValueError` otherwise.
    """
    x = _as_features("features", features)
    if x.shape[0] < 2:
        raise ValueError(
            f"features must have at least 2 samples to estimate a covariance; got {x.shape[0]}"
        )
    mu = x.mean(axis=0)
    xc = x - mu
    return GaussianStats(mu, (xc.T @ xc) / float(x.shape[0] - 1), x.shape[0])


class GaussianAccumulator:
    """Streaming mean and covariance of feature rows (Chan et al. pairwise merge).

    Rows are buffered up to `buffer_rows` and merged as one batch (two-pass within
    the batch), so memory is O(d^2 + buffer_rows * d) whatever the number of rows.
    """

    def __init__(self, buffer_rows: int = 2048) -> None:
        if buffer_rows < 1:
            raise ValueError(f"buffer_rows must be >= 1; got {buffer_rows}")
        self.buffer_rows = int(buffer_rows)
        self._count = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    @property
    def dim(self) -> int | None:
        """Feature dimension, None before the first update."""
        if self._mean is not None:
            return int(self._mean.shape[0])
        return int(self._pending[0].shape[1]) if self._pending else None

    @property
    def count(self) -> int:
        """Number of rows seen."""
        return self._count + self._pending_rows

    def update(self, features: np.ndarray) -> None:
        """Add rows `features: [b, ...]` (flattened to `[b, d]`)."""
        x = _as_features("features", features)
        if self.dim is not None and x.shape[1] != self.dim:
            raise ValueError(
                f"features must have dimension {self.dim} like the earlier rows; got {x.shape[1]}"
            )
        if x.shape[0] == 0:
            return
        self._pending.append(x)
        self._pending_rows += x.shape[0]
        if self._pending_rows >= self.buffer_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        x = np.concatenate(self._pending, axis=0)
        self._pending, self._pending_rows = [], 0
        n_b = x.shape[0]
        mean_b = x.mean(axis=0)
        xc = x - mean_b
        m2_b = xc.T @ xc
        if self._mean is None or self._m2 is None:
            self._count, self._mean, self._m2 = n_b, mean_b, m2_b
            return
        n_a = self._count
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 += m2_b
        self._m2 += np.outer(delta, delta) * (n_a * n_b / n)
        self._count = n

    def stats(self) -> GaussianStats:
        """Mean and covariance so far; a `ValueError` with fewer than 2 rows."""
        self._flush()
        if self._count < 2 or self._mean is None or self._m2 is None:
            raise ValueError(
                f"need at least 2 feature rows to estimate a covariance; got {self._count}"
            )
        return GaussianStats(self._mean.copy(), self._m2 / float(self._count - 1), self._count)


def _trace_sqrt_product_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    """`Tr sqrt(s1 s2)` for symmetric PSD `s1, s2` via `sqrt(s1) s2 sqrt(s1)`."""
    w1, v1 = np.linalg.eigh(s1)
    root = np.sqrt(np.clip(w1, 0.0, None))
    inner = v1.T @ (s2 @ v1)
    a = (root[:, None] * inner) * root[None, :]
    wa = np.clip(np.linalg.eigvalsh(a), 0.0, None)
    return float(np.sum(np.sqrt(wa)))


def _trace_sqrt_product_sqrtm(s1: np.ndarray, s2: np.ndarray) -> float:
    """`Tr sqrtm(s1 @ s2)` as the PyPI `fvmd` package computes it."""
    out = linalg.sqrtm(s1 @ s2)
    covmean = out[0] if isinstance(out, tuple) else out
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"sqrtm of the covariance product has an imaginary part of up to "
                f"{np.max(np.abs(covmean.imag)):.3g}; use method='eigh'"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(
    stats1: GaussianStats,
    stats2: GaussianStats,
    *,
    eps: float = DEFAULT_EPS,
    method: str = "eigh",
) -> float:
    """Fréchet distance `|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1' S2'))`, `S' = S + eps I`.

    Args:
        stats1, stats2: Gaussian statistics of the two feature sets (same dimension).
        eps: regularization added to both covariance diagonals inside the square root
            (the plain traces use the unregularized covariances, as released).
        method: "eigh" (released TrajLoom script) or "sqrtm" (PyPI `fvmd`).

    Returns:
        The distance in squared feature units (float).
    """
    mu1, mu2 = np.atleast_1d(stats1.mean), np.atleast_1d(stats2.mean)
    s1, s2 = np.atleast_2d(stats1.cov), np.atleast_2d(stats2.cov)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(
            f"stats1 and stats2 must have the same dimension; got means {mu1.shape} and "
            f"{mu2.shape}, covariances {s1.shape} and {s2.shape}"
        )
    if method not in ("eigh", "sqrtm"):
        raise ValueError(f"method must be 'eigh' or 'sqrtm'; got {method!r}")
    offset = float(eps) * np.eye(s1.shape[0])
    if method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(s1 + offset, s2 + offset)
    else:
        tr_covmean = _trace_sqrt_product_sqrtm(s1 + offset, s2 + offset)
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)

"""Is a difference between two methods more than noise? A paired bootstrap over videos.

Two methods scored on the same videos give paired per-video values ``a[i]``, ``b[i]``
(e.g. minADE_K, the energy score, VEPE). :func:`paired_bootstrap` resamples the videos
with replacement and reports the mean difference ``a - b`` with a percentile interval:
an interval that excludes 0 says the ordering holds beyond the choice of videos.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["paired_bootstrap"]


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean of ``a - b`` over paired videos and its bootstrap percentile interval.

    Args:
        a, b: per-video values of two methods on the same videos, in the same order;
            pairs where either is NaN are left out.
        resamples: bootstrap resamples of the videos (with replacement).
        level: coverage of the interval (0.95: the 2.5 and 97.5 percentiles).
        seed: the resampling generator's seed (the result is deterministic).

    Returns:
        ``mean``, ``low``, ``high`` (float, None without pairs) and ``n`` (pairs used).

    Raises:
        ValueError: ``a`` and ``b`` of different lengths, ``resamples < 1`` or ``level``
            outside (0, 1).
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"a and b must pair the same videos; got {x.size} and {y.size} values")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    diff = (x - y)[np.isfinite(x) & np.isfinite(y)]
    if diff.size == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, diff.size, size=(resamples, diff.size))
    means = diff[picks].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high), "n": int(diff.size)}

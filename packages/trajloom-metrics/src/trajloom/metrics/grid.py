"""Grid shape inference for tracks seeded on a regular grid.

The released benchmark scripts (`benchmark/compute_fvmd_from_trajectory.py` and
`benchmark/compute_trajectory_quality_metrics.py` of zewei-Zhang/TrajLoom) infer
the grid `(Hg, Wg)` of a run folder from `query_xy.npy` and reorder the tracks to
row-major order (y outer, x inner); without a usable `query_xy` they factor N.
These functions reproduce that, without a Python loop over points.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["factor_grid", "infer_grid"]


def factor_grid(num_points: int) -> tuple[int, int]:
    """Factor `N` into `(Hg, Wg)` with `Hg <= Wg` and the smallest `Wg - Hg`.

    The released scripts' fallback when the grid cannot be read from the query
    points: 390 -> (15, 26), 400 -> (20, 20), a prime p -> (1, p).
    """
    n = int(num_points)
    if n < 1:
        raise ValueError(f"num_points must be a positive int; got {num_points!r}")
    h = np.arange(1, math.isqrt(n) + 1)
    h = h[n % h == 0]
    best = int(h[np.argmin(n // h - h)])
    return best, n // best


def infer_grid(
    query_xy: np.ndarray | None, num_points: int
) -> tuple[tuple[int, int], np.ndarray | None]:
    """Infer `(Hg, Wg)` and the permutation that makes tracks row-major.

    Args:
        query_xy: `[n, 2]` query pixels `(x, y)` of the tracks, or None.
        num_points: N, the number of tracks.

    Returns:
        `(grid_hw, order)`: `tracks[:, order]` is row-major `[Hg, Wg]`; `order` is None
        when the tracks are taken as already row-major (no `query_xy`, or the distinct
        x and y values do not form a full grid, in which case `grid_hw` comes from
        `factor_grid(N)` as in the released scripts).
    """
    n = int(num_points)
    if query_xy is None:
        return factor_grid(n), None
    q = np.asarray(query_xy)
    if q.ndim != 2 or q.shape[1] != 2:
        raise ValueError(f"query_xy must have shape [N, 2]; got {q.shape}")
    if q.shape[0] != n:
        raise ValueError(f"query_xy has N = {q.shape[0]} rows but the tracks have N = {n}")
    xs = np.unique(q[:, 0])
    ys = np.unique(q[:, 1])
    hg, wg = len(ys), len(xs)
    if hg * wg != n:
        return factor_grid(n), None
    # The released code keys its lookup by int() of the query values (truncation).
    col = _column_index(q[:, 0], xs)
    row = _column_index(q[:, 1], ys)
    if col is None or row is None:
        return (hg, wg), None
    position = row * wg + col
    if np.unique(position).size != n:
        raise ValueError(
            "query_xy maps two tracks to the same grid cell after truncation to int; "
            "give integer pixel query points on a regular grid"
        )
    order = np.empty(n, dtype=np.int64)
    order[position] = np.arange(n, dtype=np.int64)
    return (hg, wg), order


def _column_index(values: np.ndarray, uniques: np.ndarray) -> np.ndarray | None:
    """Index of `int(v)` among `int(uniques)` (last duplicate wins), or None if absent."""
    keys = uniques.astype(np.int64)
    vals = values.astype(np.int64)
    # The released dict {int(u): i} keeps the last index of duplicate keys.
    last = np.unique(keys[::-1], return_index=True)
    key_sorted, first_in_reversed = last
    last_index = len(keys) - 1 - first_in_reversed
    pos = np.searchsorted(key_sorted, vals)
    pos = np.clip(pos, 0, len(key_sorted) - 1)
    if not np.array_equal(key_sorted[pos], vals):
        return None
    return last_index[pos]

"""Input validation shared by the metric functions (errors name the argument)."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_tracks(name: str, tracks: object, *, min_ndim: int = 3) -> np.ndarray:
    """Return `tracks` as an array of shape `[..., t, n, 2]` or raise a `ValueError`."""
    arr = np.asarray(tracks)
    if arr.ndim < min_ndim or arr.shape[-1] != 2:
        raise ValueError(
            f"{name} must have shape [..., T, N, 2] (x, y pixels) with at least {min_ndim} "
            f"dimensions; got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    return arr


def as_visibility(name: str, visibility: object, tracks_shape: tuple[int, ...]) -> np.ndarray:
    """Return `visibility > 0.5` as a bool array of shape `tracks_shape[:-1]` or raise."""
    arr = np.asarray(visibility)
    if arr.shape != tuple(tracks_shape[:-1]):
        raise ValueError(
            f"{name} must have shape {tuple(tracks_shape[:-1])} (the tracks' shape without the "
            f"last axis); got shape {arr.shape}"
        )
    if arr.dtype == np.bool_:
        return arr
    # Released scripts threshold visibility (0/1 or probability) at 0.5.
    return arr > 0.5


def same_shape(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    """Raise a `ValueError` unless `a` and `b` have equal shapes."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape; got {a.shape} and {b.shape}"
        )


def grid_hw_of(grid_hw: Any, num_points: int) -> tuple[int, int]:
    """Validate a `(Hg, Wg)` pair against the number of tracks `N = Hg * Wg`."""
    try:
        hg, wg = (int(v) for v in grid_hw)
    except (TypeError, ValueError):
        raise ValueError(f"grid_hw must be a pair (Hg, Wg) of ints; got {grid_hw!r}") from None
    if hg < 1 or wg < 1 or hg * wg != num_points:
        raise ValueError(
            f"grid_hw {(hg, wg)} implies N = {hg * wg} row-major tracks but the tracks have "
            f"N = {num_points}"
        )
    return hg, wg

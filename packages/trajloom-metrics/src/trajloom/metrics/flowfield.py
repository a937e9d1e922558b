"""FlowSmoothTV and DivCurlEnergy of a trajectory field on its grid, paper §4.1.6 (ii), (iii).

Conventions follow `benchmark/compute_trajectory_quality_metrics.py` of
zewei-Zhang/TrajLoom, including its float32 arithmetic:

- flow between consecutive frames, `f[t] = x[t + 1] - x[t]`, `[t - 1, h, w, 2]`;
- a grid position is valid when finite (and visible, when visibility is given);
  a flow vector is valid when valid at t and t + 1;
- forward differences along x (W) and y (H), divided by the grid spacing in pixels;
- FlowTV per frame: `mean(|du/dx| + |dv/dx|)` over valid horizontal pairs plus
  `mean(|du/dy| + |dv/dy|)` over valid vertical pairs (a term with no valid pair is
  left out; a frame with neither is NaN);
- DivCurlE per frame: mean of `div^2 + curl^2` over interior cells `[h - 1, w - 1]`
  whose horizontal and vertical pairs are both valid, `div = du/dx + dv/dy`,
  `curl = dv/dx - du/dy`;
- per video: mean over frames ignoring NaN; over a dataset: mean of the finite
  per-video values (`video_mean`).

The released script sums in float32, and a float32 sum's rounding depends on the
memory layout of its input; `trajloom.metrics.runs` repeats the released loading
steps so its numbers match bit for bit, while other layouts agree to ~1e-8 relative.

Units: FlowTV in pixels per frame per pixel of grid spacing; DivCurlE its square.
"""

from __future__ import annotations

import warnings

import numpy as np

from trajloom.metrics._checks import as_tracks, as_visibility, grid_hw_of

__all__ = [
    "div_curl_energy",
    "div_curl_energy_per_frame",
    "flow_div_curl",
    "flow_tv",
    "flow_tv_and_div_curl_energy",
    "flow_tv_per_frame",
    "video_mean",
]

DEFAULT_GRID_STRIDE = 32.0  # pixels between grid points at 832x480 (released default)


def _grid_flow(
    tracks: np.ndarray,
    visibility: np.ndarray | None,
    grid_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flow components `u, v` and validity, each `[..., t - 1, h, w]` (float32, bool)."""
    arr = as_tracks("tracks", tracks)
    hg, wg = grid_hw_of(grid_hw, arr.shape[-2])
    if arr.shape[-3] < 2:
        raise ValueError(
            f"tracks must have at least 2 frames to form a flow; got T = {arr.shape[-3]}"
        )
    x = arr.astype(np.float32, copy=False).reshape((*arr.shape[:-2], hg, wg, 2))
    valid = np.asarray(np.isfinite(x).all(axis=-1))
    if visibility is not None:
        valid &= as_visibility("visibility", visibility, arr.shape).reshape(valid.shape)
    flow = x[..., 1:, :, :, :] - x[..., :-1, :, :, :]
    valid_flow = valid[..., 1:, :, :] & valid[..., :-1, :, :]
    return flow[..., 0], flow[..., 1], valid_flow


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the last two axes where `mask`, NaN where nothing is valid."""
    total = np.where(mask, values, 0.0).sum(axis=(-2, -1)).astype(np.float64)
    count = mask.sum(axis=(-2, -1))
    out = np.full(total.shape, np.nan)
    ok = count > 0
    out[ok] = total[ok] / count[ok]
    return out


def _nanmean_last(values: np.ndarray) -> np.ndarray:
    """`np.nanmean` over the last axis, NaN (without warning) where all are NaN."""
    finite = np.isfinite(values)
    total = np.sum(np.where(finite, values, 0.0), axis=-1)
    count = np.sum(finite, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _warn_nan(name: str, values: np.ndarray) -> None:
    if np.any(~np.isfinite(values)):
        warnings.warn(
            f"{name}: no valid neighbour pair in any frame of some video "
            "(too few visible finite points); its value is NaN",
            RuntimeWarning,
            stacklevel=3,
        )


def flow_tv_per_frame(
    tracks: np.ndarray,
    visibility: np.ndarray | None = None,
    *,
    grid_hw: tuple[int, int],
    grid_stride: float = DEFAULT_GRID_STRIDE,
) -> np.ndarray:
    """FlowSmoothTV of each flow frame.

    Args:
        tracks: `[..., t, n, 2]` pixels, n = Hg * Wg tracks in row-major grid order.
        visibility: `[..., t, n]` (bool, or 0/1/probability thresholded at 0.5) or None.
        grid_hw: `(Hg, Wg)`.
        grid_stride: spacing of the grid in pixels (32 at 832x480).

    Returns:
        `[..., t - 1]` float64, NaN in frames without a valid pair.
    """
    return _tv_of_flow(*_grid_flow(tracks, visibility, grid_hw), float(grid_stride))


def _tv_of_flow(u: np.ndarray, v: np.ndarray, valid: np.ndarray, s: float) -> np.ndarray:
    """FlowTV per frame from `_grid_flow`'s output and the grid spacing `s`."""
    frames = valid.shape[:-2]
    if valid.shape[-1] >= 2:
        term_x = np.abs((u[..., 1:] - u[..., :-1]) / s) + np.abs((v[..., 1:] - v[..., :-1]) / s)
        tx = _masked_mean(term_x, valid[..., 1:] & valid[..., :-1])
    else:
        tx = np.full(frames, np.nan)
    if valid.shape[-2] >= 2:
        term_y = np.abs((u[..., 1:, :] - u[..., :-1, :]) / s) + np.abs(
            (v[..., 1:, :] - v[..., :-1, :]) / s
        )
        ty = _masked_mean(term_y, valid[..., 1:, :] & valid[..., :-1, :])
    else:
        ty = np.full(frames, np.nan)
    fx, fy = np.isfinite(tx), np.isfinite(ty)
    tv = np.where(fx, tx, 0.0) + np.where(fy, ty, 0.0)
    return np.where(fx | fy, tv, np.nan)


def flow_tv(
    tracks: np.ndarray,
    visibility: np.ndarray | None = None,
    *,
    grid_hw: tuple[int, int],
    grid_stride: float = DEFAULT_GRID_STRIDE,
) -> np.ndarray | float:
    """FlowSmoothTV per video (paper eq. 15): mean over flow frames, ignoring NaN.

    Args: as `flow_tv_per_frame`.

    Returns:
        A float for `[t, n, 2]`, a `[...]` array for batched tracks; NaN (with a
        `RuntimeWarning`) for a video without any valid pair.
    """
    out = _nanmean_last(
        flow_tv_per_frame(tracks, visibility, grid_hw=grid_hw, grid_stride=grid_stride)
    )
    _warn_nan("flow_tv", out)
    return float(out) if out.ndim == 0 else out


def flow_div_curl(
    tracks: np.ndarray,
    visibility: np.ndarray | None = None,
    *,
    grid_hw: tuple[int, int],
    grid_stride: float = DEFAULT_GRID_STRIDE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Divergence and curl of the flow on interior cells, with their validity.

    Args: as `flow_tv_per_frame`; needs Hg, Wg >= 2.

    Returns:
        `(div, curl, valid)`, each `[..., t - 1, hg - 1, wg - 1]`; div and curl in
        float32 (per frame), valid bool. Cell (i, j) uses the forward differences
        from grid point (i, j) to (i, j + 1) and to (i + 1, j).
    """
    u, v, valid = _grid_flow(tracks, visibility, grid_hw)
    if valid.shape[-2] < 2 or valid.shape[-1] < 2:
        raise ValueError(f"grid_hw must be at least (2, 2) for divergence and curl; got {grid_hw}")
    return _div_curl_of_flow(u, v, valid, float(grid_stride))


def _div_curl_of_flow(
    u: np.ndarray, v: np.ndarray, valid: np.ndarray, s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`flow_div_curl` from `_grid_flow`'s output (grid at least 2 x 2) and the spacing."""
    du_dx = (u[..., :-1, 1:] - u[..., :-1, :-1]) / s
    dv_dx = (v[..., :-1, 1:] - v[..., :-1, :-1]) / s
    du_dy = (u[..., 1:, :-1] - u[..., :-1, :-1]) / s
    dv_dy = (v[..., 1:, :-1] - v[..., :-1, :-1]) / s
    cell = valid[..., :-1, :-1] & valid[..., :-1, 1:] & valid[..., 1:, :-1]
    return du_dx + dv_dy, dv_dx - du_dy, cell


def div_curl_energy_per_frame(
    tracks: np.ndarray,
    visibility: np.ndarray | None = None,
    *,
    grid_hw: tuple[int, int],
    grid_stride: float = DEFAULT_GRID_STRIDE,
) -> np.ndarray:
    """Mean `div^2 + curl^2` over valid interior cells of each flow frame.

    Args: as `flow_tv_per_frame`; a grid with Hg or Wg < 2 gives all NaN.

    Returns:
        `[..., t - 1]` float64, NaN in frames without a valid cell.
    """
    shape = as_tracks("tracks", tracks).shape
    hg, wg = grid_hw_of(grid_hw, shape[-2])
    if hg < 2 or wg < 2:
        return np.full((*shape[:-3], max(shape[-3] - 1, 0)), np.nan)
    div, curl, cell = flow_div_curl(tracks, visibility, grid_hw=grid_hw, grid_stride=grid_stride)
    return _energy(div, curl, cell)


def _energy(div: np.ndarray, curl: np.ndarray, cell: np.ndarray) -> np.ndarray:
    div64, curl64 = div.astype(np.float64), curl.astype(np.float64)
    return _masked_mean(div64**2 + curl64**2, cell)


def flow_tv_and_div_curl_energy(
    tracks: np.ndarray,
    visibility: np.ndarray | None = None,
    *,
    grid_hw: tuple[int, int],
    grid_stride: float = DEFAULT_GRID_STRIDE,
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """`(flow_tv(...), div_curl_energy(...))` of the same tracks from one flow field.

    The same numbers, bit for bit, as the two calls; the flow and its validity are formed
    once instead of twice. Args and returns: as `flow_tv` and `div_curl_energy`.
    """
    tv, dc = _tv_and_energy(tracks, visibility, grid_hw, float(grid_stride))
    _warn_nan("flow_tv", tv)
    _warn_nan("div_curl_energy", dc)
    return (float(tv) if tv.ndim == 0 else tv), (float(dc) if dc.ndim == 0 else dc)


def _tv_and_energy(
    tracks: np.ndarray, visibility: np.ndarray | None, grid_hw: tuple[int, int], s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-video FlowTV and DivCurlE arrays (NaN where undefined), without warnings."""
    shape = as_tracks("tracks", tracks).shape
    hg, wg = grid_hw_of(grid_hw, shape[-2])
    u, v, valid = _grid_flow(tracks, visibility, grid_hw)
    tv = _nanmean_last(_tv_of_flow(u, v, valid, s))
    if hg < 2 or wg < 2:
        return tv, np.full(tv.shape, np.nan)
    return tv, _nanmean_last(_energy(*_div_curl_of_flow(u, v, valid, s)))


def div_curl_energy(
    tracks: np.ndarray,
    visibility: np.ndarray | None = None,
    *,
    grid_hw: tuple[int, int],
    grid_stride: float = DEFAULT_GRID_STRIDE,
) -> np.ndarray | float:
    """DivCurlEnergy per video (paper eq. 16): mean over flow frames, ignoring NaN.

    Args: as `flow_tv_per_frame`.

    Returns:
        A float for `[t, n, 2]`, a `[...]` array for batched tracks; NaN (with a
        `RuntimeWarning`) for a video without any valid cell.
    """
    out = _nanmean_last(
        div_curl_energy_per_frame(tracks, visibility, grid_hw=grid_hw, grid_stride=grid_stride)
    )
    _warn_nan("div_curl_energy", out)
    return float(out) if out.ndim == 0 else out


def video_mean(values: np.ndarray | list[float]) -> float:
    """Dataset value as the released script pools it: mean of the finite per-video values.

    Returns NaN with a `RuntimeWarning` when no value is finite.
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        warnings.warn(
            "video_mean: no finite per-video value; result is NaN", RuntimeWarning, stacklevel=2
        )
        return float("nan")
    return float(np.mean(finite))

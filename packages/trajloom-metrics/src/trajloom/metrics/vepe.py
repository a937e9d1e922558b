"""Visibility-masked endpoint error (VEPE), paper §4.1.6 (iv), eq. 17.

Conventions follow `benchmark/compute_vae_recon_metrics.py` of zewei-Zhang/TrajLoom:
points whose error is not finite are left out, per-video VEPE is the mean over the visible points of that video, and the
pooled VEPE is the sum over all visible points of all videos divided by their count
(not a mean of per-video means). Errors are computed and summed in float64 (the released
script uses float32, where a coordinate of 1e20 px overflows the squared error and the
point silently drops out; the two agree to float32 precision otherwise).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from trajloom.metrics._checks import as_tracks, as_visibility, same_shape

__all__ = ["VEPEAccumulator", "endpoint_error", "vepe", "vepe_sum_count"]


def endpoint_error(pred_tracks: np.ndarray, gt_tracks: np.ndarray) -> np.ndarray:
    """Euclidean distance between predicted and true positions, in pixels.

    Args:
        pred_tracks: `[..., t, n, 2]` predicted `(x, y)` pixels.
        gt_tracks: `[..., t, n, 2]` ground-truth `(x, y)` pixels, same shape.

    Returns:
        `[..., t, n]` float64 errors.
    """
    pred = as_tracks("pred_tracks", pred_tracks)
    gt = as_tracks("gt_tracks", gt_tracks)
    same_shape("pred_tracks", pred, "gt_tracks", gt)
    d = pred.astype(np.float64) - gt.astype(np.float64)
    return np.sqrt(np.sum(d * d, axis=-1))


def _eval_mask(
    err: np.ndarray, visibility: np.ndarray | None, exclude_first_frame: bool
) -> np.ndarray:
    """Visible, finite points of `err [..., t, n]`, frame 0 dropped on request."""
    mask = np.isfinite(err)
    if not mask.all():
        warnings.warn(
            f"vepe: {int(mask.size - mask.sum())} points have a non-finite position in "
            "pred_tracks or gt_tracks; they are left out, as the released script does",
            RuntimeWarning,
            stacklevel=3,
        )
    if visibility is not None:
        mask &= as_visibility("visibility", visibility, (*err.shape, 2))
    # The released script only drops frame 0 when more than one frame is evaluated.
    if exclude_first_frame and err.shape[-2] > 1:
        mask[..., 0, :] = False
    return mask


def vepe_sum_count(
    pred_tracks: np.ndarray,
    gt_tracks: np.ndarray,
    visibility: np.ndarray | None = None,
    *,
    exclude_first_frame: bool = False,
) -> tuple[float, int]:
    """Sum of endpoint errors over visible points and their count, for pooling.

    Args:
        pred_tracks, gt_tracks: `[t, n, 2]` pixels (one video; equal shapes).
        visibility: `[t, n]` ground-truth visibility (bool, 0/1 or probability,
            thresholded at 0.5); None counts every point as visible.
        exclude_first_frame: leave out frame 0 (an anchored overlap frame) when T > 1.

    Returns:
        `(sum_px, count)`; the sum is accumulated in float64.
    """
    err = endpoint_error(pred_tracks, gt_tracks)
    if err.ndim != 2:
        raise ValueError(
            f"vepe_sum_count takes one video: pred_tracks of shape [T, N, 2]; got {(*err.shape, 2)}"
        )
    mask = _eval_mask(err, visibility, exclude_first_frame)
    return float(err[mask].sum()), int(mask.sum())


def vepe(
    pred_tracks: np.ndarray,
    gt_tracks: np.ndarray,
    visibility: np.ndarray | None = None,
    *,
    exclude_first_frame: bool = False,
    reduction: str = "per_video",
) -> np.ndarray | float:
    """VEPE in pixels of the tracks' resolution (paper eq. 17).

    Args:
        pred_tracks: `[t, n, 2]` or `[b, t, n, 2]` predicted (reconstructed) pixels.
        gt_tracks: ground-truth pixels, same shape as `pred_tracks`.
        visibility: ground-truth visibility `[..., t, n]`; None = all visible.
            Non-finite errors (NaN in either input) are left out, as released.
        exclude_first_frame: leave out frame 0 when T > 1.
        reduction: "per_video" -> float for `[t, n, 2]`, `[b]` array for a batch;
            "pooled" -> one float, sum over all visible points / their count.

    Returns:
        VEPE in pixels; NaN (with a `RuntimeWarning`) where no point is visible.
    """
    err = endpoint_error(pred_tracks, gt_tracks)
    mask = _eval_mask(err, visibility, exclude_first_frame)
    if reduction not in ("per_video", "pooled"):
        raise ValueError(f"reduction must be 'per_video' or 'pooled'; got {reduction!r}")
    if reduction == "pooled":
        acc = VEPEAccumulator()
        flat_err = err.reshape((-1, *err.shape[-2:]))
        flat_mask = mask.reshape(flat_err.shape)
        for e, m in zip(flat_err, flat_mask, strict=True):
            acc.add(float(e[m].sum()), int(m.sum()))
        return acc.compute()
    count = mask.sum(axis=(-2, -1))
    total = np.where(mask, err, 0.0).sum(axis=(-2, -1), dtype=np.float64)
    if np.any(count == 0):
        warnings.warn(
            "vepe: no visible finite point in some video; its VEPE is NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(out) if out.ndim == 0 else out


@dataclass
class VEPEAccumulator:
    """Pools VEPE over many videos without holding them: sum of errors / count.

    `update(pred, gt, vis)` per video, then `compute()`; `per_video` keeps each
    video's own mean (NaN where nothing was visible).
    """

    exclude_first_frame: bool = False
    total: float = 0.0
    count: int = 0
    per_video: list[float] = field(default_factory=list)

    def update(
        self, pred_tracks: np.ndarray, gt_tracks: np.ndarray, visibility: np.ndarray | None = None
    ) -> float:
        """Add one video `[t, n, 2]`; return its own VEPE (NaN if nothing visible)."""
        s, c = vepe_sum_count(
            pred_tracks, gt_tracks, visibility, exclude_first_frame=self.exclude_first_frame
        )
        return self.add(s, c)

    def add(self, total: float, count: int) -> float:
        """Add a precomputed `(sum, count)` pair; return that video's mean."""
        self.total += float(total)
        self.count += int(count)
        value = float(total) / count if count > 0 else float("nan")
        self.per_video.append(value)
        return value

    def compute(self) -> float:
        """Pooled VEPE in pixels; NaN with a `RuntimeWarning` if no point was visible."""
        if self.count == 0:
            warnings.warn(
                "vepe: no visible finite point in any video; VEPE is NaN",
                RuntimeWarning,
                stacklevel=2,
            )
            return float("nan")
        return self.total / self.count

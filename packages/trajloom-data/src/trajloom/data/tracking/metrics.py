"""TAP-Vid point-tracking metrics as pure numpy functions (Doersch et al. 2022, §4).

Definitions follow ``compute_tapvid_metrics`` of google-deepmind/tapnet, on our
time-major layout: positions ``"t n 2"`` ``(x, y)`` pixels, visibility ``"t n"`` bool.

* Positions are first rescaled to a 256x256 frame (x by ``256 / W``, y by
  ``256 / H``); thresholds are 1, 2, 4, 8, 16 pixels of that frame, and a point is
  within a threshold when its distance is strictly smaller.
* A query's own frame is never evaluated. In ``"first"`` mode (queries at the first
  visible frame) only frames after it are; in ``"strided"`` mode all others are. An
  optional ``evaluate`` mask further restricts the frames (e.g. BADJA: annotated
  frames only).
* ``pts_within_d``: among ground-truth-visible evaluated points, the fraction within
  ``d``, ignoring predicted visibility. ``occlusion_accuracy``: fraction of evaluated
  points whose predicted visibility equals the ground truth. ``jaccard_d``: true
  positives (visible in both, within ``d``) over ground-truth visible points plus
  false positives (predicted visible but occluded in the ground truth or not within
  ``d``). ``average_*``: mean over the five thresholds.

Counts are pooled over all points of one video (TAP-Vid computes per video, then
averages videos); use :func:`mean_metrics` to average several videos.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["THRESHOLDS", "evaluation_mask", "mean_metrics", "tapvid_metrics"]

#: Distance thresholds in pixels at 256x256.
THRESHOLDS = (1, 2, 4, 8, 16)
_TAPVID_SIZE = 256.0


def evaluation_mask(
    query_frames: np.ndarray, num_frames: int, query_mode: str = "first"
) -> np.ndarray:
    """Which ``"t n"`` entries are scored, given each query's frame ``query_frames "n"``.

    ``"first"``: frames strictly after the query frame; ``"strided"``: every frame but
    the query frame.
    """
    q = np.asarray(query_frames)
    if q.ndim != 1:
        raise ValueError(f"query_frames must be 'n' frame indices, got shape {q.shape}")
    if q.size and (q.min() < 0 or q.max() >= num_frames):
        raise ValueError(
            f"query_frames must lie in [0, {num_frames}), got range [{q.min()}, {q.max()}]"
        )
    t = np.arange(num_frames)[:, None]
    if query_mode == "first":
        return t > q[None, :]
    if query_mode == "strided":
        return t != q[None, :]
    raise ValueError(f"query_mode must be 'first' or 'strided', got {query_mode!r}")


def tapvid_metrics(
    pred_tracks: np.ndarray,
    pred_visibility: np.ndarray,
    gt_tracks: np.ndarray,
    gt_visibility: np.ndarray,
    query_frames: np.ndarray,
    size: tuple[int, int],
    *,
    query_mode: str = "first",
    evaluate: np.ndarray | None = None,
) -> dict[str, float]:
    """TAP-Vid metrics of one video.

    Args:
        pred_tracks: ``"t n 2"`` predicted ``(x, y)`` pixels of a ``size = (W, H)`` frame.
        pred_visibility: ``"t n"`` bool, predicted visible.
        gt_tracks: ``"t n 2"`` true ``(x, y)`` pixels; may be NaN where not visible.
        gt_visibility: ``"t n"`` bool, truly visible.
        query_frames: ``"n"`` int, the frame each point was queried at.
        size: ``(W, H)`` of the frames the pixels refer to (rescaled to 256x256).
        query_mode: ``"first"`` or ``"strided"`` (see :func:`evaluation_mask`).
        evaluate: optional ``"t n"`` (or ``"t"``) bool; entries False are not scored.

    Returns:
        ``occlusion_accuracy``, ``pts_within_{1,2,4,8,16}``, ``jaccard_{1,2,4,8,16}``,
        ``average_pts_within_thresh``, ``average_jaccard`` (fractions in ``[0, 1]``;
        NaN when nothing is scored), and ``num_evaluated``, ``num_visible`` (counts).
    """
    pred = np.asarray(pred_tracks, dtype=np.float64)
    gt = np.asarray(gt_tracks, dtype=np.float64)
    if pred.ndim != 3 or pred.shape[-1] != 2 or pred.shape != gt.shape:
        raise ValueError(
            f"pred_tracks and gt_tracks must both be 't n 2' of one shape, got "
            f"{pred.shape} and {gt.shape}"
        )
    shape = pred.shape[:2]
    for name, v in (("pred_visibility", pred_visibility), ("gt_visibility", gt_visibility)):
        if np.shape(v) != shape or np.asarray(v).dtype != np.bool_:
            raise ValueError(
                f"{name} must be bool 't n' = {shape}, got {np.asarray(v).dtype} {np.shape(v)}"
            )
    w, h = size
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive (width, height), got {size}")
    mask = evaluation_mask(np.asarray(query_frames).astype(np.intp), shape[0], query_mode)
    if mask.shape[1] != shape[1]:
        raise ValueError(f"query_frames has {mask.shape[1]} entries, tracks have {shape[1]}")
    if evaluate is not None:
        ev = np.asarray(evaluate, dtype=bool)
        if ev.ndim == 1:
            ev = ev[:, None]
        mask = mask & np.broadcast_to(ev, shape)
    visible = np.asarray(gt_visibility)
    pred_visible = np.asarray(pred_visibility)
    scale = np.array([_TAPVID_SIZE / w, _TAPVID_SIZE / h])
    with np.errstate(invalid="ignore"):
        dist2 = np.sum(((pred - gt) * scale) ** 2, axis=-1)
    dist2 = np.where(np.isfinite(dist2), dist2, np.inf)

    n_eval = int(mask.sum())
    gt_positives = int((visible & mask).sum())
    out: dict[str, float] = {
        "occlusion_accuracy": _ratio(int(((pred_visible == visible) & mask).sum()), n_eval)
    }
    within_all, jaccard_all = [], []
    for d in THRESHOLDS:
        within = dist2 < d * d
        correct = within & visible
        frac = _ratio(int((correct & mask).sum()), gt_positives)
        true_pos = int((correct & pred_visible & mask).sum())
        false_pos = int((pred_visible & (~visible | ~within) & mask).sum())
        jac = _ratio(true_pos, gt_positives + false_pos)
        out[f"pts_within_{d}"] = frac
        out[f"jaccard_{d}"] = jac
        within_all.append(frac)
        jaccard_all.append(jac)
    out["average_pts_within_thresh"] = float(np.mean(within_all))
    out["average_jaccard"] = float(np.mean(jaccard_all))
    out["num_evaluated"] = float(n_eval)
    out["num_visible"] = float(gt_positives)
    return out


def mean_metrics(per_video: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Average metric dicts of several videos (the TAP-Vid benchmark figure), NaNs skipped."""
    if not per_video:
        raise ValueError("mean_metrics needs at least one video's metrics")
    keys = per_video[0].keys()
    return {k: float(np.nanmean([m[k] for m in per_video])) for k in keys}


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")

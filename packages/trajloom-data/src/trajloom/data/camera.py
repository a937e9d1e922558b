"""Camera motion from point tracks, and its caption phrase (paper appendix E.2).

Between consecutive frames the visible tracks are fitted, robustly, with a similarity
transform about the image centre, `x' - c = s R(phi) (x - c) + d`. Its parts give the
global translation d (pan, tilt), the radial component log s (zoom) and the tangential
component phi (roll); what the translation does beyond its smooth trend is shake. These
per-frame rates, averaged over the clip, map to a small vocabulary with speed buckets:
"pans left/right", "tilts up/down", "zooms in/out", "rolls", "static", "handheld".

Conventions: the *camera* moves, the content moves the other way. A camera panning right
makes content move left (dx < 0); tilting up makes content move down (dy > 0, y is down);
zooming in makes content grow (s > 1). Rates are per frame: translation in image widths
(pan) and heights (tilt), zoom in log-scale, roll in radians, shake in image widths (rms).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "CameraMotion",
    "CameraVocab",
    "camera_phrase",
    "estimate_camera_motion",
    "fit_similarity_steps",
    "shake_from_steps",
]


@dataclass(frozen=True)
class CameraMotion:
    """Mean per-frame camera motion over a clip (signs: see the module docstring)."""

    pan: float = 0.0  # camera to the right, image widths per frame
    tilt: float = 0.0  # camera up, image heights per frame
    zoom: float = 0.0  # log scale per frame, > 0 zooms in
    roll: float = 0.0  # content rotation, radians per frame
    shake: float = 0.0  # rms translation beyond the smooth trend, image widths per frame

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class CameraVocab:
    """Thresholds of the vocabulary (per frame). Below `*_min` a component is absent;
    at or above `*_fast` it is "quickly"; between `*_min` and `*_slow` it is "slowly"."""

    move_min: float = 0.002  # pan/tilt, image size per frame (0.5 px at 256 px)
    move_slow: float = 0.006
    move_fast: float = 0.02
    zoom_min: float = 0.003  # log scale per frame (~28% over 81 frames)
    zoom_slow: float = 0.006
    zoom_fast: float = 0.015
    roll_min: float = 0.003  # radians per frame (~14 degrees over 81 frames)
    roll_slow: float = 0.006
    roll_fast: float = 0.015
    shake_min: float = 0.0015  # image widths per frame, rms

    def __post_init__(self) -> None:
        for kind in ("move", "zoom", "roll"):
            lo, mid, hi = (getattr(self, f"{kind}_{b}") for b in ("min", "slow", "fast"))
            if not 0 < lo <= mid <= hi:
                raise ValueError(
                    f"CameraVocab: need 0 < {kind}_min <= {kind}_slow <= {kind}_fast, "
                    f"got {lo}, {mid}, {hi}"
                )
        if self.shake_min <= 0:
            raise ValueError(f"CameraVocab.shake_min must be > 0, got {self.shake_min}")


def _speed(value: float, slow: float, fast: float) -> str:
    magnitude = abs(value)
    if magnitude < slow:
        return " slowly"
    if magnitude >= fast:
        return " quickly"
    return ""


def camera_phrase(motion: CameraMotion, vocab: CameraVocab = CameraVocab()) -> str:
    """The caption phrase for `motion`, e.g. "the camera pans left slowly and zooms in".

    "static camera" when no component passes its threshold; "handheld" is added when the
    shake passes its own.
    """
    parts: list[str] = []
    if abs(motion.pan) >= vocab.move_min:
        side = "right" if motion.pan > 0 else "left"
        parts.append(f"pans {side}{_speed(motion.pan, vocab.move_slow, vocab.move_fast)}")
    if abs(motion.tilt) >= vocab.move_min:
        side = "up" if motion.tilt > 0 else "down"
        parts.append(f"tilts {side}{_speed(motion.tilt, vocab.move_slow, vocab.move_fast)}")
    if abs(motion.zoom) >= vocab.zoom_min:
        side = "in" if motion.zoom > 0 else "out"
        parts.append(f"zooms {side}{_speed(motion.zoom, vocab.zoom_slow, vocab.zoom_fast)}")
    if abs(motion.roll) >= vocab.roll_min:
        parts.append(f"rolls{_speed(motion.roll, vocab.roll_slow, vocab.roll_fast)}")
    handheld = motion.shake >= vocab.shake_min
    if not parts:
        return "handheld camera" if handheld else "static camera"
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return ("the handheld camera " if handheld else "the camera ") + joined


def _cauchy(resid: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Cauchy weights "k n" at 2.5 x the per-row median residual of the valid points."""
    # rows without points get a dummy residual so nanmedian has something to chew
    masked = np.where(valid | ~valid.any(axis=1, keepdims=True), resid, np.nan)
    mad = np.nan_to_num(np.nanmedian(masked, axis=1), nan=1.0)
    # a floor of a tenth of a pixel keeps exact fits from dividing by zero
    scale = 2.5 * np.maximum(mad, 0.1)
    return valid / (1.0 + (np.nan_to_num(resid) / scale[:, None]) ** 2)


def fit_similarity_steps(
    tracks: np.ndarray,
    visibility: np.ndarray,
    size: tuple[int, int],
    *,
    iterations: int = 10,
    min_points: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Robust similarity between each pair of consecutive frames, about the image centre.

    tracks "t n 2" px, visibility "t n" bool, size (width, height). Returns `params`
    "(t-1) 4" = (a, b, dx, dy) with `x' - c = [[a, -b], [b, a]] (x - c) + d`, and the
    number of points used per step "(t-1)" (steps with fewer than `min_points` give NaN:
    once the grid has left the frame, the few points left say little about the camera).
    Iteratively reweighted least squares with Cauchy weights at 2.5 x the MAD of the
    residuals, so points on independently moving objects stop pulling the fit.
    """
    tracks = np.asarray(tracks, dtype=np.float64)
    vis = np.asarray(visibility, dtype=bool)
    centre = np.array([size[0], size[1]], dtype=np.float64) / 2.0
    src = tracks[:-1] - centre
    dst = tracks[1:] - centre
    valid = vis[:-1] & vis[1:] & np.isfinite(src).all(-1) & np.isfinite(dst).all(-1)
    src = np.where(valid[..., None], src, 0.0)
    dst = np.where(valid[..., None], dst, 0.0)
    used = valid.sum(axis=1)
    # start from the median displacement (robust to a minority of movers), so the first
    # least-squares fit already discounts them
    disp = np.where(valid[..., None], dst - src, np.nan)
    any_valid = valid.any(axis=1)
    disp[~any_valid] = 0.0
    resid = np.hypot(*np.moveaxis(disp - np.nanmedian(disp, axis=1, keepdims=True), -1, 0))
    weights = _cauchy(resid, valid)
    params = np.zeros((tracks.shape[0] - 1, 4))
    for _ in range(max(iterations, 1)):
        wsum = np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
        ms = (weights[..., None] * src).sum(axis=1) / wsum
        md = (weights[..., None] * dst).sum(axis=1) / wsum
        sc, dc = src - ms[:, None], dst - md[:, None]
        denom = np.maximum((weights * (sc**2).sum(-1)).sum(axis=1), 1e-12)
        a = (weights * (sc[..., 0] * dc[..., 0] + sc[..., 1] * dc[..., 1])).sum(axis=1) / denom
        b = (weights * (sc[..., 0] * dc[..., 1] - sc[..., 1] * dc[..., 0])).sum(axis=1) / denom
        dx = md[:, 0] - (a * ms[:, 0] - b * ms[:, 1])
        dy = md[:, 1] - (b * ms[:, 0] + a * ms[:, 1])
        params = np.stack([a, b, dx, dy], axis=1)
        pred_x = a[:, None] * src[..., 0] - b[:, None] * src[..., 1] + dx[:, None]
        pred_y = b[:, None] * src[..., 0] + a[:, None] * src[..., 1] + dy[:, None]
        resid = np.hypot(dst[..., 0] - pred_x, dst[..., 1] - pred_y)
        weights = _cauchy(resid, valid)
    params[used < max(min_points, 3)] = np.nan
    return params, used


def shake_from_steps(steps: np.ndarray, window: int = 9) -> float:
    """RMS of per-frame translation steps "k 2" around their moving average (same units)."""
    steps = np.asarray(steps, dtype=np.float64)
    steps = steps[np.isfinite(steps).all(axis=1)]
    if len(steps) < 3:
        return 0.0
    window = max(1, min(window, len(steps)))
    kernel = np.ones(window) / window
    # edge padding keeps the trend of a constant pan constant at the ends
    pad = window // 2
    padded = np.pad(steps, ((pad, window - 1 - pad), (0, 0)), mode="edge")
    trend = np.stack([np.convolve(padded[:, i], kernel, mode="valid") for i in range(2)], axis=1)
    return float(np.sqrt(((steps - trend) ** 2).sum(axis=1).mean()))


def estimate_camera_motion(
    tracks: np.ndarray, visibility: np.ndarray, size: tuple[int, int]
) -> CameraMotion:
    """Mean camera motion of a clip from its tracks "t n 2" px and visibility "t n" bool.

    `size` = (width, height) of the tracks' pixel frame. Steps without enough visible
    points are ignored; a clip with none gives a static CameraMotion.
    """
    tracks = np.asarray(tracks)
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise ValueError(f"tracks must be 't n 2', got shape {tracks.shape}")
    if tracks.shape[0] < 2:
        return CameraMotion()
    params, _ = fit_similarity_steps(tracks, visibility, size)
    ok = np.isfinite(params).all(axis=1)
    if not ok.any():
        return CameraMotion()
    p = params[ok]
    width, height = size
    scale = np.hypot(p[:, 0], p[:, 1])
    return CameraMotion(
        pan=float(-p[:, 2].mean() / width),
        tilt=float(p[:, 3].mean() / height),
        zoom=float(np.log(scale).mean()),
        roll=float(np.arctan2(p[:, 1], p[:, 0]).mean()),
        shake=shake_from_steps(p[:, 2:4]) / width,
    )

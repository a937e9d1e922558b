"""How real a set of tracks moves: motion statistics and per-statistic distances.

The synthetic world is only useful if its motion looks like real video's. These
statistics describe a set of grid tracks (all windows of one geometry) in the terms that
matter to a forecaster, and :func:`compare` says how far two sets are apart on each:

- ``moving``: the fraction of points that move more than ``move_px`` (1 px) from their
  start over the window (any visible frame);
- ``speed`` / ``accel``: per point, the mean step length ``|x[t] - x[t-1]|`` and the mean
  second difference ``|x[t+1] - 2 x[t] + x[t-1]|`` (px per frame, px per frame^2) over the
  steps where every frame involved is visible: distributions over points;
- ``pan`` / ``zoom`` / ``roll`` / ``shake``: per window, the magnitudes of the camera
  motion `trajloom.data.camera.estimate_camera_motion` fits, in pixels where it has a
  length (pan = hypot(pan W, tilt H) px per frame, |zoom| log-scale per frame, |roll|
  radians per frame, shake W px rms): distributions over windows;
- ``occluded``: the fraction of point-frames hidden while inside the image;
- ``leaves``: the fraction of points that are outside the image at some frame.

Distances: for a fraction the absolute difference; for a distribution the 1-D
Wasserstein-1 distance (mean absolute difference of the quantile functions), in the
statistic's own unit. Numpy only; the benchmark ``benchmarks/world.py`` adds FVMD.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from trajloom.data.camera import estimate_camera_motion

__all__ = [
    "DISTRIBUTIONS",
    "FRACTIONS",
    "MotionStatistics",
    "compare",
    "motion_statistics",
    "wasserstein_1d",
]

#: Statistics that are fractions (compared by absolute difference).
FRACTIONS = ("moving", "occluded", "leaves")
#: Statistics that are distributions (compared by Wasserstein-1 distance).
DISTRIBUTIONS = ("speed", "accel", "pan", "zoom", "roll", "shake")
_LEVELS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class MotionStatistics:
    """Raw statistics of a set of windows: per-point ``moving``, ``speed``, ``accel``,
    ``leaves`` (points with a defined value only), per-window camera magnitudes, and the
    counts behind ``occluded`` (hidden point-frames inside the image / point-frames inside)."""

    moving: np.ndarray  # "p" bool
    speed: np.ndarray  # "p'" px / frame
    accel: np.ndarray  # "p''" px / frame^2
    leaves: np.ndarray  # "p" bool
    pan: np.ndarray  # "b" px / frame
    zoom: np.ndarray  # "b" log scale / frame
    roll: np.ndarray  # "b" radians / frame
    shake: np.ndarray  # "b" px, rms
    hidden_inside: int
    inside: int

    @property
    def occluded(self) -> float:
        return self.hidden_inside / self.inside if self.inside else 0.0

    def value(self, name: str) -> float | np.ndarray:
        """A fraction as a float, a distribution as its samples."""
        if name == "occluded":
            return self.occluded
        data = getattr(self, name)
        return float(data.mean()) if name in FRACTIONS and data.size else data

    def summary(self, quantiles: tuple[float, ...] = (0.5, 0.9)) -> dict[str, float]:
        """Named scalars: each fraction, and the mean and `quantiles` of each distribution."""
        out: dict[str, float] = {"windows": float(self.pan.size), "points": float(self.moving.size)}
        for name in FRACTIONS:
            out[name] = float(self.value(name))
        for name in DISTRIBUTIONS:
            data = getattr(self, name)
            out[f"{name} mean"] = float(data.mean()) if data.size else float("nan")
            for q in quantiles:
                value = float(np.quantile(data, q)) if data.size else float("nan")
                out[f"{name} q{round(100 * q)}"] = value
        return out


def _as_batch(tracks: np.ndarray, visibility: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tracks = np.asarray(tracks, dtype=np.float64)
    visibility = np.asarray(visibility, dtype=bool)
    if tracks.ndim == 3:
        tracks, visibility = tracks[None], visibility[None]
    if tracks.ndim != 4 or tracks.shape[-1] != 2 or tracks.shape[1] < 3:
        raise ValueError(
            f"tracks must be 't n 2' or 'b t n 2' with t >= 3 frames, got shape {tracks.shape}"
        )
    if visibility.shape != tracks.shape[:-1]:
        raise ValueError(
            f"visibility must have shape {tracks.shape[:-1]} to match tracks, got "
            f"{visibility.shape}"
        )
    return tracks, visibility


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-point mean of "b t n" values over `mask` along t; NaN where nothing counts."""
    count = mask.sum(axis=1)
    total = np.where(mask, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def motion_statistics(
    tracks: np.ndarray, visibility: np.ndarray, size: tuple[int, int], *, move_px: float = 1.0
) -> MotionStatistics:
    """The statistics (module docstring) of tracks "t n 2" or "b t n 2" px with visibility
    "t n" / "b t n" bool, in a frame of `size` = (width, height) pixels."""
    tracks, vis = _as_batch(tracks, visibility)
    width, height = size
    start = tracks[:, :1]
    moved = np.where(vis, np.linalg.norm(tracks - start, axis=-1), 0.0).max(axis=1) > move_px
    step = np.linalg.norm(np.diff(tracks, axis=1), axis=-1)
    speed = _masked_mean(step, vis[:, 1:] & vis[:, :-1])
    second = tracks[:, 2:] - 2.0 * tracks[:, 1:-1] + tracks[:, :-2]
    accel = _masked_mean(np.linalg.norm(second, axis=-1), vis[:, 2:] & vis[:, 1:-1] & vis[:, :-2])
    x, y = tracks[..., 0], tracks[..., 1]
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    camera = [
        estimate_camera_motion(t, v, (width, height)) for t, v in zip(tracks, vis, strict=True)
    ]
    return MotionStatistics(
        moving=moved.reshape(-1),
        speed=speed[np.isfinite(speed)],
        accel=accel[np.isfinite(accel)],
        leaves=(~inside).any(axis=1).reshape(-1),
        pan=np.array([np.hypot(c.pan * width, c.tilt * height) for c in camera]),
        zoom=np.array([abs(c.zoom) for c in camera]),
        roll=np.array([abs(c.roll) for c in camera]),
        shake=np.array([c.shake * width for c in camera]),
        hidden_inside=int((inside & ~vis).sum()),
        inside=int(inside.sum()),
    )


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 distance between two samples (quantile functions on 101 levels)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(np.abs(np.quantile(a, _LEVELS) - np.quantile(b, _LEVELS)).mean())


def compare(real: MotionStatistics, world: MotionStatistics) -> dict[str, float]:
    """Per-statistic distances from `world` to `real` (0 = identical; module docstring)."""
    out: dict[str, float] = {}
    for f in fields(MotionStatistics):
        name = f.name
        if name in FRACTIONS:
            out[name] = abs(float(real.value(name)) - float(world.value(name)))
        elif name in DISTRIBUTIONS:
            out[name] = wasserstein_1d(getattr(real, name), getattr(world, name))
    out["occluded"] = abs(real.occluded - world.occluded)
    return {name: out[name] for name in (*FRACTIONS, *DISTRIBUTIONS)}

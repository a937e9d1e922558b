"""What every tracker shares: the result type, the protocol, and input validation.

Conventions (``trajloom.encoding``): positions are ``(x, y)`` pixels of the frames
given to the tracker, last axis; tracks are time-major ``"t n 2"``. Query points are
``"n 3"`` rows ``(t, x, y)``: frame index first, then x, then y (the CoTracker order;
TAP-Vid files store ``(t, y, x)``, convert before calling).

Bad input is handled as follows (every other case raises ``ValueError`` saying which
input was wrong and what to do):

* fewer than 2 frames, frames of different sizes, non-``uint8`` frames: error;
* grayscale frames, ``"t h w"`` or ``"t h w 1"``: accepted, repeated to 3 channels;
* a list of frames: stacked (all must have the same size);
* a query whose frame is not an integer in ``[0, T)``: error;
* a query outside the image rectangle ``0 <= x <= W``, ``0 <= y <= H``: error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from trajloom.encoding import GridSpec

__all__ = [
    "TrackResult",
    "Tracker",
    "as_frames",
    "as_queries",
    "grid_queries",
]


@dataclass(frozen=True)
class TrackResult:
    """Tracks of N query points through a clip of T frames.

    ``tracks``: ``"t n 2"`` float32 ``(x, y)`` pixels of the input frames.
    ``visibility``: ``"t n"`` bool, True where the point is predicted visible.
    ``confidence``: optional ``"t n"`` float32 in ``[0, 1]`` (backend dependent).
    """

    tracks: np.ndarray
    visibility: np.ndarray
    confidence: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = self.tracks
        if t.ndim != 3 or t.shape[-1] != 2:
            raise ValueError(f"TrackResult.tracks must be 't n 2', got shape {t.shape}")
        if self.visibility.shape != t.shape[:2] or self.visibility.dtype != np.bool_:
            raise ValueError(
                f"TrackResult.visibility must be bool 't n' = {t.shape[:2]}, got "
                f"{self.visibility.dtype} {self.visibility.shape}"
            )
        if self.confidence is not None and self.confidence.shape != t.shape[:2]:
            raise ValueError(
                f"TrackResult.confidence must be 't n' = {t.shape[:2]}, got {self.confidence.shape}"
            )

    @property
    def num_frames(self) -> int:
        return self.tracks.shape[0]

    @property
    def num_points(self) -> int:
        return self.tracks.shape[1]


@runtime_checkable
class Tracker(Protocol):
    """A point tracker: frames and query points in, tracks and visibility out."""

    def track(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        queries: np.ndarray | None = None,
        *,
        stride: int | None = None,
        grid: GridSpec | None = None,
    ) -> TrackResult:
        """Track ``queries "n 3"`` rows ``(t, x, y)`` (or a grid) through ``frames "t h w 3"``.

        Each query is tracked forward and backward from its own frame ``t``. Give
        exactly one of ``queries``, ``stride`` and ``grid``: ``stride`` seeds the grid
        ``(x, y) = (j * s, i * s)`` at frame 0, row-major (see :func:`grid_queries`);
        ``grid`` seeds a ``GridSpec``'s grid and reports tracks in its pixels.
        """
        ...


def as_frames(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Validate a clip and return it as a contiguous ``uint8 "t h w 3"`` array.

    Accepts an array ``"t h w 3"``, ``"t h w 1"`` or ``"t h w"`` (grayscale, repeated to
    3 channels), or a sequence of ``"h w 3"`` / ``"h w"`` frames of one size.
    """
    if not isinstance(frames, np.ndarray):
        frames = list(frames)
        if len(frames) < 2:
            raise ValueError(
                f"frames: got {len(frames)} frame(s); tracking needs at least 2 frames"
            )
        shapes = [np.shape(f) for f in frames]
        for i, shape in enumerate(shapes):
            if shape[:2] != shapes[0][:2] or len(shape) != len(shapes[0]):
                raise ValueError(
                    f"frames: frame {i} has shape {shape} but frame 0 has {shapes[0]}; "
                    "all frames must have the same size (resize them first, e.g. with "
                    "trajloom.data.video.resize_frames)"
                )
        frames = np.stack([np.asarray(f) for f in frames])
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(
            f"frames must be 't h w 3' (RGB), 't h w 1' or 't h w' (grayscale), got shape "
            f"{frames.shape}"
        )
    if frames.shape[0] < 2:
        raise ValueError(
            f"frames: got {frames.shape[0]} frame(s) (shape {frames.shape}); tracking needs "
            "at least 2 frames"
        )
    if frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8 in [0, 255], got dtype {frames.dtype}; convert float "
            "frames in [0, 1] with (frames * 255).round().astype(np.uint8)"
        )
    if frames.shape[1] < 2 or frames.shape[2] < 2:
        raise ValueError(f"frames are too small to track in: shape {frames.shape}")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return np.ascontiguousarray(frames)


def as_queries(queries: np.ndarray, num_frames: int, size: tuple[int, int]) -> np.ndarray:
    """Validate query points ``"n 3"`` rows ``(t, x, y)`` against a clip; return float64.

    ``t`` must be an integer in ``[0, num_frames)``; ``(x, y)`` must lie in the image
    rectangle ``[0, W] x [0, H]`` with ``size = (W, H)``.
    """
    q = np.asarray(queries, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 3:
        raise ValueError(
            f"queries must be 'n 3' rows (t, x, y), got shape {q.shape}; for 'n 2' (x, y) "
            "points at frame 0 prepend a column of zeros"
        )
    if q.shape[0] == 0:
        raise ValueError("queries is empty; give at least one (t, x, y) row")
    if not np.isfinite(q).all():
        raise ValueError(f"queries hold {int((~np.isfinite(q)).sum())} NaN or inf values")
    t = q[:, 0]
    bad_t = (np.abs(t - np.round(t)) > 1e-6) | (t < 0) | (np.round(t) > num_frames - 1)
    if bad_t.any():
        i = int(np.flatnonzero(bad_t)[0])
        raise ValueError(
            f"queries: {int(bad_t.sum())} queries have a frame index outside the clip or not "
            f"an integer (first: row {i}, t={t[i]}); t must be an integer in "
            f"[0, {num_frames - 1}] for a clip of {num_frames} frames"
        )
    w, h = size
    x, y = q[:, 1], q[:, 2]
    outside = (x < 0) | (x > w) | (y < 0) | (y > h)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"queries: {int(outside.sum())} queries lie outside the {w}x{h} image (first: "
            f"row {i}, (x, y)=({x[i]}, {y[i]})); need 0 <= x <= {w} and 0 <= y <= {h} in "
            "pixels of the frames given to the tracker"
        )
    q[:, 0] = np.round(t)
    return q


def grid_queries(size: tuple[int, int], stride: int, *, frame: int = 0) -> np.ndarray:
    """The grid of query points ``"n 3"`` rows ``(t, x, y)`` seeded at ``frame``.

    Point ``(i, j)`` sits at ``(x, y) = (j * s, i * s)`` for all such points inside the
    ``size = (W, H)`` image (``j * s < W``, ``i * s < H``), row-major (y outer, x
    inner), as ``trajloom.encoding.query_points`` seeds it.
    """
    if isinstance(stride, bool) or not isinstance(stride, int) or stride <= 0:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    w, h = size
    ys = np.arange(0, h, stride, dtype=np.float64)
    xs = np.arange(0, w, stride, dtype=np.float64)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    tt = np.full_like(xx, float(frame))
    return np.stack([tt, xx, yy], axis=-1).reshape(-1, 3)

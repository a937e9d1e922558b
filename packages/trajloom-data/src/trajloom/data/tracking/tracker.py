"""Turning ``track(frames, queries | stride | grid)`` arguments into validated arrays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trajloom.data.tracking.base import TrackResult, as_frames, as_queries, grid_queries
from trajloom.encoding import GridSpec, rescale_tracks

__all__ = ["PreparedQueries", "resolve_queries"]


@dataclass(frozen=True)
class PreparedQueries:
    """Validated frames ``"t h w 3"`` uint8, queries ``"n 3"`` ``(t, x, y)`` in frame pixels.

    ``out_size`` is the ``(width, height)`` the results are reported in: the frames'
    size, or a ``GridSpec``'s working resolution.
    """

    frames: np.ndarray
    queries: np.ndarray
    out_size: tuple[int, int]

    @property
    def frame_size(self) -> tuple[int, int]:
        return (self.frames.shape[2], self.frames.shape[1])

    def finish(
        self, tracks: np.ndarray, visible: np.ndarray, confidence: np.ndarray | None = None
    ) -> TrackResult:
        """Wrap backend output ``"t n 2"`` (frame pixels) as a result in ``out_size`` pixels."""
        tracks = tracks.astype(np.float32, copy=False)
        if self.out_size != self.frame_size:
            tracks = rescale_tracks(tracks, self.frame_size, self.out_size).astype(np.float32)
        if confidence is not None:
            confidence = confidence.astype(np.float32, copy=False)
        return TrackResult(tracks=tracks, visibility=visible.astype(bool), confidence=confidence)


def resolve_queries(
    frames: np.ndarray | Sequence[np.ndarray],
    queries: np.ndarray | None,
    *,
    stride: int | None = None,
    grid: GridSpec | None = None,
) -> PreparedQueries:
    """Validate a ``track`` call: exactly one of ``queries``, ``stride``, ``grid``.

    * ``queries "n 3"``: rows ``(t, x, y)`` in pixels of ``frames``;
    * ``stride``: the grid ``(j * s, i * s)`` over the frames, seeded at frame 0;
    * ``grid``: a ``GridSpec``; its grid is seeded at frame 0 in the spec's working
      resolution, mapped to the frames' pixels with ``rescale_tracks`` when the frames
      have another size, and the result is mapped back (tracks in spec pixels).
    """
    given = [
        name
        for name, v in (("queries", queries), ("stride", stride), ("grid", grid))
        if v is not None
    ]
    if len(given) != 1:
        raise ValueError(
            f"track: give exactly one of queries (n 3 rows (t, x, y)), stride or grid "
            f"(a GridSpec); got {given or 'none'}"
        )
    clip = as_frames(frames)
    size = (clip.shape[2], clip.shape[1])
    if queries is not None:
        return PreparedQueries(clip, as_queries(queries, clip.shape[0], size), size)
    if stride is not None:
        return PreparedQueries(clip, grid_queries(size, stride), size)
    if not isinstance(grid, GridSpec):
        raise ValueError(f"grid must be a trajloom.encoding.GridSpec, got {type(grid).__name__}")
    q = grid_queries(grid.size, grid.stride)
    q[:, 1:] = rescale_tracks(q[:, 1:], grid.size, size)
    return PreparedQueries(clip, as_queries(q, clip.shape[0], size), grid.size)

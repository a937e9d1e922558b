"""Overlays of history tracks and (true or predicted) futures on a video, and grids of them.

Used by the sample app for its renders and by the training app for its previews.

Drawing is numpy + OpenCV with anti-aliased lines and circles. A point's trail is the
segments of its last ``trail`` frames, each blended with an opacity that falls
linearly with its age; a segment is drawn only when the point is visible at both of
its ends, and a point's head only when it is visible now, so occluded points vanish.
Colours come from each point's grid position (hue across x, brightness down y), with
one palette for the history (cool: cyan to violet) and another for the future (warm:
magenta to yellow), so the boundary between observed and predicted motion is visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from trajloom.encoding import DEFAULT_GRID

__all__ = [
    "MAX_GRID_WIDTH",
    "RenderConfig",
    "draw_markers",
    "grid_colors",
    "render_grid",
    "render_overlay",
    "tile_videos",
]

#: Widest grid drawn by default: two tiles of the default working resolution.
MAX_GRID_WIDTH = 2 * DEFAULT_GRID.width
# Hue ranges (OpenCV hue, 0..180) of the two palettes; chosen not to overlap.
_HISTORY_HUES = (80.0, 140.0)  # cyan -> blue -> violet
_FUTURE_HUES = (150.0, 210.0)  # magenta -> red -> orange -> yellow (wraps at 180)


@dataclass(frozen=True)
class RenderConfig:
    """How overlays look: trail length in frames, line width and head radius in pixels."""

    trail: int = 12
    thickness: int = 2
    radius: int = 3
    dim_held: float = 0.6  # brightness of the held last frame where the video has ended

    def __post_init__(self) -> None:
        if self.trail < 1 or self.thickness < 1 or self.radius < 0:
            raise ValueError(
                f"RenderConfig: trail and thickness must be >= 1 and radius >= 0, got "
                f"{self.trail}, {self.thickness}, {self.radius}"
            )
        if not 0.0 <= self.dim_held <= 1.0:
            raise ValueError(f"RenderConfig.dim_held must be in [0, 1], got {self.dim_held}")


def grid_colors(grid_hw: tuple[int, int], palette: str) -> np.ndarray:
    """RGB colours "n 3" uint8 of the row-major grid points; palette "history" or "future".

    ``grid_hw`` = (Hg, Wg), n = Hg * Wg: hue runs across x, brightness falls down y.
    """
    if palette not in ("history", "future"):
        raise ValueError(f"palette must be 'history' or 'future', got {palette!r}")
    hg, wg = grid_hw
    lo, hi = _HISTORY_HUES if palette == "history" else _FUTURE_HUES
    u = np.linspace(0.0, 1.0, wg) if wg > 1 else np.zeros(1)
    v = np.linspace(0.0, 1.0, hg) if hg > 1 else np.zeros(1)
    hue = (lo + (hi - lo) * u)[None, :].repeat(hg, 0) % 180.0
    val = (255.0 - 90.0 * v)[:, None].repeat(wg, 1)
    sat = np.full((hg, wg), 255.0 if palette == "future" else 200.0)
    hsv = np.stack([hue, sat, val], axis=-1).astype(np.uint8)
    rgb = cv2.cvtColor(hsv[None].reshape(1, hg * wg, 3), cv2.COLOR_HSV2RGB)
    return rgb.reshape(hg * wg, 3)


#: Fraction bits of the fixed-point coordinates OpenCV draws with (sub-pixel positions).
_SHIFT = 4


def _draw_frame(
    background: np.ndarray,
    points: np.ndarray,
    drawable: np.ndarray,
    colors: np.ndarray,
    now: int,
    cfg: RenderConfig,
) -> np.ndarray:
    """Draw the trails ending at frame ``now`` on a copy of the "h w 3" ``background``.

    ``points`` "t n 2" int64 fixed-point pixels (``_SHIFT`` fraction bits), ``drawable``
    "t n" bool (visible with finite coordinates), ``colors`` "t n 3" RGB uint8.
    """
    canvas = background.copy()
    for age in range(min(cfg.trail, now), 0, -1):
        end = now - age + 1
        start = end - 1
        draw = np.flatnonzero(drawable[start] & drawable[end])
        if draw.size == 0:
            continue
        layer = canvas.copy()
        for i in draw:
            color = tuple(int(c) for c in colors[end, i])
            p0 = (int(points[start, i, 0]), int(points[start, i, 1]))
            p1 = (int(points[end, i, 0]), int(points[end, i, 1]))
            cv2.line(layer, p0, p1, color, cfg.thickness, cv2.LINE_AA, _SHIFT)
        alpha = 1.0 - (age - 1) / cfg.trail
        cv2.addWeighted(layer, alpha, canvas, 1.0 - alpha, 0.0, dst=canvas)
    if cfg.radius > 0:
        for i in np.flatnonzero(drawable[now]):
            color = tuple(int(c) for c in colors[now, i])
            center = (int(points[now, i, 0]), int(points[now, i, 1]))
            cv2.circle(canvas, center, cfg.radius << _SHIFT, color, -1, cv2.LINE_AA, _SHIFT)
    return canvas


def draw_markers(
    image: np.ndarray, points: np.ndarray, *, radius: int = 7, filled: np.ndarray | None = None
) -> np.ndarray:
    """Target markers on a copy of ``image`` "h w 3": a white ring with a black outline and
    a cross at each of ``points`` "k 2" (x, y pixels); ``filled`` "k" bool fills the ring
    (the frame a pin constrains). Non-finite points are skipped."""
    canvas = image.copy()
    for k, (x, y) in enumerate(np.asarray(points, dtype=np.float64).reshape(-1, 2)):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        c = (round(x * (1 << _SHIFT)), round(y * (1 << _SHIFT)))
        r = radius << _SHIFT
        fill = filled is not None and bool(filled[k])
        for color, width in (((0, 0, 0), 4), ((255, 255, 255), 2)):
            cv2.circle(canvas, c, r, color, -1 if fill else width, cv2.LINE_AA, _SHIFT)
            for dx, dy in ((1, 0), (0, 1)):
                p0 = (c[0] - dx * 2 * r, c[1] - dy * 2 * r)
                p1 = (c[0] + dx * 2 * r, c[1] + dy * 2 * r)
                cv2.line(canvas, p0, p1, color, width, cv2.LINE_AA, _SHIFT)
    return canvas


def render_overlay(
    frames: np.ndarray | None,
    hist_tracks: np.ndarray,
    hist_vis: np.ndarray,
    fut_tracks: np.ndarray,
    fut_vis: np.ndarray,
    *,
    grid_hw: tuple[int, int],
    size: tuple[int, int],
    config: RenderConfig | None = None,
    markers: np.ndarray | None = None,
) -> np.ndarray:
    """History then future of every point drawn over the video: "th+tf h w 3" uint8.

    ``frames`` "t h w 3" (``size`` = (w, h)) from the first history frame on; where the
    video ends before the future does, its last frame is held, dimmed. Without frames
    the background is black. ``hist_tracks`` "th n 2" / ``fut_tracks`` "tf n 2" are in
    pixels of ``size``, ``hist_vis`` "th n" / ``fut_vis`` "tf n" bool; points that are
    invisible (or not finite) are not drawn. ``grid_hw`` = (Hg, Wg) of the row-major grid
    of the n points (their colours, :func:`grid_colors`). ``markers`` "k 3" rows of
    (future frame, x, y): targets drawn on every future frame (:func:`draw_markers`),
    filled on their own frame — the pins of a steered future.
    """
    cfg = config or RenderConfig()
    width, height = size
    th, tf = hist_tracks.shape[0], fut_tracks.shape[0]
    tracks = np.concatenate([hist_tracks, fut_tracks], axis=0).astype(np.float32)
    vis = np.concatenate([hist_vis, fut_vis], axis=0).astype(bool)
    palettes = np.stack([grid_colors(grid_hw, "history"), grid_colors(grid_hw, "future")])
    # A segment takes the palette of the frame it ends on: future segments are warm.
    colors = palettes[(np.arange(th + tf) >= th).astype(np.intp)]
    if frames is None:
        frames = np.zeros((1, height, width, 3), np.uint8)
        held = frames[0]
    else:
        if frames.shape[1:3] != (height, width):
            raise ValueError(
                f"frames are {frames.shape[2]}x{frames.shape[1]} but tracks are in pixels of "
                f"{width}x{height}; resize the frames first"
            )
        held = (frames[-1].astype(np.float32) * cfg.dim_held).astype(np.uint8)
    finite = np.all(np.isfinite(tracks), axis=-1)
    drawable = vis & finite
    points = np.round(np.where(finite[..., None], tracks, 0.0) * (1 << _SHIFT)).astype(np.int64)
    out = np.empty((th + tf, height, width, 3), np.uint8)
    for t in range(th + tf):
        background = frames[t] if t < frames.shape[0] else held
        out[t] = _draw_frame(background, points, drawable, colors, t, cfg)
        if markers is not None and len(markers) and t >= th:
            mk = np.asarray(markers, dtype=np.float64).reshape(-1, 3)
            out[t] = draw_markers(out[t], mk[:, 1:], filled=mk[:, 0] == t - th)
    return out


def _label(tile: np.ndarray, text: str) -> None:
    """Write ``text`` into the top-left corner of ``tile`` "h w 3", white on a black outline."""
    scale = max(0.4, tile.shape[0] / 600.0)
    origin = (8, int(24 * scale))
    for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(
            tile, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA
        )


def tile_videos(
    videos: list[np.ndarray], *, labels: list[str] | None = None, max_width: int = MAX_GRID_WIDTH
) -> np.ndarray:
    """Videos "t h w 3" of one size side by side in a near-square grid: "t H W 3".

    Tiles shrink so that the grid is at most ``max_width`` pixels wide; missing cells
    of the last row are black.
    """
    if not videos:
        raise ValueError("tile_videos: no videos given")
    t, h, w = videos[0].shape[:3]
    if any(v.shape != videos[0].shape for v in videos):
        raise ValueError(
            f"tile_videos: all videos must share one shape, got {[v.shape for v in videos]}"
        )
    cols = math.ceil(math.sqrt(len(videos)))
    rows = math.ceil(len(videos) / cols)
    scale = min(1.0, max_width / (cols * w))
    tw, th_ = max(2, round(w * scale)) // 2 * 2, max(2, round(h * scale)) // 2 * 2
    grid = np.zeros((t, rows * th_, cols * tw, 3), np.uint8)
    for k, video in enumerate(videos):
        r, c = divmod(k, cols)
        for f in range(t):
            tile = (
                video[f]
                if (tw, th_) == (w, h)
                else cv2.resize(video[f], (tw, th_), interpolation=cv2.INTER_AREA)
            )
            if labels is not None:
                tile = tile.copy()
                _label(tile, labels[k])
            grid[f, r * th_ : (r + 1) * th_, c * tw : (c + 1) * tw] = tile
    return grid


def render_grid(
    frames: np.ndarray | None,
    hist_tracks: np.ndarray,
    hist_vis: np.ndarray,
    samples: list[tuple[np.ndarray, np.ndarray]],
    *,
    grid_hw: tuple[int, int],
    size: tuple[int, int],
    labels: list[str] | None = None,
    config: RenderConfig | None = None,
    max_width: int = MAX_GRID_WIDTH,
    markers: np.ndarray | None = None,
) -> np.ndarray:
    """One overlay per sampled future ``(tracks "tf n 2", visibility "tf n")``, tiled
    (``markers`` as in :func:`render_overlay`, on every tile)."""
    videos = [
        render_overlay(
            frames,
            hist_tracks,
            hist_vis,
            tracks,
            vis,
            grid_hw=grid_hw,
            size=size,
            config=config,
            markers=markers,
        )
        for tracks, vis in samples
    ]
    labels = labels if labels is not None else [f"sample {k}" for k in range(len(samples))]
    return tile_videos(videos, labels=labels, max_width=max_width)

"""Trails of history tracks and (true or predicted) futures drawn over a video.

Used by the sample app and the demo for their renders, the report for its thumbnails,
and the training app for its previews. The look follows the point-track visualisers
people know (CoTracker's, TAPIR's): the video itself, small points, fading trails.

* Points: a disc per visible point whose radius scales with the frame (about 1/150 of
  its shorter side unless ``RenderConfig.radius`` says otherwise), so a 768x576 render
  and a 128x96 one look alike; points that stay put over the trail are drawn smaller,
  so that what moves stands out.
* Trails: the segments of the last ``trail`` frames, each blended with an opacity that
  falls linearly with its age; a segment is drawn only when the point is visible at
  both ends, a head only when it is visible now, so occluded points vanish.
* One colour per point, kept over time, from where it starts (its first visible
  position: hue across x, brightness down y), so a point can be followed by eye.
* History and future differ: history segments and heads are thinner and washed out
  towards grey, future ones in full colour with a dark rim; a bar along the bottom
  shows time (grey history, orange future, a white tick at the boundary frame) and the
  top-left corner says which part is shown.
* K samples: one overlay each, and :func:`render_overlay` with ``alternatives`` draws
  the other samples' futures faintly under the first one's.
* Pins: a ring with a cross at each target (filled on its frame); a "stay hidden" pin
  is a dashed ring with a slash where its point is, on its frame.
* ``RenderConfig.stride`` thins the grid for viewing (every stride-th row and column).

Drawing is numpy + OpenCV with anti-aliased lines and circles at sub-pixel positions.
Tracks are given in pixels of the frame drawn on (``size``); mapping them from the
model's working pixels is the caller's (``trajloom.data.geometry.SourceView``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from trajloom.encoding import DEFAULT_GRID

__all__ = [
    "MAX_GRID_WIDTH",
    "RenderConfig",
    "draw_hidden",
    "draw_markers",
    "point_colors",
    "render_grid",
    "render_overlay",
    "render_summary",
    "thin_points",
    "tile_videos",
]

#: Widest grid drawn by default: two tiles of the default working resolution.
MAX_GRID_WIDTH = 2 * DEFAULT_GRID.width
#: Fraction bits of the fixed-point coordinates OpenCV draws with (sub-pixel positions).
_SHIFT = 4
_ONE = 1 << _SHIFT
_GREY = np.array([170.0, 170.0, 170.0])
_HISTORY_BAR, _FUTURE_BAR = (200, 200, 200), (255, 150, 30)

Track = tuple[np.ndarray, np.ndarray]  # tracks "t n 2" pixels, visibility "t n" bool


@dataclass(frozen=True)
class RenderConfig:
    """How renders look.

    ``trail`` frames of trail behind each point; ``radius`` / ``thickness``: the head's
    radius and the future trail's width in pixels (None: they scale with the frame, see
    :meth:`sizes`); ``dim_held``: brightness of the last frame held where the video ends
    before the future does; ``stride``: draw every stride-th grid row and column (1: all
    points); ``faint``: opacity of the other samples' futures in an overlay of all;
    ``timeline``: the time bar and the corner label.
    """

    trail: int = 12
    thickness: float | None = None
    radius: float | None = None
    dim_held: float = 0.6
    stride: int = 1
    faint: float = 0.35
    timeline: bool = True

    def __post_init__(self) -> None:
        bad_size = (self.thickness is not None and self.thickness < 1) or (
            self.radius is not None and self.radius < 0
        )
        if self.trail < 1 or bad_size:
            raise ValueError(
                f"RenderConfig: trail and thickness must be >= 1 and radius >= 0, got "
                f"{self.trail}, {self.thickness}, {self.radius}"
            )
        if not 0.0 <= self.dim_held <= 1.0:
            raise ValueError(f"RenderConfig.dim_held must be in [0, 1], got {self.dim_held}")
        if not 0.0 <= self.faint <= 1.0:
            raise ValueError(f"RenderConfig.faint must be in [0, 1], got {self.faint}")
        if self.stride < 1:
            raise ValueError(
                f"RenderConfig.stride (--render-stride) must be >= 1, got {self.stride}"
            )

    def sizes(self, size: tuple[int, int]) -> tuple[float, int]:
        """(head radius, future trail width) in pixels on a ``(width, height)`` frame."""
        short = min(size)
        radius = self.radius if self.radius is not None else max(1.5, short / 150.0)
        width = self.thickness if self.thickness is not None else max(1.0, radius * 0.6)
        return float(radius), max(1, round(width))


def thin_points(grid_hw: tuple[int, int], stride: int) -> np.ndarray:
    """Indices of the row-major grid points kept when drawing every ``stride``-th grid
    row and column (the middle ones, so that a thinned grid stays centred)."""
    hg, wg = grid_hw
    rows = np.arange((hg - 1) % stride // 2, hg, stride)
    cols = np.arange((wg - 1) % stride // 2, wg, stride)
    return (rows[:, None] * wg + cols[None, :]).reshape(-1)


def point_colors(tracks: np.ndarray, vis: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB "n 3" uint8: one colour per point from where it starts, its first visible
    position in ``tracks`` "t n 2" (hue across x, brightness down y of ``size``)."""
    ok = vis & np.all(np.isfinite(tracks), axis=-1)
    first = np.where(ok.any(0), ok.argmax(0), 0)
    start = tracks[first, np.arange(tracks.shape[1])]
    start = np.where(np.isfinite(start), start, 0.0)
    u = np.clip(start[:, 0] / max(size[0] - 1, 1), 0.0, 1.0)
    v = np.clip(start[:, 1] / max(size[1] - 1, 1), 0.0, 1.0)
    hsv = np.stack([155.0 * u, np.full_like(u, 235.0), 255.0 - 75.0 * v], axis=-1)
    rgb = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)
    return rgb[0]


def _washed(colors: np.ndarray) -> np.ndarray:
    """The history's version of ``colors``: halfway to grey."""
    return (0.45 * colors + 0.55 * _GREY).astype(np.uint8)


@dataclass
class _Layer:
    """One set of trails to draw: fixed-point points "t n 2", drawable "t n", colours of
    the future "n 3" and of the history "n 3", opacity, and whether heads are drawn."""

    points: np.ndarray
    drawable: np.ndarray
    colors: np.ndarray
    washed: np.ndarray
    opacity: float = 1.0
    heads: bool = True
    history: bool = True  # draw the segments that end in the history

    @classmethod
    def of(cls, tracks: np.ndarray, vis: np.ndarray, colors: np.ndarray, **kw) -> _Layer:
        finite = np.all(np.isfinite(tracks), axis=-1)
        points = np.round(np.where(finite[..., None], tracks, 0.0) * _ONE).astype(np.int64)
        return cls(points, vis.astype(bool) & finite, colors, _washed(colors), **kw)


def _trails(canvas: np.ndarray, layer: _Layer, now: int, th: int, cfg: RenderConfig) -> None:
    """Blend the trail segments of ``layer`` ending by frame ``now`` into ``canvas``.

    Segments go into one colour image (a call per point and phase) and one coverage mask
    holding each segment's opacity (a call per age, oldest first: newer over older); one
    blend then puts them on the frame, so the cost hardly grows with the trail's length.
    """
    _, width = cfg.sizes((canvas.shape[1], canvas.shape[0]))
    thin = max(1, width // 2)
    paint = np.zeros_like(canvas)
    mask = np.zeros(canvas.shape[:2], np.uint8)
    pieces = []  # (future, point indices, segments "m 2 2")
    for age in range(min(cfg.trail, now), 0, -1):
        end = now - age + 1
        if end < th and not layer.history:
            continue
        draw = np.flatnonzero(layer.drawable[end - 1] & layer.drawable[end])
        if draw.size == 0:
            continue
        segs = np.stack([layer.points[end - 1, draw], layer.points[end, draw]], axis=1)
        segs = segs.astype(np.int32)
        level = round(255 * (1.0 - (age - 1) / cfg.trail))
        stroke = width if end >= th else thin
        cv2.polylines(mask, list(segs), False, level, stroke, cv2.LINE_AA, _SHIFT)
        pieces.append((end >= th, draw, segs))
    if not pieces:
        return
    for future in (False, True):
        mine = [(d, g) for f, d, g in pieces if f == future]
        if not mine:
            continue
        points = np.concatenate([d for d, _ in mine])
        segs = np.concatenate([g for _, g in mine])
        order = np.argsort(points, kind="stable")
        points, segs = points[order], segs[order]
        starts = np.flatnonzero(np.r_[True, points[1:] != points[:-1]])
        colors = layer.colors if future else layer.washed
        stroke = width if future else thin
        for i, group in zip(points[starts], np.split(segs, starts[1:]), strict=True):
            color = tuple(int(c) for c in colors[i])
            cv2.polylines(paint, list(group), False, color, stroke, cv2.LINE_AA, _SHIFT)
    alpha = mask.astype(np.float32) * (layer.opacity / 255.0)
    canvas[:] = cv2.blendLinear(paint, canvas, alpha, 1.0 - alpha)


def _moving(layer: _Layer, now: int, span: int, reach: float) -> np.ndarray:
    """ "n" bool: the points that were more than ``reach`` pixels from where they are now
    at some visible frame of the last ``span`` frames."""
    window = slice(max(0, now - span), now + 1)
    pts = layer.points[window].astype(np.float64) / _ONE
    dist = np.linalg.norm(pts - pts[-1:], axis=-1)
    return np.asarray((np.where(layer.drawable[window], dist, 0.0) > reach).any(0), bool)


def _heads(canvas: np.ndarray, layer: _Layer, now: int, th: int, cfg: RenderConfig) -> None:
    """The points of ``layer`` at frame ``now``: washed-out small discs in the history,
    coloured discs with a dark rim in the future; points that have not moved over the
    trail are drawn smaller and without the rim, so that what moves stands out."""
    radius, _ = cfg.sizes((canvas.shape[1], canvas.shape[0]))
    if radius <= 0 or not layer.heads or (now < th and not layer.history):
        return
    future = now >= th
    target = canvas if layer.opacity >= 1.0 else canvas.copy()
    r = (radius if future else 0.75 * radius) * _ONE
    moving = _moving(layer, now, cfg.trail, radius)
    for i in np.flatnonzero(layer.drawable[now]):
        c = (int(layer.points[now, i, 0]), int(layer.points[now, i, 1]))
        size = round(r if moving[i] else 0.6 * r)
        if future and moving[i]:
            cv2.circle(target, c, size + _ONE, (20, 20, 20), -1, cv2.LINE_AA, _SHIFT)
        color = layer.colors[i] if future else layer.washed[i]
        cv2.circle(target, c, size, tuple(int(v) for v in color), -1, cv2.LINE_AA, _SHIFT)
    if target is not canvas:
        cv2.addWeighted(target, layer.opacity, canvas, 1.0 - layer.opacity, 0.0, dst=canvas)


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    """``text`` white on a black outline at ``origin`` (baseline left) of ``image``."""
    for color, thickness in (((0, 0, 0), max(3, round(3 * scale))), ((255, 255, 255), 1)):
        cv2.putText(
            image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA
        )


def _timeline(canvas: np.ndarray, now: int, th: int, total: int, title: str) -> None:
    """The time bar along the bottom (history grey, future orange, elapsed bright, a
    white tick at the boundary) and the corner label saying what is shown."""
    h, w = canvas.shape[:2]
    bar = max(3, h // 80)
    y0 = h - bar
    edge = round(w * th / total)
    done = round(w * (now + 1) / total)
    strip = canvas[y0:]
    strip[:] = (strip * 0.35).astype(np.uint8)
    for x0, x1, color in ((0, edge, _HISTORY_BAR), (edge, w, _FUTURE_BAR)):
        lit = strip[:, x0 : min(x1, done)]
        lit[:] = color
        rest = strip[:, max(x0, done) : x1]
        rest[:] = (np.asarray(rest, np.float32) * 0.5 + np.asarray(color) * 0.25).astype(np.uint8)
    canvas[max(0, y0 - bar) :, max(0, edge - 1) : edge + 1] = 255
    phase = f"history {now + 1}/{th}" if now < th else f"future +{now - th + 1}"
    scale = max(0.35, h / 900.0)
    label = f"{title}  {phase}" if title else phase
    _text(canvas, label, (round(8 * scale / 0.5), round(22 * scale / 0.5)), scale)


def draw_markers(
    image: np.ndarray,
    points: np.ndarray,
    *,
    radius: float = 7,
    filled: np.ndarray | None = None,
) -> np.ndarray:
    """Target markers on a copy of ``image`` "h w 3": a white ring with a black outline and
    a cross at each of ``points`` "k 2" (x, y pixels); ``filled`` "k" bool fills the ring
    (the frame a pin constrains). Non-finite points are skipped."""
    canvas = image.copy()
    for k, (x, y) in enumerate(np.asarray(points, dtype=np.float64).reshape(-1, 2)):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        c = (round(x * _ONE), round(y * _ONE))
        r = round(radius * _ONE)
        fill = filled is not None and bool(filled[k])
        for color, width in (((0, 0, 0), 4), ((255, 255, 255), 2)):
            cv2.circle(canvas, c, r, color, -1 if fill else width, cv2.LINE_AA, _SHIFT)
            for dx, dy in ((1, 0), (0, 1)):
                p0 = (c[0] - dx * 2 * r, c[1] - dy * 2 * r)
                p1 = (c[0] + dx * 2 * r, c[1] + dy * 2 * r)
                cv2.line(canvas, p0, p1, color, width, cv2.LINE_AA, _SHIFT)
    return canvas


def draw_hidden(
    image: np.ndarray, points: np.ndarray, *, radius: float = 7, now: np.ndarray | None = None
) -> np.ndarray:
    """ "Stay hidden" pin markers on a copy of ``image``: a dashed magenta ring with a
    slash at each of ``points`` "k 2" (where the hidden point is), drawn bold where
    ``now`` "k" bool (the pinned frame). Non-finite points are skipped."""
    canvas = image.copy()
    for k, (x, y) in enumerate(np.asarray(points, dtype=np.float64).reshape(-1, 2)):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        bold = now is not None and bool(now[k])
        c, r = (round(x * _ONE), round(y * _ONE)), round(radius * _ONE)
        for color, width in (((0, 0, 0), 4 if bold else 3), ((255, 60, 220), 2 if bold else 1)):
            for start in range(0, 360, 45):  # eight dashes
                cv2.ellipse(
                    canvas, c, (r, r), 0, start, start + 28, color, width, cv2.LINE_AA, _SHIFT
                )
            d = round(r * 0.7)
            p0, p1 = (c[0] - d, c[1] + d), (c[0] + d, c[1] - d)
            cv2.line(canvas, p0, p1, color, width, cv2.LINE_AA, _SHIFT)
    return canvas


def _pins(
    canvas: np.ndarray, t: int, markers: np.ndarray | None, hidden: np.ndarray | None, r: float
) -> np.ndarray:
    """Pin markers on future frame ``t``: targets ``markers`` "k 3" (frame, x, y) always,
    hidden pins ``hidden`` "k 3" (frame, x, y) from two frames before theirs to two after."""
    if markers is not None and len(markers):
        mk = np.asarray(markers, dtype=np.float64).reshape(-1, 3)
        canvas = draw_markers(canvas, mk[:, 1:], radius=r, filled=mk[:, 0] == t)
    if hidden is not None and len(hidden):
        hd = np.asarray(hidden, dtype=np.float64).reshape(-1, 3)
        near = np.abs(hd[:, 0] - t) <= 2
        canvas = draw_hidden(canvas, hd[near, 1:], radius=r, now=hd[near, 0] == t)
    return canvas


def _backgrounds(frames: np.ndarray | None, size: tuple[int, int], cfg: RenderConfig):
    """(frames, the held last frame) to draw on: black without frames."""
    width, height = size
    if frames is None:
        black = np.zeros((1, height, width, 3), np.uint8)
        return black, black[0]
    if frames.shape[1:3] != (height, width):
        raise ValueError(
            f"frames are {frames.shape[2]}x{frames.shape[1]} but tracks are in pixels of "
            f"{width}x{height}; resize the frames first"
        )
    return frames, (frames[-1].astype(np.float32) * cfg.dim_held).astype(np.uint8)


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
    hidden: np.ndarray | None = None,
    alternatives: Sequence[Track] = (),
    title: str = "",
) -> np.ndarray:
    """History then future of every point drawn over the video: "th+tf h w 3" uint8.

    ``frames`` "t h w 3" (``size`` = (w, h)) from the first history frame on; where the
    video ends before the future does, its last frame is held, dimmed. Without frames
    the background is black. ``hist_tracks`` "th n 2" / ``fut_tracks`` "tf n 2" are in
    pixels of ``size``, ``hist_vis`` "th n" / ``fut_vis`` "tf n" bool; points that are
    invisible (or not finite) are not drawn. ``grid_hw`` = (Hg, Wg) of the row-major grid
    of the n points (``config.stride`` thins it). ``alternatives``: other futures
    ``(tracks "tf n 2", visibility "tf n")`` drawn faintly underneath. ``markers`` "k 3"
    rows of (future frame, x, y): pin targets drawn on every future frame (filled on their
    own); ``hidden`` "k 3" (future frame, x, y): "stay hidden" pins, where the point is.
    ``title`` heads the corner label.
    """
    cfg = config or RenderConfig()
    th, tf = hist_tracks.shape[0], fut_tracks.shape[0]
    keep = thin_points(grid_hw, cfg.stride)
    tracks = np.concatenate([hist_tracks, fut_tracks], axis=0)[:, keep].astype(np.float64)
    vis = np.concatenate([hist_vis, fut_vis], axis=0)[:, keep].astype(bool)
    colors = point_colors(tracks, vis, size)
    layers = [
        _Layer.of(
            np.concatenate([hist_tracks, alt], axis=0)[:, keep].astype(np.float64),
            np.concatenate([hist_vis, alt_vis], axis=0)[:, keep],
            colors,
            opacity=cfg.faint,
            history=False,
        )
        for alt, alt_vis in alternatives
    ]
    layers.append(_Layer.of(tracks, vis, colors))
    frames, held = _backgrounds(frames, size, cfg)
    radius, _ = cfg.sizes(size)
    out = np.empty((th + tf, size[1], size[0], 3), np.uint8)
    for t in range(th + tf):
        canvas = (frames[t] if t < frames.shape[0] else held).copy()
        for layer in layers:
            _trails(canvas, layer, t, th, cfg)
        for layer in layers:
            _heads(canvas, layer, t, th, cfg)
        if t >= th:
            canvas = _pins(canvas, t - th, markers, hidden, max(5.0, 2.5 * radius))
        if cfg.timeline:
            _timeline(canvas, t, th, th + tf, title)
        out[t] = canvas
    return out


def render_summary(
    frame: np.ndarray | None,
    hist_tracks: np.ndarray,
    hist_vis: np.ndarray,
    futures: Sequence[Track],
    *,
    grid_hw: tuple[int, int],
    size: tuple[int, int],
    config: RenderConfig | None = None,
    markers: np.ndarray | None = None,
) -> np.ndarray:
    """A still "motion summary" "h w 3" uint8: the whole history and future paths drawn on
    ``frame`` (the last history frame; black when None).

    Each point's history path is thin and washed out, ending in a small white-rimmed dot
    at the boundary (a smaller plain one for points that no future moves); the first future of ``futures`` is a full-colour path ending in an
    arrowhead where the point is at the last visible future frame; the other futures are
    faint paths. Points that hardly move are just their dot. Shapes as in
    :func:`render_overlay`.
    """
    cfg = config or RenderConfig()
    keep = thin_points(grid_hw, cfg.stride)
    hist = hist_tracks[:, keep].astype(np.float64)
    hvis = hist_vis[:, keep].astype(bool) & np.all(np.isfinite(hist), axis=-1)
    colors = point_colors(
        np.concatenate([hist, futures[0][0][:, keep]]) if futures else hist,
        np.concatenate([hvis, futures[0][1][:, keep]]) if futures else hvis,
        size,
    )
    width, height = size
    canvas = np.zeros((height, width, 3), np.uint8) if frame is None else frame.copy()
    if frame is not None and frame.shape[:2] != (height, width):
        raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]}, tracks are in {size}")
    radius, stroke = cfg.sizes(size)
    canvas = (canvas * 0.8).astype(np.uint8)  # a little darker: the paths stand out
    _paths(canvas, hist, hvis, _washed(colors), max(1, stroke // 2), 0.8)
    for k, (tracks, vis) in enumerate(reversed(list(futures))):
        first = k == len(futures) - 1
        path = np.concatenate([hist[-1:], tracks[:, keep].astype(np.float64)])
        pvis = np.concatenate([hvis[-1:], vis[:, keep].astype(bool)])
        pvis &= np.all(np.isfinite(path), axis=-1)
        opacity = 1.0 if first else cfg.faint
        _paths(canvas, path, pvis, colors, stroke if first else max(1, stroke // 2), opacity)
        if first:
            _arrowheads(canvas, path, pvis, colors, stroke, 2.5 * radius)
    r = 0.7 * radius * _ONE
    moved = np.zeros(hist.shape[1], bool)
    for tracks, vis in futures:  # still points (in every future) get a small plain dot
        shift = np.linalg.norm(tracks[:, keep].astype(np.float64) - hist[-1], axis=-1)
        moved |= (np.where(vis[:, keep], shift, 0.0) > radius).any(0)
    for i in np.flatnonzero(hvis[-1]):
        c = (round(hist[-1, i, 0] * _ONE), round(hist[-1, i, 1] * _ONE))
        dot = round(r if moved[i] else 0.6 * r)
        if moved[i]:
            cv2.circle(canvas, c, dot + _ONE, (255, 255, 255), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(canvas, c, dot, tuple(int(v) for v in colors[i]), -1, cv2.LINE_AA, _SHIFT)
    if markers is not None and len(markers):
        mk = np.asarray(markers, dtype=np.float64).reshape(-1, 3)
        canvas = draw_markers(canvas, mk[:, 1:], radius=max(5.0, 2.5 * radius))
    return canvas


def _paths(
    canvas: np.ndarray,
    tracks: np.ndarray,
    drawable: np.ndarray,
    colors: np.ndarray,
    stroke: int,
    opacity: float,
) -> None:
    """Blend every point's path (the segments visible at both ends) into ``canvas``."""
    overlay = canvas.copy()
    pts = np.round(np.where(drawable[..., None], tracks, 0.0) * _ONE).astype(np.int32)
    for i in range(tracks.shape[1]):
        seen = np.flatnonzero(drawable[:, i])
        if seen.size < 2:
            continue
        color = tuple(int(c) for c in colors[i])
        # runs of consecutive visible frames: one polyline each
        for run in np.split(seen, np.flatnonzero(np.diff(seen) > 1) + 1):
            if run.size >= 2:
                line = pts[run, i].reshape(-1, 1, 2)
                cv2.polylines(overlay, [line], False, color, stroke, cv2.LINE_AA, _SHIFT)
    cv2.addWeighted(overlay, opacity, canvas, 1.0 - opacity, 0.0, dst=canvas)


def _arrowheads(
    canvas: np.ndarray,
    path: np.ndarray,
    drawable: np.ndarray,
    colors: np.ndarray,
    stroke: int,
    length: float,
) -> None:
    """An arrowhead at the last visible position of every path that moved more than
    ``length`` pixels, pointing along its last stretch of ``length`` pixels."""
    for i in range(path.shape[1]):
        seen = np.flatnonzero(drawable[:, i])
        if seen.size < 2:
            continue
        end = path[seen[-1], i]
        back = path[seen, i]
        far = np.flatnonzero(np.linalg.norm(back - end, axis=-1) >= length)
        if far.size == 0:
            continue
        tail = back[far[-1]]
        direction = (end - tail) / np.linalg.norm(end - tail)
        normal = np.array([-direction[1], direction[0]])
        tip = end + direction * stroke
        wing = 0.8 * length
        corners = [tip, tip - direction * wing + normal * wing / 2]
        corners.append(tip - direction * wing - normal * wing / 2)
        poly = np.round(np.array(corners) * _ONE).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(canvas, [poly], tuple(int(c) for c in colors[i]), cv2.LINE_AA, _SHIFT)
        cv2.polylines(canvas, [poly], True, (20, 20, 20), 1, cv2.LINE_AA, _SHIFT)


def _label(tile: np.ndarray, text: str) -> None:
    """Write ``text`` into the top-right corner of ``tile`` "h w 3" (the overlays' own
    label is top-left), white on a black outline."""
    scale = max(0.4, tile.shape[0] / 600.0)
    (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    _text(tile, text, (max(2, tile.shape[1] - tw - 8), int(24 * scale)), scale)


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

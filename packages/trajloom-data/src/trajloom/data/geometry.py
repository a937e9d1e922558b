"""How a video of any size meets the model's working frame, and the way back.

The model tracks and predicts in pixels of its working ``(width, height)``; a video has
its own size and aspect. A :class:`Fit` says how one meets the other, and
:func:`to_working` / :func:`to_source` map points between the two (an exact inverse
pair: one scale and one offset per axis). The sample app, the demo and the bench use
this pair so that a track drawn over the original frames lands where the model put it.

Modes (``FIT_MODES``; ``--fit`` of ``apps/sample``):

* ``pad`` (the default): scale by one factor so that the whole video fits, centred,
  with black bars. Motion keeps its aspect (a step right and a step down scale alike,
  a circle stays a circle) and no part of the video is lost, so every source pixel has a
  working position and the renders cover the whole picture. The cost: grid points on
  the bars track nothing (they stay still, and are off the video in the renders).
* ``crop``: scale by one factor so that the video covers the working frame, cut the
  overflow (centred). Motion keeps its aspect and the whole grid lies on the video, but
  its edges are not tracked: a point that leaves the crop leaves the model's image.
* ``stretch``: scale width and height apart (what a plain resize does). Nothing is lost
  and nothing is padded, but motion is distorted by the ratio of the two aspects: a
  768x576 video on a square grid has its horizontal motion squeezed by 3/4 against
  its vertical motion, so the model sees other dynamics than the video has.

Coordinates are pixel centres: pixel ``(i, j)`` is at ``x = i, y = j``, as
``frames[y, x]``, the renders and ``cv2.resize`` use them. The map is
``x_w + 0.5 = (x_s + 0.5) * sx + ox`` (the same for y), with ``sx`` the scale of the
resized video (its rounded whole-pixel size over the source size, exactly what
:func:`fit_frames` resamples) and ``ox`` the bar (pad, > 0) or cut (crop, < 0) before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajloom.data.video import resize_frames

__all__ = [
    "DEFAULT_FIT",
    "DEFAULT_MAX_RENDER_SIZE",
    "FIT_MODES",
    "Fit",
    "SourceView",
    "capped_size",
    "fit_frames",
    "to_source",
    "to_working",
]

FIT_MODES = ("pad", "crop", "stretch")
#: Keeps the aspect of motion and the whole picture (module docstring).
DEFAULT_FIT = "pad"
#: Longer side of the renders, in pixels, by default: a 1920x1080 video renders at
#: 1280x720; smaller videos render at their own size.
DEFAULT_MAX_RENDER_SIZE = 1280


def _size(value: tuple[int, int], what: str) -> tuple[int, int]:
    w, h = (int(v) for v in value)
    if w < 1 or h < 1 or (w, h) != tuple(value):
        raise ValueError(f"Fit: {what} must be whole (width, height) >= 1, got {value!r}")
    return w, h


@dataclass(frozen=True)
class Fit:
    """A source ``(width, height)`` placed in a working ``(width, height)`` by ``mode``."""

    source: tuple[int, int]
    working: tuple[int, int]
    mode: str = DEFAULT_FIT

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", _size(self.source, "source"))
        object.__setattr__(self, "working", _size(self.working, "working"))
        if self.mode not in FIT_MODES:
            raise ValueError(f"fit must be one of {', '.join(FIT_MODES)}, got {self.mode!r}")

    @property
    def resized(self) -> tuple[int, int]:
        """``(width, height)`` of the whole source video resampled into the working frame
        (larger than it for crop, smaller for pad, equal for stretch)."""
        (sw, sh), (ww, wh) = self.source, self.working
        if self.mode == "stretch":
            return ww, wh
        pick = min if self.mode == "pad" else max
        s = pick(ww / sw, wh / sh)
        # whole pixels; the side that sets the scale gets exactly the working size
        return (
            ww if s == ww / sw else max(1, round(sw * s)),
            wh if s == wh / sh else max(1, round(sh * s)),
        )

    @property
    def scale(self) -> np.ndarray:
        """``(sx, sy)`` working pixels per source pixel."""
        return np.array(self.resized, np.float64) / np.array(self.source, np.float64)

    @property
    def offset(self) -> np.ndarray:
        """``(ox, oy)`` working pixels before the resized video: bars (> 0) or cut (< 0)."""
        (rw, rh), (ww, wh) = self.resized, self.working
        return np.array([(ww - rw) // 2, (wh - rh) // 2], np.float64)

    def describe(self) -> dict[str, object]:
        """JSON-ready: the mode, both sizes, scale and offset (for summaries and meta)."""
        return {
            "fit": self.mode,
            "source_size": list(self.source),
            "working_size": list(self.working),
            "scale": [float(v) for v in self.scale],
            "offset": [float(v) for v in self.offset],
        }


def to_working(points: np.ndarray, fit: Fit) -> np.ndarray:
    """Source pixels "... 2" (x, y) -> working pixels "... 2" float64 (NaN stays NaN)."""
    p = np.asarray(points, np.float64)
    return (p + 0.5) * fit.scale + fit.offset - 0.5


def to_source(points: np.ndarray, fit: Fit) -> np.ndarray:
    """Working pixels "... 2" (x, y) -> source pixels "... 2" float64; the inverse of
    :func:`to_working`."""
    p = np.asarray(points, np.float64)
    return (p + 0.5 - fit.offset) / fit.scale - 0.5


def fit_frames(frames: np.ndarray, fit: Fit) -> np.ndarray:
    """Source frames "t h w 3" uint8 -> working frames "t H W 3" uint8 by ``fit``: resized
    (area filter when shrinking), then padded with black or cropped, centred."""
    t, h, w = frames.shape[:3]
    if (w, h) != fit.source:
        raise ValueError(f"fit_frames: frames are {w}x{h}, the fit is for {fit.source}")
    resized = resize_frames(frames, fit.resized)
    (rw, rh), (ww, wh) = fit.resized, fit.working
    ox, oy = (int(v) for v in fit.offset)
    if (rw, rh) == (ww, wh):
        return resized
    out = np.zeros((t, wh, ww, 3), np.uint8)
    # the overlap of the resized video (placed at ox, oy) with the working frame
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + rw, ww), min(oy + rh, wh)
    out[:, y0:y1, x0:x1] = resized[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    return out


def capped_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``size`` (width, height) shrunk, aspect kept, so that its longer side is at most
    ``max_side`` (None: no cap; never enlarged)."""
    w, h = _size(size, "size")
    if max_side is None or max(w, h) <= max_side:
        return w, h
    if max_side < 2:
        raise ValueError(f"the render size cap must be >= 2 pixels, got {max_side}")
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


@dataclass(frozen=True)
class SourceView:
    """The original video under a clip, for drawing: its frames at the render size and
    the fit that relates them to the model's working pixels.

    ``frames`` "t h w 3" uint8 at ``size`` (the source size, or smaller when capped),
    from the clip's first history frame on, as many as the clip's working frames.
    """

    frames: np.ndarray
    fit: Fit

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the drawn frames."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])

    @property
    def render_fit(self) -> Fit:
        """Source pixels -> render pixels (a uniform shrink, or the identity)."""
        return Fit(self.fit.source, self.size, "stretch")

    def to_render(self, points: np.ndarray) -> np.ndarray:
        """Working pixels "... 2" -> pixels of :attr:`frames` "... 2" float64."""
        return to_working(to_source(points, self.fit), self.render_fit)

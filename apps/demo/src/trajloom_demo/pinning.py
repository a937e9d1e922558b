"""Click-to-pin on the boundary frame: clicks in, pin records out (pure; no torch).

The page shows the boundary frame (the last history frame of the original video, at
its own size or shrunk to the render cap) enlarged by an integer ``scale``: each of its
pixels becomes a ``scale x scale`` block. Pins are kept in the model's working pixels:
a click on the shown frame is mapped to the video's pixels and from there to the working
frame with ``trajloom.data.geometry`` (the board's ``fit``, the tracker's placement of
the video), so it names the point the model sees there. Without a ``fit`` the shown
frame is the working frame itself.
Gradio reports a click on an image as ``(u, v)``, the click's distance from the image's
top-left corner in pixels of the displayed image, rounded to whole pixels (its frontend
divides out the on-screen zoom, so CSS resizing does not change it). Working pixels are
indexed at their centres, as ``frames[y, x]`` and the renders use them, so working
column ``x`` is displayed over ``[x * scale, (x + 1) * scale)`` and a click at ``u``
is at ``x = u / scale - 0.5`` (:func:`click_to_pixel`; :func:`pixel_to_display` is the
inverse). The rounding to whole displayed pixels costs at most ``0.5 / scale`` working px.

Pins are kept as the JSON records ``trajloom.flow.pins.pins_from_json`` reads:
``{"source": [x, y], "frame": f, "target": [x, y]}`` (the point picked at the boundary
frame is at the target at future frame f; 0 = the first predicted frame) or
``{"source": [x, y], "frame": f, "kind": "outside"}`` (it has left the image by then).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from trajloom.data.geometry import Fit, to_source, to_working

__all__ = [
    "KINDS",
    "PIN_COLUMNS",
    "PinBoard",
    "click_to_pixel",
    "display_scale",
    "pixel_to_display",
]

DISPLAY_WIDTH = 512  # the boundary frame is shown at least this many pixels wide
#: The kinds a click can place: label in the page -> ``Pin.kind``.
KINDS = {"at the target": "at", "leave the image": "outside"}
PIN_COLUMNS = ["pin", "point at (x, y)", "future frame", "kind", "target (x, y)"]

Point = tuple[float, float]


def display_scale(width: int, minimum: int = DISPLAY_WIDTH) -> int:
    """The integer zoom showing a ``width``-pixel frame at least ``minimum`` pixels wide."""
    if width < 1:
        raise ValueError(f"width must be >= 1 pixel, got {width}")
    return max(1, math.ceil(minimum / width))


def click_to_pixel(index: tuple[int, int], scale: int, size: tuple[int, int]) -> Point:
    """Gradio's click index ``(u, v)`` on the displayed image -> ``(x, y)`` working pixels.

    ``size`` is the working ``(width, height)``; a click within half a working pixel of
    the border is moved onto the border pixel's centre (pins must lie in the image).
    """
    (u, v), (width, height) = index, size
    x = min(max(u / scale - 0.5, 0.0), width - 1.0)
    y = min(max(v / scale - 0.5, 0.0), height - 1.0)
    return x, y


def pixel_to_display(xy: Point, scale: int) -> Point:
    """``(x, y)`` working pixels -> where that point is on the displayed image, in the
    units of Gradio's click index (the inverse of :func:`click_to_pixel` inside the image)."""
    return (xy[0] + 0.5) * scale, (xy[1] + 0.5) * scale


def _text(xy: Any) -> str:
    return f"({xy[0]:g}, {xy[1]:g})"


@dataclass(frozen=True)
class PinBoard:
    """The pins placed on one boundary frame: one page session's state.

    ``frame`` "h w 3" uint8 shown (None: no video yet): the working frame, or with ``fit``
    the video's own frame (its pixels relate to working ones by ``fit``); ``future``
    frames can be pinned (0 .. future - 1); ``steerable``: the chosen checkpoint can
    follow pins (baselines cannot); ``pending``: a picked point awaiting its target.
    """

    frame: np.ndarray | None = None
    future: int = 1
    steerable: bool = True
    pins: tuple[dict[str, Any], ...] = ()
    pending: Point | None = None
    fit: Fit | None = None  # the video's placement in the working frame; None: identity

    @property
    def shown(self) -> tuple[int, int]:
        """``(width, height)`` of the shown frame (before the integer zoom)."""
        if self.frame is None:
            raise ValueError("no boundary frame: upload or pick a video first")
        return int(self.frame.shape[1]), int(self.frame.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """Working ``(width, height)``: the pixels pins are in."""
        return self.fit.working if self.fit is not None else self.shown

    @property
    def scale(self) -> int:
        return display_scale(self.shown[0])

    def to_working(self, xy: Point) -> Point:
        """A point of the shown frame -> working pixels."""
        if self.fit is None:
            return xy
        shrink = Fit(self.fit.source, self.shown, "stretch")
        x, y = to_working(to_source(np.asarray(xy, np.float64), shrink), self.fit)
        return float(x), float(y)

    def to_shown(self, xy: Any) -> Point:
        """Working pixels -> the point of the shown frame (the inverse of :meth:`to_working`)."""
        if self.fit is None:
            return float(xy[0]), float(xy[1])
        shrink = Fit(self.fit.source, self.shown, "stretch")
        x, y = to_working(to_source(np.asarray(xy, np.float64), self.fit), shrink)
        return float(x), float(y)

    def click(self, index: tuple[int, int], frame: int, kind: str) -> PinBoard:
        """A click at Gradio index ``index``: the first picks the point, the second sets
        its target at future ``frame``; with kind "outside" one click makes the pin."""
        if kind not in KINDS.values():
            raise ValueError(f"pin kind must be one of {list(KINDS.values())}, got {kind!r}")
        if not 0 <= frame < self.future:
            raise ValueError(f"pin frame {frame} is outside the future window 0..{self.future - 1}")
        xy = self.to_working(click_to_pixel(index, self.scale, self.shown))
        if self.fit is not None:  # on the working image, rounded as the table shows it
            width, height = self.size
            xy = (
                round(min(max(xy[0], 0.0), width - 1.0), 2),
                round(min(max(xy[1], 0.0), height - 1.0), 2),
            )
        if kind == "outside":
            record = {"source": list(xy), "frame": int(frame), "kind": "outside"}
            return replace(self, pins=(*self.pins, record), pending=None)
        if self.pending is None:
            return replace(self, pending=xy)
        record = {"source": list(self.pending), "frame": int(frame), "target": list(xy)}
        return replace(self, pins=(*self.pins, record), pending=None)

    def undo(self) -> PinBoard:
        """Drop the picked point awaiting a target, else the last pin."""
        if self.pending is not None:
            return replace(self, pending=None)
        return replace(self, pins=self.pins[:-1])

    def clear(self) -> PinBoard:
        return replace(self, pins=(), pending=None)

    def rows(self) -> list[list[Any]]:
        """The pins as rows of :data:`PIN_COLUMNS`."""
        return [
            [
                i + 1,
                _text(p["source"]),
                p["frame"],
                p.get("kind", "at"),
                _text(p["target"]) if "target" in p else "(leaves the image)",
            ]
            for i, p in enumerate(self.pins)
        ]

    def note(self) -> str:
        """What the page says under the frame."""
        if self.frame is None:
            return "Upload or pick a video to pin points on its last history frame."
        width, height = self.size
        shown = (
            ""
            if self.fit is None
            else f"the video's {self.fit.source[0]}x{self.fit.source[1]} frame for "
        )
        lines = [
            f"Last history frame, {shown}{width}x{height} working pixels, shown at {self.scale}x. "
            "Click a tracked point, then where it should be at the chosen future frame "
            "(kind *leave the image*: one click)."
        ]
        if self.pending is not None:
            lines.append(f"Point {_text(self.pending)} picked: now click its target.")
        if self.pins and not self.steerable:
            lines.append(
                "Baselines cannot follow pins: choose a trained set or released checkpoints, "
                "or Clear the pins."
            )
        elif self.pins:
            lines.append(f"{len(self.pins)} pin(s): the next Predict is steered to meet them.")
        return "\n\n".join(lines)

    def picture(self) -> np.ndarray | None:
        """The displayed image: the frame enlarged :attr:`scale` times, pins drawn on it
        (point: yellow dot, arrow to the target: white ring; leaving the image: red cross)."""
        if self.frame is None:
            return None
        s = self.scale
        image = np.ascontiguousarray(np.repeat(np.repeat(self.frame, s, axis=0), s, axis=1))
        for i, pin in enumerate(self.pins):
            source = self.to_shown(pin["source"])
            start = _at(source, s)
            if "target" in pin:
                end = _at(self.to_shown(pin["target"]), s)
                cv2.arrowedLine(image, start, end, (255, 255, 255), 2, cv2.LINE_AA, 4, 0.15)
                cv2.circle(image, end, 7 * 16, (255, 255, 255), 2, cv2.LINE_AA, 4)
            else:
                cv2.drawMarker(image, _px(source, s), (255, 60, 60), cv2.MARKER_CROSS, 18, 3)
            cv2.circle(image, start, 5 * 16, (255, 220, 0), -1, cv2.LINE_AA, 4)
            label = (_px(source, s)[0] + 7, _px(source, s)[1] - 7)
            cv2.putText(image, str(i + 1), label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 220, 0))
        if self.pending is not None:
            pending = _at(self.to_shown(self.pending), s)
            cv2.circle(image, pending, 6 * 16, (0, 230, 255), 2, cv2.LINE_AA, 4)
        return image


def _at(xy: Any, scale: int) -> tuple[int, int]:
    """A working point as cv2's sub-pixel drawing position (4 fraction bits) on the
    displayed image: display pixel ``i`` has its centre at ``u = i + 0.5``."""
    u, v = pixel_to_display((float(xy[0]), float(xy[1])), scale)
    return round((u - 0.5) * 16), round((v - 0.5) * 16)


def _px(xy: Any, scale: int) -> tuple[int, int]:
    u, v = pixel_to_display((float(xy[0]), float(xy[1])), scale)
    return round(u - 0.5), round(v - 0.5)

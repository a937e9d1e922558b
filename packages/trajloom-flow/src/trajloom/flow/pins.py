"""Pins: user constraints on where grid points must be in the future (steerable futures).

A :class:`Pin` says "grid point N is at (x, y) at future frame F" (or along a path of
frames), "point N has left the image by frame F" (kind ``"outside"``), or "point N is
hidden at frame(s) F" (kind ``"hidden"``: occluded — still inside the image, but the
visibility head predicts it invisible there; needs a set with a visibility head). Points are named by their index in
the row-major grid (``trajloom.encoding``: y outer, x inner), or by a pixel at the
boundary frame (the last history frame), which picks the grid point nearest to it there.
Frames index the future window, 0 the first predicted frame: a pin on point N at frame F
constrains ``pred_tracks.npy[F, N]``. Coordinates are pixels of the working resolution.

Pins are data: built in code, parsed from ``N,FRAME,X,Y`` strings, or ``N,FRAME,hidden`` /
``N,FRAME,outside`` for the kinds without a target (:func:`parse_pin`), or from JSON (:func:`pins_from_json`); checked against a grid and future length
(:func:`check_pins`), and resolved to point indices against a clip's boundary frame
(:func:`resolve_pins`). Every refusal is a :class:`PinError` naming the pin and what to do.

JSON (a list of pins, or ``{"pins": [...]}``)::

    {"pins": [
      {"point": 17, "frame": 40, "target": [300, 200]},
      {"source": [412, 96], "frames": [20, 40], "targets": [[420, 100], [430, 110]], "weight": 2},
      {"point": 5, "frame": 80, "kind": "outside"},
      {"point": 40, "frames": [30, 31, 32], "kind": "hidden"}
    ]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajloom.encoding import GridSpec

__all__ = [
    "PIN_KINDS",
    "TARGETLESS_KINDS",
    "Pin",
    "PinError",
    "PinTargets",
    "check_pins",
    "parse_pin",
    "pin_markers",
    "pin_targets",
    "pins_from_json",
    "pins_to_json",
    "resolve_pins",
]

#: "at": the point is at the target pixel at each frame; "outside": it has left the image
#: (and is therefore invisible, the released out-of-bounds rule) at each frame; "hidden":
#: it is occluded at each frame — inside the image, predicted invisible by the visibility
#: head (so only a set with a visibility head can honour it).
PIN_KINDS = ("at", "outside", "hidden")
#: The kinds that take no target pixel.
TARGETLESS_KINDS = ("outside", "hidden")


#: The largest pin weight: a weight is a relative pull between pins; far larger ones
#: overflow the guidance's float32 gradient into NaN.
MAX_PIN_WEIGHT = 1e3
#: Pins per request (each a path of frames): a clip has at most points x future frames
#: distinct (point, frame) targets; more is a mistake or an attack.
MAX_PINS = 4096
#: The largest pins JSON file read, bytes.
MAX_PINS_FILE = 16 * 2**20


class PinError(ValueError):
    """A pin that cannot be used: the message names the pin, what is wrong, what to do."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _xy(value: Any, what: str) -> tuple[float, float]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        or not all(math.isfinite(float(v)) for v in value)
    ):
        raise PinError(f"{what} must be two finite numbers (x, y) in pixels, got {value!r}")
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class Pin:
    """One constraint on one grid point's future (pixels of the working resolution).

    Name the point by ``point`` (row-major grid index) or by ``source`` (a pixel at the
    boundary frame; the nearest grid point visible there), not both.
    """

    frames: tuple[int, ...]  # future frames, 0 = the first predicted frame
    targets: tuple[tuple[float, float], ...] = ()  # (x, y) per frame; empty for "outside", "hidden"
    point: int | None = None  # grid point index, row-major
    source: tuple[float, float] | None = None  # or: the point nearest this pixel at the boundary
    weight: float = 1.0  # relative pull of this pin against the others (> 0)
    kind: str = "at"  # one of PIN_KINDS

    def __post_init__(self) -> None:
        name = self.describe()
        if (self.point is None) == (self.source is None):
            raise PinError(f"{name}: give the point index or a source pixel, exactly one")
        if self.point is not None and not _is_int(self.point):
            raise PinError(f"{name}: point must be an int grid index, got {self.point!r}")
        if self.source is not None:
            object.__setattr__(self, "source", _xy(self.source, f"{name}: source"))
        if not self.frames or not all(_is_int(f) for f in self.frames):
            raise PinError(f"{name}: frames must be a non-empty list of ints, got {self.frames!r}")
        if len(set(self.frames)) != len(self.frames):
            raise PinError(f"{name}: frames repeat ({list(self.frames)}); give each frame once")
        if self.kind not in PIN_KINDS:
            raise PinError(f"{name}: kind must be one of {PIN_KINDS}, got {self.kind!r}")
        if self.kind == "at" and len(self.targets) != len(self.frames):
            raise PinError(
                f"{name}: {len(self.frames)} frame(s) but {len(self.targets)} target(s); give "
                "one (x, y) target per frame"
            )
        if self.kind == "outside" and self.targets:
            raise PinError(f"{name}: an 'outside' pin takes no targets (it leaves the image)")
        if self.kind == "hidden" and self.targets:
            raise PinError(
                f"{name}: a 'hidden' pin takes no targets (the point stays where the model puts "
                "it, occluded); to place it too, add an 'at' pin on another frame"
            )
        targets = tuple(_xy(t, f"{name}: target") for t in self.targets)
        object.__setattr__(self, "frames", tuple(self.frames))
        object.__setattr__(self, "targets", targets)
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight)):
            raise PinError(f"{name}: weight must be a finite number, got {self.weight!r}")
        if not 0 < self.weight <= MAX_PIN_WEIGHT:
            raise PinError(
                f"{name}: weight must be > 0 and at most {MAX_PIN_WEIGHT:g} (a relative pull), "
                f"got {self.weight}"
            )

    def describe(self) -> str:
        """``pin (point 17, frame 40)`` — how errors name this pin."""
        who = f"point {self.point}" if self.point is not None else f"source {self.source}"
        frames = list(self.frames) if isinstance(self.frames, (list, tuple)) else self.frames
        one = isinstance(frames, list) and len(frames) == 1
        return f"pin ({who}, frame {frames[0]})" if one else f"pin ({who}, frames {frames})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form :func:`pins_from_json` reads."""
        d: dict[str, Any] = {"frames": list(self.frames)}
        if self.point is not None:
            d["point"] = self.point
        else:
            d["source"] = list(self.source or ())
        if self.kind == "at":
            d["targets"] = [list(t) for t in self.targets]
        d["weight"] = self.weight
        d["kind"] = self.kind
        return d


def pin_markers(pins: Sequence[Pin]) -> np.ndarray:
    """Where renders and exports draw the pins: "k 4" float64 rows of
    ``(point, future frame, x, y)``, one per target of every "at" pin (point -1 for a pin
    named by a source pixel, which each clip resolves to its own point)."""
    rows = [
        (-1 if pin.point is None else pin.point, f, x, y)
        for pin in pins
        if pin.kind == "at"
        for f, (x, y) in zip(pin.frames, pin.targets, strict=True)
    ]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def parse_pin(text: str) -> Pin:
    """``"N,FRAME,X,Y"`` (the ``--pin`` option) -> a one-frame :class:`Pin` on point N;
    ``"N,FRAME,hidden"`` / ``"N,FRAME,outside"``: a pin of that kind (no target)."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) == 3 and parts[2] in TARGETLESS_KINDS:
        try:
            n, frame = int(parts[0]), int(parts[1])
        except ValueError:
            raise PinError(f"--pin {text!r}: N and FRAME must be integers") from None
        return Pin(frames=(frame,), point=n, kind=parts[2])
    if len(parts) != 4:
        raise PinError(
            f"--pin {text!r}: expected N,FRAME,X,Y (grid point, future frame, target x, y) "
            f"or N,FRAME,KIND with KIND one of {', '.join(TARGETLESS_KINDS)}"
        )
    try:
        n, frame = int(parts[0]), int(parts[1])
        x, y = float(parts[2]), float(parts[3])
    except ValueError:
        raise PinError(
            f"--pin {text!r}: N and FRAME must be integers and X, Y numbers (pixels)"
        ) from None
    return Pin(frames=(frame,), targets=((x, y),), point=n)


def _pin_from_dict(d: Any, index: int) -> Pin:
    where = f"pins[{index}]"
    if not isinstance(d, dict):
        raise PinError(f"{where}: each pin must be an object, got {type(d).__name__}")
    known = {"point", "source", "frame", "frames", "target", "targets", "weight", "kind"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise PinError(f"{where}: unknown key(s) {unknown}; pins take {sorted(known)}")
    if ("frame" in d) == ("frames" in d):
        raise PinError(f"{where}: give 'frame' (one) or 'frames' (a path), exactly one")
    frames = [d["frame"]] if "frame" in d else d["frames"]
    if "target" in d and "targets" in d:
        raise PinError(f"{where}: give 'target' or 'targets', not both")
    targets = [d["target"]] if "target" in d else d.get("targets", [])
    if not isinstance(frames, list) or not isinstance(targets, list):
        raise PinError(f"{where}: 'frames' and 'targets' must be lists")
    try:
        return Pin(
            frames=tuple(frames),
            targets=tuple(tuple(t) if isinstance(t, list) else t for t in targets),
            point=d.get("point"),
            source=tuple(d["source"]) if isinstance(d.get("source"), list) else d.get("source"),
            weight=d.get("weight", 1.0),
            kind=d.get("kind", "at"),
        )
    except PinError as err:
        raise PinError(f"{where}: {err}") from None


def pins_from_json(source: str | Path | list | dict, *, max_pins: int = MAX_PINS) -> list[Pin]:
    """Pins from a JSON file (path), or from already-parsed JSON (module docstring schema);
    at most ``max_pins`` of them (a file at most :data:`MAX_PINS_FILE` bytes)."""
    where = "pins"
    if isinstance(source, (str, Path)):
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise PinError(f"{path}: pins file not found")
        if path.stat().st_size > MAX_PINS_FILE:
            raise PinError(f"{path}: larger than {MAX_PINS_FILE // 2**20} MB; not a pins file")
        try:
            source = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise PinError(f"{path}: not valid JSON ({err})") from None
        except RecursionError:
            raise PinError(f"{path}: JSON nested too deeply; not a pins file") from None
    items = source.get("pins") if isinstance(source, dict) else source
    if not isinstance(items, list):
        raise PinError(f"{where}: expected a list of pins or {{'pins': [...]}}")
    if len(items) > max_pins:
        raise PinError(f"{where}: {len(items)} pins, more than the {max_pins} allowed per clip")
    try:
        return [_pin_from_dict(d, i) for i, d in enumerate(items)]
    except PinError as err:
        raise PinError(f"{where}: {err}") from None


def pins_to_json(pins: Sequence[Pin]) -> dict[str, Any]:
    """``{"pins": [...]}``, the form :func:`pins_from_json` reads."""
    return {"pins": [p.to_dict() for p in pins]}


def _inside(xy: tuple[float, float], grid: GridSpec) -> bool:
    return 0.0 <= xy[0] <= grid.width - 1 and 0.0 <= xy[1] <= grid.height - 1


def check_pins(
    pins: Sequence[Pin], grid: GridSpec, future: int, *, visibility_head: bool = True
) -> None:
    """Refuse pins that do not fit ``grid`` (points, image) and a ``future``-frame window,
    and "hidden" pins when the model has no visibility head (``visibility_head=False``;
    the pipeline passes what it has)."""
    box = f"[0, {grid.width - 1}] x [0, {grid.height - 1}]"
    if len(pins) > MAX_PINS:
        raise PinError(f"{len(pins)} pins, more than the {MAX_PINS} allowed per clip")
    claimed: dict[tuple[int, int], tuple[str, Any, str]] = {}  # (point, frame) -> first pin
    for pin in pins:
        if not isinstance(pin, Pin):
            raise PinError(f"constraints must be Pin objects, got {type(pin).__name__}")
        name = pin.describe()
        _check_conflicts(pin, name, claimed)
        if pin.kind == "hidden" and not visibility_head:
            raise PinError(
                f"{name}: a 'hidden' pin needs a visibility head, and this model has none (its "
                "visibility is only the in-image rule); use a trained set with a visibility "
                "head (visibility/ in its folder), or kind 'outside' to make the point leave "
                "the image"
            )
        if pin.point is not None and not 0 <= pin.point < grid.num_points:
            raise PinError(
                f"{name}: unknown point {pin.point}; the {grid.grid_h} x {grid.grid_w} grid has "
                f"points 0..{grid.num_points - 1} (row-major: index = row * {grid.grid_w} + column)"
            )
        if pin.source is not None and not _inside(pin.source, grid):
            raise PinError(f"{name}: source {pin.source} is outside the image {box}")
        for f in pin.frames:
            if not 0 <= f < future:
                raise PinError(
                    f"{name}: frame {f} is outside the future window 0..{future - 1} "
                    "(0 = the first predicted frame)"
                )
        for t in pin.targets:
            if not _inside(t, grid):
                raise PinError(
                    f"{name}: target {t} is outside the image {box} (working resolution "
                    f"{grid.width}x{grid.height}); to make the point leave the image use "
                    "kind 'outside'"
                )


def _check_conflicts(
    pin: Pin, name: str, claimed: dict[tuple[int, int], tuple[str, Any, str]]
) -> None:
    """PinError when ``pin`` asks for a point and frame that an earlier pin asked for
    differently (two targets, or "at" and "outside"): no future meets both."""
    if pin.point is None:
        return  # a source pixel names its point only once resolved (checked again then)
    targets: list[Any] = list(pin.targets) if pin.kind == "at" else [None] * len(pin.frames)
    for frame, target in zip(pin.frames, targets, strict=True):
        want = (pin.kind, target, name)
        first = claimed.setdefault((pin.point, frame), want)
        if first[:2] != want[:2]:
            raise PinError(
                f"{name}: point {pin.point} at frame {frame} is already pinned by {first[2]} "
                f"({first[0]} {first[1] or ''}); two pins on one point and frame cannot both "
                "be met: drop one"
            )


def resolve_pins(
    pins: Sequence[Pin], boundary: torch.Tensor, boundary_vis: torch.Tensor, grid: GridSpec
) -> list[Pin]:
    """Pins with every ``source`` pixel replaced by its grid point at the boundary frame.

    ``boundary: "n 2"`` pixels and ``boundary_vis: "n"`` bool of the last history frame.
    A source picks the nearest point visible there; none within one stride is an error.
    """
    out = []
    for pin in pins:
        if pin.source is None:
            out.append(pin)
            continue
        d = (boundary.float() - torch.tensor(pin.source)).norm(dim=-1)
        d = torch.where(boundary_vis.bool(), d, torch.full_like(d, math.inf))
        best = int(d.argmin())
        if not float(d[best]) <= grid.stride:
            raise PinError(
                f"{pin.describe()}: no visible grid point within {grid.stride} px of "
                f"{pin.source} at the boundary frame; pick a tracked point (or give its index)"
            )
        out.append(
            Pin(
                frames=pin.frames,
                targets=pin.targets,
                point=best,
                weight=pin.weight,
                kind=pin.kind,
            )
        )
    return out


@dataclass(frozen=True)
class PinTargets:
    """Resolved pins of a batch as tensors, one row per (sample, frame) constraint.

    ``row "k"`` batch row of the sampler state, ``frame "k"`` future frame, ``point "k"``
    grid index, ``target "k 2"`` pixels (unused for "outside" and "hidden"), ``weight "k"``,
    ``outside "k"`` bool (the point must be outside the image), ``hidden "k"`` bool (it
    must be predicted invisible, inside the image).
    """

    row: torch.Tensor
    frame: torch.Tensor
    point: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    outside: torch.Tensor
    hidden: torch.Tensor

    @property
    def visible(self) -> torch.Tensor:
        """``"k"`` bool: what each constraint says about the point's visibility there."""
        return ~(self.outside | self.hidden)

    def __len__(self) -> int:
        return int(self.row.numel())

    def subset(self, keep: torch.Tensor) -> PinTargets:
        """The constraints where ``keep "k"`` (bool) is true."""
        return PinTargets(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    def hidden_groups(self) -> list[PinTargets]:
        """The "hidden" constraints in groups with at most one point per row: group j holds
        the j-th hidden point of every row, with all its frames (for steering each group on
        its own; no hidden constraints: an empty list)."""
        seen: dict[tuple[int, int], int] = {}
        per_row: dict[int, int] = {}
        group = []
        columns = (self.row.tolist(), self.point.tolist(), self.hidden.tolist())
        for r, n, hidden in zip(*columns, strict=True):
            if hidden and (r, n) not in seen:
                seen[(r, n)] = per_row.get(r, 0)
                per_row[r] = seen[(r, n)] + 1
            group.append(seen.get((r, n), -1) if hidden else -1)
        labels = torch.tensor(group, dtype=torch.long, device=self.row.device)
        return [self.subset(labels == j) for j in range(max(per_row.values(), default=0))]


def pin_targets(
    per_row: Sequence[Sequence[Pin]], device: torch.device | str | None = None
) -> PinTargets:
    """Resolved pins (``point`` set) per batch row -> :class:`PinTargets`."""
    rows, frames, points, targets, weights, outside, hidden = [], [], [], [], [], [], []
    for r, pins in enumerate(per_row):
        for pin in pins:
            if pin.point is None:
                raise PinError(f"{pin.describe()}: resolve source pixels first (resolve_pins)")
            for k, f in enumerate(pin.frames):
                rows.append(r)
                frames.append(f)
                points.append(pin.point)
                targets.append(pin.targets[k] if pin.kind == "at" else (0.0, 0.0))
                weights.append(pin.weight)
                outside.append(pin.kind == "outside")
                hidden.append(pin.kind == "hidden")

    def long(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    def flags(values: list[bool]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.bool, device=device)

    return PinTargets(
        row=long(rows),
        frame=long(frames),
        point=long(points),
        target=torch.tensor(targets, dtype=torch.float32, device=device).reshape(-1, 2),
        weight=torch.tensor(weights, dtype=torch.float32, device=device),
        outside=flags(outside),
        hidden=flags(hidden),
    )

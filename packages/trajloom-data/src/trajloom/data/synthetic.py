"""Synthetic scenes with exact ground-truth tracks: TrajLoom's built-in dataset.

A scene is a textured background seen by a moving camera (pan, tilt, zoom, roll, handheld
shake) and several textured flat objects stacked in depth, each with its own motion
(constant velocity, acceleration, rotation, scaling, bounces, stops and starts).

Everything is an affine map of the plane, so ground truth is exact:

- world -> image at frame t is the camera map `C_t` (`C_0` = identity, so frame 0 shows
  the world as is); object k's sprite -> world map is `O_kt`;
- the grid point p (GridSpec seeds, frame 0) belongs to the top-most surface under p at
  frame 0 (object masks tested front to back, else the background);
- its position at t is `M_t M_0^-1 p`, with `M_t = C_t O_kt` for an object and `C_t` for
  the background;
- it is visible at t when inside the image (`0 <= x < W`, `0 <= y < H`) and no nearer
  object's mask covers it.

Frames are rendered with the same maps (`cv2.warpAffine`); object masks are warped with
nearest-neighbour sampling and tested the same way, so visibility agrees with the pixels.
All randomness comes from `numpy.random.default_rng(seed)`: a seed gives the same scene at
any call, on any machine.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset

from trajloom.data.camera import CameraMotion, camera_phrase, shake_from_steps
from trajloom.data.clip import Clip
from trajloom.data.shards import ShardSample
from trajloom.data.stream import node_and_worker
from trajloom.encoding import GridSpec, query_points

__all__ = [
    "DYNAMICS",
    "CameraPath",
    "Scene",
    "SceneConfig",
    "SyntheticClips",
    "make_scene",
    "scene_seed",
    "synthetic_shard_samples",
]

_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
    "cyan": (40, 200, 210),
    "white": (235, 235, 235),
    "black": (30, 30, 30),
    "pink": (240, 120, 180),
}
_SHAPES = ("disc", "box", "triangle", "star", "ellipse")


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn. Probabilities are per scene (camera) or per object (motion)."""

    width: int = 256  # pixels; a multiple of stride
    height: int = 256
    stride: int = 16  # grid spacing of the tracked points
    num_frames: int = 32
    fps: float = 16.0  # stored in meta; motion is defined per frame
    min_objects: int = 1
    max_objects: int = 4
    object_size: tuple[float, float] = (0.15, 0.4)  # sprite side, fraction of min(W, H)
    max_object_speed: float = 0.02  # image widths per frame
    p_static_camera: float = 0.2  # no camera motion at all (overrides the rest)
    p_pan: float = 0.5
    p_tilt: float = 0.3
    p_zoom: float = 0.25
    p_roll: float = 0.15
    p_shake: float = 0.25
    max_camera_speed: float = 0.02  # pan/tilt, image size per frame
    # handheld jitter amplitude, image widths (uniform in [lo, hi])
    shake_amplitude: tuple[float, float] = (0.006, 0.012)
    p_still: float = 0.15  # object does not move by itself
    p_accelerate: float = 0.3
    p_rotate: float = 0.35
    p_scale: float = 0.25
    p_bounce: float = 0.3
    p_stop_start: float = 0.2
    # Nonlinear dynamics (0 in the default "rigid" world; see DYNAMICS["lively"]):
    p_swing: float = 0.0  # oscillates about its path, back and forth or in a circle
    swing_period: tuple[float, float] = (8.0, 24.0)  # frames
    swing_amplitude: tuple[float, float] = (0.04, 0.1)  # fraction of min(W, H)
    p_fall: float = 0.0  # falls under gravity and bounces on the floor
    gravity: float = 0.002  # image heights per frame^2
    floor: float = 0.9  # height of the floor (object centres), fraction of H
    p_turn: float = 0.0  # turns left or right (45-120 degrees) at a random frame
    render_frames: bool = True  # False: tracks only (much faster)

    def __post_init__(self) -> None:
        GridSpec(self.width, self.height, self.stride)  # validates sizes and stride
        if self.num_frames < 2:
            raise ValueError(f"SceneConfig.num_frames must be >= 2, got {self.num_frames}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"SceneConfig: need 0 <= min_objects <= max_objects, got "
                f"{self.min_objects}, {self.max_objects}"
            )
        for name in ("object_size", "swing_amplitude", "shake_amplitude"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"SceneConfig.{name} must satisfy 0 < lo <= hi <= 1, got {lo, hi}")
        lo, hi = self.swing_period
        if not 2 <= lo <= hi:
            raise ValueError(f"SceneConfig.swing_period must satisfy 2 <= lo <= hi, got {lo, hi}")
        if not (self.gravity >= 0 and 0 < self.floor <= 1):
            raise ValueError(
                f"SceneConfig: need gravity >= 0 and 0 < floor <= 1, got {self.gravity}, "
                f"{self.floor}"
            )
        if self.fps <= 0:
            raise ValueError(f"SceneConfig.fps must be > 0, got {self.fps}")
        for name, value in asdict(self).items():
            if name.startswith("p_") and not 0.0 <= value <= 1.0:
                raise ValueError(f"SceneConfig.{name} is a probability, got {value}")

    @property
    def spec(self) -> GridSpec:
        return GridSpec(self.width, self.height, self.stride)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SceneConfig:
        d = dict(d)
        for name in ("object_size", "swing_period", "swing_amplitude", "shake_amplitude"):
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)

    @classmethod
    def preset(cls, dynamics: str, **fields: Any) -> SceneConfig:
        """A config of the world `dynamics` (a key of `DYNAMICS`), with `fields` on top."""
        if dynamics not in DYNAMICS:
            raise ValueError(
                f"unknown scene dynamics {dynamics!r}; choose one of {sorted(DYNAMICS)}"
            )
        return cls(**{**DYNAMICS[dynamics], **fields})


#: Named worlds. "rigid": mostly constant-velocity affine motion, in which constant-velocity
#: extrapolation is nearly exact over short horizons. "lively": adds swings and orbits,
#: gravity with bounces and sudden turns, and moves the camera more often (with more
#: handheld shake), so the future is nonlinear, partly uncertain, yet follows from the
#: history and the world's rules. "calibrated": chosen so that its motion statistics
#: (`trajloom.data.realism`) come close to those of real development videos tracked at the
#: quick recipe's geometry (`benchmarks/world.py`, BENCHMARKS.md): a quarter of scenes with a
#: still camera, slow pans, handheld shake from barely visible to strong in most scenes,
#: 40 % of objects still by themselves, gentler swings and fewer falls.
DYNAMICS: dict[str, dict[str, Any]] = {
    "rigid": {},
    "lively": {
        "p_static_camera": 0.1,
        "p_shake": 0.6,
        "p_still": 0.05,
        "p_swing": 0.6,
        "p_fall": 0.4,
        "p_turn": 0.25,
    },
    "calibrated": {
        "p_static_camera": 0.25,
        "p_pan": 0.3,
        "p_tilt": 0.2,
        "p_zoom": 0.1,
        "p_roll": 0.1,
        "max_camera_speed": 0.005,
        "p_shake": 0.65,
        "shake_amplitude": (0.001, 0.028),
        "p_still": 0.4,
        "max_object_speed": 0.02,
        "p_rotate": 0.2,
        "p_scale": 0.15,
        "p_swing": 0.5,
        "swing_amplitude": (0.02, 0.06),
        "p_fall": 0.1,
        "p_turn": 0.2,
    },
}


@dataclass(frozen=True)
class CameraPath:
    """Camera motion to synthesize (per frame; signs as `trajloom.data.camera`).

    `shake` is the amplitude of the handheld jitter in image widths (not the rms step that
    `CameraMotion.shake` measures). Pan, tilt, zoom and roll begin at frame `start` (the
    camera holds still before it; e.g. a still history window and a moving future, so that
    only a caption can tell the future camera motion).
    """

    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 0.0
    roll: float = 0.0
    shake: float = 0.0
    start: int = 0


@dataclass
class Scene:
    """One synthetic clip.

    `tracks` "t n 2" float32 px on the GridSpec grid (seeded at frame 0), `visibility`
    "t n" bool, `frames` "t h w 3" uint8 RGB or None, `owner` "n" int (-1 background, k
    object k), `camera` the measured CameraMotion of the true camera maps as a dict.
    """

    tracks: np.ndarray
    visibility: np.ndarray
    frames: np.ndarray | None
    caption: str
    camera: dict[str, float]
    camera_phrase: str
    owner: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def scene_seed(seed: int, index: int, epoch: int = 0) -> int:
    """The seed of clip `index` of a stream seeded `seed` in `epoch` (independent streams)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


# --------------------------------------------------------------------------- affine helpers


def _rot_scale(theta: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """ "t 2 2" matrices scale * R(theta)."""
    c, s = np.cos(theta) * scale, np.sin(theta) * scale
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _affine(lin: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """ "t 3 3" homogeneous matrices from "t 2 2" linear parts and "t 2" translations."""
    out = np.zeros((lin.shape[0], 3, 3))
    out[:, :2, :2] = lin
    out[:, :2, 2] = trans
    out[:, 2, 2] = 1.0
    return out


def _apply(mats: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply "t 3 3" maps to points "t n 2" (or "n 2", broadcast over t)."""
    return (
        np.einsum(
            "tij,t...j->t...i",
            mats[:, :2, :2],
            np.broadcast_to(pts, (mats.shape[0], *pts.shape[-2:])),
        )
        + mats[:, None, :2, 2]
    )


# --------------------------------------------------------------------------- scene parts


def _camera_maps(path: CameraPath, t: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """World -> image maps "t 3 3" about the image centre; identity at frame 0."""
    steps = np.arange(t, dtype=np.float64)
    moving = np.maximum(steps - path.start, 0.0)  # frames of camera motion so far
    centre = np.array([w / 2.0, h / 2.0])
    lin = _rot_scale(path.roll * moving, np.exp(path.zoom * moving))
    # content moves against the camera: pan right -> content left, tilt up -> content down
    trans = np.stack([-path.pan * w * moving, path.tilt * h * moving], -1)
    if path.shake > 0:
        # a few smooth sinusoids per axis (periods of 3-10 frames), zero at frame 0
        jitter = np.zeros((t, 2))
        for axis in range(2):
            for _ in range(3):
                period = rng.uniform(3.0, 10.0)
                phase = rng.uniform(0, 2 * math.pi)
                wave = np.sin(2 * math.pi * steps / period + phase)
                jitter[:, axis] += path.shake * w / 3.0 * (wave - wave[0])
        trans = trans + jitter
    # x -> c + L (x - c) + d
    return _affine(lin, centre + trans - np.einsum("tij,j->ti", lin, centre))


def _noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int) -> np.ndarray:
    """Smooth noise in [0, 1]: random values on a coarse grid, bicubic upsampling."""
    gh, gw = max(2, h // cells + 2), max(2, w // cells + 2)
    coarse = rng.random((gh, gw, channels), dtype=np.float32)
    out = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h, w, channels)


def _texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """A trackable texture "h w 3" uint8: blobs, mid-scale detail, grain and stripes."""
    tex = 90.0 * _noise(rng, h, w, 24, 3)
    # the three noise terms have mean 45 + 30 + 12 = 87
    tex += base.astype(np.float32) - 87.0
    tex += 60.0 * _noise(rng, h, w, 6, 1)
    tex += 24.0 * rng.random((h, w, 1), dtype=np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, math.pi)
        freq = 2 * math.pi / rng.uniform(6.0, 18.0)
        xs = np.arange(w, dtype=np.float32) * (math.cos(angle) * freq)
        ys = np.arange(h, dtype=np.float32) * (math.sin(angle) * freq)
        tex += 30.0 * np.sin(ys[:, None, None] + xs[None, :, None])
    return np.clip(tex, 0, 255, out=tex).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, shape: str, sw: int, sh: int) -> np.ndarray:
    mask = np.zeros((sh, sw), np.uint8)
    cx, cy = (sw - 1) / 2.0, (sh - 1) / 2.0
    if shape == "box":
        mask[:] = 1
    elif shape in ("disc", "ellipse"):
        cv2.ellipse(mask, (round(cx), round(cy)), (sw // 2, sh // 2), 0, 0, 360, 1, -1)
    elif shape == "triangle":
        pts = np.array([[cx, 0], [sw - 1, sh - 1], [0, sh - 1]])
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    else:  # star
        k = int(rng.integers(5, 8))
        ang = np.arange(2 * k) * math.pi / k - math.pi / 2
        rad = np.where(np.arange(2 * k) % 2 == 0, 1.0, 0.5)
        pts = np.stack([cx + rad * cx * np.cos(ang), cy + rad * cy * np.sin(ang)], -1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask


def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect positions into [lo, hi] (a bounce off both walls)."""
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


@dataclass
class _Object:
    name: str
    sprite: np.ndarray  # "sh sw 3" uint8
    mask: np.ndarray  # "sh sw" uint8 0/1
    maps: np.ndarray  # sprite -> world, "t 3 3"
    motion: list[str]
    displacement: np.ndarray  # world centre, last minus first frame


def _turn(vel: np.ndarray, dyn: np.random.Generator) -> np.ndarray:
    """Velocities "t 2" turned by 45-120 degrees (left or right) from a random frame on."""
    t = vel.shape[0]
    at = int(dyn.integers(1, t - 1))
    angle = dyn.choice([-1.0, 1.0]) * dyn.uniform(math.pi / 4, 2 * math.pi / 3)
    c, s = math.cos(angle), math.sin(angle)
    out = vel.copy()
    out[at:] = vel[at:] @ np.array([[c, s], [-s, c]])
    return out


def _fall(y0: float, cfg: SceneConfig, dyn: np.random.Generator) -> np.ndarray:
    """Heights "t" of a body thrown up (or dropped) under gravity, bouncing on the floor.

    Semi-implicit Euler with unit time step: the velocity gains `g` each frame; crossing
    the floor reflects the position about it and reverses the velocity times a restitution
    drawn per object.
    """
    h = cfg.height
    g, floor = cfg.gravity * h, cfg.floor * h
    vy = -dyn.uniform(0.0, 0.04) * h
    restitution = dyn.uniform(0.5, 0.85)
    y = np.empty(cfg.num_frames)
    y[0] = min(y0, floor)
    for i in range(1, cfg.num_frames):
        vy += g
        y[i] = y[i - 1] + vy
        if y[i] > floor:
            y[i] = 2 * floor - y[i]
            vy = -restitution * abs(vy)
    return y


def _swing(cfg: SceneConfig, dyn: np.random.Generator) -> tuple[np.ndarray, str]:
    """An oscillation "t 2" (zero at frame 0) along a line or around a circle, and its word."""
    steps = np.arange(cfg.num_frames, dtype=np.float64)
    amp = dyn.uniform(*cfg.swing_amplitude) * min(cfg.width, cfg.height)
    phase = 2 * math.pi * steps / dyn.uniform(*cfg.swing_period) + dyn.uniform(0, 2 * math.pi)
    angle = dyn.uniform(0, 2 * math.pi)
    along = np.array([math.cos(angle), math.sin(angle)])
    across = np.array([-along[1], along[0]])
    offset = np.sin(phase)[:, None] * along
    word = "swings"
    if dyn.random() < 0.5:
        offset = offset + dyn.choice([-1.0, 1.0]) * np.cos(phase)[:, None] * across
        word = "circles"
    return amp * (offset - offset[:1]), word


def _make_object(rng: np.random.Generator, cfg: SceneConfig, dyn: np.random.Generator) -> _Object:
    """One object; `rng` draws the rigid world, `dyn` the nonlinear dynamics (`p_swing`,
    `p_fall`, `p_turn`): a separate stream, so that with them off scenes stay as they were."""
    t, w, h = cfg.num_frames, cfg.width, cfg.height
    side = rng.uniform(*cfg.object_size) * min(w, h)
    aspect = rng.uniform(0.6, 1.6)
    shape = _SHAPES[int(rng.integers(len(_SHAPES)))]
    if shape in ("disc", "star"):
        aspect = 1.0
    sw = max(4, round(side * math.sqrt(aspect)))
    sh = max(4, round(side / math.sqrt(aspect)))
    colour_name = list(_COLOURS)[int(rng.integers(len(_COLOURS)))]
    sprite = _texture(rng, sh, sw, np.array(_COLOURS[colour_name]))
    mask = _shape_mask(rng, shape, sw, sh)

    steps = np.arange(t, dtype=np.float64)
    motion: list[str] = []
    centre0 = np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h])
    if rng.random() < cfg.p_still:
        vel = np.zeros((t, 2))
    else:
        speed = rng.uniform(0.25, 1.0) * cfg.max_object_speed * w
        angle = rng.uniform(0, 2 * math.pi)
        direction = np.array([math.cos(angle), math.sin(angle)])
        gain = np.ones(t)
        if rng.random() < cfg.p_accelerate:
            # speed changes linearly from `start` to `end` times the base speed
            start, end = (0.2, 1.8) if rng.random() < 0.5 else (1.8, 0.2)
            gain = np.linspace(start, end, t)
            motion.append("accelerates" if end > start else "slows down")
        if rng.random() < cfg.p_stop_start and t >= 8:
            cuts = np.sort(rng.choice(np.arange(2, t - 2), size=2, replace=False))
            gate = np.ones(t)
            gate[cuts[0] : cuts[1]] = 0.0
            gain = gain * gate
            motion.append("stops and starts")
        vel = speed * gain[:, None] * direction
        if cfg.p_turn > 0 and dyn.random() < cfg.p_turn and t >= 4:
            vel = _turn(vel, dyn)
            motion.append("turns")
    # positions integrate the velocity of the frames before
    centre = centre0 + np.concatenate([np.zeros((1, 2)), np.cumsum(vel[:-1], axis=0)])
    if cfg.p_fall > 0 and dyn.random() < cfg.p_fall:
        centre[:, 1] = _fall(centre0[1], cfg, dyn)
        motion.append("falls and bounces")
    if rng.random() < cfg.p_bounce and np.abs(vel).sum() > 0:
        lo = np.array([0.05 * w, 0.05 * h])
        hi = np.array([0.95 * w, 0.95 * h])
        folded = np.stack([_fold(centre[:, i], lo[i], hi[i]) for i in range(2)], -1)
        if not np.allclose(folded, centre):
            motion.append("bounces")
        centre = folded
    if cfg.p_swing > 0 and dyn.random() < cfg.p_swing:
        offset, word = _swing(cfg, dyn)
        centre = centre + offset
        motion.append(word)
    theta0 = rng.uniform(-0.3, 0.3)
    omega = 0.0
    if rng.random() < cfg.p_rotate:
        omega = rng.choice([-1.0, 1.0]) * rng.uniform(0.01, 0.06)
        motion.append("rotates")
    kappa = 0.0
    if rng.random() < cfg.p_scale:
        kappa = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.6) / t
        motion.append("grows" if kappa > 0 else "shrinks")
    lin = _rot_scale(theta0 + omega * steps, np.exp(kappa * steps))
    pivot = np.array([(sw - 1) / 2.0, (sh - 1) / 2.0])
    maps = _affine(lin, centre - np.einsum("tij,j->ti", lin, pivot))
    return _Object(
        name=f"{colour_name} {shape}",
        sprite=sprite,
        mask=mask,
        maps=maps,
        motion=motion,
        displacement=centre[-1] - centre[0],
    )


def _covered(obj_maps: np.ndarray, mask: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Whether points "t n 2" (image px) fall on the object's mask; "t n" bool.

    Nearest-neighbour lookup with round-half-up, the rule cv2.warpAffine uses for
    INTER_NEAREST, so the test matches the rendered mask.
    """
    inv = np.linalg.inv(obj_maps)
    local = _apply(inv, pts)
    ij = np.floor(local + 0.5).astype(np.int64)
    sh, sw = mask.shape
    inside = (ij[..., 0] >= 0) & (ij[..., 0] < sw) & (ij[..., 1] >= 0) & (ij[..., 1] < sh)
    out = np.zeros(pts.shape[:-1], dtype=bool)
    out[inside] = mask[ij[..., 1][inside], ij[..., 0][inside]] > 0
    return out


def _direction_word(d: np.ndarray, scale: float) -> str:
    dx, dy = float(d[0]), float(d[1])
    if math.hypot(dx, dy) < 0.05 * scale:
        return ""
    horiz = "right" if dx > 0 else "left"
    vert = "down" if dy > 0 else "up"
    if abs(dx) > 2.5 * abs(dy):
        return horiz
    if abs(dy) > 2.5 * abs(dx):
        return vert
    return f"{vert} and {horiz}"


def _object_phrase(obj: _Object, scale: float) -> str:
    words = []
    direction = _direction_word(obj.displacement, scale)
    if direction:
        words.append(f"moves {direction}")
    words.extend(obj.motion)
    if not words:
        return f"a {obj.name} stays still"
    joined = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return f"a {obj.name} {joined}"


def _sample_camera(rng: np.random.Generator, cfg: SceneConfig) -> CameraPath:
    if rng.random() < cfg.p_static_camera:
        return CameraPath()
    t = cfg.num_frames

    def signed(lo: float, hi: float) -> float:
        return float(rng.choice([-1.0, 1.0]) * rng.uniform(lo, hi))

    return CameraPath(
        pan=signed(0.2, 1.0) * cfg.max_camera_speed if rng.random() < cfg.p_pan else 0.0,
        tilt=signed(0.2, 1.0) * cfg.max_camera_speed if rng.random() < cfg.p_tilt else 0.0,
        # at most +-50% size change over the clip
        zoom=signed(0.25, 0.4) / t if rng.random() < cfg.p_zoom else 0.0,
        roll=signed(0.2, 0.5) / t if rng.random() < cfg.p_roll else 0.0,
        shake=float(rng.uniform(*cfg.shake_amplitude)) if rng.random() < cfg.p_shake else 0.0,
    )


def _measured_camera(cam: np.ndarray, w: int, h: int) -> CameraMotion:
    """The CameraMotion that `estimate_camera_motion` would report for exact tracks."""
    centre = np.array([w / 2.0, h / 2.0])
    step = cam[1:] @ np.linalg.inv(cam[:-1])  # frame t-1 -> t
    a, b = step[:, 0, 0], step[:, 1, 0]
    # translation about the centre: x' - c = L (x - c) + d
    d = step[:, :2, 2] + np.einsum("tij,j->ti", step[:, :2, :2], centre) - centre
    return CameraMotion(
        pan=float(-d[:, 0].mean() / w),
        tilt=float(d[:, 1].mean() / h),
        zoom=float(np.log(np.hypot(a, b)).mean()),
        roll=float(np.arctan2(b, a).mean()),
        shake=shake_from_steps(d) / w,
    )


def _warp_into(
    canvas: np.ndarray,
    sprite: np.ndarray,
    mask: np.ndarray,
    m: np.ndarray,
) -> None:
    """Composite `sprite` (alpha `mask`) onto `canvas` through the sprite -> image map `m`."""
    h, w = canvas.shape[:2]
    sh, sw = mask.shape
    corners = np.array([[-1, -1, 1], [sw, -1, 1], [-1, sh, 1], [sw, sh, 1]], dtype=np.float64)
    proj = corners @ m[:2].T
    x0, y0 = np.floor(proj.min(0)).astype(int)
    x1, y1 = np.ceil(proj.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x0 >= x1 or y0 >= y1:
        return
    # warp only the bounding box: shift the map by the box origin
    shifted = m[:2].copy()
    shifted[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    colour = cv2.warpAffine(
        sprite, shifted, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    alpha = cv2.warpAffine(
        mask, shifted, size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    roi = canvas[y0:y1, x0:x1]
    np.copyto(roi, colour, where=alpha[..., None] > 0)


def make_scene(
    seed: int, config: SceneConfig = SceneConfig(), *, camera: CameraPath | None = None
) -> Scene:
    """Draw scene `seed`: exact tracks on `config.spec`'s grid, visibility, frames, caption.

    `camera` fixes the camera motion instead of sampling it (the rest still follows the
    seed). Deterministic: the same (seed, config, camera) gives identical arrays.
    """
    rng = np.random.default_rng(seed)
    cfg = config
    t, w, h = cfg.num_frames, cfg.width, cfg.height
    path = _sample_camera(rng, cfg)
    if camera is not None:
        path = camera
    cam = _camera_maps(path, t, w, h, rng)
    num_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    dyn = np.random.default_rng([seed, 1])
    objects = [_make_object(rng, cfg, dyn) for _ in range(num_objects)]
    image_maps = [np.einsum("tij,tjk->tik", cam, o.maps) for o in objects]

    seeds = query_points(cfg.spec, dtype=torch.float64).numpy()
    n = seeds.shape[0]
    owner = np.full(n, -1, dtype=np.int64)
    for k in range(num_objects - 1, -1, -1):  # front to back
        free = owner < 0
        hit = _covered(image_maps[k][:1], objects[k].mask, seeds[None])[0] & free
        owner[hit] = k

    tracks = np.empty((t, n, 2))
    surfaces = [cam, *image_maps]
    for k in range(-1, num_objects):
        sel = owner == k
        if not sel.any():
            continue
        maps = surfaces[k + 1]
        local = _apply(np.linalg.inv(maps[:1]), seeds[sel][None])[0]
        tracks[:, sel] = _apply(maps, local)

    vis = (
        (tracks[..., 0] >= 0) & (tracks[..., 0] < w) & (tracks[..., 1] >= 0) & (tracks[..., 1] < h)
    )
    for j in range(num_objects):
        behind = owner < j
        if behind.any():
            vis[:, behind] &= ~_covered(image_maps[j], objects[j].mask, tracks[:, behind])
    # frame 0 holds by construction (seeds lie inside, on their own top-most surface);
    # setting it exactly keeps round-off at mask edges from flipping a seed's test
    tracks[0] = seeds
    vis[0] = True

    frames = None
    if cfg.render_frames:
        # reflection fills beyond the margin, so it only needs to hide the seam for a while
        margin = max(w, h) // 4
        bg = _texture(rng, h + 2 * margin, w + 2 * margin, rng.uniform(60, 200, size=3))
        to_texture = np.array([[1.0, 0, -margin], [0, 1.0, -margin], [0, 0, 1.0]])
        frames = np.empty((t, h, w, 3), np.uint8)
        for i in range(t):
            m = (cam[i] @ to_texture)[:2]
            frames[i] = cv2.warpAffine(
                bg, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
            )
            for k, obj in enumerate(objects):
                _warp_into(frames[i], obj.sprite, obj.mask, image_maps[k][i])

    motion = _measured_camera(cam, w, h)
    phrase = camera_phrase(motion)
    scale = float(min(w, h))
    described = [_object_phrase(o, scale) for o in objects]
    if described:
        body = "; ".join(described)
        caption = body[0].upper() + body[1:] + f"; {phrase}."
    else:
        caption = f"An empty textured scene; {phrase}."
    meta = {
        "id": f"synthetic-{seed}",
        "seed": int(seed),
        "width": w,
        "height": h,
        "stride": cfg.stride,
        "fps": cfg.fps,
        "source": "synthetic",
        "caption": caption,
        "camera": phrase,
        "camera_path": asdict(path),
        "objects": [{"name": o.name, "motion": o.motion} for o in objects],
    }
    return Scene(
        tracks=tracks.astype(np.float32),
        visibility=vis,
        frames=frames,
        caption=caption,
        camera=motion.to_dict(),
        camera_phrase=phrase,
        owner=owner,
        meta=meta,
    )


def synthetic_shard_samples(
    count: int, config: SceneConfig, *, seed: int = 0, crf: int = 18, preset: str = "veryfast"
) -> Iterator[ShardSample]:
    """Scenes 0..count-1 of `seed` as ShardSamples (MP4 video when frames are rendered).

    `crf` and `preset` are the x264 settings (see `trajloom.data.video.write_video`).

    Feed to `trajloom.data.shards.write_shards` to build a synthetic shard set.
    """
    import tempfile
    from pathlib import Path

    from trajloom.data.video import write_video

    with tempfile.TemporaryDirectory() as tmp:
        for index in range(count):
            scene = make_scene(scene_seed(seed, index), config)
            video = None
            if scene.frames is not None:
                path = write_video(
                    Path(tmp) / "clip.mp4", scene.frames, fps=config.fps, crf=crf, preset=preset
                )
                video = path.read_bytes()
            yield ShardSample(
                id=f"synthetic-{seed}-{index}",
                tracks=scene.tracks,
                visibility=scene.visibility,
                meta=scene.meta,
                video=video,
            )


class SyntheticClips(IterableDataset):
    """Synthetic scenes as an endless or counted stream of training `Clip`s (like `ShardStream`).

    Clip `i` of epoch `e` is `make_scene(scene_seed(seed, i, e), scene)`, cut into one
    history/future window at frame 0. With `count`, an epoch is clips 0..count-1, split
    over ranks and DataLoader workers so that each is yielded exactly once (clip i goes to
    global worker i mod (world_size * num_workers)); without `count` it never ends.
    `rank`/`world_size` default to torch.distributed's when it is initialized, else 0/1.
    """

    def __init__(
        self,
        scene: SceneConfig,
        *,
        history: int = 16,
        future: int = 16,
        count: int | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        if history < 1 or future < 1:
            raise ValueError(f"history and future must be >= 1, got {history}, {future}")
        if scene.num_frames < history + future:
            raise ValueError(
                f"SceneConfig.num_frames={scene.num_frames} < history + future = "
                f"{history + future}; raise num_frames"
            )
        if count is not None and count < 1:
            raise ValueError(f"count must be >= 1 or None (endless), got {count}")
        self.scene = scene
        self.history = history
        self.future = future
        self.count = count
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the clips of `epoch` (call before creating the DataLoader iterator)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Clip]:
        slot, slots = node_and_worker(self.rank, self.world_size)
        index = slot
        while self.count is None or index < self.count:
            s = scene_seed(self.seed, index, self.epoch)
            scene = make_scene(s, self.scene)
            frames = scene.frames[: self.history] if scene.frames is not None else None
            yield Clip.cut(
                f"synthetic-{self.seed}-{self.epoch}-{index}",
                scene.tracks,
                scene.visibility,
                start=0,
                history=self.history,
                future=self.future,
                frames=frames,
                caption=scene.caption,
                camera=scene.camera_phrase,
                meta=scene.meta,
                source="synthetic",
            )
            index += slots

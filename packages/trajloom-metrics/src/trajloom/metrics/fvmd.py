"""FVMD and FVMD-Long on point tracks (paper §4.1.6 (i); Liu et al. 2024, arXiv:2407.16124).

Motion features follow the FVMD reference (`fvmd/extract_motion_features.py` of
DSL-Lab/FVMD-frechet-video-motion-distance, PyPI `fvmd`) on the track layout of the
released `benchmark/compute_fvmd_from_trajectory.py` (zewei-Zhang/TrajLoom):

- velocity `v[0] = 0, v[t] = x[t] - x[t-1]`, acceleration `a[0] = a[1] = 0,
  a[t] = v[t] - v[t-1]`, in float32 pixels per frame, computed per clip; with
  visibility gating `v[t]` is zeroed unless visible at t, t-1 and `a[t]` unless
  visible at t, t-1, t-2. (`acceleration="position_difference"` gives the PyPI
  tracker path's quantity instead: `a[t] = x[t] - x[t-1]` for t >= 2.)
- the clip is cut into cubes of `cube_frames` (4) frames x `cell_size` x `cell_size`
  (5 x 5) grid points, trailing frames/rows/columns dropped; each cube gives an
  `angle_bins` (8) histogram of angle `atan2(v_x, v_y)` binned by
  `floor((angle + pi) / (2 pi / 8))`, clipped to [0, 7], weighted by
  `ceil(clip(log2(clip(|v|, 0, 255) + 1), 0, 8)) / 8`, all in float32;
- features: the flattened `[MS, MH, MW, 8]` histograms of each clip; the score is the
  Fréchet distance between the Gaussian statistics of ground-truth and predicted
  clip features, for velocity, acceleration and both concatenated ("combined").

Grids: the original FVMD layout is 20 x 20 tracks (16-frame clips at 256 x 256,
feature dimension 4*4*4*8 = 512); TrajLoom's is 15 x 26 at 832 x 480 (15 x 25 used).

Clips: window starts `range(0, T - clip_len + 1, clip_stride)`; `clip_len` None, <= 0
or >= T gives one window of all T frames (FVMD-Long when T is the 81-frame future).

Speed: a zero vector has weight 0, and a clip's vectors equal the whole video's
except the zeroed first frame (velocity) or two (acceleration), so histograms of
all frames are computed once and every clip's cubes come from cumulative sums over
time. The histogram values are integers / 8, so this is exact, not approximate.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from trajloom.metrics._checks import as_tracks, as_visibility, grid_hw_of, same_shape
from trajloom.metrics._threads import side_by_side
from trajloom.metrics.frechet import (
    DEFAULT_EPS,
    GaussianStats,
    IntegerGaussianAccumulator,
    frechet_distance,
    gaussian_stats,
)
from trajloom.metrics.grid import factor_grid

__all__ = [
    "FVMDAccumulator",
    "FVMDConfig",
    "FVMDResult",
    "clip_windows",
    "fvmd",
    "fvmd_features",
    "fvmd_from_features",
    "motion_histograms",
    "velocity_acceleration",
]

AccelerationMode = Literal["second_difference", "position_difference"]
AngleBinning = Literal["floor", "floor_divide"]


@dataclass(frozen=True)
class FVMDConfig:
    """Settings of FVMD on tracks; defaults are the released README command's.

    clip_len: frames per clip (24 in the README, 16 in the FVMD paper); None or <= 0
        (or >= T) gives one clip of all frames: FVMD-Long.
    clip_stride: frames between clip starts (1; the released script's default is 15).
    cell_size: grid points per cube side (5). cube_frames: frames per cube (4).
    angle_bins: direction bins (8). magnitude_bins: 256, so weights are levels / 8.
    angle_binning: "floor" = `floor(x / w)` (released TrajLoom); "floor_divide" =
        `x // w` (PyPI fvmd); they differ only at rare exact bin boundaries.
    acceleration: "second_difference" (released TrajLoom) or "position_difference"
        (the PyPI tracker path, which passes positions to its acceleration function).
    eps: covariance regularization of the Fréchet distance (1e-5).
    sqrt_method: "eigh" (released TrajLoom) or "sqrtm" (PyPI fvmd).
    """

    clip_len: int | None = 24
    clip_stride: int = 1
    cell_size: int = 5
    cube_frames: int = 4
    angle_bins: int = 8
    magnitude_bins: int = 256
    angle_binning: AngleBinning = "floor"
    acceleration: AccelerationMode = "second_difference"
    eps: float = DEFAULT_EPS
    sqrt_method: Literal["eigh", "sqrtm"] = "eigh"

    def __post_init__(self) -> None:
        for name in ("clip_stride", "cell_size", "cube_frames", "angle_bins"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"FVMDConfig.{name} must be an int >= 1; got {value!r}")
        if self.magnitude_bins < 2:
            raise ValueError(f"FVMDConfig.magnitude_bins must be >= 2; got {self.magnitude_bins!r}")
        if self.angle_binning not in ("floor", "floor_divide"):
            raise ValueError(
                f"FVMDConfig.angle_binning must be 'floor' or 'floor_divide'; got {self.angle_binning!r}"
            )
        if self.acceleration not in ("second_difference", "position_difference"):
            raise ValueError(
                "FVMDConfig.acceleration must be 'second_difference' or 'position_difference'; "
                f"got {self.acceleration!r}"
            )
        if self.sqrt_method not in ("eigh", "sqrtm"):
            raise ValueError(
                f"FVMDConfig.sqrt_method must be 'eigh' or 'sqrtm'; got {self.sqrt_method!r}"
            )
        if not self.eps >= 0:
            raise ValueError(f"FVMDConfig.eps must be >= 0; got {self.eps!r}")


@dataclass(frozen=True)
class FVMDResult:
    """FVMD scores (squared feature units) and what they were computed from."""

    velocity: float
    acceleration: float
    combined: float
    num_windows: int
    num_videos: int
    feature_dim_velocity: int
    feature_dim_acceleration: int


def velocity_acceleration(
    tracks: np.ndarray,
    visibility: np.ndarray | None = None,
    *,
    acceleration: AccelerationMode = "second_difference",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame velocity and acceleration of a clip, released conventions.

    Args:
        tracks: `[..., t, n, 2]` pixels; computed in float32.
        visibility: `[..., t, n]` gating (bool, or thresholded at 0.5) or None.
        acceleration: see `FVMDConfig.acceleration`.

    Returns:
        `(v, a)`, each float32 `[..., t, n, 2]` in pixels per frame (per frame^2).
    """
    x = as_tracks("tracks", tracks).astype(np.float32, copy=False)
    v = np.zeros_like(x)
    np.subtract(x[..., 1:, :, :], x[..., :-1, :, :], out=v[..., 1:, :, :])
    a = np.zeros_like(x)
    if acceleration == "second_difference":
        np.subtract(v[..., 2:, :, :], v[..., 1:-1, :, :], out=a[..., 2:, :, :])
    elif acceleration == "position_difference":
        a[..., 2:, :, :] = v[..., 2:, :, :]
    else:
        raise ValueError(
            f"acceleration must be 'second_difference' or 'position_difference'; got {acceleration!r}"
        )
    if visibility is not None:
        vis = as_visibility("visibility", visibility, x.shape)
        vmask = np.zeros(vis.shape, dtype=bool)
        vmask[..., 1:, :] = vis[..., 1:, :] & vis[..., :-1, :]
        amask = np.zeros(vis.shape, dtype=bool)
        amask[..., 2:, :] = vmask[..., 2:, :] & vis[..., :-2, :]
        # times 1 or 0 as the released float32 masks do (a masked negative is -0.0);
        # float32 masks: a bool operand would be cast element by element (5x slower)
        v *= vmask.astype(np.float32)[..., None]
        a *= amask.astype(np.float32)[..., None]
    return v, a


def _cube_grid(grid_hw: tuple[int, int], cell_size: int) -> tuple[int, int]:
    mh, mw = grid_hw[0] // cell_size, grid_hw[1] // cell_size
    if mh < 1 or mw < 1:
        raise ValueError(
            f"grid_hw {grid_hw} is smaller than one cell of cell_size = {cell_size} points"
        )
    return mh, mw


def _frame_histograms(vectors: np.ndarray, grid_hw: tuple[int, int], cfg: FVMDConfig) -> np.ndarray:
    """Histogram levels of every frame and cell: `[b, s, n, 2] -> [b, s, mh, mw, bins]`.

    Values are integer sums of magnitude levels (float64, exact); divide by
    log2(magnitude_bins) for the FVMD weights.
    """
    b, s = vectors.shape[:2]
    hg, wg = grid_hw
    cs = cfg.cell_size
    mh, mw = _cube_grid(grid_hw, cs)
    v = vectors.reshape(b, s, hg, wg, 2)[:, :, : mh * cs, : mw * cs].astype(np.float32)
    angle = np.arctan2(v[..., 0], v[..., 1])
    width = 2.0 * np.pi / float(cfg.angle_bins)
    if cfg.angle_binning == "floor":
        bins = np.floor((angle + np.pi) / width)
    else:
        bins = (angle + np.pi) // width
    bins = np.clip(bins, 0, cfg.angle_bins - 1).astype(np.int64)
    # |v| as np.linalg.norm(v, axis=-1) computes it in float32 (same bits, 10x faster)
    mag = np.sqrt(v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1])
    mag = np.clip(mag, 0.0, float(cfg.magnitude_bins - 1)) + 1.0
    level = np.ceil(np.clip(np.log2(mag), 0.0, float(np.log2(cfg.magnitude_bins))))
    cell = (np.arange(mh * cs) // cs)[:, None] * mw + (np.arange(mw * cs) // cs)[None, :]
    frame = np.arange(b * s).reshape(b, s, 1, 1)
    index = (frame * (mh * mw) + cell) * cfg.angle_bins + bins
    counts = np.bincount(
        index.ravel(), weights=level.ravel(), minlength=b * s * mh * mw * cfg.angle_bins
    )
    return counts.reshape(b, s, mh, mw, cfg.angle_bins)


def motion_histograms(
    vectors: np.ndarray,
    grid_hw: tuple[int, int],
    config: FVMDConfig | None = None,
) -> np.ndarray:
    """FVMD histograms of motion vectors, as `calc_hist` of the FVMD reference.

    Args:
        vectors: `[..., s, n, 2]` velocities or accelerations (pixels/frame), n tracks
            in row-major grid order (the PyPI package assumes a square grid; any grid
            works here).
        grid_hw: `(Hg, Wg)`, `Hg * Wg = n`.
        config: cube and bin settings (`FVMDConfig`; clip settings are not used).

    Returns:
        `[..., ms, mh, mw, angle_bins]` float64, `ms = s // cube_frames`,
        `mh = Hg // cell_size`, `mw = Wg // cell_size`.
    """
    cfg = config or FVMDConfig()
    vec = as_tracks("vectors", vectors)
    hw = grid_hw_of(grid_hw, vec.shape[-2])
    lead, s = vec.shape[:-3], vec.shape[-3]
    ms = s // cfg.cube_frames
    if ms < 1:
        raise ValueError(
            f"vectors must have at least cube_frames = {cfg.cube_frames} frames; got {s}"
        )
    flat = vec.reshape((-1, *vec.shape[-3:]))
    per_frame = _frame_histograms(flat, hw, cfg)[:, : ms * cfg.cube_frames]
    cubes = per_frame.reshape((flat.shape[0], ms, cfg.cube_frames, *per_frame.shape[2:])).sum(2)
    return (cubes / float(np.log2(cfg.magnitude_bins))).reshape(lead + cubes.shape[1:])


def clip_windows(
    num_frames: int, clip_len: int | None, clip_stride: int = 1
) -> tuple[np.ndarray, int]:
    """Start frames and length of the sliding clips of a `num_frames`-frame sequence.

    `clip_len` None, <= 0 or >= T: one clip `[0, T)` (FVMD-Long). A `RuntimeWarning`
    is raised when `clip_len > T`, since the clip then is shorter than asked.
    """
    t = int(num_frames)
    if clip_stride < 1:
        raise ValueError(f"clip_stride must be >= 1; got {clip_stride}")
    if clip_len is None or clip_len <= 0 or clip_len >= t:
        if clip_len is not None and clip_len > t:
            warnings.warn(
                f"clip_len = {clip_len} exceeds the T = {t} frames given; using one clip of "
                f"all {t} frames, as the released script does",
                RuntimeWarning,
                stacklevel=3,
            )
        return np.zeros(1, dtype=np.int64), t
    return np.arange(0, t - clip_len + 1, clip_stride, dtype=np.int64), int(clip_len)


def _window_cubes(
    per_frame: np.ndarray, starts: np.ndarray, length: int, zeroed: int, cube_frames: int
) -> np.ndarray:
    """Cube sums of every clip: `[b, s, ...] -> [b, w, ms, ...]`, first `zeroed` frames left out."""
    ms = length // cube_frames
    csum = np.concatenate([np.zeros_like(per_frame[:, :1]), np.cumsum(per_frame, axis=1)], axis=1)
    first = starts[:, None] + cube_frames * np.arange(ms)[None, :]
    cubes = csum[:, first + cube_frames] - csum[:, first]
    # In a clip, v[0] (and a[0], a[1]) are zero: drop those frames' contributions.
    for j in range(min(zeroed, ms * cube_frames)):
        cubes[:, :, j // cube_frames] -= per_frame[:, starts + j]
    return cubes


def fvmd_features(
    tracks: np.ndarray,
    visibility: np.ndarray | None = None,
    *,
    grid_hw: tuple[int, int] | None = None,
    config: FVMDConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Velocity and acceleration features of every clip of every video.

    Args:
        tracks: `[t, n, 2]` or `[b, t, n, 2]` pixels, row-major grid order.
        visibility: `[..., t, n]` gating of the motion vectors, or None.
        grid_hw: `(Hg, Wg)`; None factors n as the released script does without
            `query_xy` (390 -> 15 x 26, 400 -> 20 x 20).
        config: `FVMDConfig`.

    Returns:
        `(velocity, acceleration)`, each `[b * w, ms * mh * mw * angle_bins]` float64,
        rows ordered by video then clip start.
    """
    cfg = config or FVMDConfig()
    scale = float(np.log2(cfg.magnitude_bins))
    v, a = _clip_levels(_ClipInput.check(tracks, visibility, grid_hw, cfg), cfg)
    return v / scale, a / scale


@dataclass(frozen=True)
class _ClipInput:
    """Checked input of the features: tracks `[b, t, n, 2]`, visibility `[b, t, n]` bool
    or None, the grid and the clip windows (`clip_windows`)."""

    tracks: np.ndarray
    visibility: np.ndarray | None
    grid_hw: tuple[int, int]
    starts: np.ndarray
    length: int

    @classmethod
    def check(
        cls,
        tracks: np.ndarray,
        visibility: np.ndarray | None,
        grid_hw: tuple[int, int] | None,
        cfg: FVMDConfig,
    ) -> _ClipInput:
        """Validate (errors and warnings name the input) and batch a `[t, n, 2]` video."""
        x = as_tracks("tracks", tracks)
        if x.ndim == 3:
            x = x[None]
            if visibility is not None:
                visibility = np.asarray(visibility)[None]
        if x.ndim != 4:
            raise ValueError(f"tracks must have shape [T, N, 2] or [B, T, N, 2]; got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(
                f"tracks has {int((~np.isfinite(x)).sum())} non-finite values; FVMD needs "
                "finite positions (set invisible points to any finite value and pass visibility)"
            )
        hw = grid_hw_of(grid_hw if grid_hw is not None else factor_grid(x.shape[2]), x.shape[2])
        starts, length = clip_windows(x.shape[1], cfg.clip_len, cfg.clip_stride)
        if length < cfg.cube_frames:
            raise ValueError(
                f"tracks must have at least cube_frames = {cfg.cube_frames} frames per clip; "
                f"got clips of {length} frames"
            )
        vis = None
        if visibility is not None:
            vis = as_visibility("visibility", visibility, x.shape)
            if not (vis[:, 1:] & vis[:, :-1]).any():
                warnings.warn(
                    "fvmd_features: no track is visible in two consecutive frames; every "
                    "motion vector is gated to zero and the features are all zero",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return cls(x, vis, hw, starts, length)


def _clip_levels(clips: _ClipInput, cfg: FVMDConfig) -> tuple[np.ndarray, np.ndarray]:
    """`fvmd_features` times log2(magnitude_bins): the integer histogram levels (float64)
    of checked input; no warnings, so it may run in a worker thread."""
    v, a = velocity_acceleration(clips.tracks, clips.visibility, acceleration=cfg.acceleration)
    out = []
    for vectors, zeroed in ((v, 1), (a, 2)):
        per_frame = _frame_histograms(vectors, clips.grid_hw, cfg)
        cubes = _window_cubes(per_frame, clips.starts, clips.length, zeroed, cfg.cube_frames)
        out.append(cubes.reshape(cubes.shape[0] * cubes.shape[1], -1))
    return out[0], out[1]


def _distances(
    gt: GaussianStats, pred: GaussianStats, dim_v: int, cfg: FVMDConfig, workers: int = 1
) -> tuple[float, float, float]:
    """Velocity, acceleration and combined Fréchet distances; with `workers >= 2` the
    combined one (the largest) runs beside the other two."""
    eps, method = cfg.eps, cfg.sqrt_method
    d = gt.mean.shape[0]

    def blocks() -> tuple[float, float]:
        return (
            frechet_distance(gt.block(0, dim_v), pred.block(0, dim_v), eps=eps, method=method),
            frechet_distance(gt.block(dim_v, d), pred.block(dim_v, d), eps=eps, method=method),
        )

    combined, (vel, acc) = side_by_side(
        lambda: frechet_distance(gt, pred, eps=eps, method=method), blocks, workers
    )
    return vel, acc, combined


def fvmd_from_features(
    gt_velocity: np.ndarray,
    gt_acceleration: np.ndarray,
    pred_velocity: np.ndarray,
    pred_acceleration: np.ndarray,
    config: FVMDConfig | None = None,
    *,
    num_videos: int = 0,
) -> FVMDResult:
    """FVMD from precomputed clip features `[b, ...]` (e.g. `motion_histograms` output)."""
    cfg = config or FVMDConfig()
    feats = [
        np.asarray(f).reshape(np.shape(f)[0], -1)
        for f in (gt_velocity, gt_acceleration, pred_velocity, pred_acceleration)
    ]
    gt = gaussian_stats(np.concatenate(feats[:2], axis=1))
    pred = gaussian_stats(np.concatenate(feats[2:], axis=1))
    dim_v = feats[0].shape[1]
    if feats[2].shape[1] != dim_v or feats[1].shape[1] != feats[3].shape[1]:
        raise ValueError(
            "ground-truth and predicted features must have equal dimensions; got velocity "
            f"{feats[0].shape[1]} vs {feats[2].shape[1]}, acceleration {feats[1].shape[1]} vs "
            f"{feats[3].shape[1]}"
        )
    vel, acc, comb = _distances(gt, pred, dim_v, cfg)
    return FVMDResult(vel, acc, comb, feats[0].shape[0], num_videos, dim_v, feats[1].shape[1])


class FVMDAccumulator:
    """Streaming FVMD: add videos (or batches of them), then `result()`.

    Memory stays O(d^2) in the feature dimension d, however many clips are added:
    clip features are merged into running means and covariances.

    Args:
        config: `FVMDConfig`.
        grid_hw: `(Hg, Wg)` of every video; None takes it from the first update
            (or factors n there, as the released script does without `query_xy`).
        buffer_rows: clip rows buffered before each covariance product.
        workers: 1 (default) computes ground truth and prediction one after the other; 2
            side by side in two threads (features, covariances, Fréchet distances), for
            a machine with an idle core: on a shared 2-core box at load >= 2.5 it was
            slower (BENCHMARKS.md). The results are bit-identical.
    """

    def __init__(
        self,
        config: FVMDConfig | None = None,
        grid_hw: tuple[int, int] | None = None,
        *,
        buffer_rows: int = 4096,
        workers: int = 1,
    ) -> None:
        self.config = config or FVMDConfig()
        self.workers = int(workers)
        self.grid_hw = None if grid_hw is None else (int(grid_hw[0]), int(grid_hw[1]))
        scale = float(np.log2(self.config.magnitude_bins))
        self._gt = IntegerGaussianAccumulator(scale, buffer_rows)
        self._pred = IntegerGaussianAccumulator(scale, buffer_rows)
        self._dim_v: int | None = None
        self.num_videos = 0

    def update(
        self,
        gt_tracks: np.ndarray,
        pred_tracks: np.ndarray,
        visibility: np.ndarray | None = None,
        *,
        grid_hw: tuple[int, int] | None = None,
    ) -> int:
        """Add videos `[t, n, 2]` or `[b, t, n, 2]`; returns the number of clips added.

        `visibility` (`[..., t, n]`, usually ground truth) gates both prediction and
        ground truth, as `--use_gt_visibility` of the released script does.
        """
        gt = as_tracks("gt_tracks", gt_tracks)
        pred = as_tracks("pred_tracks", pred_tracks)
        same_shape("gt_tracks", gt, "pred_tracks", pred)
        hw = grid_hw if grid_hw is not None else self.grid_hw
        if hw is None:
            hw = factor_grid(gt.shape[-2])
        hw = (int(hw[0]), int(hw[1]))
        if self.grid_hw is None:
            self.grid_hw = hw
        elif hw != self.grid_hw:
            raise ValueError(
                f"grid_hw {hw} differs from the grid {self.grid_hw} of earlier videos; "
                "all videos must use the same query grid"
            )
        gt_in = _ClipInput.check(gt, visibility, hw, self.config)
        pred_in = _ClipInput.check(pred, visibility, hw, self.config)
        (fv_gt, fa_gt), (fv_pr, fa_pr) = side_by_side(
            lambda: _clip_levels(gt_in, self.config),
            lambda: _clip_levels(pred_in, self.config),
            self.workers,
        )
        if self._dim_v is not None and fv_gt.shape[1] != self._dim_v:
            raise ValueError(
                f"clips of this video give {fv_gt.shape[1]} velocity features but earlier ones "
                f"gave {self._dim_v}: all videos need the same number of frames per clip "
                "(check T against clip_len)"
            )
        self._dim_v = fv_gt.shape[1]
        # histogram levels: integers by construction (bincount of integer weights)
        self._gt._append(np.concatenate([fv_gt, fa_gt], axis=1))
        self._pred._append(np.concatenate([fv_pr, fa_pr], axis=1))
        self.num_videos += 1 if gt.ndim == 3 else gt.shape[0]
        return fv_gt.shape[0]

    @property
    def num_windows(self) -> int:
        """Number of clips added so far."""
        return self._gt.count

    def result(self) -> FVMDResult:
        """Velocity, acceleration and combined FVMD; `ValueError` with fewer than 2 clips."""
        if self._dim_v is None or self._gt.count < 2:
            raise ValueError(
                f"FVMD needs at least 2 clips to estimate covariances; got {self._gt.count} "
                "(add more videos, or lower clip_stride / clip_len)"
            )
        gt, pred = side_by_side(self._gt.stats, self._pred.stats, self.workers)
        vel, acc, comb = _distances(gt, pred, self._dim_v, self.config, self.workers)
        d = gt.mean.shape[0]
        return FVMDResult(vel, acc, comb, gt.count, self.num_videos, self._dim_v, d - self._dim_v)


def fvmd(
    gt_tracks: np.ndarray,
    pred_tracks: np.ndarray,
    visibility: np.ndarray | None = None,
    *,
    grid_hw: tuple[int, int] | None = None,
    config: FVMDConfig | None = None,
) -> FVMDResult:
    """FVMD between ground-truth and predicted tracks `[b, t, n, 2]` (pixels).

    `visibility` `[b, t, n]` gates the motion vectors of both. Use
    `FVMDConfig(clip_len=None)` for FVMD-Long. See `FVMDAccumulator` to stream.
    """
    acc = FVMDAccumulator(config, grid_hw)
    acc.update(gt_tracks, pred_tracks, visibility)
    return acc.result()

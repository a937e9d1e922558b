"""FVMD features and distances: hand-computed histograms, invariants, bad input."""

from __future__ import annotations

import warnings
from contextlib import nullcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trajloom.metrics import (
    FVMDAccumulator,
    FVMDConfig,
    clip_windows,
    fvmd,
    fvmd_features,
    fvmd_from_features,
    motion_histograms,
    velocity_acceleration,
)


def _quadratic_tracks(grid_points, frames: int = 4) -> np.ndarray:
    """5 x 5 grid, every point at `p + t^2 (1, 2)`: v = (2t - 1)(1, 2), a = (2, 4)."""
    t = np.arange(frames, dtype=np.float64)[:, None, None]
    return grid_points(5, 5, stride=8.0)[None] + t**2 * np.array([1.0, 2.0])


def test_hand_computed_histograms(grid_points):
    v, a = velocity_acceleration(_quadratic_tracks(grid_points))
    np.testing.assert_array_equal(v[1:, 0], [[1, 2], [3, 6], [5, 10]])
    np.testing.assert_array_equal(a[:, 0], [[0, 0], [0, 0], [2, 4], [2, 4]])
    hv = motion_histograms(v, (5, 5))
    ha = motion_histograms(a, (5, 5))
    assert hv.shape == ha.shape == (1, 1, 1, 8)
    # angle atan2(x, y) = atan2(1, 2) = 0.46 rad -> floor((0.46 + pi) / (pi / 4)) = 4.
    # |v| = 2.24, 6.71, 11.18 -> ceil(log2(|v| + 1)) = 2, 3, 4 -> 25 * 9 / 8.
    expect_v = np.zeros(8)
    expect_v[4] = 25 * (2 + 3 + 4) / 8
    np.testing.assert_array_equal(hv.reshape(8), expect_v)
    # |a| = 4.47 -> level 3, two frames: 25 * 2 * 3 / 8.
    expect_a = np.zeros(8)
    expect_a[4] = 25 * 2 * 3 / 8
    np.testing.assert_array_equal(ha.reshape(8), expect_a)


def test_visibility_gating_by_hand(grid_points):
    tracks = _quadratic_tracks(grid_points)
    vis = np.ones((4, 25), dtype=bool)
    vis[2, 7] = False  # v of point 7 needs frames t, t-1: lost at t = 2, 3
    v, a = velocity_acceleration(tracks, vis)
    assert not v[2:, 7].any() and v[1, 7].any()
    assert not a[:, 7].any()
    hv = motion_histograms(v, (5, 5)).reshape(8)
    ha = motion_histograms(a, (5, 5)).reshape(8)
    assert hv[4] == 25 * 9 / 8 - (3 + 4) / 8
    assert ha[4] == 25 * 2 * 3 / 8 - 2 * 3 / 8


def test_position_difference_acceleration_is_shifted_velocity(rng):
    tracks = rng.normal(size=(9, 6, 2)) * 5
    v, _ = velocity_acceleration(tracks)
    _, a = velocity_acceleration(tracks, acceleration="position_difference")
    np.testing.assert_array_equal(a[2:], v[2:])
    assert not a[:2].any()


def test_angle_bins_follow_atan2_of_x_then_y():
    # A vector along +y has angle atan2(0, 1) = 0 -> bin 4; along +x, pi / 2 -> bin 6.
    v = np.zeros((4, 25, 2))
    v[1:, :, 1] = 1.0
    assert np.argmax(motion_histograms(v, (5, 5)).reshape(8)) == 4
    v = v[..., ::-1]
    assert np.argmax(motion_histograms(v, (5, 5)).reshape(8)) == 6


def _explicit_window_features(tracks, vis, hw, cfg):
    """Reference path: slice each clip, difference it, histogram it."""
    starts, length = clip_windows(tracks.shape[1], cfg.clip_len, cfg.clip_stride)
    fv, fa = [], []
    for b in range(tracks.shape[0]):
        for s in starts:
            w = slice(s, s + length)
            v, a = velocity_acceleration(
                tracks[b, w], None if vis is None else vis[b, w], acceleration=cfg.acceleration
            )
            fv.append(motion_histograms(v, hw, cfg).reshape(-1))
            fa.append(motion_histograms(a, hw, cfg).reshape(-1))
    return np.stack(fv), np.stack(fa)


@settings(max_examples=25, deadline=None)
@given(
    frames=st.integers(4, 30),
    clip_len=st.integers(0, 34),
    stride=st.integers(1, 5),
    hg=st.integers(5, 11),
    wg=st.integers(5, 12),
    gated=st.booleans(),
    mode=st.sampled_from(["second_difference", "position_difference"]),
    seed=st.integers(0, 2**16),
)
def test_windowed_features_equal_explicit_clips(
    frames, clip_len, stride, hg, wg, gated, mode, seed
):
    if 0 < clip_len < 4:
        clip_len = 4
    rng = np.random.default_rng(seed)
    tracks = np.cumsum(rng.normal(size=(2, frames, hg * wg, 2)) * 6, axis=1)
    tracks[:, :, :3] = np.round(tracks[:, :, :3])  # exact integer moves hit bin edges
    vis = rng.random((2, frames, hg * wg)) > 0.2 if gated else None
    cfg = FVMDConfig(clip_len=clip_len, clip_stride=stride, acceleration=mode)
    with pytest.warns(RuntimeWarning) if clip_len > frames else nullcontext():
        fv, fa = fvmd_features(tracks, vis, grid_hw=(hg, wg), config=cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ev, ea = _explicit_window_features(tracks, vis, (hg, wg), cfg)
    np.testing.assert_array_equal(fv, ev)
    np.testing.assert_array_equal(fa, ea)


@pytest.mark.parametrize(
    ("hw", "frames", "clip_len", "dim"),
    [
        ((20, 20), 16, 16, 4 * 4 * 4 * 8),  # original FVMD layout
        ((15, 26), 81, 24, 6 * 3 * 5 * 8),  # TrajLoom grid, README clips
        ((15, 26), 81, None, 20 * 3 * 5 * 8),  # FVMD-Long
    ],
)
def test_feature_dimensions_of_the_layouts(rng, hw, frames, clip_len, dim):
    tracks = rng.normal(size=(frames, hw[0] * hw[1], 2))
    fv, fa = fvmd_features(tracks, grid_hw=hw, config=FVMDConfig(clip_len=clip_len, clip_stride=40))
    assert fv.shape[1] == fa.shape[1] == dim


def _random_set(rng, videos=12, frames=20):
    base = np.cumsum(rng.normal(size=(videos, frames, 100, 2)) * 3, axis=1)
    return base, base + rng.normal(size=base.shape) * 2


def test_fvmd_of_a_set_against_itself_is_minus_two_eps_d(rng):
    gt, _ = _random_set(rng)
    cfg = FVMDConfig(clip_len=8, clip_stride=4)
    res = fvmd(gt, gt, grid_hw=(10, 10), config=cfg)
    # |mu - mu|^2 + 2 Tr S - 2 Tr(S + eps I) = -2 eps d exactly.
    assert res.velocity == pytest.approx(-2 * cfg.eps * res.feature_dim_velocity, abs=1e-6)
    assert res.combined == pytest.approx(
        -2 * cfg.eps * (res.feature_dim_velocity + res.feature_dim_acceleration), abs=1e-6
    )
    zero = fvmd(gt, gt, grid_hw=(10, 10), config=FVMDConfig(clip_len=8, clip_stride=4, eps=0.0))
    assert abs(zero.acceleration) < 1e-4


def test_fvmd_is_symmetric_and_positive(rng):
    gt, pred = _random_set(rng)
    cfg = FVMDConfig(clip_len=8, clip_stride=4)
    ab = fvmd(gt, pred, grid_hw=(10, 10), config=cfg)
    ba = fvmd(pred, gt, grid_hw=(10, 10), config=cfg)
    assert ab.combined > 1.0
    for x, y in [
        (ab.velocity, ba.velocity),
        (ab.acceleration, ba.acceleration),
        (ab.combined, ba.combined),
    ]:
        assert x == pytest.approx(y, rel=1e-8)


def test_streaming_equals_one_shot(rng):
    gt, pred = _random_set(rng)
    cfg = FVMDConfig(clip_len=8, clip_stride=2)
    whole = fvmd(gt, pred, grid_hw=(10, 10), config=cfg)
    acc = FVMDAccumulator(cfg, (10, 10), buffer_rows=5)
    for i in range(gt.shape[0]):
        acc.update(gt[i], pred[i])
    part = acc.result()
    assert part.num_windows == whole.num_windows and part.num_videos == gt.shape[0]
    assert part.combined == pytest.approx(whole.combined, rel=1e-9)
    assert part.velocity == pytest.approx(whole.velocity, rel=1e-9)
    fv_g, fa_g = fvmd_features(gt, grid_hw=(10, 10), config=cfg)
    fv_p, fa_p = fvmd_features(pred, grid_hw=(10, 10), config=cfg)
    direct = fvmd_from_features(fv_g, fa_g, fv_p, fa_p, cfg)
    assert direct.acceleration == pytest.approx(whole.acceleration, rel=1e-9)


def test_sqrtm_and_eigh_agree_when_full_rank(rng):
    gt, pred = _random_set(rng, videos=40, frames=12)
    eig = fvmd(gt, pred, grid_hw=(10, 10), config=FVMDConfig(clip_len=4, clip_stride=1))
    sq = fvmd(
        gt,
        pred,
        grid_hw=(10, 10),
        config=FVMDConfig(clip_len=4, clip_stride=1, sqrt_method="sqrtm"),
    )
    assert eig.num_windows > eig.feature_dim_velocity + eig.feature_dim_acceleration
    assert sq.combined == pytest.approx(eig.combined, rel=1e-6)


def test_clip_windows():
    starts, length = clip_windows(81, 24, 1)
    assert length == 24 and starts[0] == 0 and starts[-1] == 57 and len(starts) == 58
    starts, length = clip_windows(81, 16, 15)
    assert list(starts) == [0, 15, 30, 45, 60] and length == 16
    assert clip_windows(81, None)[1] == 81 and clip_windows(81, 81)[1] == 81
    with pytest.warns(RuntimeWarning, match="exceeds"):
        assert clip_windows(20, 24)[1] == 20


def test_bad_inputs(rng):
    gt = rng.normal(size=(2, 12, 100, 2))
    short = FVMDConfig(clip_len=8)
    with pytest.raises(ValueError, match="same shape"):
        fvmd(gt, gt[:, :10], grid_hw=(10, 10))
    broken = gt.copy()
    broken[0, 3, 5, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fvmd(broken, gt, grid_hw=(10, 10))
    with pytest.raises(ValueError, match="cube_frames"):
        fvmd(gt[:, :3], gt[:, :3], grid_hw=(10, 10), config=FVMDConfig(clip_len=None))
    with pytest.raises(ValueError, match="at least 2 clips"):
        fvmd(gt[:1], gt[:1], grid_hw=(10, 10), config=FVMDConfig(clip_len=None))
    with pytest.raises(ValueError, match="grid_hw"):
        fvmd(gt, gt, grid_hw=(9, 10), config=short)
    with pytest.raises(ValueError, match="smaller than one cell"):
        fvmd(gt, gt, grid_hw=(4, 25), config=short)
    with pytest.raises(ValueError, match="clip_stride"):
        FVMDConfig(clip_stride=0)
    # fewer frames than the clip length: one clip of all frames, with a warning
    with pytest.warns(RuntimeWarning, match="exceeds"):
        res = fvmd(gt, gt + 1.0, grid_hw=(10, 10), config=FVMDConfig(clip_len=24))
    assert res.num_windows == 2
    acc = FVMDAccumulator(FVMDConfig(clip_len=None), (10, 10))
    acc.update(gt[0], gt[0])
    with pytest.raises(ValueError, match="same number of frames"):
        acc.update(gt[1, :8], gt[1, :8])
    with pytest.raises(ValueError, match="differs from the grid"):
        acc.update(gt[1], gt[1], grid_hw=(5, 20))


def test_nothing_visible_warns_and_gives_zero_features(rng):
    tracks = rng.normal(size=(2, 12, 100, 2))
    with pytest.warns(RuntimeWarning, match="no track is visible"):
        fv, fa = fvmd_features(
            tracks, np.zeros((2, 12, 100)), grid_hw=(10, 10), config=FVMDConfig(clip_len=8)
        )
    assert not fv.any() and not fa.any()


def _released_cell_levels(vectors: np.ndarray, bins: int = 8, magnitude_bins: int = 256):
    """One cube's histogram levels as the released script writes them (np.linalg.norm)."""
    v = vectors.reshape(-1, 2).astype(np.float32)
    angle = np.arctan2(v[:, 0], v[:, 1])
    b = np.clip(np.floor((angle + np.pi) / (2.0 * np.pi / bins)).astype(np.int64), 0, bins - 1)
    mag = np.clip(np.linalg.norm(v, axis=1), 0.0, float(magnitude_bins - 1)) + 1.0
    level = np.ceil(np.clip(np.log2(mag), 0.0, float(np.log2(magnitude_bins))))
    return np.bincount(b, weights=level, minlength=bins)


def test_histogram_magnitudes_equal_the_released_norm(rng):
    # magnitudes over many decades and exactly at level edges (|v| + 1 = 2^k)
    v = rng.normal(size=(8, 25, 2)) * np.logspace(-3, 3, 8)[:, None, None]
    edges = 2.0 ** rng.integers(0, 9, size=25) - 1.0
    v[3] = np.stack([edges * 0.6, edges * 0.8], axis=-1)  # |(0.6, 0.8)| = 1
    got = motion_histograms(v, (5, 5), FVMDConfig(cube_frames=1)) * 8.0
    for t in range(8):
        np.testing.assert_array_equal(got[t].reshape(8), _released_cell_levels(v[t]))


def test_two_workers_give_the_same_bits_as_one(rng):
    gt, pred = _random_set(rng, videos=6, frames=20)
    vis = rng.random(gt.shape[:-1]) > 0.2
    cfg = FVMDConfig(clip_len=8, clip_stride=1)
    results = []
    for workers in (1, 2):
        acc = FVMDAccumulator(cfg, (10, 10), buffer_rows=16, workers=workers)
        for i in range(gt.shape[0]):
            acc.update(gt[i], pred[i], vis[i])
        results.append(acc.result())
    assert results[0] == results[1]  # dataclass equality: every float bit-identical


def test_side_by_side_runs_both_and_raises_after_both_end():
    import threading

    from trajloom.metrics._threads import side_by_side

    names = []
    a, b = side_by_side(
        lambda: names.append(threading.current_thread().name) or 1,
        lambda: names.append(threading.current_thread().name) or 2,
        workers=2,
    )
    assert (a, b) == (1, 2) and len(set(names)) == 2  # two threads did the two halves
    finished = threading.Event()

    def slow_then_done():
        finished.wait(0.05)
        finished.set()
        return 0

    def fail():
        raise KeyError("second half")

    with pytest.raises(KeyError, match="second half"):
        side_by_side(slow_then_done, fail, workers=2)
    assert finished.is_set()  # the first half had ended before the error was raised

    def fail_first():
        raise ValueError("first half")

    with pytest.raises(ValueError, match="first half"):
        side_by_side(fail_first, lambda: 2, workers=2)
    assert side_by_side(lambda: 1, lambda: 2, workers=1) == (1, 2)

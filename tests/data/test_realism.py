"""trajloom.data.realism on analytic tracks: known motion gives known statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trajloom.data.realism import (
    DISTRIBUTIONS,
    FRACTIONS,
    compare,
    motion_statistics,
    wasserstein_1d,
)
from trajloom.encoding import GridSpec, query_points

SPEC = GridSpec(128, 128, 16)
SIZE = (128, 128)
T = 20


def _grid() -> np.ndarray:
    return query_points(SPEC, dtype=torch.float64).numpy()


def _static(batch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    tracks = np.broadcast_to(_grid(), (batch, T, SPEC.num_points, 2)).copy()
    return tracks, np.ones(tracks.shape[:-1], bool)


def test_static_tracks_have_no_motion_at_all():
    stats = motion_statistics(*_static(), SIZE)
    assert stats.value("moving") == 0.0
    assert stats.occluded == 0.0 and stats.value("leaves") == 0.0
    for name in DISTRIBUTIONS:
        np.testing.assert_allclose(getattr(stats, name), 0.0, atol=1e-9)
    assert stats.speed.size == 2 * SPEC.num_points


def _panned(shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tracks, vis = _static(1)
    tracks = tracks + np.arange(T)[None, :, None, None] * shift
    inside = (tracks >= 0).all(-1) & (tracks < 128).all(-1)
    return tracks, vis & inside


def test_a_pure_pan_is_a_camera_pan_of_the_shift():
    # 1 px per frame to the right and down; the grid (0..112 px) stays inside (<= 127.2)
    stats = motion_statistics(*_panned(np.array([0.6, 0.8])), SIZE)
    np.testing.assert_allclose(stats.pan, [1.0], rtol=1e-6)
    np.testing.assert_allclose(stats.zoom, [0.0], atol=1e-9)
    np.testing.assert_allclose(stats.roll, [0.0], atol=1e-9)
    np.testing.assert_allclose(stats.shake, [0.0], atol=1e-6)
    np.testing.assert_allclose(stats.speed, 1.0, rtol=1e-9)
    np.testing.assert_allclose(stats.accel, 0.0, atol=1e-9)
    assert stats.value("moving") == 1.0
    assert stats.value("leaves") == 0.0 and stats.occluded == 0.0


def test_points_that_leave_the_frame_are_counted_and_not_occluded():
    # to the left and up: the first column (x = 0) and the first row (y = 0) leave
    tracks, vis = _panned(np.array([-0.6, -0.8]))
    stats = motion_statistics(tracks, vis, SIZE)
    assert stats.value("leaves") == pytest.approx(15 / SPEC.num_points)
    assert stats.occluded == 0.0  # hidden only where outside
    np.testing.assert_allclose(stats.pan, [1.0], rtol=1e-6)


def test_constant_acceleration_and_a_known_occlusion_rate():
    a = 0.25  # px per frame^2 along x, for every point
    tracks, vis = _static(1)
    t = np.arange(T, dtype=np.float64)
    tracks[..., 0] += 0.5 * a * t[None, :, None] ** 2 / 16  # stays inside (<= 2.8 px)
    stats = motion_statistics(tracks, vis, SIZE)
    np.testing.assert_allclose(stats.accel, a / 16, rtol=1e-9)
    # hide the even points on frames 5..9: 5 of 20 frames, half the points, all inside
    vis[0, 5:10, ::2] = False
    stats = motion_statistics(tracks, vis, SIZE)
    assert stats.occluded == pytest.approx(0.5 * 5 / T)


def test_moving_counts_points_beyond_one_pixel_only():
    tracks, vis = _static(1)
    tracks[0, 10:, :5, 0] += 1.5  # five points jump 1.5 px
    tracks[0, 10:, 5:9, 0] += 0.5  # four points move 0.5 px
    stats = motion_statistics(tracks, vis, SIZE)
    assert stats.value("moving") == pytest.approx(5 / SPEC.num_points)


def test_compare_is_zero_on_itself_and_grows_with_the_difference():
    tracks, vis = _static(2)
    rng = np.random.default_rng(0)
    jitter = tracks + rng.normal(0, 0.5, tracks.shape)
    base = motion_statistics(jitter, vis, SIZE)
    d_self = compare(base, base)
    assert set(d_self) == {*FRACTIONS, *DISTRIBUTIONS}
    assert all(v == 0.0 for v in d_self.values())
    still = motion_statistics(tracks, vis, SIZE)
    d = compare(base, still)
    assert d["speed"] == pytest.approx(np.mean(np.quantile(base.speed, np.linspace(0, 1, 101))))
    assert d["accel"] > 0 and d["moving"] > 0


def test_wasserstein_of_a_shift_is_the_shift():
    x = np.random.default_rng(1).normal(size=500)
    assert wasserstein_1d(x, x + 0.3) == pytest.approx(0.3)
    assert wasserstein_1d(x, x) == 0.0


def test_bad_shapes_name_the_problem():
    tracks, vis = _static(1)
    with pytest.raises(ValueError, match="visibility must have shape"):
        motion_statistics(tracks, vis[:, :-1], SIZE)
    with pytest.raises(ValueError, match="t >= 3"):
        motion_statistics(tracks[:, :2], vis[:, :2], SIZE)

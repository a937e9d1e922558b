"""FlowSmoothTV and DivCurlEnergy: analytic fields and hand-computed cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from trajloom.metrics import (
    div_curl_energy,
    div_curl_energy_per_frame,
    flow_div_curl,
    flow_tv,
    flow_tv_per_frame,
    video_mean,
)

HW = (6, 7)


def test_translation_has_zero_tv_and_energy(rng, grid_points):
    p = grid_points(*HW)
    shifts = np.cumsum(rng.normal(size=(12, 1, 2)) * 5, axis=0)
    tracks = p[None] + shifts
    assert flow_tv(tracks, grid_hw=HW) == pytest.approx(0.0, abs=1e-6)
    assert div_curl_energy(tracks, grid_hw=HW) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("theta", [0.01, 0.05, -0.2])
def test_rigid_rotation_closed_form(theta, rotation_tracks):
    frames = 5
    tracks = rotation_tracks(*HW, frames, theta, stride=32.0)
    div, curl, valid = flow_div_curl(tracks, grid_hw=HW, grid_stride=32.0)
    assert valid.all() and div.shape == (frames - 1, HW[0] - 1, HW[1] - 1)
    # Flow of frame t is (R((t+1)theta) - R(t theta)) (p - c): linear in the seed p.
    a = theta * np.arange(1, frames)
    b = theta * np.arange(frames - 1)
    expect_div = 2 * (np.cos(a) - np.cos(b))
    expect_curl = 2 * (np.sin(a) - np.sin(b))
    np.testing.assert_allclose(
        div, np.broadcast_to(expect_div[:, None, None], div.shape), atol=2e-5
    )
    np.testing.assert_allclose(
        curl, np.broadcast_to(expect_curl[:, None, None], curl.shape), atol=2e-5
    )
    # Energy 4 |e^{ia} - e^{ib}|^2 = 16 sin^2(theta / 2), the same in every frame.
    energy = div_curl_energy(tracks, grid_hw=HW, grid_stride=32.0)
    assert energy == pytest.approx(16 * np.sin(theta / 2) ** 2, rel=1e-3, abs=1e-9)
    # TV: |M00| + |M10| along x plus |M01| + |M11| along y, M = R(a) - R(b).
    m00, m10 = np.cos(a) - np.cos(b), np.sin(a) - np.sin(b)
    expect_tv = np.mean(2 * np.abs(m00) + 2 * np.abs(m10))
    assert flow_tv(tracks, grid_hw=HW, grid_stride=32.0) == pytest.approx(expect_tv, rel=1e-3)


@pytest.mark.parametrize("alpha", [0.02, -0.01])
def test_uniform_zoom_closed_form(alpha, grid_points):
    p = grid_points(*HW, stride=16.0)
    c = p.mean(axis=0)
    tracks = c + (1 + alpha * np.arange(6))[:, None, None] * (p - c)
    div, curl, _ = flow_div_curl(tracks, grid_hw=HW, grid_stride=16.0)
    np.testing.assert_allclose(div, 2 * alpha, atol=1e-5)
    np.testing.assert_allclose(curl, 0.0, atol=1e-5)
    assert div_curl_energy(tracks, grid_hw=HW, grid_stride=16.0) == pytest.approx(
        4 * alpha**2, rel=1e-3
    )
    assert flow_tv(tracks, grid_hw=HW, grid_stride=16.0) == pytest.approx(2 * abs(alpha), rel=1e-3)


def test_grid_stride_scales_derivatives(rotation_tracks):
    tracks = rotation_tracks(*HW, 4, 0.1, stride=32.0)
    tv32 = flow_tv(tracks, grid_hw=HW, grid_stride=32.0)
    tv16 = flow_tv(tracks, grid_hw=HW, grid_stride=16.0)
    assert tv16 == pytest.approx(2 * tv32, rel=1e-6)


def test_hand_computed_tv_and_visibility(grid_points):
    # 2 x 2 grid, 2 frames; only point (0, 1) moves, by (+4, -2) px; spacing 2 px.
    p = grid_points(2, 2, stride=2.0)
    tracks = np.stack([p, p + np.array([[0, 0], [4, -2], [0, 0], [0, 0]])])
    # x pairs: row 0 differs by (4, -2) -> (|4| + |-2|) / 2 = 3; row 1 -> 0; mean 1.5.
    # y pairs: column 1 differs -> 3; column 0 -> 0; mean 1.5. TV = 3.
    assert flow_tv_per_frame(tracks, grid_hw=(2, 2), grid_stride=2.0) == pytest.approx([3.0])
    # div = du/dx + dv/dy at cell (0, 0) = 4/2 + 0 = 2; curl = dv/dx - du/dy = -2/2 - 0 = -1.
    assert div_curl_energy(tracks, grid_hw=(2, 2), grid_stride=2.0) == pytest.approx(5.0)
    # Hide point (1, 0) at frame 1: only row 0's x pair and column 1's y pair remain: 3 + 3.
    vis = np.ones((2, 4), dtype=bool)
    vis[1, 2] = False
    assert flow_tv(tracks, vis, grid_hw=(2, 2), grid_stride=2.0) == pytest.approx(6.0)
    # The only interior cell needs point (1, 0): no valid cell, NaN with a warning.
    with pytest.warns(RuntimeWarning, match="NaN"):
        assert np.isnan(div_curl_energy(tracks, vis, grid_hw=(2, 2), grid_stride=2.0))


def test_nan_positions_are_invalid_not_propagated(rotation_tracks):
    tracks = rotation_tracks(*HW, 6, 0.05)
    clean = div_curl_energy_per_frame(tracks, grid_hw=HW)
    broken = tracks.copy()
    broken[3, 0] = np.nan
    values = div_curl_energy_per_frame(broken, grid_hw=HW)
    assert np.isfinite(values).all()
    # Frames untouched by the NaN point keep their value.
    np.testing.assert_allclose(values[[0, 1, 4]], clean[[0, 1, 4]], rtol=1e-6)


def test_batched_equals_per_video(rng, grid_points):
    tracks = rng.normal(size=(3, 7, 42, 2)) * 10 + grid_points(*HW)
    vis = rng.random((3, 7, 42)) > 0.3
    batched = flow_tv(tracks, vis, grid_hw=HW)
    single = [flow_tv(tracks[i], vis[i], grid_hw=HW) for i in range(3)]
    np.testing.assert_array_equal(batched, single)
    batched = div_curl_energy(tracks, vis, grid_hw=HW)
    single = [div_curl_energy(tracks[i], vis[i], grid_hw=HW) for i in range(3)]
    np.testing.assert_array_equal(batched, single)


def test_video_mean_skips_nan():
    assert video_mean([1.0, np.nan, 3.0]) == 2.0
    with pytest.warns(RuntimeWarning):
        assert np.isnan(video_mean([np.nan]))


def test_bad_inputs_raise_value_error():
    tracks = np.zeros((4, 42, 2))
    with pytest.raises(ValueError, match="grid_hw"):
        flow_tv(tracks, grid_hw=(5, 7))
    with pytest.raises(ValueError, match="visibility"):
        flow_tv(tracks, np.ones((4, 41)), grid_hw=HW)
    with pytest.raises(ValueError, match="at least 2 frames"):
        flow_tv(tracks[:1], grid_hw=HW)
    with pytest.raises(ValueError, match=r"\[..., T, N, 2\]"):
        div_curl_energy(np.zeros((4, 42)), grid_hw=HW)


@pytest.mark.parametrize(("batch", "hw"), [((), (6, 7)), ((3,), (6, 7)), ((2,), (1, 12))])
def test_tv_and_div_curl_from_one_flow_equal_the_two_calls(rng, batch, hw):
    from trajloom.metrics import flow_tv_and_div_curl_energy

    n = hw[0] * hw[1]
    tracks = np.cumsum(rng.normal(size=(*batch, 9, n, 2)) * 3, axis=-3).astype(np.float32)
    vis = rng.random((*batch, 9, n)) > 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the 1-row grid has no DivCurlE
        tv, dc = flow_tv_and_div_curl_energy(tracks, vis, grid_hw=hw)
        ref_tv = flow_tv(tracks, vis, grid_hw=hw)
        ref_dc = div_curl_energy(tracks, vis, grid_hw=hw)
    np.testing.assert_array_equal(tv, ref_tv)  # bit for bit (NaN where undefined)
    np.testing.assert_array_equal(dc, ref_dc)
    assert type(tv) is type(ref_tv) and type(dc) is type(ref_dc)

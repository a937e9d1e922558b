"""Renders: points drawn where their tracks say, hidden when occluded, and the video shapes."""

import numpy as np
import pytest

from trajloom.data.render import (
    RenderConfig,
    draw_markers,
    grid_colors,
    render_grid,
    render_overlay,
    tile_videos,
)

SIZE = (80, 48)  # (w, h)


def _still(th=4, tf=3, points=((20.0, 12.0), (60.0, 36.0))):
    """Points that stay put: tracks "t n 2", visibility "t n" all visible."""
    tracks = np.tile(np.asarray(points, np.float32)[None], (th + tf, 1, 1))
    return tracks, np.ones(tracks.shape[:2], bool)


def _lit(frame):
    """(y, x) of every pixel that is not black."""
    return np.argwhere(frame.max(-1) > 0)


def test_overlay_shape_and_a_head_drawn_at_its_track():
    tracks, vis = _still()
    out = render_overlay(None, tracks[:4], vis[:4], tracks[4:], vis[4:], grid_hw=(1, 2), size=SIZE)
    assert out.shape == (7, 48, 80, 3) and out.dtype == np.uint8
    for t in range(7):
        lit = _lit(out[t])
        for x, y in tracks[t]:
            near = np.abs(lit - [y, x]).max(-1) <= RenderConfig().radius + 1
            assert near.any()  # a dot around the point
        # nothing far from both points
        far = np.abs(lit[:, None] - tracks[t][None, :, ::-1]).max(-1).min(-1)
        assert far.max() <= RenderConfig().radius + 1


def test_head_follows_the_track_and_takes_the_palette_of_its_window():
    th, tf = 3, 3
    tracks = np.zeros((th + tf, 1, 2), np.float32)
    tracks[:, 0, 0] = [10, 20, 30, 40, 50, 60]
    tracks[:, 0, 1] = 24
    vis = np.ones((th + tf, 1), bool)
    cfg = RenderConfig(trail=1, thickness=1, radius=2)
    out = render_overlay(
        None, tracks[:th], vis[:th], tracks[th:], vis[th:], grid_hw=(1, 1), size=SIZE, config=cfg
    )
    for t in range(th + tf):
        x = int(tracks[t, 0, 0])
        palette = "history" if t < th else "future"
        np.testing.assert_array_equal(out[t, 24, x], grid_colors((1, 1), palette)[0])
        assert out[t, 24, x + 6].max() == 0  # ahead of the head: nothing yet


def test_occluded_and_nonfinite_points_are_not_drawn():
    tracks, vis = _still()
    vis[:, 1] = False  # the second point is never visible
    tracks[5, 0] = np.nan  # the first point has no position at frame 5
    cfg = RenderConfig(trail=1)  # only the segment into each frame: frame 5 has nothing else
    out = render_overlay(
        None, tracks[:4], vis[:4], tracks[4:], vis[4:], grid_hw=(1, 2), size=SIZE, config=cfg
    )
    assert out[:, 28:45, 52:69].max() == 0  # around (60, 36)
    assert out[5].max() == 0 and out[4].max() > 0 and out[6].max() > 0


def test_frames_show_through_and_the_last_one_is_held_dimmed():
    tracks, vis = _still()
    vis[:] = False  # draw no tracks: only the background is left
    frames = np.full((5, 48, 80, 3), 200, np.uint8)
    cfg = RenderConfig(dim_held=0.5)
    out = render_overlay(
        frames, tracks[:4], vis[:4], tracks[4:], vis[4:], grid_hw=(1, 2), size=SIZE, config=cfg
    )
    assert (out[:5] == 200).all() and (out[5:] == 100).all()
    with pytest.raises(ValueError, match="resize the frames"):
        render_overlay(
            frames[:, :40], tracks[:4], vis[:4], tracks[4:], vis[4:], grid_hw=(1, 2), size=SIZE
        )


def test_grid_tiles_one_overlay_per_sample_and_labels_them():
    tracks, vis = _still()
    samples = [(tracks[4:], vis[4:]), (tracks[4:] + 5, vis[4:]), (tracks[4:], ~vis[4:])]
    grid = render_grid(None, tracks[:4], vis[:4], samples, grid_hw=(1, 2), size=SIZE)
    assert grid.shape == (7, 2 * 48, 2 * 80, 3)  # 2 x 2 cells, the last one black
    assert grid[:, 48:, 80:].max() == 0
    unlabeled = tile_videos([np.zeros((1, 48, 80, 3), np.uint8)])
    labeled = tile_videos([np.zeros((1, 48, 80, 3), np.uint8)], labels=["sample 0"])
    assert unlabeled.max() == 0 and labeled.max() == 255  # white text


def test_config_and_palette_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="trail and thickness must be >= 1"):
        RenderConfig(trail=0)
    with pytest.raises(ValueError, match="dim_held"):
        RenderConfig(dim_held=1.5)
    with pytest.raises(ValueError, match="'history' or 'future'"):
        grid_colors((2, 2), "past")
    colors = grid_colors((3, 4), "future")
    assert colors.shape == (12, 3) and colors.dtype == np.uint8


def test_markers_show_the_pins_in_future_frames_only():
    grid_hw, size = (2, 3), (96, 64)
    hist = np.zeros((4, 6, 2), np.float32) + 5.0
    vis = np.zeros((4, 6), bool)  # nothing drawn but the markers
    fut, fvis = np.zeros((3, 6, 2), np.float32), np.zeros((3, 6), bool)
    plain = render_overlay(None, hist, vis, fut, fvis, grid_hw=grid_hw, size=size)
    marked = render_overlay(
        None, hist, vis, fut, fvis, grid_hw=grid_hw, size=size, markers=np.array([[1, 60.0, 20.0]])
    )
    np.testing.assert_array_equal(marked[:4], plain[:4])  # history frames untouched
    for t in range(4, 7):
        assert marked[t, 20, 60].min() > 200  # the centre of the cross
        assert marked[t, 50, 10].max() == 0  # far from the marker: black as before
    # inside the ring, off the cross: filled only on the pinned frame (future frame 1)
    assert marked[5, 23, 63].min() > 200 and marked[4, 23, 63].max() == 0
    empty = draw_markers(np.zeros((8, 8, 3), np.uint8), np.array([[np.nan, 1.0]]))
    assert empty.max() == 0  # non-finite targets are skipped

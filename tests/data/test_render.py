"""Renders: points drawn where their tracks say, one colour each, history and future
apart, hidden when occluded, sizes that scale with the video, and the video shapes."""

import numpy as np
import pytest

from trajloom.data.render import (
    RenderConfig,
    draw_markers,
    point_colors,
    render_grid,
    render_overlay,
    render_summary,
    thin_points,
    tile_videos,
)

SIZE = (80, 48)  # (w, h)
PLAIN = RenderConfig(timeline=False)  # no time bar or label: only the tracks are drawn


def _still(th=4, tf=3, points=((20.0, 12.0), (60.0, 36.0))):
    """Points that stay put: tracks "t n 2", visibility "t n" all visible."""
    tracks = np.tile(np.asarray(points, np.float32)[None], (th + tf, 1, 1))
    return tracks, np.ones(tracks.shape[:2], bool)


def _lit(frame):
    """(y, x) of every pixel that is not black."""
    return np.argwhere(frame.max(-1) > 0)


def _render(tracks, vis, th, cfg=PLAIN, size=SIZE, grid_hw=None, **kw):
    grid_hw = grid_hw or (1, tracks.shape[1])
    return render_overlay(
        None, tracks[:th], vis[:th], tracks[th:], vis[th:], grid_hw=grid_hw, size=size,
        config=cfg, **kw,
    )  # fmt: skip


def test_overlay_shape_and_a_head_drawn_at_its_track():
    tracks, vis = _still()
    out = _render(tracks, vis, 4)
    assert out.shape == (7, 48, 80, 3) and out.dtype == np.uint8
    reach = PLAIN.sizes(SIZE)[0] + 2  # the disc and its dark rim
    for t in range(7):
        lit = _lit(out[t])
        for x, y in tracks[t]:
            assert (np.abs(lit - [y, x]).max(-1) <= reach).any()  # a dot around the point
        far = np.abs(lit[:, None] - tracks[t][None, :, ::-1]).max(-1).min(-1)
        assert far.max() <= reach  # nothing far from both points


def test_one_colour_per_point_washed_out_in_the_history():
    th, tf = 3, 3
    tracks = np.zeros((th + tf, 2, 2), np.float32)
    tracks[:, 0] = np.stack([10 + 8 * np.arange(6), np.full(6, 12)], -1)
    tracks[:, 1] = np.stack([10 + 8 * np.arange(6), np.full(6, 36)], -1)
    vis = np.ones((th + tf, 2), bool)
    cfg = RenderConfig(trail=1, radius=2.5, timeline=False)
    out = _render(tracks, vis, th, cfg)
    colors = point_colors(tracks, vis, SIZE)
    assert not np.array_equal(colors[0], colors[1])  # started apart: told apart
    for t in range(th + tf):
        for i in range(2):
            x, y = (int(v) for v in tracks[t, i])
            got = out[t, y, x].astype(int)
            if t >= th:  # the future: the point's own colour
                np.testing.assert_array_equal(got, colors[i])
            else:  # the history: the same hue washed towards grey, not the colour itself
                assert np.abs(got - colors[i]).max() > 30
                assert np.abs(got - (0.45 * colors[i] + 0.55 * 170)).max() <= 2
    # the colour is the starting position's: the same point started elsewhere differs
    moved = tracks.copy()
    moved[:, 0, 0] += 30
    assert not np.array_equal(point_colors(moved, vis, SIZE)[0], colors[0])


def test_trails_fade_and_the_history_trail_is_thinner():
    th = tf = 6
    tracks = np.zeros((th + tf, 1, 2), np.float32)
    tracks[:, 0, 0] = 10 + 5 * np.arange(th + tf)
    tracks[:, 0, 1] = 30
    vis = np.ones((th + tf, 1), bool)
    cfg = RenderConfig(trail=4, thickness=4, radius=0, timeline=False)
    out = _render(tracks, vis, th, cfg, size=(96, 64))
    last = out[-1].astype(int).sum(-1)
    assert last[30, int(tracks[-1, 0, 0]) - 2] > last[30, int(tracks[-4, 0, 0]) + 2] > 0
    # the trail across the boundary: history segments half as wide as future ones
    frame = out[th + 1]
    width = {x: int((frame[:, x].max(-1) > 0).sum()) for x in (30, 40)}
    assert width[40] > width[30] > 0  # x = 30: a history segment, x = 40: a future one


def test_occluded_and_nonfinite_points_are_not_drawn():
    tracks, vis = _still()
    vis[:, 1] = False  # the second point is never visible
    tracks[5, 0] = np.nan  # the first point has no position at frame 5
    out = _render(tracks, vis, 4, RenderConfig(trail=1, timeline=False))
    assert out[:, 28:45, 52:69].max() == 0  # around (60, 36)
    assert out[5].max() == 0 and out[4].max() > 0 and out[6].max() > 0


def test_points_scale_with_the_video():
    small, large = PLAIN.sizes((128, 96)), PLAIN.sizes((768, 576))
    assert large[0] > 2 * small[0] and large[1] > small[1]
    tracks, vis = _still(points=((300.0, 200.0),))
    big = _render(tracks, vis, 4, size=(768, 576))
    tracks_small, _ = _still(points=((50.0, 33.0),))
    little = _render(tracks_small, vis, 4, size=(128, 96))
    area = [(v[-1].max(-1) > 0).sum() for v in (little, big)]
    assert area[1] > 2.5 * area[0]


def test_render_stride_thins_the_grid_for_viewing():
    np.testing.assert_array_equal(thin_points((3, 4), 1), np.arange(12))
    np.testing.assert_array_equal(
        thin_points((5, 7), 2), [0, 2, 4, 6, 14, 16, 18, 20, 28, 30, 32, 34]
    )
    ys, xs = np.mgrid[0:3, 0:4]
    pts = np.stack([8 + 20 * xs, 8 + 14 * ys], -1).reshape(1, 12, 2).astype(np.float32)
    tracks, vis = np.repeat(pts, 4, 0), np.ones((4, 12), bool)
    cfg = RenderConfig(stride=2, radius=2, timeline=False)
    out = _render(tracks, vis, 2, cfg, grid_hw=(3, 4))
    for i, (x, y) in enumerate(pts[0]):
        drawn = out[-1, int(y), int(x)].max() > 0
        assert drawn == (i in set(thin_points((3, 4), 2)))


def test_alternatives_are_drawn_faintly_under_the_first_future():
    th = tf = 3
    hist = np.tile(np.array([[[40.0, 24.0]]], np.float32), (th, 1, 1))
    first = hist[:1] + np.array([0.0, -2.0], np.float32) * np.arange(1, tf + 1)[:, None, None]
    other = hist[:1] + np.array([6.0, 0.0], np.float32) * np.arange(1, tf + 1)[:, None, None]
    vis = np.ones((th, 1), bool)
    cfg = RenderConfig(radius=2, faint=0.3, timeline=False)
    kw = {"grid_hw": (1, 1), "size": SIZE, "config": cfg}
    alone = render_overlay(None, hist, vis, other, vis, **kw)
    together = render_overlay(None, hist, vis, first, vis, alternatives=[(other, vis)], **kw)
    x, y = (int(v) for v in other[-1, 0])
    full, faint = alone[-1, y, x].astype(int), together[-1, y, x].astype(int)
    assert 0 < faint.sum() < 0.5 * full.sum()  # the alternative: there, but faint
    x, y = (int(v) for v in first[-1, 0])
    assert together[-1, y, x].sum() > 0.7 * full.sum()  # the first future: full strength


def test_the_timeline_marks_history_future_and_the_boundary():
    tracks, vis = _still()
    vis[:] = False
    out = _render(tracks, vis, 4, RenderConfig(), size=(160, 96))
    bar = out[:, -2]  # the bottom row: the time bar
    edge = round(160 * 4 / 7)
    assert (out[:, 0:30].max() > 0).all()  # the corner label
    hist_part, fut_part = bar[-1, 5], bar[-1, edge + 10]
    assert hist_part[0] == hist_part[2] and fut_part[0] > fut_part[2] + 100  # grey, orange
    assert (out[:, -6, edge].min(-1) == 255).all()  # the boundary tick, white
    # elapsed time lights up: the future part is dull during the history, bright at the end
    assert out[0, -2, edge + 10].sum() < out[-1, -2, edge + 10].sum()


def test_frames_show_through_and_the_last_one_is_held_dimmed():
    tracks, vis = _still()
    vis[:] = False  # draw no tracks: only the background is left
    frames = np.full((5, 48, 80, 3), 200, np.uint8)
    cfg = RenderConfig(dim_held=0.5, timeline=False)
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
    grid = render_grid(None, tracks[:4], vis[:4], samples, grid_hw=(1, 2), size=SIZE, config=PLAIN)
    assert grid.shape == (7, 2 * 48, 2 * 80, 3)  # 2 x 2 cells, the last one black
    assert grid[:, 48:, 80:].max() == 0
    unlabeled = tile_videos([np.zeros((1, 48, 80, 3), np.uint8)])
    labeled = tile_videos([np.zeros((1, 48, 80, 3), np.uint8)], labels=["sample 0"])
    assert unlabeled.max() == 0 and labeled.max() == 255  # white text


def test_config_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="trail and thickness must be >= 1"):
        RenderConfig(trail=0)
    with pytest.raises(ValueError, match="dim_held"):
        RenderConfig(dim_held=1.5)
    with pytest.raises(ValueError, match="render-stride"):
        RenderConfig(stride=0)
    with pytest.raises(ValueError, match="faint"):
        RenderConfig(faint=2.0)


def test_markers_show_the_pins_in_future_frames_only():
    grid_hw, size = (2, 3), (96, 64)
    hist = np.zeros((4, 6, 2), np.float32) + 5.0
    vis = np.zeros((4, 6), bool)  # nothing drawn but the markers
    fut, fvis = np.zeros((3, 6, 2), np.float32), np.zeros((3, 6), bool)
    kw = {"grid_hw": grid_hw, "size": size, "config": RenderConfig(radius=3, timeline=False)}
    plain = render_overlay(None, hist, vis, fut, fvis, **kw)
    marked = render_overlay(None, hist, vis, fut, fvis, markers=np.array([[1, 60.0, 20.0]]), **kw)
    np.testing.assert_array_equal(marked[:4], plain[:4])  # history frames untouched
    for t in range(4, 7):
        assert marked[t, 20, 60].min() > 200  # the centre of the cross
        assert marked[t, 50, 10].max() == 0  # far from the marker: black as before
    # inside the ring, off the cross: filled only on the pinned frame (future frame 1)
    assert marked[5, 23, 63].min() > 200 and marked[4, 23, 63].max() == 0
    empty = draw_markers(np.zeros((8, 8, 3), np.uint8), np.array([[np.nan, 1.0]]))
    assert empty.max() == 0  # non-finite targets are skipped


def test_stay_hidden_pins_are_marked_around_their_frame():
    hist = np.zeros((2, 1, 2), np.float32)
    vis = np.zeros((2, 1), bool)
    fut, fvis = np.zeros((8, 1, 2), np.float32), np.zeros((8, 1), bool)
    out = render_overlay(
        None, hist, vis, fut, fvis, grid_hw=(1, 1), size=(96, 64), config=PLAIN,
        hidden=np.array([[5, 48.0, 32.0]]),
    )  # fmt: skip
    near = out[:, 20:45, 36:61]
    magenta = (near[..., 0] > 150) & (near[..., 2] > 150) & (near[..., 1] < 120)
    shown = magenta.any(axis=(1, 2))
    # future frames 3..7 (video frames 5..9) carry it; earlier ones do not
    assert not shown[:5].any() and shown[5:].all()
    assert magenta[7].sum() > magenta[5].sum()  # bold on its own frame


def test_the_motion_summary_draws_paths_on_the_boundary_frame():
    th = tf = 6
    tracks = np.zeros((th + tf, 2, 2), np.float32)
    tracks[:, 0] = np.stack([10 + 5 * np.arange(12), np.full(12, 20)], -1)  # moves right
    tracks[:, 1] = [70, 50]  # stays
    vis = np.ones((th + tf, 2), bool)
    frame = np.full((64, 96, 3), 100, np.uint8)
    still = render_summary(
        frame, tracks[:th], vis[:th], [(tracks[th:], vis[th:])], grid_hw=(1, 2), size=(96, 64)
    )
    assert still.shape == (64, 96, 3)
    colors = point_colors(tracks, vis, (96, 64))
    # the future path between the boundary and the end is in the point's colour
    x = int(np.mean(tracks[[th, -1], 0, 0]))
    assert np.abs(still[20, x].astype(int) - colors[0]).max() <= 20
    # the boundary dot of each point, white-rimmed; the still point has no path
    for x, y in tracks[th - 1]:
        assert still[int(y), int(x)].max() > 150
    assert still[50, 80].max() <= 80  # away from both: the darkened frame only


def test_points_that_move_stand_out_from_still_ones():
    th = tf = 4
    tracks = np.zeros((th + tf, 2, 2), np.float32)
    tracks[:, 0] = np.stack([10 + 6 * np.arange(8), np.full(8, 16)], -1)  # moves
    tracks[:, 1] = [40, 40]  # stays
    vis = np.ones((th + tf, 2), bool)
    out = _render(
        tracks, vis, th, RenderConfig(radius=4, thickness=1, timeline=False), size=(96, 64)
    )
    tall = [
        int((out[-1, int(y) - 8 : int(y) + 9, int(x)].max(-1) > 0).sum()) for x, y in tracks[-1]
    ]
    assert tall[0] >= tall[1] + 4  # the moving head (with its rim) is the larger

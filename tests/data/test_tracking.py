"""The tracker interface and the built-in chained-flow tracker on motions with exact answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from trajloom.data.tracking import (
    FlowTracker,
    FlowTrackerConfig,
    Tracker,
    TrackResult,
    grid_queries,
    make_tracker,
    tapvid_metrics,
    track_grid,
)
from trajloom.data.tracking import flow as flow_module
from trajloom.encoding import GridSpec, query_points

W, H = 160, 128


def _texture(seed: int, w: int, h: int) -> np.ndarray:
    """Band-limited random texture, uint8 "h w" (trackable at every pixel)."""
    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.5)
    return ((a - a.mean()) / a.std() * 45 + 128).clip(0, 255).astype(np.uint8)


def _translating(shift: tuple[float, float], t: int = 10, seed: int = 0) -> np.ndarray:
    """Frames "t h w 3": a texture moved by ``t * shift`` pixels (sub-pixel, bicubic)."""
    pad = 40
    tex = _texture(seed, W + 2 * pad, H + 2 * pad)
    frames = []
    for k in range(t):
        m = np.float32([[1, 0, k * shift[0]], [0, 1, k * shift[1]]])
        big = cv2.warpAffine(tex, m, tex.shape[::-1], flags=cv2.INTER_CUBIC)
        frames.append(big[pad : pad + H, pad : pad + W])
    return np.repeat(np.stack(frames)[..., None], 3, axis=-1)


def _interior(points: np.ndarray, margin: float = 12.0) -> np.ndarray:
    x, y = points[..., 0], points[..., 1]
    return (x > margin) & (x < W - 1 - margin) & (y > margin) & (y < H - 1 - margin)


SHIFT = (0.7, -0.45)


@pytest.fixture(scope="module")
def moving() -> np.ndarray:
    return _translating(SHIFT)


@pytest.mark.parametrize("refine", ["lk", "none"])
def test_recovers_a_subpixel_translation(moving: np.ndarray, refine: str) -> None:
    result = FlowTracker(
        FlowTrackerConfig(
            refine=refine, occluded_motion="extrapolate" if refine == "lk" else "flow"
        )
    ).track(moving, stride=16)
    expected = result.tracks[0][None] + np.arange(len(moving))[:, None, None] * np.array(SHIFT)
    inside = _interior(expected)
    err = np.linalg.norm(result.tracks - expected, axis=-1)[inside]
    # LK re-anchoring removes the drift that chaining accumulates.
    assert err.max() < (0.15 if refine == "lk" else 1.0)
    assert result.visibility[inside].all()


def test_lk_reanchoring_beats_plain_chaining(moving: np.ndarray) -> None:
    errs = {}
    for refine in ("none", "lk"):
        r = FlowTracker(
            FlowTrackerConfig(refine=refine, preset="fast", occluded_motion="flow")
        ).track(moving, stride=16)
        expected = r.tracks[0][None] + np.arange(len(moving))[:, None, None] * np.array(SHIFT)
        errs[refine] = np.linalg.norm(r.tracks - expected, axis=-1)[_interior(expected)].mean()
    assert errs["lk"] < 0.5 * errs["none"]


def test_tracks_forward_and_backward_from_each_query_frame(moving: np.ndarray) -> None:
    queries = np.array([[0, 60.0, 70.0], [5, 80.25, 50.5], [9, 100.0, 64.0]])
    result = FlowTracker().track(moving, queries)
    t = np.arange(len(moving))[:, None, None]
    expected = queries[None, :, 1:] + (t - queries[None, :, :1]) * np.array(SHIFT)
    np.testing.assert_allclose(result.tracks, expected, atol=0.2)
    # The query frame holds the query itself, exactly.
    for i, (qt, x, y) in enumerate(queries):
        np.testing.assert_array_equal(result.tracks[int(qt), i], np.float32([x, y]))
        assert result.visibility[int(qt), i]


def test_reduced_resolution_still_tracks(moving: np.ndarray) -> None:
    result = FlowTracker(FlowTrackerConfig(scale=0.5)).track(moving, stride=16)
    expected = result.tracks[0][None] + np.arange(len(moving))[:, None, None] * np.array(SHIFT)
    inside = _interior(expected, margin=20)
    assert np.linalg.norm(result.tracks - expected, axis=-1)[inside].max() < 0.5


def test_point_leaving_the_image_becomes_invisible() -> None:
    frames = _translating((4.0, 0.0), t=8)
    queries = np.array([[0, W - 10.0, 64.0], [0, 30.0, 64.0]])
    result = FlowTracker().track(frames, queries)
    assert not result.visibility[-1, 0]  # 10 + 7 * 4 px: out on the right
    assert result.visibility[:, 1].all()
    assert result.tracks[-1, 0, 0] > W - 1


def test_occlusion_by_a_moving_square_is_detected() -> None:
    bg = _texture(1, W, H)
    fg = _texture(2, 48, 48)
    frames = []
    for k in range(10):
        f = bg.copy()
        x0 = 4 + 8 * k
        f[40:88, x0 : x0 + 48] = fg
        frames.append(f)
    frames = np.repeat(np.stack(frames)[..., None], 3, axis=-1)
    # A static background point the square slides over (covered from frame 7 on).
    queries = np.array([[0, 100.0, 64.0], [0, 130.0, 20.0]])
    riding = FlowTracker(FlowTrackerConfig(occlusion_frames=1)).track(frames, queries)
    # Every mode sees the step where the point disappears; a point in the open stays seen.
    assert riding.visibility[:7, 0].all() and not riding.visibility[7, 0]
    assert riding.visibility[:, 1].all()
    np.testing.assert_allclose(riding.tracks[:, 1], np.tile([130.0, 20.0], (10, 1)), atol=0.2)
    # "extrapolate": hidden, it coasts on its last visible motion (about none) instead of
    # riding on the square (8 px per frame), and stays hidden while the square covers it.
    hold = FlowTracker(FlowTrackerConfig(occluded_motion="extrapolate")).track(frames, queries)
    assert hold.visibility[:7, 0].all() and not hold.visibility[7:, 0].any()
    err = np.linalg.norm(hold.tracks[-1, 0] - [100.0, 64.0])
    assert err < 8.0
    assert err < 0.5 * np.linalg.norm(riding.tracks[-1, 0] - [100.0, 64.0])


def test_visibility_rule_needs_lasting_evidence() -> None:
    """occlusion_frames and outside_margin only ever turn hidden into visible; positions stay."""
    bg, fg = _texture(1, W, H), _texture(2, 48, 48)
    frames = []
    for k in range(10):
        f = bg.copy()
        f[40:88, 4 + 8 * k : 52 + 8 * k] = fg
        frames.append(f)
    frames = np.repeat(np.stack(frames)[..., None], 3, axis=-1)
    queries = np.array([[0, 100.0, 64.0], [0, 130.0, 20.0], [0, W - 10.0, 100.0]])
    strict = FlowTracker(FlowTrackerConfig(occlusion_frames=1)).track(frames, queries)
    lenient = FlowTracker(FlowTrackerConfig(occlusion_frames=3)).track(frames, queries)
    np.testing.assert_array_equal(lenient.tracks, strict.tracks)
    assert (lenient.visibility >= strict.visibility).all()
    assert not strict.visibility[7, 0] and lenient.visibility[7, 0]  # one failed step: seen
    # A point carried past the edge: hidden at once with no margin, seen within the margin.
    leaving = _translating((4.0, 0.0), t=8)
    q = np.array([[0, W - 10.0, 64.0]])  # ends 18 px beyond the right edge
    assert not FlowTracker().track(leaving, q).visibility[-1, 0]
    assert FlowTracker(FlowTrackerConfig(outside_margin=24)).track(leaving, q).visibility[-1, 0]
    with pytest.raises(ValueError, match="occlusion_frames"):
        FlowTrackerConfig(occlusion_frames=0)


def test_flow_is_computed_once_per_frame_pair(
    moving: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    make = flow_module._make_dis

    class Counting:
        def __init__(self, preset: str) -> None:
            self.dis = make(preset)

        def calc(self, a, b, flow):
            calls.append(1)
            return self.dis.calc(a, b, flow)

    monkeypatch.setattr(flow_module, "_make_dis", Counting)
    # Queries on the first and the last frame: both directions sweep every pair.
    queries = np.array([[0, 50.0, 50.0], [len(moving) - 1, 60.0, 60.0], [4, 70.0, 40.0]])
    FlowTracker().track(moving, queries)
    assert len(calls) == 2 * (len(moving) - 1)


def test_grid_by_stride_and_by_gridspec() -> None:
    frames = _translating(SHIFT, t=4)
    by_stride = FlowTracker().track(frames, stride=32)
    assert by_stride.tracks.shape == (4, 4 * 5, 2)
    np.testing.assert_array_equal(by_stride.tracks[0], grid_queries((W, H), 32)[:, 1:])
    spec = GridSpec(width=320, height=256, stride=64)  # twice the frames' size
    result = track_grid(frames, spec)
    assert result.tracks.shape == (4, spec.num_points, 2)
    np.testing.assert_allclose(result.tracks[0], query_points(spec).numpy(), atol=1e-4)
    # Reported in spec pixels: the motion doubles.
    inside = _interior(result.tracks[-1] / 2)
    step = (result.tracks[-1] - result.tracks[0])[inside] / 3
    np.testing.assert_allclose(step, np.tile(np.array(SHIFT) * 2, (inside.sum(), 1)), atol=0.1)


def test_grayscale_frames_match_rgb(moving: np.ndarray) -> None:
    gray = moving[..., 0]
    a = FlowTracker().track(gray, stride=32)
    b = FlowTracker().track(moving, stride=32)
    np.testing.assert_array_equal(a.tracks, b.tracks)
    c = FlowTracker().track(list(gray[..., None]), stride=32)
    np.testing.assert_array_equal(c.tracks, b.tracks)


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (np.zeros((1, 32, 32, 3), np.uint8), "at least 2 frames"),
        (np.zeros((3, 32, 32, 3), np.float32), "uint8"),
        (np.zeros((3, 32, 32, 2), np.uint8), "t h w 3"),
        ([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 40, 3), np.uint8)], "same size"),
        ([np.zeros((32, 32, 3), np.uint8)], "at least 2 frames"),
    ],
)
def test_bad_frames_are_refused(frames, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FlowTracker().track(frames, stride=8)


@pytest.mark.parametrize(
    ("queries", "match"),
    [
        (np.array([[0, W + 1.0, 10.0]]), "outside the 160x128 image"),
        (np.array([[0, 10.0, -2.0]]), "outside"),
        (np.array([[4, 10.0, 10.0]]), "outside the clip"),
        (np.array([[-1, 10.0, 10.0]]), "outside the clip"),
        (np.array([[1.5, 10.0, 10.0]]), "not an integer"),
        (np.array([[10.0, 10.0]]), "n 3"),
        (np.array([[0, np.nan, 1.0]]), "NaN"),
    ],
)
def test_bad_queries_are_refused(queries: np.ndarray, match: str) -> None:
    frames = np.zeros((4, H, W, 3), np.uint8)
    with pytest.raises(ValueError, match=match):
        FlowTracker().track(frames, queries)


def test_exactly_one_of_queries_stride_grid() -> None:
    frames = np.zeros((2, H, W, 3), np.uint8)
    with pytest.raises(ValueError, match="exactly one"):
        FlowTracker().track(frames)
    with pytest.raises(ValueError, match="exactly one"):
        FlowTracker().track(frames, np.array([[0, 1.0, 1.0]]), stride=8)


def test_registry_and_configs() -> None:
    tracker = make_tracker()
    assert isinstance(tracker, FlowTracker) and isinstance(tracker, Tracker)
    assert make_tracker("flow", preset="fast", scale=0.5).config.scale == 0.5
    with pytest.raises(ValueError, match="unknown tracker"):
        make_tracker("raft")
    with pytest.raises(ValueError, match="preset"):
        FlowTrackerConfig(preset="slow")
    with pytest.raises(ValueError, match="scale"):
        FlowTrackerConfig(scale=0.0)
    with pytest.raises(ValueError, match="lk_window"):
        FlowTrackerConfig(lk_window=10)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['window'\]"):
        make_tracker("flow", window=3)  # a TrackerError, one line listing the options


def test_track_result_validates() -> None:
    with pytest.raises(ValueError, match="visibility"):
        TrackResult(np.zeros((3, 2, 2), np.float32), np.zeros((3, 2), np.uint8))


def test_synthetic_scene_is_tracked_well() -> None:
    synthetic = pytest.importorskip("trajloom.data.synthetic")
    # Seed 10: two moving objects, occlusions (34% of entries hidden).
    scene = synthetic.make_scene(
        10, synthetic.SceneConfig(width=256, height=192, stride=16, num_frames=24)
    )
    from trajloom.data.tracking.evaluation import evaluate_on_scene

    m = evaluate_on_scene(FlowTracker(), scene.frames, scene.tracks, scene.visibility)
    assert m["average_pts_within_thresh"] > 0.7
    # Against the trivial tracker that predicts no motion at all:
    still = np.broadcast_to(scene.tracks[:1], scene.tracks.shape)
    base = tapvid_metrics(
        still,
        np.ones_like(scene.visibility),
        scene.tracks,
        scene.visibility,
        np.zeros(scene.tracks.shape[1], int),
        (256, 192),
    )
    assert m["average_jaccard"] > base["average_jaccard"] + 0.3
    assert m["occlusion_accuracy"] > 0.8

"""The tracker against real human annotations (``../shared/data/annotated``); skipped when absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trajloom.data.tracking import FlowTracker, FlowTrackerConfig, tapvid_metrics
from trajloom.data.tracking.evaluation import (
    evaluate_on_clip,
    first_visible_queries,
    load_annotated,
)

ANNOTATED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "annotated"
SETS = ["davis_bear", "davis_horsejump-high", "sleap_dance", "sleap_flies_clip"]

needs_data = pytest.mark.skipif(
    not ANNOTATED.is_dir(), reason=f"annotated data not found at {ANNOTATED}"
)


@needs_data
@pytest.mark.parametrize("name", SETS)
def test_annotations_load_and_score_perfectly_against_themselves(name: str) -> None:
    clip = load_annotated(ANNOTATED / name)
    t, n = clip.visibility.shape
    assert clip.tracks.shape == (t, n, 2)
    queries, keep = first_visible_queries(clip)
    assert keep.sum() == len(queries) > 0
    frames = queries[:, 0].astype(int)
    # Each query is its point's annotated position on a frame where it is visible.
    assert clip.visibility[frames, np.flatnonzero(keep)].all()
    np.testing.assert_array_equal(queries[:, 1:], clip.tracks[frames, np.flatnonzero(keep)])
    gt = clip.tracks[:, keep]
    m = tapvid_metrics(
        np.nan_to_num(gt),
        clip.visibility[:, keep],
        gt,
        clip.visibility[:, keep],
        frames,
        clip.size,
        evaluate=clip.annotated,
    )
    assert m["average_pts_within_thresh"] == 1.0
    assert m["occlusion_accuracy"] == 1.0
    assert m["num_evaluated"] > 0


def _clip_and_frames(name: str, window: tuple[int, int] | None = None):
    video = pytest.importorskip("trajloom.data.video")
    clip = load_annotated(ANNOTATED / name)
    if window is not None:
        clip = clip.window(*window)
    return clip, video.read_frames(clip.video, start=clip.start, num_frames=clip.num_frames)


def _no_motion(clip, queries, keep) -> dict[str, float]:
    """Scores of the tracker that predicts every point stays at its query, visible."""
    still = np.broadcast_to(queries[None, :, 1:], (clip.num_frames, len(queries), 2))
    return tapvid_metrics(
        still,
        np.ones((clip.num_frames, len(queries)), bool),
        clip.tracks[:, keep],
        clip.visibility[:, keep],
        queries[:, 0].astype(int),
        clip.size,
        evaluate=clip.annotated,
    )


@needs_data
def test_flow_tracker_follows_the_bear() -> None:
    clip, frames = _clip_and_frames("davis_bear", (0, 30))
    m = evaluate_on_clip(FlowTracker(FlowTrackerConfig(preset="fast")), frames, clip)
    base = _no_motion(clip, *first_visible_queries(clip))
    assert m["average_pts_within_thresh"] > 0.35
    assert m["average_pts_within_thresh"] > base["average_pts_within_thresh"] + 0.1


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "window", "floor"),
    [
        ("davis_bear", None, 0.30),
        ("davis_horsejump-high", None, 0.20),
        ("sleap_dance", (0, 150), 0.30),
        ("sleap_flies_clip", (1000, 100), 0.50),  # the flies stand still before ~950
    ],
)
def test_flow_tracker_on_real_sets(name: str, window: tuple[int, int] | None, floor: float) -> None:
    # Floors sit a few points under the figures in the tracking benchmark section.
    clip, frames = _clip_and_frames(name, window)
    m = evaluate_on_clip(FlowTracker(), frames, clip)
    base = _no_motion(clip, *first_visible_queries(clip))
    assert m["average_pts_within_thresh"] > floor
    assert m["average_pts_within_thresh"] >= base["average_pts_within_thresh"]

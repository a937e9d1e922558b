"""Evaluation captions read only the history; splits are by source video."""

from __future__ import annotations

import numpy as np
import pytest

from trajloom.data.captions import evaluation_caption, history_caption, with_caption_policy
from trajloom.data.clip import Clip
from trajloom.data.stream import sample_split, source_video

SIZE = (128, 96)


def _grid(n_side=6):
    xs, ys = np.meshgrid(np.linspace(10, 118, n_side), np.linspace(10, 86, n_side))
    return np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)


def _clip(history_shift: float, future_shift: float, th=8, tf=8) -> Clip:
    """Every point drifts by ``history_shift`` px per frame, then ``future_shift``."""
    base = _grid()
    steps = np.concatenate([np.arange(th) * history_shift,
                            (th - 1) * history_shift + np.arange(1, tf + 1) * future_shift])  # fmt: skip
    tracks = base[None] + np.stack([steps, np.zeros_like(steps)], -1)[:, None].astype(np.float32)
    vis = np.ones(tracks.shape[:2], bool)
    return Clip("c", tracks[:th], vis[:th], tracks[th:], vis[th:], caption="whole clip text")


def test_history_caption_reads_no_future_frame():
    still_then_moving = _clip(0.0, -3.0)
    moving_then_still = _clip(-3.0, 0.0)
    assert history_caption(still_then_moving.hist_tracks, still_then_moving.hist_vis, SIZE) == (
        "Static camera."
    )
    # content moving left = the camera panning right
    assert "pans right" in evaluation_caption(moving_then_still, "history", SIZE)
    # changing the future changes nothing
    other = _clip(0.0, 5.0)
    assert evaluation_caption(other, "history", SIZE) == evaluation_caption(
        still_then_moving, "history", SIZE
    )


def test_policies():
    clip = _clip(0.0, 1.0)
    assert evaluation_caption(clip, "clip", SIZE) == "whole clip text"
    assert evaluation_caption(clip, "none", SIZE) == ""
    assert with_caption_policy(clip, "none", SIZE).hist_tracks is clip.hist_tracks
    with pytest.raises(ValueError, match="caption policy"):
        evaluation_caption(clip, "future", SIZE)


def test_split_is_by_video_and_dev_and_test_are_disjoint_parts_of_heldout():
    videos = [f"src/video-{i}" for i in range(400)]
    splits = {v: sample_split(v, 0.3, dev_fraction=0.5) for v in videos}
    counts = {s: sum(x == s for x in splits.values()) for s in ("train", "dev", "test")}
    assert sum(counts.values()) == 400 and min(counts.values()) > 30
    assert 0.2 < (counts["dev"] + counts["test"]) / 400 < 0.4
    # the windows of a video carry its name: they all go where the video goes
    meta = {"source_video": "src/video-7"}
    assert source_video(meta, "src__video-7_w03") == "src/video-7"
    assert source_video({}, "key") == "key"
    assert sample_split("anything", 0.0) == "train"
    # without a dev fraction every held-out video is a test video
    assert {sample_split(v, 0.3) for v in videos} == {"train", "test"}

"""TAP-Vid metrics: exact values on hand-built cases, and their invariants."""

from __future__ import annotations

import numpy as np
import pytest

from trajloom.data.tracking.metrics import (
    THRESHOLDS,
    evaluation_mask,
    mean_metrics,
    tapvid_metrics,
)


def _clip(t: int = 6, n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tracks = rng.uniform(0, 200, size=(t, n, 2)).astype(np.float32)
    return tracks, np.ones((t, n), bool)


def test_perfect_prediction_scores_one() -> None:
    gt, vis = _clip()
    vis[3, 1] = False
    m = tapvid_metrics(gt, vis, gt, vis, np.zeros(4, int), (512, 256))
    for d in THRESHOLDS:
        assert m[f"pts_within_{d}"] == 1.0
        assert m[f"jaccard_{d}"] == 1.0
    assert m["occlusion_accuracy"] == 1.0
    assert m["average_jaccard"] == 1.0
    assert m["num_evaluated"] == 5 * 4  # frame 0 (the query frame) is not scored


def test_thresholds_apply_after_rescaling_to_256() -> None:
    gt, vis = _clip()
    # 6 px in x of a 512-wide frame is 3 px at 256: within 4, 8, 16 but not 1, 2.
    pred = gt + np.array([6.0, 0.0], np.float32)
    m = tapvid_metrics(pred, vis, gt, vis, np.zeros(4, int), (512, 256))
    assert [m[f"pts_within_{d}"] for d in THRESHOLDS] == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert m["average_pts_within_thresh"] == pytest.approx(0.6)
    # y is scaled by 256 / H: 3 px of a 256-high frame stays 3 px.
    pred_y = gt + np.array([0.0, 3.0], np.float32)
    m_y = tapvid_metrics(pred_y, vis, gt, vis, np.zeros(4, int), (512, 256))
    assert m_y["pts_within_2"] == 0.0 and m_y["pts_within_4"] == 1.0
    # Exactly on the threshold is not within (strict inequality).
    whole = np.round(gt)
    pred_edge = whole + np.array([0.0, 4.0], np.float32)
    m_edge = tapvid_metrics(pred_edge, vis, whole, vis, np.zeros(4, int), (512, 256))
    assert m_edge["pts_within_4"] == 0.0 and m_edge["pts_within_8"] == 1.0


def test_jaccard_counts_false_positives_and_occlusion_accuracy() -> None:
    # One point, 3 frames, query at frame 0: frames 1 and 2 are scored.
    gt = np.zeros((3, 1, 2), np.float32)
    gt_vis = np.array([[True], [True], [False]])
    pred = gt.copy()
    pred_vis = np.array([[True], [True], [True]])  # frame 2: predicted visible, truly hidden
    m = tapvid_metrics(pred, pred_vis, gt, gt_vis, np.zeros(1, int), (256, 256))
    assert m["pts_within_1"] == 1.0  # only the visible frame counts
    assert m["occlusion_accuracy"] == 0.5
    assert m["jaccard_1"] == pytest.approx(1 / (1 + 1))  # TP=1, GT positives=1, FP=1
    # Predicting it hidden on frame 1 instead loses the true positive (pts_within is unchanged).
    pred_vis2 = np.array([[True], [False], [False]])
    m2 = tapvid_metrics(pred, pred_vis2, gt, gt_vis, np.zeros(1, int), (256, 256))
    assert m2["pts_within_1"] == 1.0
    assert m2["jaccard_1"] == 0.0
    assert m2["occlusion_accuracy"] == 0.5


def test_far_visible_prediction_is_a_false_positive() -> None:
    gt = np.zeros((2, 1, 2), np.float32)
    vis = np.ones((2, 1), bool)
    pred = gt + np.array([10.0, 0.0], np.float32)  # 10 px: within 16 only
    m = tapvid_metrics(pred, vis, gt, vis, np.zeros(1, int), (256, 256))
    assert m["jaccard_8"] == 0.0  # TP=0, FP=1: 0 / (1 + 1)
    assert m["jaccard_16"] == 1.0


def test_first_mode_skips_frames_up_to_the_query_and_evaluate_mask() -> None:
    gt, vis = _clip(t=5, n=2)
    pred = gt.copy()
    pred[:2, 1] += 100.0  # wrong before and at point 1's query frame: must not count
    q = np.array([0, 2])
    m = tapvid_metrics(pred, vis, gt, vis, q, (256, 256))
    assert m["pts_within_1"] == 1.0
    assert m["num_evaluated"] == 4 + 2
    strided = tapvid_metrics(pred, vis, gt, vis, q, (256, 256), query_mode="strided")
    assert strided["pts_within_1"] == pytest.approx(6 / 8)
    only_last = tapvid_metrics(
        pred, vis, gt, vis, q, (256, 256), evaluate=np.array([0, 0, 0, 0, 1], bool)
    )
    assert only_last["num_evaluated"] == 2


def test_nan_ground_truth_where_hidden_is_fine() -> None:
    gt, vis = _clip()
    gt[2, 0] = np.nan
    vis[2, 0] = False
    pred = np.nan_to_num(gt)
    m = tapvid_metrics(pred, vis, gt, vis, np.zeros(4, int), (256, 256))
    assert m["pts_within_1"] == 1.0 and m["occlusion_accuracy"] == 1.0


def test_evaluation_mask_modes() -> None:
    m = evaluation_mask(np.array([0, 2]), 4)
    assert m[:, 0].tolist() == [False, True, True, True]
    assert m[:, 1].tolist() == [False, False, False, True]
    s = evaluation_mask(np.array([0, 2]), 4, "strided")
    assert s[:, 1].tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="query_mode"):
        evaluation_mask(np.array([0]), 4, "all")
    with pytest.raises(ValueError, match="query_frames"):
        evaluation_mask(np.array([4]), 4)


def test_mean_metrics_averages_videos() -> None:
    out = mean_metrics([{"a": 1.0, "b": float("nan")}, {"a": 0.0, "b": 0.5}])
    assert out == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError):
        mean_metrics([])


def test_shape_errors_name_the_input() -> None:
    gt, vis = _clip()
    with pytest.raises(ValueError, match="pred_tracks"):
        tapvid_metrics(gt[:, :2], vis, gt, vis, np.zeros(4, int), (256, 256))
    with pytest.raises(ValueError, match="pred_visibility"):
        tapvid_metrics(gt, vis.astype(np.uint8), gt, vis, np.zeros(4, int), (256, 256))
    with pytest.raises(ValueError, match="query_frames"):
        tapvid_metrics(gt, vis, gt, vis, np.zeros(3, int), (256, 256))

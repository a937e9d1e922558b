"""VEPE: known offsets, visibility, pooling, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from trajloom.metrics import VEPEAccumulator, endpoint_error, vepe, vepe_sum_count


def test_known_offset_is_its_length(rng):
    gt = rng.uniform(0, 800, size=(5, 30, 2))
    pred = gt + np.array([3.0, -4.0])
    np.testing.assert_allclose(endpoint_error(pred, gt), 5.0, rtol=1e-5)
    assert vepe(pred, gt) == pytest.approx(5.0, rel=1e-5)


def test_visibility_masks_points():
    gt = np.zeros((2, 3, 2))
    pred = gt.copy()
    pred[:, 0] = [6.0, 8.0]  # error 10 on track 0
    vis = np.array([[1, 0, 1], [1, 1, 0]], dtype=np.uint8)
    # visible errors: 10, 0, 10, 0 -> mean 5; without visibility 20 / 6.
    assert vepe(pred, gt, vis) == pytest.approx(5.0)
    assert vepe(pred, gt) == pytest.approx(20.0 / 6.0)
    # probabilities are thresholded at 0.5 as in the released script
    assert vepe(pred, gt, vis * 0.9) == pytest.approx(5.0)


def test_exclude_first_frame():
    gt = np.zeros((3, 2, 2))
    pred = gt.copy()
    pred[0] = [30.0, 40.0]  # frame 0 has error 50, others 0
    assert vepe(pred, gt) == pytest.approx(50.0 / 3.0)
    assert vepe(pred, gt, exclude_first_frame=True) == pytest.approx(0.0)
    # a single frame is never excluded
    assert vepe(pred[:1], gt[:1], exclude_first_frame=True) == pytest.approx(50.0)


def test_pooled_is_point_weighted_not_video_mean():
    gt = np.zeros((2, 1, 4, 2))
    pred = gt.copy()
    pred[0, 0, 0] = [1.0, 0.0]  # video A: one visible point, error 1
    pred[1, 0, :] = [3.0, 4.0]  # video B: three visible points, error 5
    vis = np.array([[[1, 0, 0, 0]], [[1, 1, 1, 0]]], dtype=bool)
    np.testing.assert_allclose(vepe(pred, gt, vis), [1.0, 5.0])
    assert vepe(pred, gt, vis, reduction="pooled") == pytest.approx((1 + 15) / 4)
    acc = VEPEAccumulator()
    for i in range(2):
        acc.update(pred[i], gt[i], vis[i])
    assert acc.compute() == pytest.approx(4.0)
    assert acc.per_video == pytest.approx([1.0, 5.0])
    assert vepe_sum_count(pred[1], gt[1], vis[1]) == pytest.approx((15.0, 3))


def test_nothing_visible_is_nan_with_warning():
    gt = np.zeros((2, 3, 2))
    with pytest.warns(RuntimeWarning, match="no visible"):
        assert np.isnan(vepe(gt + 1, gt, np.zeros((2, 3))))
    acc = VEPEAccumulator()
    acc.update(gt + 1, gt, np.zeros((2, 3)))
    with pytest.warns(RuntimeWarning, match="no visible"):
        assert np.isnan(acc.compute())


def test_nan_in_ground_truth_is_left_out_with_warning():
    gt = np.zeros((1, 3, 2))
    gt[0, 1] = np.nan
    pred = np.zeros((1, 3, 2)) + np.array([0.0, 2.0])
    with pytest.warns(RuntimeWarning, match="non-finite"):
        assert vepe(pred, gt) == pytest.approx(2.0)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="same shape"):
        vepe(np.zeros((4, 5, 2)), np.zeros((4, 6, 2)))
    with pytest.raises(ValueError, match="visibility"):
        vepe(np.zeros((4, 5, 2)), np.zeros((4, 5, 2)), np.ones((4, 6)))
    with pytest.raises(ValueError, match="reduction"):
        vepe(np.zeros((4, 5, 2)), np.zeros((4, 5, 2)), reduction="mean")

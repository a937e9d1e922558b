"""Energy score of K futures: analytic cases and properness in the cases a reviewer checks."""

from __future__ import annotations

import numpy as np
import pytest

from trajloom.metrics import ForecastAccumulator, energy_score, forecast_summary, sample_errors


def _truth(rng, frames=6, points=12):
    return np.cumsum(rng.normal(size=(frames, points, 2)) * 3, axis=0) + 100.0


def test_one_sample_is_its_ade(rng):
    gt = _truth(rng)
    pred = gt + rng.normal(size=gt.shape) * 2
    vis = rng.random(gt.shape[:-1]) > 0.3
    ade, _ = sample_errors(pred[None], gt, vis)
    assert energy_score(pred[None], gt, vis) == pytest.approx(float(ade[0]), rel=1e-12)


def test_copies_of_one_future_score_its_ade(rng):
    gt = _truth(rng)
    pred = gt + 1.5
    copies = np.stack([pred] * 4)
    ade, _ = sample_errors(pred[None], gt)
    assert energy_score(copies, gt) == pytest.approx(float(ade[0]), rel=1e-12)


def test_truth_scores_zero_and_a_shifted_copy_scores_its_shift(rng):
    gt = _truth(rng)
    assert energy_score(np.stack([gt] * 3), gt) == 0.0
    shifted = np.stack([gt + np.array([3.0, 4.0])] * 3)
    assert energy_score(shifted, gt) == pytest.approx(5.0, rel=1e-12)


def test_two_symmetric_samples_analytic():
    # y = 0, samples at +-d along x: mean error d, pair term 2d / (2 * 2 * 1) * 2 = d
    gt = np.zeros((3, 5, 2))
    d = 2.5
    samples = np.stack([gt + np.array([d, 0.0]), gt - np.array([d, 0.0])])
    # 1/K sum ||x_k|| = d; 1/(2K(K-1)) sum_{k != l} ||x_k - x_l|| = 2 * 2d / 4 = d
    assert energy_score(samples, gt) == pytest.approx(0.0, abs=1e-12)


def test_wild_spread_beats_min_ade_but_not_the_energy_score(rng):
    """minADE_K rewards spread; the energy score does not: K wild samples around the
    truth get a lower minADE than one careful sample, and a higher energy score."""
    gt = np.zeros((4, 50, 2))
    careful = np.stack([gt + 1.0] * 4)  # every sample 1.41 px off
    # one lucky draw among three far ones
    wild = np.stack([gt + np.array([dx, 0.0]) for dx in (0.5, 10.0, 12.0, 14.0)])
    min_wild = sample_errors(wild, gt)[0].min()
    min_careful = sample_errors(careful, gt)[0].min()
    assert min_wild < min_careful
    assert energy_score(wild, gt) > energy_score(careful, gt)


def test_expected_score_is_lowest_for_the_true_distribution():
    """Properness, checked by Monte Carlo: futures drawn from the truth's own distribution
    score lower on average than ones drawn too narrow or too wide."""
    rng = np.random.default_rng(0)
    sigma, trials, k = 2.0, 400, 8

    def mean_score(spread: float) -> float:
        total = 0.0
        for _ in range(trials):
            y = rng.normal(size=(1, 20, 2)) * sigma
            x = rng.normal(size=(k, 1, 20, 2)) * spread
            total += energy_score(x, y)
        return total / trials

    right, narrow, wide = mean_score(sigma), mean_score(0.2 * sigma), mean_score(3 * sigma)
    assert right < narrow and right < wide


def test_invisible_points_are_ignored_and_nothing_visible_is_nan(rng):
    gt = _truth(rng)
    pred = gt.copy()
    pred[:, 0] += 1000.0
    vis = np.ones(gt.shape[:-1], bool)
    vis[:, 0] = False
    assert energy_score(pred[None], gt, vis) == 0.0
    with pytest.warns(RuntimeWarning):
        assert np.isnan(energy_score(pred[None], gt, np.zeros_like(vis)))


def test_bad_input_is_refused(rng):
    gt = _truth(rng)
    with pytest.raises(ValueError, match="samples"):
        energy_score(np.full((2, *gt.shape), np.nan), gt)
    with pytest.raises(ValueError, match="gt_tracks"):
        energy_score(gt[None, :, :3], gt)


def test_accumulator_and_summary_report_it(rng):
    acc = ForecastAccumulator()
    values = []
    for _ in range(3):
        gt = _truth(rng)
        samples = gt[None] + rng.normal(size=(3, *gt.shape))
        values.append(energy_score(samples, gt))
        assert acc.update(samples, gt)["energy_score"] == pytest.approx(values[-1])
        assert forecast_summary(samples, gt)["energy_score"] == pytest.approx(values[-1])
    assert acc.result().energy_score == pytest.approx(float(np.mean(values)))


def test_mean_ade_is_the_mean_of_per_sample_ade(rng):
    from trajloom.metrics import mean_ade

    gt = _truth(rng)
    samples = gt[None] + rng.normal(size=(3, *gt.shape))
    ade, _ = sample_errors(samples, gt)
    assert mean_ade(samples, gt) == pytest.approx(float(ade.mean()))
    assert np.isnan(mean_ade(samples, gt, np.zeros(gt.shape[:-1], bool)))

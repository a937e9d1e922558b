"""Best-of-K ADE / FDE and sample diversity: analytic cases, run folders and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trajloom.metrics import (
    ForecastAccumulator,
    best_of_k,
    sample_diversity,
    sample_errors,
    score_runs,
    score_samples,
)


def px(x: float, y: float) -> np.ndarray:
    """An `(x, y)` offset in pixels."""
    return np.array([x, y])


def _truth(rng, frames=6, points=12):
    return np.cumsum(rng.normal(size=(frames, points, 2)) * 3, axis=0) + 100.0


def test_sample_equal_to_truth_gives_zero(rng):
    gt = _truth(rng)
    samples = np.stack([gt + 5.0, gt, gt - 3.0])
    ade, fde = sample_errors(samples, gt)
    assert ade[1] == 0.0 and fde[1] == 0.0
    assert best_of_k(samples, gt) == (0.0, 0.0)


def test_constant_offset_gives_its_length(rng):
    gt = _truth(rng)
    ade, fde = sample_errors(np.stack([gt + px(3.0, 4.0), gt - px(6.0, 8.0)]), gt)
    np.testing.assert_allclose(ade, [5.0, 10.0])
    np.testing.assert_allclose(fde, [5.0, 10.0])


def test_identical_samples_give_the_single_sample_error(rng):
    gt = _truth(rng)
    pred = gt + rng.normal(size=gt.shape) * 2
    vis = rng.random(gt.shape[:2]) > 0.3
    one = best_of_k(pred[None], gt, vis)
    assert best_of_k(np.stack([pred] * 4), gt, vis) == pytest.approx(one, rel=1e-12)
    # single-sample definition, written out: per point mean over visible frames, last
    # visible frame; then mean over points seen at least once
    err = np.linalg.norm(pred - gt, axis=-1)
    ade_pts, fde_pts = [], []
    for i in range(gt.shape[1]):
        frames = np.flatnonzero(vis[:, i])
        if frames.size:
            ade_pts.append(err[frames, i].mean())
            fde_pts.append(err[frames[-1], i])
    assert one == pytest.approx((np.mean(ade_pts), np.mean(fde_pts)), rel=1e-12)
    assert sample_diversity(np.stack([pred] * 3), vis) == 0.0


def test_min_is_over_samples_of_the_mean_over_points(rng):
    gt = np.zeros((3, 2, 2))
    a = gt.copy()
    a[:, 0, 0] = 10.0  # point 0 off by 10, point 1 exact: ADE 5
    b = gt.copy()
    b[:, 1, 0] = 4.0  # point 1 off by 4: ADE 2
    # per-point minimum would give 0; per-video best-of-K gives min(5, 2) = 2
    assert best_of_k(np.stack([a, b]), gt) == (2.0, 2.0)


def test_two_samples_plus_minus_d_have_diversity_2d(rng):
    gt = _truth(rng)
    direction = rng.normal(size=gt.shape)
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    d = 7.5
    samples = np.stack([gt + d * direction, gt - d * direction])
    assert sample_diversity(samples) == pytest.approx(2 * d, rel=1e-12)
    # both are d from the truth
    assert best_of_k(samples, gt) == pytest.approx((d, d), rel=1e-12)


def test_diversity_of_three_samples_is_the_mean_of_pairs():
    gt = np.zeros((2, 3, 2))
    samples = np.stack([gt, gt + px(1.0, 0.0), gt + px(3.0, 0.0)])
    assert sample_diversity(samples) == pytest.approx((1 + 3 + 2) / 3)


def test_invisible_frames_are_ignored(rng):
    gt = _truth(rng, frames=5, points=3)
    vis = np.ones(gt.shape[:2], dtype=bool)
    vis[3:, :] = False  # the last two frames are hidden
    vis[:, 2] = False  # point 2 is never visible
    pred = gt + px(3.0, 4.0)
    pred[3:] += 1000.0  # wild where hidden
    pred[:, 2] += 500.0
    other = pred.copy()
    other[3:] -= 2000.0
    other[:, 2] -= 700.0
    ade, fde = sample_errors(np.stack([pred, other]), gt, vis)
    np.testing.assert_allclose(ade, [5.0, 5.0])
    np.testing.assert_allclose(fde, [5.0, 5.0])  # FDE at frame 2, the last visible one
    assert sample_diversity(np.stack([pred, other]), vis) == 0.0


def test_nothing_visible_is_nan_with_warning(rng):
    gt = _truth(rng)
    vis = np.zeros(gt.shape[:2], dtype=bool)
    with pytest.warns(RuntimeWarning):
        ade, _ = sample_errors(np.stack([gt, gt]), gt, vis)
    assert np.isnan(ade).all()


def test_bad_input_names_the_argument(rng):
    gt = _truth(rng)
    with pytest.raises(ValueError, match="samples"):
        sample_errors(gt, gt)
    with pytest.raises(ValueError, match="gt_tracks"):
        sample_errors(np.stack([gt]), gt[:-1])
    with pytest.raises(ValueError, match="K >= 2"):
        sample_diversity(gt[None])
    bad = np.stack([gt, gt])
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sample_errors(bad, gt)


def test_accumulator_means_over_videos(rng):
    acc = ForecastAccumulator()
    gt = _truth(rng)
    acc.update(np.stack([gt + px(3.0, 4.0), gt + px(6.0, 8.0)]), gt)  # min 5, diversity 5
    acc.update(np.stack([gt + px(0.0, 1.0), gt - px(0.0, 1.0)]), gt)  # min 1, diversity 2
    acc.update(np.stack([gt, gt + px(0.0, 4.0)]), None)  # no truth: diversity 4 only
    r = acc.result()
    assert r.min_ade == pytest.approx(3.0) and r.min_fde == pytest.approx(3.0)
    assert r.diversity == pytest.approx((5 + 2 + 4) / 3)
    assert (r.num_samples, r.num_videos, r.num_videos_scored) == (2, 3, 2)
    with pytest.raises(ValueError, match="same number of samples"):
        acc.update(np.stack([gt] * 3), gt)


# ----- run folders and the command ---------------------------------------------------


def _write_samples(root, grid_points, rng, k=3, videos=3, frames=26, offsets=None):
    """`root/sample_00k/video_i/` run folders; sample k = truth + offsets[k] (pixels)."""
    q = grid_points(4, 5).astype(np.int64)
    n = q.shape[0]
    offsets = offsets if offsets is not None else [np.array([3.0 * j, 4.0 * j]) for j in range(k)]
    truths = []
    for i in range(videos):
        gt = q[None] + np.cumsum(rng.normal(size=(frames, n, 2)) * 3, axis=0)
        vis = (rng.random((frames, n)) > 0.2).astype(np.uint8)
        truths.append((gt, vis))
        for j, off in enumerate(offsets):
            d = root / f"sample_{j:03d}" / f"video_{i}"
            d.mkdir(parents=True)
            perm = rng.permutation(n)  # each sample stored in its own point order
            np.save(d / "query_xy.npy", q[perm])
            np.save(d / "gt_tracks.npy", gt[:, perm].astype(np.float32))
            np.save(d / "pred_tracks.npy", (gt + off)[:, perm].astype(np.float32))
            np.save(d / "gt_visibility.npy", vis[:, perm])
    return [root / f"sample_{j:03d}" for j in range(len(offsets))], truths


def test_score_samples_analytic(tmp_path, grid_points, rng):
    roots, _ = _write_samples(tmp_path, grid_points, rng)  # offsets 0, 5, 10 px
    result = score_samples(roots)
    assert result["min_ade"] == pytest.approx(0.0, abs=1e-4)
    assert result["min_fde"] == pytest.approx(0.0, abs=1e-4)
    assert result["diversity"] == pytest.approx((5 + 10 + 5) / 3, rel=1e-5)
    assert result["num_samples"] == 3 and result["num_videos_forecast"] == 3
    assert result["num_failed"] == 0
    assert all(v["best_sample"] == 0 for v in result["per_video_forecast"])
    # the other metrics are those of the first folder
    single = score_runs(roots[0])
    assert result["vepe"] == single["vepe"] and result["fvmd"] == single["fvmd"]


def test_single_root_is_unchanged(tmp_path, grid_points, rng):
    roots, _ = _write_samples(tmp_path, grid_points, rng, k=2)
    assert score_samples(roots[:1]) == score_runs(roots[0])


def test_identical_sample_folders_give_single_sample_error(tmp_path, grid_points, rng):
    off = [np.array([3.0, 4.0])] * 2
    roots, _ = _write_samples(tmp_path, grid_points, rng, offsets=off)
    result = score_samples(roots)
    assert result["min_ade"] == pytest.approx(5.0, rel=1e-5)
    assert result["min_fde"] == pytest.approx(5.0, rel=1e-5)
    assert result["diversity"] == pytest.approx(0.0, abs=1e-5)


def test_missing_video_is_named_and_counted(tmp_path, grid_points, rng):
    roots, _ = _write_samples(tmp_path, grid_points, rng)
    for f in (roots[1] / "video_2").iterdir():
        f.unlink()
    (roots[1] / "video_2").rmdir()
    result = score_samples(roots)
    assert result["num_failed"] == 1
    (failed,) = result["failed"]
    assert failed["video"] == "video_2" and str(roots[1]) in failed["reason"]
    assert result["num_videos_forecast"] == 2
    assert result["num_videos"] == 3  # the first folder still scores all its videos


def test_bad_folder_and_disagreeing_truth_are_refused(tmp_path, grid_points, rng):
    roots, _ = _write_samples(tmp_path, grid_points, rng)
    p = roots[2] / "video_0" / "pred_tracks.npy"
    bad = np.load(p)
    bad[0, 0, 0] = np.nan
    np.save(p, bad)
    g = roots[1] / "video_1" / "gt_tracks.npy"
    np.save(g, np.load(g) + 1.0)
    result = score_samples(roots)
    reasons = {f["video"]: f["reason"] for f in result["failed"]}
    assert set(reasons) == {"video_0", "video_1"}
    assert "NaN" in reasons["video_0"] and "ground truth" in reasons["video_1"]
    assert result["num_failed"] == 2 and result["num_videos_forecast"] == 1


def test_root_given_twice_is_an_error(tmp_path, grid_points, rng):
    roots, _ = _write_samples(tmp_path, grid_points, rng, k=2)
    with pytest.raises(ValueError, match="more than once"):
        score_samples([roots[0], roots[1], roots[0]])


def test_cli_several_sample_folders(tmp_path, grid_points, rng):
    typer_testing = pytest.importorskip("typer.testing")
    from trajloom.metrics.cli import app

    roots, _ = _write_samples(tmp_path, grid_points, rng)
    out = tmp_path / "res.json"
    args = ["score", *map(str, roots), "--clip-len", "4", "--json", str(out)]
    res = typer_testing.CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "minADE_3 (px)" in res.output and "diversity (px)" in res.output
    data = json.loads(out.read_text())
    assert data["num_samples"] == 3 and data["diversity"] == pytest.approx(20 / 3, rel=1e-5)
    # one folder: no best-of-K rows, as before
    res1 = typer_testing.CliRunner().invoke(app, ["score", str(roots[0]), "--clip-len", "4"])
    assert res1.exit_code == 0 and "minADE" not in res1.output
    # a missing video: exit 1, named
    for f in (roots[2] / "video_1").iterdir():
        f.unlink()
    (roots[2] / "video_1").rmdir()
    res2 = typer_testing.CliRunner().invoke(app, args)
    assert res2.exit_code == 1 and "FAILED video_1" in res2.output


def test_forecast_summary_plain_values_analytic():
    from trajloom.metrics import forecast_summary

    gt = np.zeros((5, 3, 2))
    samples = np.stack([gt + np.array([3.0, 4.0]), gt + np.array([6.0, 8.0])])  # 5 and 10 px off
    summary = forecast_summary(samples, gt)
    assert summary == {
        "ade": [5.0, 10.0],
        "fde": [5.0, 10.0],
        "min_ade": 5.0,
        "min_fde": 5.0,
        "diversity": 5.0,
        "energy_score": 5.0,  # 7.5 mean error - (5 + 5) / (2 * 2 * 1)
    }
    # nothing visible: None (empty in a report), not NaN, and no warning
    hidden = forecast_summary(samples[:1], gt, np.zeros((5, 3), bool))
    assert hidden == {
        "ade": [None],
        "fde": [None],
        "min_ade": None,
        "min_fde": None,
        "diversity": None,
        "energy_score": None,
    }

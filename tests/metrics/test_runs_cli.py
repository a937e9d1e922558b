"""Run-folder readers, `score_runs` and the `trajloom-metrics score` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trajloom.metrics import (
    FVMDConfig,
    div_curl_energy,
    flow_tv,
    fvmd,
    load_run,
    score_runs,
    vepe,
)

HW = (10, 10)


def _write_runs(root, grid_points, rng, videos=4, frames=14, with_gt=True):
    q = grid_points(*HW).astype(np.int64)
    clean = {"gt": [], "pred": [], "vis": []}
    for i in range(videos):
        d = root / "method" / f"video_{i}"
        d.mkdir(parents=True)
        gt = q[None] + np.cumsum(rng.normal(size=(frames, 100, 2)) * 3, axis=0)
        pred = gt + rng.normal(size=gt.shape) * 2
        vis = (rng.random((frames, 100)) > 0.1).astype(np.uint8)
        perm = rng.permutation(100)  # stored in a shuffled order, query_xy says which
        np.save(d / "query_xy.npy", q[perm])
        np.save(d / "pred_tracks.npy", pred[:, perm].astype(np.float32)[None])  # [1, T, N, 2]
        np.save(d / "gt_visibility.npy", vis[:, perm])
        if with_gt:
            np.save(d / "gt_tracks.npy", gt[:, perm].astype(np.float32))
        (d / "meta.json").write_text(json.dumps({"width": 320, "height": 320}))
        clean["gt"].append(gt.astype(np.float32))
        clean["pred"].append(pred.astype(np.float32))
        clean["vis"].append(vis.astype(bool))
    return {k: np.stack(v) for k, v in clean.items()}


def test_score_runs_equals_library_calls(tmp_path, grid_points, rng):
    data = _write_runs(tmp_path, grid_points, rng)
    cfg = FVMDConfig(clip_len=8, clip_stride=2)
    result = score_runs(
        tmp_path, fvmd_config=cfg, use_gt_visibility=True, use_visibility=True, grid_stride=32.0
    )
    ref = fvmd(data["gt"], data["pred"], data["vis"], grid_hw=HW, config=cfg)
    assert result["fvmd"] == pytest.approx(ref.combined, rel=1e-9)
    assert result["fvmd_velocity"] == pytest.approx(ref.velocity, rel=1e-9)
    assert result["fvmd_acceleration"] == pytest.approx(ref.acceleration, rel=1e-9)
    tv = flow_tv(data["pred"], data["vis"], grid_hw=HW)
    dc = div_curl_energy(data["pred"], data["vis"], grid_hw=HW)
    # float32 sums as released: their rounding follows the memory layout (reordered
    # tracks are not C-contiguous), so equality holds to float32 precision only.
    assert result["flow_tv"] == pytest.approx(np.mean(tv), rel=1e-6)
    assert result["div_curl_energy"] == pytest.approx(np.mean(dc), rel=1e-6)
    pooled = vepe(data["pred"], data["gt"], data["vis"], reduction="pooled")
    assert result["vepe"] == pytest.approx(pooled, rel=1e-6)
    assert result["num_videos"] == 4 and result["num_windows"] == ref.num_windows
    assert result["notes"] == []


def test_load_run_squeezes_and_thresholds(tmp_path, grid_points, rng):
    _write_runs(tmp_path, grid_points, rng, videos=1)
    run = load_run(tmp_path / "method" / "video_0")
    assert run.pred_tracks.shape == (14, 100, 2) and run.visibility.dtype == bool
    assert run.meta["width"] == 320


def test_missing_ground_truth_gives_null_with_note(tmp_path, grid_points, rng):
    _write_runs(tmp_path, grid_points, rng, videos=2, with_gt=False)
    result = score_runs(tmp_path, fvmd_config=FVMDConfig(clip_len=8))
    assert result["fvmd"] is None and result["vepe"] is None
    assert result["flow_tv"] is not None
    assert any("gt_tracks.npy" in note for note in result["notes"])


def test_empty_root_raises(tmp_path):
    with pytest.raises(ValueError, match="no run folder"):
        score_runs(tmp_path)
    with pytest.raises(ValueError, match="existing folder"):
        score_runs(tmp_path / "absent")


def test_cli_writes_json(tmp_path, grid_points, rng):
    typer_testing = pytest.importorskip("typer.testing")
    from trajloom.metrics.cli import app

    _write_runs(tmp_path / "runs", grid_points, rng, videos=3)
    out = tmp_path / "out" / "scores.json"
    res = typer_testing.CliRunner().invoke(
        app,
        [
            "score",
            str(tmp_path / "runs"),
            "--clip-len",
            "8",
            "--clip-stride",
            "3",
            "--use-gt-visibility",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "FlowSmoothTV" in res.output
    data = json.loads(out.read_text())
    for key in (
        "fvmd",
        "fvmd_velocity",
        "fvmd_acceleration",
        "flow_tv",
        "div_curl_energy",
        "vepe",
        "num_videos",
        "notes",
    ):
        assert key in data
    assert data["num_videos"] == 3 and isinstance(data["fvmd"], float)
    # one clip per video is fine; a single video with one clip is not: null and a note
    res = typer_testing.CliRunner().invoke(
        app,
        [
            "score",
            str(tmp_path / "runs" / "method" / "video_0"),
            "--clip-len",
            "0",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["fvmd"] is None and any("2 clips" in n for n in data["notes"])


def test_library_import_needs_no_typer_or_torch():
    import subprocess
    import sys

    code = "import sys; sys.modules['torch'] = None; sys.modules['typer'] = None; import trajloom.metrics"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_command_start_up_does_not_import_scipy():
    """scipy.linalg is only for the sqrtm Fréchet route; importing it at start-up cost
    `trajloom-metrics score` about 0.4 s per run (benchmarks/metrics.py --score-cli)."""
    import subprocess
    import sys

    code = (
        "import sys, trajloom.metrics, trajloom.metrics.cli; "
        "assert 'scipy' not in sys.modules, sorted(m for m in sys.modules if 'scipy' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sqrtm_route_still_works(rng):
    from trajloom.metrics import gaussian_stats
    from trajloom.metrics.frechet import frechet_distance

    a = gaussian_stats(rng.normal(size=(50, 4)))
    b = gaussian_stats(rng.normal(size=(50, 4)) + 1.0)
    assert frechet_distance(a, b, method="sqrtm") == pytest.approx(
        frechet_distance(a, b, method="eigh"), rel=1e-6
    )


def test_one_worker_and_two_give_the_same_result(tmp_path, grid_points, rng):
    _write_runs(tmp_path, grid_points, rng, videos=5, frames=20)
    kwargs = {
        "fvmd_config": FVMDConfig(clip_len=8, clip_stride=1),
        "use_gt_visibility": True,
        "use_visibility": True,
    }
    one = score_runs(tmp_path, workers=1, **kwargs)
    two = score_runs(tmp_path, workers=2, **kwargs)
    assert json.dumps(one, default=str) == json.dumps(two, default=str)  # every bit
    assert one["fvmd"] is not None and one["flow_tv"] is not None

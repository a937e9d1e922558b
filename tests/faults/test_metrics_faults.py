"""Fault injection for `trajloom-metrics score`: run folders that would score wrong.

Each bad folder is skipped, named on stdout and in the JSON (``failed``), counted
(``num_failed``), exit 1; the good folders score exactly as they do alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HW = (4, 8)  # 32 points


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    try:
        with (folder / "filler").open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass


def _score(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trajloom.metrics.cli", "score", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _run_folder(d: Path, seed: int, *, points: int = 32, query: bool = True) -> None:
    rng = np.random.default_rng(seed)
    ys, xs = np.meshgrid(np.arange(HW[0]) * 32.0, np.arange(HW[1]) * 32.0, indexing="ij")
    q = np.stack([xs.ravel(), ys.ravel()], -1)
    gt = q[None] + np.cumsum(rng.normal(0, 2, (12, 32, 2)), 0)
    pred = gt + rng.normal(0, 3, gt.shape)
    d.mkdir(parents=True)
    if query:
        np.save(d / "query_xy.npy", q.astype(np.float32))
    np.save(d / "gt_tracks.npy", gt.astype(np.float32))
    np.save(d / "gt_visibility.npy", np.ones((12, 32), np.uint8))
    np.save(d / "pred_tracks.npy", pred[:, :points].astype(np.float32))


def _runs(root: Path, bad: bool) -> Path:
    for i in range(3):
        _run_folder(root / f"good_{i}", i)
    if bad:
        _run_folder(root / "bad_points", 10, points=16, query=False)
        _run_folder(root / "bad_nan", 11)
        pred = np.load(root / "bad_nan" / "pred_tracks.npy")
        pred[3, 5, 0] = np.nan
        np.save(root / "bad_nan" / "pred_tracks.npy", pred)
        _run_folder(root / "bad_vis", 12)
        np.save(root / "bad_vis" / "gt_visibility.npy", np.ones((12, 7), np.uint8))
        _run_folder(root / "bad_empty", 13)
        np.save(root / "bad_empty" / "pred_tracks.npy", np.zeros((0, 32, 2), np.float32))
        _run_folder(root / "bad_garbage", 14)
        (root / "bad_garbage" / "pred_tracks.npy").write_bytes(b"\x93NUMPY garbage")
    return root


def test_bad_run_folders_are_skipped_named_and_counted(tmp_path):
    runs = _runs(tmp_path / "runs", bad=True)
    good = _runs(tmp_path / "good", bad=False)
    result = _score(str(runs), "--clip-len", "6", "--json", str(tmp_path / "s.json"))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    data = json.loads((tmp_path / "s.json").read_text())
    failed = {f["video"]: f["reason"] for f in data["failed"]}
    assert data["num_failed"] == 5 and set(failed) == {
        "bad_points",
        "bad_nan",
        "bad_vis",
        "bad_empty",
        "bad_garbage",
    }
    assert "(16, 32, 2)" not in failed["bad_points"] and "(12, 16, 2)" in failed["bad_points"]
    assert "(12, 32, 2)" in failed["bad_points"]
    assert "NaN or infinite" in failed["bad_nan"]
    assert "(12, 7)" in failed["bad_vis"]
    assert "empty" in failed["bad_empty"]
    assert "cannot be read" in failed["bad_garbage"]
    for name in failed:
        assert f"FAILED {name}:" in result.stdout
    assert "3 run folders scored, 5 failed" in result.stdout
    # nothing good was dropped: the good folders score as they do alone
    alone = _score(str(good), "--clip-len", "6", "--json", str(tmp_path / "g.json"))
    assert alone.returncode == 0, alone.stderr
    ref = json.loads((tmp_path / "g.json").read_text())
    for key in ("vepe", "flow_tv", "div_curl_energy", "fvmd", "num_videos"):
        assert data[key] == ref[key], key


def test_json_output_unwritable_or_full_is_one_line_exit_2(tmp_path, read_only_dir, full_disk_dir):
    runs = _runs(tmp_path / "runs", bad=False)
    result = _score(str(runs), "--json", str(read_only_dir / "s.json"))
    assert result.returncode == 2
    lines = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "not writable" in lines[0] and "Traceback" not in result.stderr
    target = full_disk_dir / "s.json"
    target.write_text('{"previous": true}')
    fill(full_disk_dir)
    result = _score(str(runs), "--json", str(target))
    assert result.returncode == 2, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "could not write" in lines[0], result.stderr
    assert json.loads(target.read_text()) == {"previous": True}  # kept whole, never 0 bytes


def test_missing_root_is_exit_2(tmp_path):
    result = _score(str(tmp_path / "absent"))
    assert result.returncode == 2 and result.stderr.startswith("error:")


# --------------------------------------------------------------------------- issue 25


def test_a_prediction_far_outside_the_image_is_a_counted_failure(tmp_path):
    """Finite 1e30 px overflowed the float32 squared error and the clip silently left VEPE."""
    runs = _runs(tmp_path / "runs", bad=False)
    _run_folder(runs / "huge", 20)
    pred = np.load(runs / "huge" / "pred_tracks.npy")
    pred[4, 2] = 1e30
    np.save(runs / "huge" / "pred_tracks.npy", pred)
    result = _score(str(runs), "--clip-len", "6", "--json", str(tmp_path / "s.json"))
    assert result.returncode == 1, result.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["num_failed"] == 1 and data["failed"][0]["video"] == "huge"
    assert "1e+30 px, more than 10000 times the image size" in data["failed"][0]["reason"]
    assert "3 run folders scored, 1 failed" in result.stdout
    good = _score(str(_runs(tmp_path / "good", bad=False)), "--clip-len", "6",
                  "--json", str(tmp_path / "g.json"))  # fmt: skip
    assert good.returncode == 0
    assert data["vepe"] == json.loads((tmp_path / "g.json").read_text())["vepe"]


def test_errors_are_float64_where_float32_overflows():
    from trajloom.metrics import vepe
    from trajloom.metrics.vepe import endpoint_error

    gt = np.zeros((2, 1, 2))
    pred = np.full((2, 1, 2), 1e20)
    err = endpoint_error(pred, gt)
    assert err.dtype == np.float64 and np.allclose(err, np.sqrt(2) * 1e20)
    assert vepe(pred, gt) == pytest.approx(np.sqrt(2) * 1e20)


def test_grid_stride_zero_is_exit_2_not_a_silently_missing_metric(tmp_path):
    runs = _runs(tmp_path / "runs", bad=False)
    for stride in ("0", "-1", "nan", "inf"):
        result = _score(str(runs), "--grid-stride", stride)
        assert result.returncode == 2, result.stderr
        lines = [x for x in result.stderr.splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and "grid_stride must be a finite number" in lines[0]

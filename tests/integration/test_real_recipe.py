"""The `real` recipe end to end on the shared real videos, shrunk: bench build with the
built-in tracker -> every training stage -> evaluation on held-out windows (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"

pytestmark = pytest.mark.slow


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=1800, cwd=ROOT
    )


@pytest.mark.skipif(not VIDEOS.is_dir(), reason=f"real videos not found at {VIDEOS}")
def test_real_recipe_trains_and_evaluates_on_held_out_windows(tmp_path):
    bench = tmp_path / "bench"
    build = _run(
        "apps/bench/__main__.py", "build", str(bench), "--source", f"videos={VIDEOS}",
        "--width", "192", "--height", "112", "--stride", "16",
        "--history", "34", "--future", "34", "--windows-per-video", "2", "--quiet",
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    train = _run(
        "apps/train/__main__.py", "all", "--recipe", "real", "--data", str(bench / "videos"),
        "--runs-dir", str(tmp_path / "runs"), "--steps-scale", "0.01", "--no-progress",
        "--set", "stats.clips=16", "--set", "eval.steps=2", "--set", "eval.samples=2",
        "--set", "data.holdout=0.5",
    )  # fmt: skip
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "real" / "eval" / "metrics.json").read_text())
    assert "held-out test videos" in metrics["clip_source"] and metrics["clips"] > 0
    results = metrics["results"]
    assert results["ground_truth"]["min_ade"] == 0.0
    assert results["trajloom"]["num_samples"] == 2 and results["static"]["diversity"] == 0.0
    assert "minADE_2" in train.stdout

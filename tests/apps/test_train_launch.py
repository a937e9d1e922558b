"""apps/train --procs: how many local processes, how batches split, and what a launch reports."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from trajloom_train.config import StageConfig
from trajloom_train.launch import MAX_AUTO_PROCS, _status, auto_procs, check_split, parse_procs
from trajloom_train.recipes import ci, quick

MAIN = Path(__file__).resolve().parents[2] / "apps" / "train" / "__main__.py"


def test_parse_procs():
    assert parse_procs("auto") is None
    assert parse_procs(" AUTO ") is None
    assert parse_procs("3") == 3
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match="--procs"):
            parse_procs(bad)


def test_auto_uses_every_core_that_splits_every_batch():
    recipe = quick()  # batches 8, 16, 16, 32: any divisor of 8
    assert auto_procs(recipe, "cpu", cores=1) == 1
    assert auto_procs(recipe, "cpu", cores=2) == 2
    assert auto_procs(recipe, "cpu", cores=3) == 2  # 3 does not divide 8
    assert auto_procs(recipe, "cpu", cores=6) == 4
    assert auto_procs(recipe, "cpu", cores=64) == MAX_AUTO_PROCS
    odd = replace(recipe, vae=replace(recipe.vae, batch_size=6, micro_batch_size=6))
    assert auto_procs(odd, "cpu", cores=8) == 2  # gcd(6, 16, 16, 32) = 2
    assert auto_procs(recipe, "cuda", cores=64) == 1  # GPUs: torchrun


def test_micro_batch_is_a_cap_that_shrinks_with_processes():
    stage = StageConfig(batch_size=8, micro_batch_size=8)
    assert (stage.micro_batch(1), stage.accumulation(1)) == (8, 1)
    assert (stage.micro_batch(2), stage.accumulation(2)) == (4, 1)
    small = StageConfig(batch_size=8, micro_batch_size=2)
    assert (small.micro_batch(2), small.accumulation(2)) == (2, 2)
    with pytest.raises(ValueError, match="does not split"):
        stage.accumulation(3)


def test_check_split_names_the_stage():
    check_split(ci(), 2)
    with pytest.raises(ValueError, match=r"--procs 3: vae\.batch_size=8"):
        check_split(ci(), 3)


def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(MAIN), "vae", "--recipe", "ci", "--runs-dir", str(tmp_path)]
    cmd += ["--device", "cpu", "--no-progress", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_bad_procs_fail_before_any_launch(tmp_path):
    for procs, message in (("0", "positive number"), ("3", "does not split")):
        result = _cli("--procs", procs, tmp_path=tmp_path)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert result.stderr.count("error:") == 1  # once, by the launching process
    assert not (tmp_path / "ci").exists()


def test_a_failing_process_ends_the_launch_with_its_status(tmp_path):
    result = _cli("--procs", "2", "--data", str(tmp_path / "missing-*.tar"), tmp_path=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "missing-" in result.stderr
    # the processes said why (one line each); the launcher adds no line and no log of its own
    assert "training process" not in result.stderr
    assert "torch/distributed/elastic" not in result.stderr


def test_the_launch_status_names_the_root_cause():
    assert _status({0: 3, 1: -9}) == (3, None)  # a timeout; the launcher killed the stuck rank
    assert _status({0: 2, 1: -15}) == (2, None)
    assert _status({0: 1, 1: -9}) == (
        137,
        "error: the training process of rank 1 was killed by SIGKILL",
    )  # the out-of-memory killer: rank 1 could not say so, rank 0 lost it
    assert _status({0: 143, 1: 143}) == (143, None)  # stopped by SIGTERM, progress saved
    assert _status({0: 130, 1: -15}) == (130, None)
    assert _status({0: 0, 1: 5}) == (
        5,
        "error: the training process of rank 1 exited with status 5",
    )

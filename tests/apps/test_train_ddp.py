"""apps/train: N processes (gloo on CPU) make the update one process makes on the same global batch."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trajloom.vae import TrajLoomVAE
from trajloom_train.config import apply_overrides
from trajloom_train.distributed import Dist
from trajloom_train.recipes import ci
from trajloom_train.stages import RunContext, run_stage

MAIN = Path(__file__).resolve().parents[2] / "apps" / "train" / "__main__.py"
# One step, no EMA, and AdamW with eps = 1 and lr = 1: the update is then ~ the averaged
# gradient itself (Adam's first step with a small eps would be ~sign(g), which turns
# float-rounding noise in near-zero gradients into lr-sized differences).
SETTINGS = [
    f"{stage}.{key}"
    for stage in ("vae", "flow")
    for key in (
        "steps=1",
        "batch_size=4",
        "micro_batch_size=2",
        "val_every=0",
        "ema_decay=0",
        "optim.lr=1",
        "optim.eps=1",
        "optim.warmup_steps=0",
    )
] + ["flow.preview_every=0", "stats.clips=8"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(run: Path, stage: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / stage / "final" / "model.safetensors"))


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def _single(run: Path, stage: str, micro: int) -> None:
    extra = [f"{stage}.micro_batch_size={micro}"] if stage not in ("stats", "cache") else []
    recipe = apply_overrides(ci(), [*SETTINGS, *extra])
    run_stage(RunContext(recipe, run, Dist(), progress=False), stage)


def _launched(runs: Path, name: str, stage: str) -> str:
    """``--procs 2``: the CLI launches its own two processes; the recipe's micro-batch of 4
    shrinks to 2 per process. Returns the command's output (stdout and stderr)."""
    args = [sys.executable, str(MAIN), stage, "--recipe", "ci", "--name", name]
    args += ["--runs-dir", str(runs), "--device", "cpu", "--no-progress", "--procs", "2"]
    for s in [*SETTINGS, f"{stage}.micro_batch_size=4"]:
        args += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _torchrun(runs: Path, name: str, stage: str) -> None:
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        str(MAIN),
        stage,
        "--recipe",
        "ci",
        "--name",
        name,
        "--runs-dir",
        str(runs),
        "--device",
        "cpu",
        "--no-progress",
    ]
    for s in [*SETTINGS, f"{stage}.micro_batch_size=2"]:
        args += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One process, global batch 4 in one micro-batch: the reference VAE step."""
    root = tmp_path_factory.mktemp("runs")
    _single(root / "one", "vae", micro=4)
    return root


@pytest.fixture(scope="module")
def flow_runs(runs) -> Path:
    """The reference flow step, on the reference VAE."""
    for stage in ("stats", "cache", "flow"):
        _single(runs / "one", stage, micro=4)
    return runs


def test_the_update_is_large_enough_to_compare(runs):
    torch.manual_seed(ci().seed)
    init = TrajLoomVAE(ci().vae_model).state_dict()
    trained = _weights(runs / "one", "vae")
    assert max(float((trained[k] - init[k]).abs().max()) for k in init) > 1e-4


def test_accumulation_equals_one_big_batch(runs, tmp_path):
    _single(tmp_path / "acc", "vae", micro=1)  # 4 micro-batches of 1
    _assert_close(_weights(runs / "one", "vae"), _weights(tmp_path / "acc", "vae"))


def test_two_gloo_processes_equal_one_vae(runs):
    _torchrun(runs, "two-vae", "vae")
    _assert_close(_weights(runs / "one", "vae"), _weights(runs / "two-vae", "vae"))


def test_procs_two_launches_two_processes_that_equal_one(runs):
    out = _launched(runs, "procs-vae", "vae")
    assert "2 process(es)" in out
    # every parameter gets its gradient: DDP searches for no unused ones, and warns of none
    assert "find_unused_parameters" not in out
    _assert_close(_weights(runs / "one", "vae"), _weights(runs / "procs-vae", "vae"))


@pytest.mark.slow
def test_two_gloo_processes_equal_one_flow(flow_runs):
    """The flow loss normalizes by token weights summed over the whole global batch."""
    for prior in ("vae", "stats", "cache"):  # the same VAE, statistics and latents
        shutil.copytree(flow_runs / "one" / prior, flow_runs / "two-flow" / prior)
    _torchrun(flow_runs, "two-flow", "flow")
    _assert_close(_weights(flow_runs / "one", "flow"), _weights(flow_runs / "two-flow", "flow"))

"""apps/train DDP: a parameter only some micro-batches use (a caption projection when the
clips have captions) is averaged like one process averages it, across accumulation.

Two gloo processes run ``train_step`` through ``data_parallel`` on a toy task whose
parameter ``text`` is reached only by sample 0 (which lands in rank 0's first, not-synced
micro-batch) and whose parameter ``never`` no sample reaches; one process runs the same
global batch. Weights and optimizer state must agree, and ``never`` must get no gradient.
Such a task says so (``Task.data_dependent_parameters``); the stages of apps/train do not
need it: every one of them reaches every trainable parameter in every step (checked
below), so DDP runs without searching for unused parameters (and without the warning
that the search found none).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from trajloom_train.config import apply_overrides
from trajloom_train.distributed import Dist
from trajloom_train.recipes import ci
from trajloom_train.stages import (
    RunContext,
    build_flow_task,
    build_vae_task,
    build_vis_task,
    run_stage,
)

WORKER = textwrap.dedent(
    """
    import sys

    import torch
    from torch import nn

    from trajloom_train.config import OptimConfig, StageConfig
    from trajloom_train.distributed import Dist
    from trajloom_train.trainer import LossOut, Task, TrainState, data_parallel, train_step


    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(3, 3)
            self.text = nn.Linear(3, 3)  # only samples with a "caption" reach it
            self.never = nn.Linear(3, 3)  # no sample reaches it


    def make_batch(step, micro, indices):
        g = torch.Generator().manual_seed(1000 * step + indices[0])
        return {"x": torch.randn(len(indices), 3, generator=g), "text": 0 in indices}


    def loss(model, batch, step, indices):
        y = model.body(batch["x"])
        if batch["text"]:
            y = y + model.text(batch["x"])
        return LossOut(y.pow(2).sum())


    def run(rank, world, out):
        torch.manual_seed(0)
        model = Toy()
        cfg = StageConfig(
            steps=2, batch_size=4, micro_batch_size=1, optim=OptimConfig(lr=0.1, warmup_steps=0)
        )
        task = Task(
            "toy", model, cfg, make_batch, loss, export=lambda m, f: None,
            data_dependent_parameters=True,
        )
        dist = Dist(rank=rank, world_size=world)
        state = TrainState.create(model, cfg)
        module = data_parallel(task, dist)
        for _ in range(cfg.steps):
            train_step(task, state, dist, "fp32", module)
        if rank == 0:
            names = {id(p): n for n, p in model.named_parameters()}
            stepped = sorted(names[id(p)] for p in state.optimizer.state)
            torch.save({"weights": model.state_dict(), "stepped": stepped}, out)


    if __name__ == "__main__":
        world = int(sys.argv[1])
        if world > 1:
            import os

            torch.distributed.init_process_group("gloo")
            run(int(os.environ["RANK"]), world, sys.argv[2])
            torch.distributed.destroy_process_group()
        else:
            run(0, 1, sys.argv[2])
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(script: Path, world: int, out: Path) -> dict:
    launcher = [sys.executable]
    if world > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(world)]
        launcher += ["--master_port", str(_free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*launcher, str(script), str(world), str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return torch.load(out, weights_only=True)


def test_a_parameter_some_micro_batches_skip_is_averaged_like_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    one = _run(script, 1, tmp_path / "one.pt")
    two = _run(script, 2, tmp_path / "two.pt")
    # the parameter no sample uses has no gradient, so AdamW never stepped it
    assert (
        one["stepped"] == two["stepped"] == ["body.bias", "body.weight", "text.bias", "text.weight"]
    )
    assert one["weights"].keys() == two["weights"].keys()
    for key in one["weights"]:
        torch.testing.assert_close(two["weights"][key], one["weights"][key], msg=key)


def _unused_parameters(recipe_overrides: list[str], run: Path) -> dict[str, list[str]]:
    """Trainable parameters of each trained stage that a step's loss does not reach."""
    short = [f"{s}.steps=1" for s in ("vae", "flow", "onpolicy", "vis")] + ["stats.clips=8"]
    recipe = apply_overrides(ci(), [*short, *recipe_overrides])
    ctx = RunContext(recipe, run, Dist(), progress=False)
    for stage in ("vae", "stats", "cache", "flow"):
        run_stage(ctx, stage)
    builders = {
        "vae": build_vae_task,
        "flow": lambda c: build_flow_task(c, "flow"),
        "onpolicy": lambda c: build_flow_task(c, "onpolicy"),
        "vis": build_vis_task,
    }
    unused: dict[str, list[str]] = {}
    for name, build in builders.items():
        task = build(ctx)
        assert not task.data_dependent_parameters
        size = task.config.batch_size
        for step in range(3):
            indices = list(range(step * size, (step + 1) * size))
            out = task.loss(task.model, task.make_batch(step, 0, indices), step, indices)
            task.model.zero_grad(set_to_none=True)
            (out.numerator + (0 if out.extra is None else out.extra)).backward()
            unused[name] = unused.get(name, []) + [
                n for n, p in task.model.named_parameters() if p.requires_grad and p.grad is None
            ]
    return unused


@pytest.mark.parametrize(
    "context",
    [[], ["conditioning.video=none", "conditioning.text=none"]],
    ids=["video-and-caption", "no-context"],
)
def test_every_stage_reaches_every_trainable_parameter(tmp_path, context):
    """What DDP's find_unused_parameters=False relies on (a parameter left out would make DDP
    fail the next step): every stage's loss reaches all of its trainable parameters."""
    assert _unused_parameters(context, tmp_path / "run") == {
        "vae": [],
        "flow": [],
        "onpolicy": [],
        "vis": [],
    }

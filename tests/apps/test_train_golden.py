"""apps/train: the `ci` recipe's loss curves are checked in; a change to training numbers fails.

``golden/ci_losses.json`` holds every logged training loss (and its terms) of each stage of
a shortened `ci` recipe from seed 0, taken before the trainer was moved onto the
`trajloom.flow` loss functions. A refactor must reproduce it; a change that moves a number on
purpose (a loss weight, a draw order) regenerates it with ``TRAJLOOM_UPDATE_GOLDEN=1`` and
says why in its commit.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from trajloom_train.config import apply_overrides
from trajloom_train.distributed import Dist
from trajloom_train.recipes import ci
from trajloom_train.stages import RunContext, run_stage

GOLDEN = Path(__file__).parent / "golden" / "ci_losses.json"
STAGES = ("vae", "stats", "cache", "flow", "onpolicy", "vis")
# Same machine kind, same torch: equal to float rounding; a loss weight moves far more.
RTOL = 1e-5
SHORT = [
    "vae.steps=6",
    "flow.steps=6",
    "onpolicy.steps=2",
    "vis.steps=3",
    "stats.clips=8",
    *(f"{s}.log_every=1" for s in ("vae", "flow", "onpolicy", "vis")),
    *(f"{s}.val_every=0" for s in ("vae", "flow", "onpolicy", "vis")),
    *(f"{s}.save_every=0" for s in ("vae", "flow", "onpolicy", "vis")),
    "flow.preview_every=0",
]
_IGNORED = {"stage", "step", "lr", "grad_norm", "samples_per_s", "split"}


def _curves(run: Path, stages=("vae", "flow", "onpolicy", "vis")) -> dict[str, list[dict]]:
    out = {}
    for stage in stages:
        rows = [json.loads(x) for x in (run / stage / "metrics.jsonl").read_text().splitlines()]
        out[stage] = [
            {k: v for k, v in r.items() if k not in _IGNORED or k == "step"}
            for r in rows
            if "split" not in r  # training steps only (not val or data records)
        ]
    return out


def _mismatches(curves: dict[str, list[dict]], golden: dict[str, list[dict]]) -> list[str]:
    bad = []
    for stage, rows in curves.items():
        want = golden[stage]
        if [r["step"] for r in rows] != [r["step"] for r in want]:
            bad.append(f"{stage}: logged steps {[r['step'] for r in rows]} != golden")
            continue
        for got, exp in zip(rows, want, strict=True):
            if set(got) != set(exp):
                bad.append(f"{stage} step {got['step']}: terms {sorted(got)} != {sorted(exp)}")
                continue
            for key, value in exp.items():
                if not math.isclose(got[key], value, rel_tol=RTOL, abs_tol=1e-9):
                    bad.append(f"{stage} step {got['step']} {key}: {got[key]!r} != {value!r}")
    return bad


def _ctx(run: Path, extra: list[str] = ()) -> RunContext:
    return RunContext(apply_overrides(ci(), [*SHORT, *extra]), run, Dist(), progress=False)


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("golden")
    for stage in STAGES:
        run_stage(_ctx(run), stage)
    return run


def test_ci_recipe_reproduces_the_golden_loss_curves(ci_run):
    curves = _curves(ci_run)
    if os.environ.get("TRAJLOOM_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(curves, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert all(len(golden[s]) >= 2 for s in golden)
    assert _mismatches(curves, golden) == []


@pytest.mark.parametrize(
    ("override", "stage"),
    [
        ("flow_loss.invisible_weight=0.02", "flow"),
        ("onpolicy_loss.weight_endpoint=0.2", "onpolicy"),
    ],
)
def test_a_changed_loss_weight_breaks_the_golden_curve(ci_run, tmp_path, override, stage):
    run = tmp_path / "run"
    for prior in STAGES[: STAGES.index(stage)]:
        shutil.copytree(ci_run / prior, run / prior)
    (run / "config.json").unlink(missing_ok=True)
    run_stage(_ctx(run, [override]), stage)
    golden = json.loads(GOLDEN.read_text())
    assert _mismatches(_curves(run, (stage,)), golden)

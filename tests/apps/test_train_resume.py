"""apps/train: an interrupted and resumed stage continues exactly (same losses on CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trajloom_train.config import apply_overrides
from trajloom_train.distributed import Dist
from trajloom_train.recipes import ci
from trajloom_train.stages import RunContext, run_stage


def _losses(stage_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r.get("split") != "val"]


def _ctx(run_dir: Path, stop_after: int | None = None) -> RunContext:
    recipe = apply_overrides(
        ci(),
        [
            "vae.steps=6",
            "vae.log_every=1",
            "vae.save_every=2",
            "vae.val_every=0",
            "flow.steps=6",
            "flow.log_every=1",
            "flow.save_every=2",
            "flow.val_every=0",
            "flow.preview_every=0",
            "stats.clips=8",
        ],
    )
    return RunContext(recipe, run_dir, Dist(), stop_after=stop_after, progress=False)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight")
    for stage in ("vae", "stats", "cache", "flow"):
        run_stage(_ctx(run), stage)
    return run


@pytest.mark.parametrize("stage", ["vae", "flow"])
def test_resume_gives_the_uninterrupted_losses(uninterrupted, tmp_path, stage):
    run = tmp_path / "run"
    if stage == "flow":  # start from the same finished VAE and statistics
        for prior in ("vae", "stats", "cache"):
            shutil.copytree(uninterrupted / prior, run / prior)
    first = run_stage(_ctx(run, stop_after=3), stage)
    assert first["finished"] is False and first["step"] == 3
    assert not (run / stage / "DONE.json").exists()
    # the interrupted process is gone; a new one resumes from the checkpoint at step 3
    summary = run_stage(_ctx(run), stage)
    assert summary["finished"] is True
    expected = _losses(uninterrupted / stage)
    assert [s for s, _ in expected] == list(range(1, 7))
    assert _losses(run / stage) == expected  # exact equality: identical continuation
    a = load_file(str(uninterrupted / stage / "final" / "model.safetensors"))
    b = load_file(str(run / stage / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_discards_log_lines_past_the_checkpoint(uninterrupted, tmp_path):
    run = tmp_path / "run"
    run_stage(_ctx(run, stop_after=3), "vae")
    log = run / "vae" / "metrics.jsonl"
    with log.open("a") as f:  # a line written after the checkpoint, before a crash
        f.write(json.dumps({"stage": "vae", "step": 4, "loss": -1.0}) + "\n")
    run_stage(_ctx(run), "vae")
    assert _losses(run / "vae") == _losses(uninterrupted / "vae")

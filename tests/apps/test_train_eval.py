"""apps/train evaluation: dev-chosen baselines, held-out test videos, K samples, the metrics."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from trajloom.data.shards import ShardSample, write_shards
from trajloom.data.stream import sample_split
from trajloom.data.synthetic import make_scene
from trajloom_train.config import apply_overrides
from trajloom_train.data import heldout_clips, scene_config
from trajloom_train.distributed import Dist
from trajloom_train.evaluate import ORACLE, evaluate, export_trained_set, table_columns
from trajloom_train.recipes import ci
from trajloom_train.stages import STAGES, RunContext, run_stage

SHORT = [
    # these shards hold tracks only (no video.mp4): the video context is tested elsewhere
    "conditioning.video=none",
    "vae.steps=2",
    "stats.clips=8",
    "flow.steps=2",
    "flow.val_every=0",
    "flow.preview_every=0",
    "onpolicy.steps=1",
    "onpolicy.val_every=0",
    "vis.steps=2",
    "vis.val_every=0",
    "eval.steps=2",
    "eval.samples=3",
]


def _shards(folder: Path, prefix: str, count: int, seed: int) -> Path:
    # ci's grid is 8 x 4 points: too few rows for FVMD's 5 x 5 cubes; use 8 x 8
    data = replace(ci().data, height=128)
    samples = []
    for i in range(count):
        scene = make_scene(seed + i, scene_config(data))
        meta = {**scene.meta, "caption": f"{prefix} {i}"}
        samples.append(ShardSample(f"{prefix}-{i}", scene.tracks, scene.visibility, meta=meta))
    write_shards(samples, folder, maxcount=4)
    return folder


def _recipe(shards: Path, extra=()):
    recipe = ci()
    data = replace(recipe.data, height=128, source="shards", shards=(str(shards),))
    return apply_overrides(replace(recipe, data=data), [*SHORT, *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train-eval")
    shards = _shards(root / "shards", "clip", 12, seed=500)
    run = root / "run"
    ctx = RunContext(_recipe(shards), run, Dist(), progress=False)
    for stage in STAGES:
        run_stage(ctx, stage)
    export_trained_set(run, ctx.recipe)
    return run, shards


def test_shard_runs_are_evaluated_on_their_held_out_test_videos(trained):
    run, shards = trained
    recipe = _recipe(shards)
    split = {f"clip-{i}": sample_split(f"clip-{i}", recipe.data.holdout) for i in range(12)}
    test = {v for v, s in split.items() if s == "test"}
    assert 0 < len(test) < 12  # the split holds some videos out, not all
    summary = evaluate(recipe, run)
    assert summary["clips"] == len(test) and "held-out test videos" in summary["clip_source"]
    chosen = summary["chosen_on_dev"]
    rows = {"trajloom", ORACLE, "static", "constvel_1", "ground_truth"}
    rows |= {f"{kind}_{c['window']}" for kind, c in chosen.items()}
    assert set(summary["results"]) == rows and set(summary["baselines"]) == rows - {
        "trajloom",
        ORACLE,
        "ground_truth",
    }
    # dev chose each window by the lowest ADE among the candidates that fit 9 frames
    assert sorted(chosen["constvel"]["dev_scores"]) == ["1", "2", "4", "8"]
    assert sorted(chosen["linear"]["dev_scores"]) == ["2", "4", "8"]
    for kind, c in chosen.items():
        assert c["dev_scores"][str(c["window"])] == min(c["dev_scores"].values()), kind
    # no dev fraction: every held-out video is a test video, dev reads training videos
    assert summary["split"]["dev"].endswith("windows of training videos (no held-out dev video)")
    for method in ("trajloom", "static", "constvel_1", "ground_truth"):
        folders = sorted((run / "eval" / "runs" / method).iterdir())
        assert [f.name for f in folders] == ["sample_000", "sample_001", "sample_002"]
        assert {d.name for d in folders[0].iterdir()} == test
    # the model's caption reads only the history; the oracle row gets the clip's own
    name = sorted(test)[0]
    given = json.loads((run / "eval/runs/trajloom/sample_000" / name / "meta.json").read_text())
    oracle = json.loads(
        (run / "eval/runs" / ORACLE / "sample_000" / name / "meta.json").read_text()
    )
    assert not given["caption"].startswith("clip") and "camera" in given["caption"].lower()
    assert oracle["caption"].startswith(f"clip {name.split('-')[1]}")
    assert summary["captions"] == {"trajloom": "history", ORACLE: "clip"}
    results = summary["results"]
    for key, _ in table_columns(recipe):
        assert key in results["trajloom"], key
    assert results["ground_truth"]["min_ade"] == 0.0 and results["ground_truth"]["vepe"] == 0.0
    for baseline in summary["baselines"]:  # deterministic: K copies, ES = minADE = ADE
        assert results[baseline]["diversity"] == 0.0 and results[baseline]["num_samples"] == 3
        assert results[baseline]["min_ade"] > 0
        assert results[baseline]["energy_score"] == pytest.approx(results[baseline]["min_ade"])
    assert results["trajloom"]["diversity"] > 0 and results["trajloom"]["energy_score"] > 0
    assert results["static"]["fvmd"] is not None and results["static"]["fvmd_long"] is not None
    table = (run / "eval" / "table.md").read_text()
    assert "minADE_3 (px)" in table and "ES_3 (px)" in table and "**" in table
    # margins: trajloom minus each baseline per test clip, with a bootstrap interval
    for metric in ("min_ade", "energy_score"):
        for name in summary["baselines"]:
            gap = summary["margins"][metric][name]
            assert gap["n"] == len(test) and gap["low"] <= gap["mean"] <= gap["high"]
    assert "95 % bootstrap over clips" in table


def test_evaluation_is_reproducible(trained):
    run, shards = trained
    recipe = _recipe(shards)
    evaluate(recipe, run)
    first = (run / "eval" / "metrics.json").read_text()
    evaluate(recipe, run)
    assert (run / "eval" / "metrics.json").read_text() == first


def test_eval_data_replaces_the_held_out_split(trained, tmp_path):
    run, shards = trained
    other = _shards(tmp_path / "other", "other", 3, seed=900)
    recipe = _recipe(shards, [f"eval.shards={other}", "eval.samples=1"])
    summary = evaluate(recipe, run)
    assert summary["clips"] == 3 and summary["results"]["trajloom"]["diversity"] is None
    names = {d.name for d in (run / "eval" / "runs" / "static").iterdir()}
    assert names == {"other-0", "other-1", "other-2"}  # K = 1: the flat layout
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["samples"] == 1


def test_no_held_out_sample_is_a_clear_error(trained):
    _, shards = trained
    data = replace(_recipe(shards).data, holdout=0.0)
    with pytest.raises(ValueError, match="no evaluation clip in the test videos"):
        heldout_clips(data, 0, limit=4)

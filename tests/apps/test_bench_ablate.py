"""apps/bench ablate: the variants' switches, the tables, resuming, exit codes, end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from trajloom.data.formats import iter_shard_samples, read_manifest
from trajloom.data.synthetic import make_scene, scene_seed
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom_bench.ablate import (
    TABLES,
    VARIANTS,
    Study,
    StudyError,
    Variant,
    _bench_config,
    _load_flow_weights,
    format_tables,
    prepare_bench,
    run_study,
    variant_overrides,
)
from trajloom_bench.ablate import BenchSpec as AblateBench
from trajloom_bench.build import build_synthetic_source
from trajloom_bench.cli import app
from trajloom_train.config import (
    RUNTIME_KEYS,
    DataConfig,
    apply_overrides,
    config_diff,
    recipe_to_dict,
)
from trajloom_train.data import scene_config
from trajloom_train.recipes import get_recipe

ROOT = Path(__file__).resolve().parents[2]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
BY_NAME = {v.name: v for v in VARIANTS}

# The one recipe key each switch must change (paper Tables 3-5, appendix D.1/D.3).
SWITCHES = {
    "no_offset": "vae_model.use_offsets: True -> False",
    "no_regularizer": "vae_loss.use_regularizer: True -> False",
    "no_fusion": "generator.use_history_fusion: True -> False",
    "no_anchoring": "flow_loss.anchor: True -> False",
    "no_onpolicy": "onpolicy_loss.enabled: True -> False",
}


def _run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------- switches


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_each_switch_changes_exactly_its_recipe_key(name):
    base = get_recipe("ci")
    recipe = recipe_to_dict(base)
    changed = apply_overrides(base, list(variant_overrides(BY_NAME[name], recipe, 0.2)))
    assert config_diff(recipe, recipe_to_dict(changed)) == [SWITCHES[name]]


def test_full_run_only_adds_checkpoint_cadence_for_the_early_variant():
    base = get_recipe("ci")
    recipe = recipe_to_dict(base)
    extra = variant_overrides(BY_NAME["full"], recipe, 0.25)
    changed = recipe_to_dict(apply_overrides(base, list(extra)))
    # Logging keys only: the full run trains the same numbers as without them.
    assert config_diff(recipe, changed) == []
    assert {"save_every", "keep_last"} <= RUNTIME_KEYS
    steps = recipe["flow"]["steps"]
    every = changed["flow"]["save_every"]
    assert every == round(0.25 * steps)
    assert changed["flow"]["keep_last"] * every > steps  # the early checkpoint survives


def test_study_refuses_unknown_variants_and_fractions(tmp_path):
    with pytest.raises(StudyError, match="unknown variants"):
        Study(out=tmp_path, variants=("no_offset", "no_magic"))
    with pytest.raises(StudyError, match="early-fraction"):
        Study(out=tmp_path, early_fraction=1.0)
    # A generator variant pulls in the run it starts from.
    assert [v.name for v in Study(out=tmp_path, variants=("early",)).selected()] == [
        "full",
        "early",
    ]


# --------------------------------------------------------------------------- tables


def _scores(value: float, keys=("fvmd_long", "flow_tv", "div_curl_energy")) -> dict:
    return {"synthetic": {k: value for k in keys}, "real": {k: value + 1 for k in keys}}


def test_tables_have_every_row_and_the_orderings():
    results = {
        v.name: {
            "status": "done",
            "generator": _scores(2.0 if v.name != "full" else 1.0),
            "vae": {"synthetic": {"vepe": 0.5}, "real": {"vepe": 0.7}},
        }
        for v in VARIANTS
    }
    results["full"]["vae"] = {"synthetic": {"vepe": 0.6}, "real": {"vepe": 0.6}}
    results["no_fusion"] = {"status": "failed", "reason": "trajloom-train exited 1"}
    markdown, doc = format_tables(results, ["synthetic", "real"], "# header", early=32)
    for number, (_, _, _keys, rows) in TABLES.items():
        table = doc["tables"][str(number)]
        assert len(table["rows"]) == len(rows)
        assert f"### Table {number}" in markdown
    assert "32 flow steps (early)" in doc["tables"]["5"]["rows"]
    # Table 3: Ours 1 < 2 everywhere; Table 4: Ours 0.6 vs 0.5 (no) and 0.7 (yes).
    assert doc["tables"]["3"]["ours_lower"]["no_offset"]["flow_tv"] == {
        "synthetic": True,
        "real": True,
    }
    assert doc["tables"]["4"]["ours_lower"]["no_regularizer"]["vepe"] == {
        "synthetic": False,
        "real": True,
    }
    # A failed variant keeps its row (no numbers) and is named under its table.
    assert doc["tables"]["5"]["rows"]["w/o fusion"] == {}
    assert "failed: w/o fusion: trajloom-train exited 1" in markdown
    assert "| FVMD-Long | w/o fusion | - | - |" in markdown


# --------------------------------------------------------------------------- exit codes


def test_ablate_exit_2_for_bad_options_and_a_busy_out(tmp_path):
    result = _run("ablate", "--out", tmp_path / "a", "--variant", "no_magic")
    assert result.exit_code == 2
    assert "unknown variants" in result.output
    out = tmp_path / "busy"
    out.mkdir()
    # Another process holds the folder (the lock is re-entrant within one process).
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from trajloom.data.outputs import OutputLock\n"
            f"with OutputLock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = _run("ablate", "--out", out, "--recipe", "ci")
        assert result.exit_code == 2
        assert "in use by another process" in result.output
    finally:
        holder.kill()
        holder.wait()


def test_resume_rule_reruns_failed_and_torn_results(tmp_path):
    from trajloom_bench.ablate import _saved_result

    study = Study(out=tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    (results / "full.json").write_text(json.dumps({"status": "done", "generator": {}}))
    (results / "no_offset.json").write_text(json.dumps({"status": "failed", "reason": "x"}))
    (results / "no_fusion.json").write_text('{"status": "do')  # killed while writing
    assert _saved_result(study, "full") == {"status": "done", "generator": {}}
    assert _saved_result(study, "no_offset") is None
    assert _saved_result(study, "no_fusion") is None
    assert _saved_result(study, "early") is None


# --------------------------------------------------------------------------- end to end


def _study(out: Path, variants: tuple[str, ...] | None = None) -> Study:
    videos = (("real", str(VIDEOS)),) if VIDEOS.is_dir() else ()
    return Study(
        out=out,
        recipe="ci",
        steps_scale=0.2,
        sets=("eval.clips=2", "eval.preview_clips=0"),
        variants=variants or tuple(v.name for v in VARIANTS),
        device="cpu",
        jobs=2,
        bench=AblateBench(synthetic=2, videos=videos, windows_per_video=1, limit=2),
    )


def _config(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_tiny_study_end_to_end_and_resume(tmp_path):
    """Every variant of the ci recipe at a fifth of its steps: the three tables with every
    row, the switches in the saved configs, then a resume that trains nothing again."""
    out = tmp_path / "study"
    lines: list[str] = []
    assert run_study(_study(out), lines.append) == 0
    doc = json.loads((out / "tables.json").read_text())
    sources = ["synthetic", "real"] if VIDEOS.is_dir() else ["synthetic"]
    assert doc["sources"] == sources
    for number, (_, _, _keys, rows) in TABLES.items():
        table = doc["tables"][str(number)]["rows"]
        assert len(table) == len(rows)
        for per_source in table.values():
            assert list(per_source) == sources
            for scores in per_source.values():
                key = "vepe" if number == 4 else "flow_tv"
                assert scores[key] is not None and math.isfinite(scores[key])
    runs = out / "runs"
    # The switches are in what was trained and saved.
    assert _config(runs / "no_offset" / "vae" / "final" / "config.json")["use_offsets"] is False
    assert _config(runs / "full" / "vae" / "final" / "config.json")["use_offsets"] is True
    assert _config(runs / "no_regularizer" / "config.json")["vae_loss"]["use_regularizer"] is False
    gen = _config(runs / "no_fusion" / "trained" / "generator" / "config.json")["config"]
    assert gen["use_history_fusion"] is False
    gen = _config(runs / "full" / "trained" / "generator" / "config.json")["config"]
    assert gen["use_history_fusion"] is True
    assert _config(runs / "no_anchoring" / "trained" / "pipeline.json")["config"]["anchor"] is False
    assert _config(runs / "full" / "trained" / "pipeline.json")["config"]["anchor"] is True
    assert _config(runs / "no_onpolicy" / "config.json")["onpolicy_loss"]["enabled"] is False
    # Shared stages are copies of full's: the same VAE weights.
    vae_full = load_file(runs / "full" / "vae" / "final" / "model.safetensors")
    vae_fusion = load_file(runs / "no_fusion" / "vae" / "final" / "model.safetensors")
    assert all(torch.equal(vae_full[k], vae_fusion[k]) for k in vae_full)
    # The early variant is full's flow checkpoint (EMA weights), not its final generator.
    note = _config(runs / "early" / "SHARED.json")
    ema = load_file(Path(note["generator_checkpoint"]) / "ema.safetensors")
    early = TrajLoomPipeline.from_pretrained(runs / "early" / "trained").generator.state_dict()
    final = TrajLoomPipeline.from_pretrained(runs / "full" / "trained").generator.state_dict()
    ema = {k.removeprefix("generator."): v for k, v in ema.items() if k.startswith("generator.")}
    assert ema.keys() == early.keys()
    assert all(torch.equal(early[k], v) for k, v in ema.items())
    assert any(not torch.equal(early[k], final[k]) for k in ema)

    # Resume: every variant done -> nothing trains or evaluates again.
    logs = {v.name: (runs / v.name / "train.log") for v in VARIANTS if v.command}
    before = {n: p.read_text() for n, p in logs.items()}
    lines.clear()
    assert run_study(_study(out), lines.append) == 0
    assert sum("done earlier, skipped" in line for line in lines) == len(VARIANTS)
    assert {n: p.read_text() for n, p in logs.items()} == before

    # An interrupted variant (no results file) runs again, alone; its training resumes
    # from the finished stages (trajloom-train skips them).
    (out / "results" / "no_fusion.json").unlink()
    lines.clear()
    assert run_study(_study(out), lines.append) == 0
    assert sum("done earlier, skipped" in line for line in lines) == len(VARIANTS) - 1
    assert "[flow] already done" in (runs / "no_fusion" / "train.log").read_text()


def test_ablate_refuses_a_resume_with_other_settings(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"recipe": "quick", "steps_scale": 0.5}))
    study = _study(out, ("no_regularizer",))
    from trajloom_bench.ablate import _check_settings

    with pytest.raises(StudyError, match="other settings"):
        _check_settings(study)


def test_variant_table_membership_matches_the_paper():
    # Table 3: offsets (generation); Table 4: VAE reconstruction; Table 5: generator parts.
    assert TABLES[3][3] == ("no_offset", "full")
    assert TABLES[4][3] == ("no_offset", "no_regularizer", "full")
    assert TABLES[5][3] == ("no_fusion", "no_anchoring", "early", "no_onpolicy", "full")
    for _, kind, _, rows in TABLES.values():
        for name in rows:
            v: Variant = BY_NAME[name]
            assert v.generator if kind == "generator" else v.vae


def _context(tmp_path: Path):
    from trajloom_bench.ablate import EvalConfig, EvalContext

    return EvalContext(
        bench=tmp_path / "bench",
        names=["synthetic"],
        sources={},
        window={},
        cfg=EvalConfig(),
        device=torch.device("cpu"),
        solver="euler",
        steps=4,
        out=tmp_path / "eval",
    )


def test_variants_of_a_failed_base_are_blocked_counted_and_reported(tmp_path):
    from trajloom_bench.ablate import _report, _run_variants

    study = Study(out=tmp_path, variants=("no_fusion", "early"), jobs=2)
    recipe = recipe_to_dict(get_recipe("ci"))
    ctx = _context(tmp_path)
    results = {"full": {"status": "failed", "reason": "trajloom-train exited 1"}}
    lines: list[str] = []
    todo = [BY_NAME["no_fusion"], BY_NAME["early"]]
    _run_variants(study, recipe, ctx, todo, results, lines.append)
    for name in ("no_fusion", "early"):
        saved = json.loads((tmp_path / "results" / f"{name}.json").read_text())
        assert saved == {"status": "failed", "reason": "blocked: full failed"}
    assert not (tmp_path / "runs").exists()  # nothing was trained
    markdown = (tmp_path / "tables.md").read_text()
    assert "failed: w/o fusion: blocked: full failed" in markdown
    assert _report(study, recipe, ctx, results, lines.append) == 2  # every variant failed
    assert "0 of 3 variants done; failed: ['full', 'no_fusion', 'early']" in lines[-1]
    results["full"] = {"status": "done", "generator": {}, "vae": {}}
    assert _report(study, recipe, ctx, results, lines.append) == 1  # some failed


class _Pipe:
    """What _load_flow_weights reads of a pipeline: its generator and context encoders."""

    def __init__(self, video: bool) -> None:
        self.generator = torch.nn.Linear(2, 2)
        self.video_encoder = torch.nn.Linear(2, 3) if video else None
        self.text_encoder = None


def test_early_checkpoint_loads_generator_and_trained_context():
    """The flow stage saves generator.* and the jointly trained video_encoder.* /
    text_encoder.*; runs from before the context saved the generator's keys bare."""
    pipe = _Pipe(video=True)
    weights = {
        f"generator.{k}": torch.full_like(v, 1.0) for k, v in pipe.generator.state_dict().items()
    }
    weights |= {
        f"video_encoder.{k}": torch.full_like(v, 2.0)
        for k, v in pipe.video_encoder.state_dict().items()
    }
    _load_flow_weights(pipe, weights, Path("ckpt"))
    assert all(bool((p == 1).all()) for p in pipe.generator.parameters())
    assert all(bool((p == 2).all()) for p in pipe.video_encoder.parameters())
    bare = _Pipe(video=False)
    _load_flow_weights(
        bare, {k: torch.zeros_like(v) for k, v in bare.generator.state_dict().items()}, Path("c")
    )
    assert all(bool((p == 0).all()) for p in bare.generator.parameters())
    with pytest.raises(RuntimeError, match="has none"):
        _load_flow_weights(_Pipe(video=False), weights, Path("ckpt"))
    partial = {k: v for k, v in weights.items() if k != "video_encoder.bias"}
    with pytest.raises(RuntimeError, match=r"video_encoder\.bias"):
        _load_flow_weights(_Pipe(video=True), partial, Path("ckpt"))


def test_bench_is_built_in_the_recipes_world_with_the_frames_its_sets_read(tmp_path):
    """Held-out synthetic scenes come from the world the recipe trains on (quick: lively,
    its object counts), and the bench keeps the video when the trained sets read it."""
    recipe = recipe_to_dict(get_recipe("quick"))
    cfg = _bench_config(recipe, AblateBench())
    data = recipe["data"]
    assert (cfg.dynamics, cfg.min_objects, cfg.max_objects) == (
        data["dynamics"],
        data["min_objects"],
        data["max_objects"],
    )
    assert cfg.store_video is (recipe["conditioning"]["video"] != "none")
    blind = {**recipe, "conditioning": {**recipe["conditioning"], "video": "none"}}
    assert _bench_config(blind, AblateBench()).store_video is False
    # The bench's scene i is the training world's scene of the bench seed.
    bench_cfg = replace(cfg, store_video=False, width=64, height=64, stride=16, history=5, future=5)
    build_synthetic_source("synthetic", 2, tmp_path / "syn", bench_cfg)
    urls, _ = read_manifest(tmp_path / "syn")
    samples = [s for u in urls for s in iter_shard_samples(Path(u))]
    train_data = DataConfig(
        width=64,
        height=64,
        stride=16,
        history=5,
        future=5,
        dynamics="lively",
        min_objects=data["min_objects"],
        max_objects=data["max_objects"],
    )
    for i, sample in enumerate(samples):
        scene = make_scene(scene_seed(cfg.seed, i), scene_config(train_data))
        np.testing.assert_array_equal(sample.tracks, scene.tracks)
    with pytest.raises(ValueError, match="dynamics"):
        replace(cfg, dynamics="wobbly")


def test_a_given_bench_without_frames_is_refused_for_sets_that_read_video(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "bench.json").write_text(
        json.dumps({"config": {"store_video": False}, "sources": {}})
    )
    study = Study(out=tmp_path / "out", bench=AblateBench(folder=folder))
    with pytest.raises(StudyError, match="holds no video frames"):
        prepare_bench(study, recipe_to_dict(get_recipe("quick")), print)

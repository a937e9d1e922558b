"""apps/train end to end: the `ci` recipe (a shrunk `quick`) through the real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trajloom.data.video import probe_video
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom_train.evaluate import METHODS
from trajloom_train.recipes import ci

MAIN = Path(__file__).resolve().parents[2] / "apps" / "train" / "__main__.py"
STAGES = ("vae", "stats", "cache", "flow", "onpolicy", "vis")


def _train(runs: Path, *args: str, command: str = "all") -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(MAIN), command, "--recipe", "ci", "--name", "e2e"]
    cmd += ["--runs-dir", str(runs), "--no-progress", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    result = _train(runs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return runs / "e2e"


def test_run_folder_layout(run):
    config = json.loads((run / "config.json").read_text())
    assert config["name"] == "ci"
    for stage in STAGES:
        done = json.loads((run / stage / "DONE.json").read_text())
        assert done["stage"] == stage
    for stage in ("vae", "flow", "onpolicy", "vis"):
        assert (run / stage / "final" / "model.safetensors").is_file()
        assert (run / stage / "metrics.jsonl").is_file()
        assert list((run / stage / "checkpoints").glob("step-*/train_state.pt"))
    assert (run / "stats" / "vae_latent_stats.json").is_file()
    assert (run / "flow" / "previews").is_dir()


def test_trained_set_loads_and_samples(run):
    recipe = ci()
    pipe = TrajLoomPipeline.from_pretrained(run / "trained")
    assert pipe.visibility is not None
    hist = torch.rand(1, recipe.data.history, recipe.generator.num_tokens, 2) * 60
    out = pipe(hist, steps=2)
    assert out.tracks.shape == (1, 1, recipe.data.future, recipe.generator.num_tokens, 2)


def test_evaluation_table_and_preview(run):
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    results = metrics["results"]
    assert set(METHODS) <= set(results) and set(metrics["baselines"]) < set(results)
    assert {"constvel", "linear"} == set(metrics["chosen_on_dev"])
    assert results["ground_truth"]["vepe"] == 0.0 and results["ground_truth"]["min_ade"] == 0.0
    k = ci().eval.samples
    for method in ("trajloom", "static", "constvel_1"):
        assert results[method]["vepe"] > 0 and results[method]["num_videos"] == ci().eval.clips
        assert results[method]["num_samples"] == k and results[method]["min_ade"] > 0
    assert results["static"]["diversity"] == 0.0 and results["trajloom"]["diversity"] > 0
    table = (run / "eval" / "table.md").read_text()
    assert "| trajloom |" in table and f"minADE_{k} (px)" in table
    info = probe_video(run / "preview.mp4")
    data = ci().data
    assert (info.width, info.height) == (2 * data.width, data.height)
    assert info.num_frames == data.history + data.future


@pytest.mark.parametrize("stage", ["vae", "flow"])
def test_rerun_skips_a_finished_stage(run, stage):
    before = (run / stage / "DONE.json").read_text()
    result = _train(run.parent, command=stage)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"[{stage}] already done" in result.stdout
    assert (run / stage / "DONE.json").read_text() == before


def test_trained_set_records_and_reloads_its_context(run):
    from safetensors.torch import load_file

    from trajloom.flow.conditioners import HashedTextEncoder, LightVideoEncoder

    meta = json.loads((run / "trained" / "pipeline.json").read_text())
    assert meta["video_encoder"] == {"kind": "light"}
    assert meta["text_encoder"] == {"kind": "hashed"}
    pipe = TrajLoomPipeline.from_pretrained(run / "trained")
    assert isinstance(pipe.video_encoder, LightVideoEncoder)
    assert isinstance(pipe.text_encoder, HashedTextEncoder)
    # the set's encoders are the last generator stage's jointly trained ones
    for name, module in (
        ("video_encoder", pipe.video_encoder),
        ("text_encoder", pipe.text_encoder),
    ):
        trained = load_file(str(run / "onpolicy" / "final" / name / "model.safetensors"))
        for key, value in module.state_dict().items():
            assert torch.equal(value, trained[key]), (name, key)

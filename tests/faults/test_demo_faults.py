"""Fault injection for apps/demo (issue 25): options that would break the server, a model
cache that grew per steps value, uploads of huge frames, requests that fail half way, and
a minADE of 0.00 shown where nothing could be measured.

Each case asserts the one-line message (exit 2 for the command line, a DemoError for a
request) and that nothing is left behind outside the request's own folder.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trajloom.data.synthetic import SceneConfig, make_scene
from trajloom.data.video import write_video
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom_demo.jobs import DemoError, Job, ModelCache, _new_folder, check_upload, run_job
from trajloom_demo.settings import DemoSettings

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "apps" / "demo" / "__main__.py"
_kit = importlib.util.spec_from_file_location(
    "sample_faults", Path(__file__).with_name("test_sample_faults.py")
)
kit = importlib.util.module_from_spec(_kit)
_kit.loader.exec_module(kit)


def _video(folder: Path, name: str, frames: int = 40) -> Path:
    cfg = SceneConfig(width=128, height=96, stride=16, num_frames=frames)
    return write_video(folder / f"{name}.mp4", make_scene(1, cfg).frames, fps=8)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-upload-mb", "nan"], "--max-upload-mb must be a finite number > 0"),
        (["--max-upload-mb", "inf"], "--max-upload-mb must be a finite number > 0"),
        (["--max-upload-mb", "1e300"], "--max-upload-mb is too large"),
        (["--max-models", "0"], "--max-upload-pixels and --max-models must be >= 1"),
        (["--out", "/proc/x"], "--out folder /proc/x is not writable"),
    ],
)
def test_bad_options_are_one_line_exit_2(args, message, tmp_path):
    result = subprocess.run(
        [sys.executable, str(MAIN), "--port", "0", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    line = kit.one_line_error(result)
    assert message in line, line
    assert list(tmp_path.iterdir()) == []  # no demo-outputs/ or anything else


def test_the_model_cache_is_bounded_and_steps_load_no_copy(tmp_path, nan_set):
    settings = DemoSettings(out=tmp_path / "out", max_models=1)
    models = ModelCache(settings)
    first = models.get(str(nan_set), 4)
    for steps in range(5, 64):
        assert models.get(str(nan_set), steps).pipe is first.pipe  # one model per checkpoint
    assert models.get(str(nan_set), 9).steps == 9 and models.loaded() == [str(nan_set)]
    models.get("baseline:constvel", 4)
    assert models.loaded() == ["baseline:constvel"]  # the least recently used one left


def test_an_upload_of_huge_frames_is_refused_before_decoding(tmp_path):
    video = _video(tmp_path, "wide")
    with pytest.raises(DemoError, match=r"128x96 frames \(12288 pixels\), more than this demo"):
        check_upload(video, 16, 10, max_pixels=128 * 96 - 1)
    assert check_upload(video, 16, 10, max_pixels=128 * 96) == video


def test_an_upload_name_never_leaves_the_output_folder(tmp_path):
    out = tmp_path / "out"
    folder = _new_folder(out, Path("../../.. evil name.mp4"))
    assert folder.parent == out and folder.name.endswith("-_evil_name")


@pytest.fixture(scope="module")
def nan_set(tmp_path_factory) -> Path:
    """A tiny trained set (128x96, stride 32, 17 + 17 frames) whose generator emits NaN."""
    root = tmp_path_factory.mktemp("nan")
    trained = kit._tiny_trained_set(root / "trained")
    pipe = TrajLoomPipeline.from_pretrained(trained)
    with torch.no_grad():
        for p in pipe.generator.parameters():
            p.fill_(float("nan"))
    return pipe.save_pretrained(root / "nan")


def test_a_failed_request_leaves_no_folder(tmp_path, nan_set):
    settings = DemoSettings(out=tmp_path / "out")
    video = _video(tmp_path, "scene")
    job = Job(video, str(nan_set), num_samples=1, steps=2)
    with pytest.raises(DemoError, match="not finite"):
        run_job(job, settings, ModelCache(settings), lambda f, stage: None)
    assert list(settings.out.iterdir()) == []


def test_min_ade_without_a_visible_future_is_n_a_not_zero():
    from trajloom_demo.ui import _summary_text

    entry = {
        "id": "clip",
        "num_samples": 2,
        "metrics": {"ade": [None, None], "fde": [None, None], "min_ade": None},
        "seconds": {"sampling": 1.0},
    }
    text = _summary_text(SimpleNamespace(summary=entry, folder=Path("out")))
    assert "minADE n/a" in text and "0.00" not in text
    entry["metrics"] = {"ade": [1.5, 2.0], "fde": [2.0, 3.0], "min_ade": 1.5}
    assert "minADE 1.50 px" in _summary_text(SimpleNamespace(summary=entry, folder=Path("o")))

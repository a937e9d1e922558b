"""apps/demo without a browser: upload checks, requests at once, the checkpoint list."""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trajloom.data.synthetic import SceneConfig, make_scene
from trajloom.data.video import write_video
from trajloom_demo.jobs import DemoError, Job, ModelCache, check_upload, run_job
from trajloom_demo.settings import BASELINES, DemoSettings, checkpoint_choices

WINDOW = {"width": 128, "height": 96, "stride": 16, "history": 16, "future": 16}


def _video(folder: Path, name: str, frames: int = 32, seed: int = 1) -> Path:
    cfg = SceneConfig(width=128, height=96, stride=16, num_frames=frames)
    return write_video(folder / f"{name}.mp4", make_scene(seed, cfg).frames, fps=8)


def test_bad_uploads_are_explained(tmp_path):
    with pytest.raises(DemoError, match="no video"):
        check_upload(None, 16, 10)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DemoError, match=r"notes\.txt is not a video file"):
        check_upload(text, 16, 10)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00" * 1000)
    with pytest.raises(DemoError, match=r"fake\.mp4 is not a video that can be read"):
        check_upload(fake, 16, 10)
    short = _video(tmp_path, "short", frames=8)
    with pytest.raises(DemoError, match="too short: 8 frames, the model needs 16 frames"):
        check_upload(short, 16, 10)
    big = _video(tmp_path, "big")
    with pytest.raises(DemoError, match=r"big\.mp4 is \d+ MB, more than this demo takes"):
        check_upload(big, 16, big.stat().st_size / 2**20 / 2)
    assert check_upload(big, 16, 10) == big


def test_two_requests_at_once_write_apart(tmp_path):
    settings = DemoSettings(out=tmp_path / "out", **WINDOW)
    models = ModelCache(settings)
    videos = [_video(tmp_path, f"scene{s}", seed=s) for s in (1, 2)]
    results, errors = {}, []

    def request(video: Path) -> None:
        try:
            job = Job(video, "baseline:constvel", num_samples=2, steps=1, seed=3)
            results[video.stem] = run_job(job, settings, models, lambda f, stage: None)
        except Exception as err:  # reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=request, args=(v,)) for v in videos]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results["scene1"].folder != results["scene2"].folder
    for name, result in results.items():
        assert result.folder.parent == settings.out and result.folder.name.endswith(name)
        assert result.overlay == result.folder / "renders" / f"{name}.mp4"
        assert result.summary["id"] == name and result.summary["metrics"]["min_ade"] >= 0
        meta = json.loads((result.folder / "runs" / "sample_001" / name / "meta.json").read_text())
        assert meta["id"] == name and meta["noise_seed"] == 3
        with zipfile.ZipFile(result.archive) as z:
            names = set(z.namelist())
        assert f"runs/sample_000/{name}/pred_tracks.npy" in names
        assert f"wanmove/sample_001/{name}_tracks.npy" in names and "index.html" in names
    # different videos, different futures: nothing was shared between the requests
    a, b = (
        np.load(r.folder / "runs" / "sample_000" / n / "pred_tracks.npy")
        for n, r in results.items()
    )
    assert not np.array_equal(a, b)


def test_refusals_before_any_work(tmp_path):
    settings = DemoSettings(out=tmp_path / "out", **WINDOW)
    models = ModelCache(settings)
    video = _video(tmp_path, "scene")
    tell = lambda f, stage: None  # noqa: E731
    with pytest.raises(DemoError, match="does not take pinned points yet"):
        run_job(Job(video, BASELINES[0], pins=(((1, 2), (3, 4)),)), settings, models, tell)
    with pytest.raises(DemoError, match="no video: upload one"):
        run_job(Job(None, BASELINES[0]), settings, models, tell)
    with pytest.raises(DemoError, match="samples must be 1 to 8, got 9"):
        run_job(Job(video, BASELINES[0], num_samples=9), settings, models, tell)
    with pytest.raises(DemoError, match="checkpoint baseline:nope cannot be used"):
        run_job(Job(video, "baseline:nope"), settings, models, tell)
    assert not settings.out.exists() or not any(settings.out.iterdir())


def test_checkpoint_choices_list_trained_sets_then_baselines(tmp_path):
    runs = tmp_path / "runs"
    (runs / "quick" / "trained").mkdir(parents=True)
    (runs / "quick" / "trained" / "pipeline.json").write_text("{}")
    (runs / "empty").mkdir()
    settings = DemoSettings(runs=runs, checkpoints=("released:/ckpt",))
    assert checkpoint_choices(settings) == [str(runs / "quick"), "released:/ckpt", *BASELINES]

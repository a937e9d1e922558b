"""apps/bench: windows and resampling, building sources, scoring methods, the tables."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from trajloom.data.formats import (
    iter_shard_samples,
    read_manifest,
    read_run_folder,
    save_released_npz,
    write_captions_csv,
)
from trajloom.data.video import read_video, write_video
from trajloom.metrics import forecast_metrics
from trajloom.vae import TrajLoomVAE, save_pretrained, vae_preset
from trajloom_bench.build import BenchConfig, resample_indices, video_windows
from trajloom_bench.cli import app

ROOT = Path(__file__).resolve().parents[2]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"


# Tests of scoring itself: every clip scored, only the methods given (the defaults, tuned
# baselines on dev videos, have their own test)
FOCUS = ("--no-baselines", "--dev-fraction", "0")


def _run(*args: str):
    """The CLI in-process (``uv run apps/bench ...`` calls the same ``main``)."""
    return CliRunner().invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------- windows


def test_resample_indices_nearest_in_time():
    np.testing.assert_array_equal(resample_indices(5, 30.0, 15.0), [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(resample_indices(6, 10.0, 20.0, start=3), [3, 4, 4, 5, 5, 6])
    np.testing.assert_array_equal(resample_indices(4, 29.97, None), [0, 1, 2, 3])


def test_video_windows_count_and_short_videos():
    cfg = BenchConfig(history=4, future=4, windows_per_video=3)
    assert [w[0] for w in video_windows(20, 30.0, cfg)] == [0, 8]  # a third would need 24
    assert video_windows(7, 30.0, cfg) == []
    half = BenchConfig(history=4, future=4, fps=15.0)
    (w,) = video_windows(16, 30.0, half)
    np.testing.assert_array_equal(w, np.arange(0, 16, 2))
    assert video_windows(14, 30.0, half) == []  # its last frame is source frame 14


# --------------------------------------------------------------------------- synthetic bench


@pytest.fixture(scope="module")
def synthetic_bench(tmp_path_factory) -> Path:
    """Two synthetic sources on a 5 x 5 grid (enough for FVMD's 5 x 5 cells)."""
    root = tmp_path_factory.mktemp("bench")
    res = _run(
        "build",
        root,
        "--source",
        "synthetic=4",
        "--source",
        "kubric=3",
        "--width",
        160,
        "--height",
        160,
        "--stride",
        32,
        "--history",
        16,
        "--future",
        16,
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    return root


def test_build_synthetic_sources(synthetic_bench):
    index = json.loads((synthetic_bench / "bench.json").read_text())
    assert list(index["sources"]) == ["kubric", "synthetic"]  # the paper's order
    assert index["sources"]["synthetic"]["num_samples"] == 4
    urls, _manifest = read_manifest(synthetic_bench / "synthetic")
    samples = [s for u in urls for s in iter_shard_samples(Path(u))]
    assert [s.id for s in samples] == [f"synthetic_{i:05d}" for i in range(4)]
    for s in samples:
        assert s.tracks.shape == (32, 25, 2) and s.visibility.shape == (32, 25)
        assert s.meta["width"] == 160 and s.meta["source"] == "synthetic"
        assert read_video(s.video).shape == (32, 160, 160, 3)


def test_eval_table_on_synthetic_sources(synthetic_bench, tmp_path):
    out = tmp_path / "res"
    res = _run(
        "eval",
        synthetic_bench,
        "--method",
        "static=baseline:static",
        "--method",
        "cv=baseline:constvel",
        "--out",
        out,
        "--clip-len",
        8,
        "--quiet",
        *FOCUS,
    )
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["sources"] == ["kubric", "synthetic"]
    for method in ("static", "cv"):
        for source in ("kubric", "synthetic"):
            r = results["results"][method][source]
            for key in ("fvmd", "fvmd_long", "flow_tv", "div_curl_energy", "vepe"):
                assert r[key] is not None and r[key] >= 0, (method, source, key, r["notes"])
    # A static future has zero flow: FlowTV and DivCurlE vanish exactly.
    for source in ("kubric", "synthetic"):
        assert results["results"]["static"][source]["flow_tv"] == 0.0
        assert results["results"]["static"][source]["div_curl_energy"] == 0.0
    table = (out / "table.md").read_text()
    assert table.splitlines()[0] == "| Metric | Method | kubric | synthetic |"
    assert "| FVMD-Long | static |" in table and "| DivCurlE | static |" in table
    with (out / "per_video.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * (3 + 4)
    with (out / "table.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4
    # index.html: the same two tables, sortable, one row per CSV row, and no network
    page = (out / "index.html").read_text()
    assert page.count('<table class="sortable">') == 2
    assert page.count("<tr>") == 2 + 4 + 2 * (3 + 4)  # two header rows, then the CSV rows
    assert "http://" not in page and "https://" not in page
    run = read_run_folder(out / "runs" / "cv" / "synthetic" / "synthetic_00002")
    assert run.pred_tracks.shape == (16, 25, 2) and run.gt_tracks.shape == (16, 25, 2)

    # Run folders produced elsewhere score to the same numbers.
    again = tmp_path / "again"
    res = _run(
        "eval",
        synthetic_bench,
        "--method",
        f"cv=runs:{out / 'runs' / 'cv'}",
        "--out",
        again,
        "--clip-len",
        8,
        "--quiet",
        *FOCUS,
    )
    assert res.exit_code == 0, res.output
    assert (
        json.loads((again / "results.json").read_text())["results"]["cv"]
        == results["results"]["cv"]
    )


def test_eval_defaults_tune_baselines_on_dev_videos_and_score_test_videos(tmp_path):
    """By default: dev videos (a quarter, by source video) choose the baseline windows and
    are never scored; static, constant velocity over 1 frame and at the chosen window, and
    the line are reported beside the given methods; the strongest baseline is in bold."""
    from trajloom.data.stream import heldout_key

    bench = tmp_path / "bench"
    res = _run("build", bench, "--source", "synthetic=12", "--width", 160, "--height", 160,
               "--stride", 32, "--history", 12, "--future", 8, "--quiet")  # fmt: skip
    assert res.exit_code == 0, res.output
    out = tmp_path / "res"
    res = _run("eval", bench, "--method", "mine=baseline:linear:3", "--out", out, "--clip-len",
               6, "--quiet")  # fmt: skip
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    settings = results["settings"]
    chosen = settings["chosen_on_dev"]
    dev = {f"synthetic_{i:05d}" for i in range(12) if heldout_key(f"dev/synthetic/{i:05d}", 0.25)}
    assert 0 < len(dev) < 12 and chosen["dev_clips"] == len(dev)
    for kind, candidates in (("constvel", ["1", "2", "4", "8"]), ("linear", ["2", "4", "8"])):
        scores = chosen[kind]["dev_scores"]
        assert sorted(scores, key=int) == candidates
        assert scores[str(chosen[kind]["window"])] == min(scores.values())
    rows = {"mine", "static", "constvel_1", f"linear_{chosen['linear']['window']}"}
    rows.add(f"constvel_{chosen['constvel']['window']}")
    assert set(results["results"]) == rows and set(settings["baselines"]) == rows
    scored = {d.name for d in (out / "runs" / "static" / "synthetic").iterdir()}
    assert scored == {f"synthetic_{i:05d}" for i in range(12)} - dev  # dev never scored
    assert settings["captions"] == "history" and settings["dev_fraction"] == 0.25
    meta = json.loads((out / "runs/mine/synthetic" / sorted(scored)[0] / "meta.json").read_text())
    assert meta["spec"] == "baseline:linear:3"
    assert "**" in (out / "table.md").read_text()


def test_eval_with_several_samples_reports_best_of_k(synthetic_bench, tmp_path):
    out = tmp_path / "res"
    args = ["eval", synthetic_bench, "--source", "synthetic", "--clip-len", 8, "--quiet", *FOCUS]
    res = _run(*args, "--method", "cv=baseline:constvel", "--samples", 3, "--out", out)
    assert res.exit_code == 0, res.output
    runs = out / "runs" / "cv" / "synthetic"
    assert sorted(d.name for d in runs.iterdir()) == ["sample_000", "sample_001", "sample_002"]
    cv = json.loads((out / "results.json").read_text())["results"]["cv"]["synthetic"]
    # a deterministic baseline: K copies, so best-of-3 is its one future's error
    one = forecast_metrics([runs / "sample_000"])
    assert cv["num_samples"] == 3 and cv["diversity"] == 0.0
    assert cv["min_ade"] == pytest.approx(one["min_ade"], rel=1e-12) and cv["min_ade"] > 0
    assert "| minADE_K (px) | cv |" in (out / "table.md").read_text()

    # run folders made elsewhere with K sample folders: scored best-of-K
    other = tmp_path / "other" / "synthetic"
    for k in range(2):
        shutil.copytree(runs / "sample_000", other / f"sample_{k:03d}")
    for pred in (other / "sample_001").glob("*/pred_tracks.npy"):
        np.save(pred, np.load(pred) + 3.0)
    again = tmp_path / "again"
    res = _run(*args, "--method", f"two=runs:{other.parent}", "--out", again)
    assert res.exit_code == 0, res.output
    two = json.loads((again / "results.json").read_text())["results"]["two"]["synthetic"]
    assert two["num_samples"] == 2 and two["diversity"] == pytest.approx(np.hypot(3, 3))
    assert two["min_ade"] <= cv["min_ade"] + 1e-12 and two["fvmd"] == cv["fvmd"]

    single = _run(*args, "--method", "cv=baseline:constvel", "--out", tmp_path / "k1")
    assert single.exit_code == 0, single.output
    assert "minADE" not in (tmp_path / "k1" / "table.md").read_text()


def test_eval_vae_reconstruction_reports_vepe(tmp_path):
    bench = tmp_path / "bench"
    res = _run(
        "build",
        bench,
        "--source",
        "synthetic=2",
        "--width",
        128,
        "--height",
        96,
        "--history",
        20,
        "--future",
        17,
        "--no-store-video",
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    torch.manual_seed(0)
    save_pretrained(TrajLoomVAE(vae_preset("tiny")), tmp_path / "vae")  # 17 frames
    out = tmp_path / "res"
    res = _run("eval", bench, "--method", f"recon=vae:{tmp_path / 'vae'}", "--out", out, "--quiet",
               *FOCUS)  # fmt: skip
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())["results"]["recon"]["synthetic"]
    assert r["vepe"] > 0 and r["num_videos"] == 2
    # The future starts at the bench's boundary (frame 20), whatever the method's windows.
    urls, _ = read_manifest(bench / "synthetic")
    sample = next(iter_shard_samples(Path(urls[0])))
    run = read_run_folder(out / "runs" / "recon" / "synthetic" / sample.id)
    np.testing.assert_array_equal(run.gt_tracks, sample.tracks[20:37])
    assert run.meta["cond_index"] == 20


def test_eval_refuses_bad_methods_and_reports_mismatch(synthetic_bench, tmp_path):
    res = _run("eval", synthetic_bench, "--method", "x=baseline:nope", "--out", tmp_path)
    assert res.exit_code == 2 and "baseline:nope" in res.output
    res = _run("eval", synthetic_bench, "--method", f"x={tmp_path / 'none'}", "--out", tmp_path)
    assert res.exit_code == 2 and "none" in res.output
    res = _run("eval", synthetic_bench, "--method", "w=baseline:whn", "--out", tmp_path)
    assert res.exit_code == 2 and "trained configuration" in res.output
    torch.manual_seed(0)
    save_pretrained(TrajLoomVAE(vae_preset("tiny")), tmp_path / "vae")  # a 3 x 4 grid
    res = _run(
        "eval",
        synthetic_bench,
        "--method",
        f"r=vae:{tmp_path / 'vae'}",
        "--out",
        tmp_path / "o",
        "--source",
        "kubric",
        "--quiet",
    )
    assert res.exit_code == 1
    assert "resolution mismatch" in res.output and "kubric/kubric_00000" in res.output


# --------------------------------------------------------------------------- real and released


@pytest.mark.skipif(not VIDEOS.is_dir(), reason=f"shared videos not found at {VIDEOS}")
def test_build_from_raw_videos_with_resampling_and_bad_files(tmp_path):
    src = tmp_path / "raw"
    (src / "sub").mkdir(parents=True)
    for p in VIDEOS.glob("*.mp4"):
        (src / "sub" / p.name).symlink_to(p)
    write_video(src / "short.mp4", np.zeros((5, 64, 64, 3), np.uint8), fps=10)
    (src / "broken.mp4").write_bytes(b"no video here")
    bench = tmp_path / "bench"
    res = _run(
        "build",
        bench,
        "--source",
        f"kinetics={src}",
        "--width",
        128,
        "--height",
        96,
        "--history",
        6,
        "--future",
        6,
        "--fps",
        15,
        "--quiet",
    )
    assert res.exit_code == 1, res.output  # broken.mp4 is a failed item (issue 14's policy)
    assert "1 unreadable or damaged videos" in res.output
    urls, manifest = read_manifest(bench / "kinetics")
    assert manifest["num_samples"] == 3
    skipped = " ".join(manifest["skipped"])
    assert "short.mp4" in skipped and "shorter than one window" in skipped
    assert "broken.mp4" in skipped
    samples = [s for u in urls for s in iter_shard_samples(Path(u))]
    for s in samples:
        assert s.id.startswith("sub__") and s.tracks.shape == (12, 12, 2)
        assert s.meta["fps"] == 15.0
        # ~30 fps sources at 15 fps: every other frame, 12 frames span source frames 0..22
        assert s.meta["origin_frames"] == [0, 22]
        assert read_video(s.video).shape == (12, 96, 128, 3)


def test_build_from_released_layout_and_score(tmp_path):
    rel = tmp_path / "released"
    rng = np.random.default_rng(0)
    for i in range(3):
        grid = np.stack(np.meshgrid(np.arange(4) * 32.0, np.arange(3) * 32.0), -1).reshape(-1, 2)
        tracks = grid[None] + np.cumsum(rng.normal(0, 0.5, (24, 12, 2)), 0) + 4
        save_released_npz(rel / f"{i}.npz", tracks.astype(np.float32), np.ones((24, 12), bool))
        write_video(rel / f"{i}.mp4", np.zeros((24, 96, 128, 3), np.uint8), fps=16)
    write_captions_csv(rel / "captions.csv", {"0": "a cat", "1": "a dog", "2": "rain"})
    bench = tmp_path / "bench"
    res = _run(
        "build",
        bench,
        "--released",
        f"magicdata={rel}",
        "--width",
        128,
        "--height",
        96,
        "--history",
        12,
        "--future",
        12,
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    urls, _manifest = read_manifest(bench / "magicdata")
    samples = {s.id: s for u in urls for s in iter_shard_samples(Path(u))}
    assert sorted(samples) == ["0", "1", "2"] and samples["1"].meta["caption"] == "a dog"
    out = tmp_path / "res"
    res = _run("eval", bench, "--method", "cv=baseline:constvel", "--out", out, "--quiet", *FOCUS)
    assert res.exit_code == 0, res.output
    run = read_run_folder(out / "runs" / "cv" / "magicdata" / "1")
    np.testing.assert_allclose(run.gt_tracks, samples["1"].tracks[12:24])


# --------------------------------------------------------------------------- trained sets


@pytest.mark.slow
def test_eval_trained_set_from_a_run_folder_and_released_layout(
    tmp_path, make_trained_set, make_released_layout
):
    run = tmp_path / "run"
    make_trained_set(run / "trained")
    released = make_released_layout(run / "trained", tmp_path / "released")
    bench = tmp_path / "bench"
    res = _run(
        "build",
        bench,
        "--source",
        "synthetic=3",
        "--width",
        128,
        "--height",
        96,
        "--history",
        17,
        "--future",
        17,
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "res"
    res = _run(
        "eval",
        bench,
        "--method",
        f"tiny={run}",
        "--method",
        f"rel=released:{released}",
        "--method",
        "static=baseline:static",
        "--out",
        out,
        "--steps",
        2,
        "--clip-len",
        8,
        "--quiet",
        *FOCUS,
    )
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())["results"]
    assert results["tiny"]["synthetic"]["num_videos"] == 3
    assert results["tiny"]["synthetic"]["flow_tv"] > 0
    for key in ("flow_tv", "div_curl_energy", "vepe"):
        assert results["rel"]["synthetic"][key] == pytest.approx(
            results["tiny"]["synthetic"][key], rel=1e-4
        )
    shutil.rmtree(run)

"""The forecaster layer (``trajloom.flow.forecast``): specs, every forecaster kind, one run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from trajloom.data.clip import Clip
from trajloom.encoding import DEFAULT_GRID, GridSpec, query_points
from trajloom.flow.config import generator_preset
from trajloom.flow.forecast import (
    BaselineForecaster,
    ClipRun,
    Forecast,
    ForecastError,
    MethodSpec,
    PipelineForecaster,
    RunFolders,
    TrueFuture,
    VAEReconstruction,
    forecast_clip,
    forecast_run,
    forecast_runs,
    load_method,
    one_line,
    parse_method,
    sample_folder,
)
from trajloom.flow.model import TrajLoomGenerator
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom.flow.visibility import VisibilityConfig, VisibilityPredictor
from trajloom.vae import LatentStats, TrajLoomVAE, save_pretrained, vae_preset

CPU = torch.device("cpu")
GRID = GridSpec(128, 96, 32)  # the tiny presets' grid: 4 x 3 = 12 points
T = 17  # tiny VAE: history = future = 17 frames


def _walk(frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Grid points drifting right, "t n 2" float32 inside the image, all visible."""
    rng = np.random.default_rng(seed)
    q = query_points(GRID).numpy()
    steps = np.cumsum(rng.normal(0.0, 0.5, (frames, GRID.num_points, 2)), axis=0) + np.array(
        [1.0, 0.0]
    )
    tracks = np.clip(q[None] + steps + 2.0, 0.0, [GRID.width - 1.0, GRID.height - 1.0])
    return tracks.astype(np.float32), np.ones((frames, GRID.num_points), bool)


def _clip(seed: int = 0) -> Clip:
    tracks, vis = _walk(2 * T, seed)
    return Clip.cut(f"clip{seed}", tracks, vis, start=0, history=T, future=T, caption="a cat")


@pytest.fixture(scope="module")
def trained_set(tmp_path_factory) -> Path:
    """An untrained tiny pipeline with a visibility head, saved as a trained set."""
    torch.manual_seed(0)
    vae = TrajLoomVAE(vae_preset("tiny"))
    cfg = vae.config
    gen = TrajLoomGenerator(
        generator_preset(
            "tiny",
            latent_channels=cfg.latent_channels,
            hist_latent_frames=cfg.latent_frames,
            fut_latent_frames=cfg.latent_frames,
            num_frames_in=cfg.num_frames,
            use_video_cond=False,
            use_text_cond=False,
        )
    )
    stats = LatentStats(torch.zeros(cfg.latent_channels), torch.ones(cfg.latent_channels))
    head = VisibilityPredictor(VisibilityConfig(latent_channels=cfg.latent_channels, hidden=8))
    pipe = TrajLoomPipeline(vae, gen, stats, visibility=head)
    return pipe.save_pretrained(tmp_path_factory.mktemp("run") / "trained")


# --------------------------------------------------------------------------- specs


def test_parse_prefixed_and_bare_specs(tmp_path: Path) -> None:
    assert parse_method("baseline:static") == MethodSpec("baseline", "static")
    assert str(parse_method(" baseline:constvel ")) == "baseline:constvel"
    assert parse_method(f"released:{tmp_path}") == MethodSpec("released", str(tmp_path))
    assert parse_method(f"vae:{tmp_path}").kind == "vae"
    assert parse_method(str(tmp_path)) == MethodSpec("trained", str(tmp_path))
    (tmp_path / "src" / "vid").mkdir(parents=True)
    np.save(tmp_path / "src" / "vid" / "pred_tracks.npy", np.zeros((2, 1, 2)))
    assert parse_method(str(tmp_path)) == MethodSpec("runs", str(tmp_path))
    assert parse_method(f"runs:{tmp_path}").kind == "runs"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "baseline:nope",
            "baseline:nope: unknown baseline 'nope'; use baseline:static, baseline:constvel",
        ),
        ("baseline:whn", "trained configuration"),
        ("released:/no/such/dir", "/no/such/dir does not exist"),
        ("vae:/no/such/dir", "/no/such/dir does not exist"),
        ("/no/such/dir", "/no/such/dir does not exist; give a trained-set folder"),
    ],
)
def test_bad_specs_name_the_input(text: str, words: str) -> None:
    with pytest.raises(ForecastError, match=re.escape(words)) as info:
        parse_method(text)
    assert isinstance(info.value, ValueError)


def test_load_errors_name_the_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ForecastError, match="holds no trained set"):
        load_method(parse_method(str(tmp_path)), CPU)
    with pytest.raises(ForecastError, match=r"trajloom_vae_config\.json not found"):
        load_method(parse_method(f"released:{tmp_path}"), CPU)
    with pytest.raises(ForecastError, match="holds no trajectory-VAE"):
        load_method(parse_method(f"vae:{tmp_path}"), CPU)
    with pytest.raises(ForecastError, match="baseline:nope: unknown baseline"):
        BaselineForecaster("nope", GRID, T, T)


def test_run_folders_are_not_loaded(tmp_path: Path) -> None:
    runs = load_method(parse_method(f"runs:{tmp_path}"), CPU)
    assert runs == RunFolders(tmp_path) and runs.source("kubric") == tmp_path / "kubric"


# --------------------------------------------------------------------------- forecasters


def test_baselines_take_the_window_they_are_given() -> None:
    static = load_method(parse_method("baseline:static"), CPU, grid=GRID, history=5, future=7)
    assert isinstance(static, BaselineForecaster)
    assert (static.grid, static.history, static.future) == (GRID, 5, 7)
    default = load_method(parse_method("baseline:constvel"), CPU)
    assert (default.grid, default.history, default.future) == (DEFAULT_GRID, 81, 81)
    hist, vis = _walk(5)
    out = static.forecast(hist, vis, frames=None, caption="", num_samples=3, seed=0)
    assert out.tracks.shape == (3, 7, 12, 2) and out.visibility.shape == (3, 7, 12)
    assert out.probability is None
    np.testing.assert_allclose(out.tracks[2, -1], np.minimum(hist[-1], [127 - 1e-3, 95 - 1e-3]))
    assert static.describe() == {"method": "baseline:static", "window": None, "H": 96, "W": 128}


def test_constvel_leaves_the_image_invisible_and_clipped() -> None:
    cv = BaselineForecaster("constvel", GRID, 2, 4)
    hist = np.stack([query_points(GRID).numpy() + 1.0] * 2)
    hist[1, 0] = [120.0, 50.0]
    hist[0, 0] = [100.0, 50.0]  # 20 px per frame to the right: out after one frame
    out = cv.forecast(hist, np.ones((2, 12), bool), frames=None, caption="", num_samples=1, seed=0)
    assert out.visibility[0, :, 0].tolist() == [False] * 4
    assert out.tracks[0, :, 0, 0].max() == pytest.approx(127 - 1e-3)
    assert out.visibility[0, :, 1:].all()


def test_trained_set_forecaster_matches_the_pipeline(trained_set: Path) -> None:
    run_folder = trained_set.parent
    forecaster = load_method(parse_method(str(run_folder)), CPU, solver="euler", steps=2)
    assert isinstance(forecaster, PipelineForecaster)
    assert (forecaster.grid, forecaster.history, forecaster.future) == (GRID, T, T)
    assert not forecaster.wants_frames and not forecaster.needs_future
    hist, vis = _walk(T)
    a = forecaster.forecast(hist, vis, frames=None, caption="x", num_samples=2, seed=3)
    b = forecaster.forecast(hist, vis, frames=None, caption="x", num_samples=2, seed=3)
    assert a.tracks.shape == (2, T, 12, 2) and a.probability.shape == (2, T, 12)
    np.testing.assert_array_equal(a.tracks, b.tracks)
    pipe = TrajLoomPipeline.from_pretrained(trained_set)
    out = pipe(torch.from_numpy(hist), torch.from_numpy(vis), num_samples=2, steps=2, seed=3)
    np.testing.assert_allclose(a.tracks, out.tracks[0].numpy(), atol=1e-6)
    info = forecaster.describe()
    assert info["method"] == str(trained_set) and info["steps"] == 2 and info["W"] == 128


def test_vae_reconstruction_reads_the_true_future(trained_set: Path, tmp_path: Path) -> None:
    forecaster = load_method(parse_method(f"vae:{trained_set}"), CPU, history=9)
    assert isinstance(forecaster, VAEReconstruction) and forecaster.needs_future
    assert (forecaster.grid, forecaster.history, forecaster.future) == (GRID, 9, T)
    hist, vis = _walk(9)
    gt, gvis = _walk(T, seed=1)
    gvis[3, 4] = False
    with pytest.raises(ForecastError, match="VAE reconstruction reads the true future"):
        forecaster.forecast(hist, vis, frames=None, caption="", num_samples=1, seed=0)
    with pytest.raises(ForecastError, match=f"takes {T} future frames, the clip has 5"):
        forecaster.forecast(
            hist,
            vis,
            frames=None,
            caption="",
            num_samples=1,
            seed=0,
            fut_tracks=gt[:5],
            fut_vis=gvis,
        )
    out = forecaster.forecast(
        hist, vis, frames=None, caption="", num_samples=2, seed=0, fut_tracks=gt, fut_vis=gvis
    )
    assert out.tracks.shape == (2, T, 12, 2) and np.isfinite(out.tracks).all()
    np.testing.assert_array_equal(out.visibility[1], gvis)
    # A VAE folder of its own loads the same way.
    vae = save_pretrained(TrajLoomVAE(vae_preset("tiny")), tmp_path / "vae")
    assert isinstance(load_method(parse_method(f"vae:{vae}"), CPU), VAEReconstruction)


def test_true_future_is_the_ground_truth() -> None:
    truth = TrueFuture(GRID, T, T)
    gt, gvis = _walk(T)
    out = truth.forecast(
        gt, gvis, frames=None, caption="", num_samples=2, seed=0, fut_tracks=gt, fut_vis=gvis
    )
    np.testing.assert_array_equal(out.tracks[1], gt)
    with pytest.raises(ForecastError, match="the true future reads the true future"):
        truth.forecast(gt, gvis, frames=None, caption="", num_samples=1, seed=0)


# --------------------------------------------------------------------------- one run


def test_forecast_run_gives_the_run_folder_fields() -> None:
    clip = _clip()
    run = forecast_run(BaselineForecaster("static", GRID, T, T), clip, seed=4, meta={"m": 1})
    assert isinstance(run, ClipRun)
    fields = run.as_dict()
    assert list(fields) == [
        "query_xy",
        "pred_tracks",
        "pred_visibility",
        "gt_tracks",
        "gt_visibility",
        "pred_visibility_prob",
        "meta",
    ]
    np.testing.assert_array_equal(run.query_xy, query_points(GRID).numpy())
    assert run.pred_tracks.shape == (T, 12, 2) and run.pred_visibility.shape == (T, 12)
    assert run.gt_tracks is clip.fut_tracks and run.pred_visibility_prob is None
    assert run.meta == {
        "id": "clip0",
        "hist_len": T,
        "future_len": T,
        "H": 96,
        "W": 128,
        "grid_stride": 32,
        "noise_seed": 4,
        "m": 1,
    }
    truth = forecast_run(TrueFuture(GRID, T, T), clip, seed=0)
    np.testing.assert_array_equal(truth.pred_tracks, clip.fut_tracks)


def test_forecast_runs_gives_one_run_per_sample(trained_set: Path) -> None:
    clip = _clip()
    static = forecast_runs(BaselineForecaster("static", GRID, T, T), clip, num_samples=3, seed=4)
    assert [r.meta["sample"] for r in static] == [0, 1, 2]
    for run in static[1:]:  # a deterministic forecaster: K copies
        np.testing.assert_array_equal(run.pred_tracks, static[0].pred_tracks)
    single = forecast_run(BaselineForecaster("static", GRID, T, T), clip, seed=4)
    np.testing.assert_array_equal(single.pred_tracks, static[0].pred_tracks)
    assert "sample" not in single.meta
    pipe = load_method(parse_method(str(trained_set.parent)), CPU, solver="euler", steps=2)
    runs = forecast_runs(pipe, clip, num_samples=2, seed=3)
    futures = pipe.forecast(
        clip.hist_tracks, clip.hist_vis, frames=None, caption="", num_samples=2, seed=3
    )
    for k, run in enumerate(runs):  # the K futures of one call, in order
        np.testing.assert_array_equal(run.pred_tracks, futures.tracks[k])
        np.testing.assert_array_equal(run.pred_visibility_prob, futures.probability[k])
        assert run.meta["noise_seed"] == 3 and run.gt_tracks is clip.fut_tracks
    assert sample_folder(Path("r"), 0, 1) == Path("r")
    assert sample_folder(Path("r"), 2, 3) == Path("r") / "sample_002"


def test_forecast_run_refuses_a_clip_cut_for_another_forecaster() -> None:
    with pytest.raises(ForecastError, match="clip0: 17 history frames of 12 points, but the"):
        forecast_run(BaselineForecaster("static", GRID, 9, T), _clip(), seed=0)
    with pytest.raises(ForecastError, match="48 points"):
        forecast_run(BaselineForecaster("static", GridSpec(256, 192, 32), T, T), _clip(), seed=0)


# --------------------------------------------------------------------------- broken models


class _NaNForecaster(BaselineForecaster):
    """A baseline whose future has one NaN coordinate (a broken model's output)."""

    def forecast(self, *args, **kwargs) -> Forecast:  # type: ignore[no-untyped-def]
        out = super().forecast(*args, **kwargs)
        out.tracks[0, 3, 2, 1] = np.nan
        return out


def test_non_finite_forecasts_fail_naming_method_and_clip() -> None:
    clip = _clip()
    broken = _NaNForecaster("static", GRID, T, T)
    with pytest.raises(
        ForecastError, match=r"baseline:static on clip .*: 1 of .* tracks are not finite"
    ):
        forecast_clip(broken, clip, num_samples=2, seed=0)
    with pytest.raises(ForecastError, match="not finite"):
        forecast_run(broken, clip, seed=0)
    good = Forecast(
        np.zeros((1, 2, 3, 2)), np.ones((1, 2, 3), bool), latents=np.full((1, 1), np.inf)
    )
    with pytest.raises(ForecastError, match="1 of 1 predicted latents are not finite"):
        good.check("m", "c")


def test_load_errors_are_one_line() -> None:
    import pickle

    err = pickle.UnpicklingError(
        "Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` "
        "will likely succeed.\n\nTrying to load unsupported GLOBAL posix.system whose module "
        "posix is blocked.\n\nCheck the documentation of torch.load to learn more"
    )
    text = one_line(err)
    assert "\n" not in text and "weights_only` set to `False" not in text
    assert text.endswith("unsupported GLOBAL posix.system whose module posix is blocked.")

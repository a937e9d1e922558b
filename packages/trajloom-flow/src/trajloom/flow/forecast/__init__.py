"""Forecasters: everything that predicts futures of history tracks, behind one protocol.

* :class:`Forecast`, :class:`Forecaster`, :class:`ForecastError` (:mod:`.base`);
* the forecasters: :class:`BaselineForecaster`, :class:`PipelineForecaster` (trained
  sets, released checkpoints), :class:`VAEReconstruction`, :class:`TrueFuture`
  (:mod:`.forecasters`); :func:`with_pins`: a pipeline's futures steered by pins;
* method specs, one parser for every app: :func:`parse_method`, :func:`load_method`,
  :class:`RunFolders` (:mod:`.methods`); where checkpoints are found on disk:
  :func:`find_trained_set`, :func:`find_released_files`, :func:`find_vae_folder`
  (:mod:`.locate`); the device: :func:`resolve_device` (:mod:`.device`);
* forecasting a clip: :func:`forecast_clip` (futures, refused when not finite) and
  :func:`forecast_run` / :func:`forecast_runs`, one or K futures of a clip as
  run-folder arrays (:mod:`.harness`);
* baselines tuned on development clips: :func:`choose_baseline_windows`,
  :func:`baseline_rows` (:mod:`.tuning`).

    from trajloom.flow.forecast import load_method, parse_method, resolve_device

    forecaster = load_method(parse_method("baseline:constvel"), resolve_device("auto"))
    futures = forecaster.forecast(hist, vis, frames=None, caption="", num_samples=4, seed=0)
"""

from trajloom.flow.forecast.base import Forecast, Forecaster, ForecastError, one_line
from trajloom.flow.forecast.device import resolve_device
from trajloom.flow.forecast.forecasters import (
    BASELINES,
    BaselineForecaster,
    PipelineForecaster,
    TrueFuture,
    VAEReconstruction,
    with_pins,
)
from trajloom.flow.forecast.harness import (
    ClipLike,
    ClipRun,
    forecast_clip,
    forecast_run,
    forecast_runs,
    sample_folder,
)
from trajloom.flow.forecast.locate import (
    PREFERRED_NAMES,
    ReleasedFiles,
    find_released_files,
    find_trained_set,
    find_vae_folder,
)
from trajloom.flow.forecast.methods import MethodSpec, RunFolders, load_method, parse_method
from trajloom.flow.forecast.tuning import (
    WindowChoice,
    baseline_rows,
    choose_baseline_windows,
    window_candidates,
)

__all__ = [
    "BASELINES",
    "PREFERRED_NAMES",
    "BaselineForecaster",
    "ClipLike",
    "ClipRun",
    "Forecast",
    "ForecastError",
    "Forecaster",
    "MethodSpec",
    "PipelineForecaster",
    "ReleasedFiles",
    "RunFolders",
    "TrueFuture",
    "VAEReconstruction",
    "WindowChoice",
    "baseline_rows",
    "choose_baseline_windows",
    "find_released_files",
    "find_trained_set",
    "find_vae_folder",
    "forecast_clip",
    "forecast_run",
    "forecast_runs",
    "load_method",
    "one_line",
    "parse_method",
    "resolve_device",
    "sample_folder",
    "window_candidates",
    "with_pins",
]

"""Forecasts of a clip, as the arrays of released-layout run folders.

Evaluation (``apps/bench eval``, the end of ``apps/train``) forecasts each clip once
(:func:`forecast_run`) or K times (:func:`forecast_runs`, one run folder per sample) and
writes what they return with ``trajloom.data.formats.write_run_folder``
(``RunFolder(**run.as_dict())``), then scores the folders with ``trajloom.metrics``.
Clips are anything shaped like ``trajloom.data.clip.Clip`` (:class:`ClipLike`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from trajloom.encoding import query_points
from trajloom.flow.forecast.base import Forecast, Forecaster, ForecastError

__all__ = [
    "ClipLike",
    "ClipRun",
    "forecast_clip",
    "forecast_run",
    "forecast_runs",
    "sample_folder",
]


class ClipLike(Protocol):
    """What :func:`forecast_run` reads of a clip (``trajloom.data.clip.Clip`` has it all).

    ``hist_tracks`` "th n 2" px, ``hist_vis`` "th n" bool, ``fut_tracks`` "tf n 2" /
    ``fut_vis`` "tf n" or None, ``frames`` "t h w 3" uint8 from the first history frame
    on, or None.
    """

    id: str
    hist_tracks: np.ndarray
    hist_vis: np.ndarray
    fut_tracks: np.ndarray | None
    fut_vis: np.ndarray | None
    frames: np.ndarray | None
    caption: str

    @property
    def history(self) -> int: ...


@dataclass
class ClipRun:
    """One clip's forecast with the fields of ``trajloom.data.formats.RunFolder``.

    ``query_xy`` "n 2", ``pred_tracks`` "tf n 2" px (as forecast: writers apply the
    released clip to the image where they want it), ``pred_visibility`` "tf n" bool,
    ``pred_visibility_prob`` "tf n" or None, ``gt_tracks`` / ``gt_visibility`` the clip's
    true future or None, ``meta`` the run's ``meta.json``.
    """

    query_xy: np.ndarray
    pred_tracks: np.ndarray
    pred_visibility: np.ndarray
    gt_tracks: np.ndarray | None
    gt_visibility: np.ndarray | None
    pred_visibility_prob: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The fields by name (no copies): ``RunFolder(**run.as_dict())``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def sample_folder(root: Path, k: int, num_samples: int) -> Path:
    """Where sample ``k`` of ``num_samples`` goes under a method's runs root: ``root``
    itself for one sample, else ``root/sample_<k:03d>`` (the layout ``trajloom-metrics
    score`` reads for best-of-K)."""
    return Path(root) if num_samples == 1 else Path(root) / f"sample_{k:03d}"


def forecast_clip(
    forecaster: Forecaster, clip: ClipLike, *, num_samples: int, seed: int
) -> Forecast:
    """``num_samples`` futures of ``clip`` (sample k from ``seed``), checked finite.

    The one way apps ask a forecaster for futures: the clip must be cut for the
    forecaster (its grid and history window), the history frames go to forecasters that
    want them, and the result passes :meth:`Forecast.check`. Raises
    :class:`ForecastError` (a ``ValueError``) when the clip does not fit or the model
    emits non-finite numbers, and whatever the forecaster raises for a clip it cannot use.
    """
    grid = forecaster.grid
    if clip.hist_tracks.shape[1] != grid.num_points or clip.history != forecaster.history:
        raise ForecastError(
            f"{clip.id}: {clip.history} history frames of {clip.hist_tracks.shape[1]} points, "
            f"but the forecaster reads {forecaster.history} frames of {grid.num_points} points "
            "(its grid); cut the clip for the forecaster"
        )
    frames = None
    if clip.frames is not None and forecaster.wants_frames:
        frames = clip.frames[: clip.history]
    forecast = forecaster.forecast(
        clip.hist_tracks,
        clip.hist_vis,
        frames=frames,
        caption=clip.caption,
        num_samples=num_samples,
        seed=seed,
        fut_tracks=clip.fut_tracks,
        fut_vis=clip.fut_vis,
    )
    return forecast.check(str(forecaster.describe().get("method", "the forecaster")), clip.id)


def forecast_run(
    forecaster: Forecaster, clip: ClipLike, *, seed: int, meta: dict[str, Any] | None = None
) -> ClipRun:
    """One future of ``clip`` (sample 0, noise from ``seed``) as a :class:`ClipRun`.

    The clip must be cut for the forecaster: its grid and window. ``meta`` adds to the
    run's standard entries (``id``, ``hist_len``, ``future_len``, ``H``, ``W``,
    ``grid_stride``, ``noise_seed``). Raises :class:`ForecastError` (a ``ValueError``) when
    the clip does not fit or the forecast is not finite (:func:`forecast_clip`), and
    whatever the forecaster raises for a clip it cannot use.
    """
    return forecast_runs(forecaster, clip, num_samples=1, seed=seed, meta=meta)[0]


def forecast_runs(
    forecaster: Forecaster,
    clip: ClipLike,
    *,
    num_samples: int,
    seed: int,
    meta: dict[str, Any] | None = None,
) -> list[ClipRun]:
    """``num_samples`` futures of ``clip`` drawn together from ``seed``, one
    :class:`ClipRun` each (sample k's ``meta`` adds ``sample``: k), for the sample folders
    ``sample_000``, ``sample_001``, ... that ``trajloom.metrics`` scores best-of-K.

    Deterministic forecasters (the baselines, the true future) give K copies of one
    future. Raises as :func:`forecast_run`.
    """
    grid = forecaster.grid
    forecast = forecast_clip(forecaster, clip, num_samples=num_samples, seed=seed)
    query = query_points(grid).numpy()
    base = {
        "id": clip.id,
        "hist_len": clip.history,
        "future_len": forecaster.future,
        "H": grid.height,
        "W": grid.width,
        "grid_stride": grid.stride,
        "noise_seed": seed,
        **(meta or {}),
    }
    prob = forecast.probability
    return [
        ClipRun(
            query_xy=query,
            pred_tracks=forecast.tracks[k],
            pred_visibility=forecast.visibility[k],
            gt_tracks=clip.fut_tracks,
            gt_visibility=clip.fut_vis,
            pred_visibility_prob=None if prob is None else prob[k],
            meta={**base, "sample": k} if num_samples > 1 else base,
        )
        for k in range(num_samples)
    ]

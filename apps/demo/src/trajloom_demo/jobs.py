"""One demo request: a video in, a folder of futures out (the sample app's outputs).

:func:`run_job` checks the upload, tracks the grid through the video's history (and its
future, when the video is long enough to give a ground truth), samples the futures with
the chosen checkpoint (``trajloom.flow.forecast``), writes run folders, Wan-Move export,
renders and ``index.html`` with ``trajloom.data.predictions`` (the code ``apps/sample``
runs), and zips the folder. Pins (``Job.pins``, placed by clicks on the boundary frame:
:mod:`trajloom_demo.pinning`) are checked against the checkpoint's window before any work,
resolved to grid points on the tracked clip, and steer the sampling
(``trajloom.flow.forecast.with_pins``); baselines cannot be steered and are refused. The
overlays then draw the pins, the summary holds each sample's pin error, and the folder
``pins.json``. Every request writes into its own new folder, so requests
running at once never share a file. Problems a user can fix raise :class:`DemoError`
with a message for the page.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajloom.data.clip import Clip
from trajloom.data.geometry import DEFAULT_FIT, DEFAULT_MAX_RENDER_SIZE, Fit, capped_size
from trajloom.data.inputs import InputDamage, InputError, clips_from_video
from trajloom.data.names import safe_stem
from trajloom.data.predictions import (
    Futures,
    OutputOptions,
    render_names,
    write_predictions,
    write_predictions_report,
)
from trajloom.data.tracking import make_tracker
from trajloom.data.video import (
    VIDEO_SUFFIXES,
    VideoReadError,
    probe_video,
    read_video,
    resize_frames,
)
from trajloom.encoding import DEFAULT_FUTURE, DEFAULT_GRID, DEFAULT_HISTORY, GridSpec
from trajloom.flow.forecast import (
    Forecaster,
    ForecastError,
    PipelineForecaster,
    RunFolders,
    forecast_clip,
    load_method,
    parse_method,
    resolve_device,
    with_pins,
)
from trajloom.flow.pins import (
    Pin,
    PinError,
    pin_markers,
    pins_from_json,
    pins_to_json,
    resolve_pins,
)
from trajloom.metrics import forecast_summary
from trajloom_demo.settings import DemoSettings

__all__ = [
    "Boundary",
    "DemoError",
    "Job",
    "JobResult",
    "ModelCache",
    "boundary_of",
    "check_upload",
    "pin_errors",
    "pins_from_page",
    "run_job",
]

Progress = Callable[[float, str], None]


class DemoError(ValueError):
    """A request that cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Job:
    """What a user asked for."""

    video: Path | None  # None: nothing uploaded or picked
    checkpoint: str
    num_samples: int = 4
    steps: int = 20
    seed: int = 0
    # Pinned points (working-resolution pixels; a source pixel names the grid point
    # nearest it at the boundary frame): the futures are steered to meet them.
    pins: tuple[Pin, ...] = ()


@dataclass(frozen=True)
class JobResult:
    """Where a finished request's outputs are."""

    folder: Path  # runs/, wanmove/, renders/, index.html, summary of this request
    overlay: Path  # history + sample 0 over the video (MP4)
    grid: Path | None  # every sample side by side (MP4; None for one sample)
    truth: Path | None  # the tracked true future (MP4; None when the video is too short)
    archive: Path  # the folder, zipped
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelCache:
    """Loaded checkpoints, shared by every request: at most ``settings.max_models`` at
    once (the least recently used one leaves). A model's identity is its checkpoint
    alone; the sampling steps of a request are a setting of the forecaster made from it,
    so no steps value loads a second copy."""

    settings: DemoSettings
    _models: OrderedDict[str, Forecaster] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, checkpoint: str, steps: int) -> Forecaster:
        """The forecaster of ``checkpoint`` sampling with ``steps`` (loaded on first use)."""
        with self._lock:  # one load at a time; later requests find it loaded
            model = self._models.pop(checkpoint, None)
            if model is None:
                while len(self._models) >= self.settings.max_models:
                    self._models.popitem(last=False)  # its memory goes with the last request
                model = self._load(checkpoint, steps)
            self._models[checkpoint] = model  # most recently used last
        if isinstance(model, PipelineForecaster) and model.steps != steps:
            return PipelineForecaster(
                model.pipe, solver=model.solver, steps=steps, origin=model.origin
            )
        return model

    def any_steps(self, checkpoint: str, steps: int) -> Forecaster:
        """:meth:`get` (kept for the page: showing a window loads no second model)."""
        return self.get(checkpoint, steps)

    def loaded(self) -> list[str]:
        """The checkpoints in memory, least recently used first."""
        with self._lock:
            return list(self._models)

    def _load(self, checkpoint: str, steps: int) -> Forecaster:
        s = self.settings
        grid = GridSpec(
            s.width or DEFAULT_GRID.width,
            s.height or DEFAULT_GRID.height,
            s.stride or DEFAULT_GRID.stride,
        )
        try:
            method = load_method(
                parse_method(checkpoint),
                resolve_device(s.device),
                steps=steps,
                grid=grid,
                history=s.history or DEFAULT_HISTORY,
                future=s.future or DEFAULT_FUTURE,
            )
        except (ForecastError, ValueError, FileNotFoundError) as err:
            raise DemoError(f"checkpoint {checkpoint} cannot be used: {err}") from err
        if isinstance(method, RunFolders):
            raise DemoError(f"{checkpoint} holds run folders, not a checkpoint; pick another")
        return method


def check_upload(
    video: Path | None, history: int, max_mb: float, max_pixels: int | None = None
) -> Path:
    """The upload as a path, or a :class:`DemoError` saying what is wrong with it.

    ``max_pixels``: the largest frame (width x height, read from the header before any
    frame is decoded)."""
    if video is None:
        raise DemoError("no video: upload one or pick an example, then press Predict")
    video = Path(video)
    if not video.is_file():
        raise DemoError(f"the video {video.name} is gone from the server; upload it again")
    size_mb = video.stat().st_size / 2**20
    if size_mb > max_mb:
        raise DemoError(
            f"{video.name} is {size_mb:.0f} MB, more than this demo takes ({max_mb:.0f} MB); "
            "cut or compress it"
        )
    if video.suffix.lower() not in VIDEO_SUFFIXES:
        raise DemoError(
            f"{video.name} is not a video file this demo reads ({', '.join(VIDEO_SUFFIXES)})"
        )
    try:
        info = probe_video(video)
    except VideoReadError as err:
        raise DemoError(f"{video.name} is not a video that can be read ({err})") from err
    if max_pixels is not None and info.width * info.height > max_pixels:
        raise DemoError(
            f"{video.name} has {info.width}x{info.height} frames ({info.width * info.height} "
            f"pixels), more than this demo takes ({max_pixels} pixels per frame); scale it down"
        )
    if info.num_frames < history:
        raise DemoError(
            f"{video.name} is too short: {info.num_frames} frames, the model needs "
            f"{history} frames of history (at {info.fps or 0:.0f} fps: "
            f"{history / (info.fps or 16):.1f} s); upload a longer video"
        )
    return video


def _new_folder(out: Path, video: Path) -> Path:
    """A fresh folder for one request: time, a random part, the video's name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = out / f"{stamp}-{uuid.uuid4().hex[:8]}-{safe_stem(video.stem)[:40]}"
    folder.mkdir(parents=True)
    return folder


def _track(video: Path, forecaster: Forecaster) -> Clip:
    """The clip of ``video``: the grid tracked through its history (+ future)."""
    try:
        items = clips_from_video(
            video,
            grid=forecaster.grid,
            history=forecaster.history,
            future=forecaster.future,
            tracker_factory=lambda: make_tracker("flow"),
        )
    except (InputError, VideoReadError, ValueError) as err:
        raise DemoError(f"{video.name}: {err}") from err
    clips = [c for c in items if not isinstance(c, InputDamage)]
    return clips[0]


@dataclass(frozen=True)
class Boundary:
    """What the page needs to place pins for a video and a checkpoint."""

    frame: np.ndarray  # "h w 3" uint8: the last history frame of the video (render size)
    future: int  # future frames of the checkpoint (pins take frames 0 .. future - 1)
    steerable: bool  # the checkpoint follows pins (baselines do not)
    fit: Fit  # how the video is placed in the working frame (the tracker's view of it)


def boundary_of(
    video: Path | None, checkpoint: str, steps: int, settings: DemoSettings, models: ModelCache
) -> Boundary:
    """The boundary frame of ``video`` for ``checkpoint``: the last history frame, as the
    renders show it (the video's own pixels, shrunk to the render cap), and the fit that
    places it in the working frame as the tracker sees it (``clip.frames[history - 1]``):
    pins' source pixels are picked on it and mapped through the fit."""
    forecaster = models.any_steps(checkpoint, steps)
    video = check_upload(
        video, forecaster.history, settings.max_upload_mb, settings.max_upload_pixels
    )
    try:
        source = read_video(video, start=forecaster.history - 1, num_frames=1)
    except VideoReadError as err:
        raise DemoError(f"{video.name}: cannot read its last history frame ({err})") from err
    # placed in the working frame as clips_from_video places it (trajloom.data.geometry)
    placed = Fit((source.shape[2], source.shape[1]), forecaster.grid.size, DEFAULT_FIT)
    frame = resize_frames(source, capped_size(placed.source, DEFAULT_MAX_RENDER_SIZE))[0]
    steerable = isinstance(forecaster, PipelineForecaster)
    return Boundary(frame, forecaster.future, steerable, placed)


def pins_from_page(records: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> tuple[Pin, ...]:
    """The page's pin records (``trajloom_demo.pinning``) as pins; a bad one: DemoError."""
    try:
        return tuple(pins_from_json(list(records)))
    except PinError as err:
        raise DemoError(str(err)) from None


def pin_errors(tracks: np.ndarray, pins: list[Pin]) -> list[float] | None:
    """Per sample, the largest distance (px) from a pinned point to its target at its
    frame, over every target of the "at" pins; ``tracks`` "k tf n 2", ``pins`` resolved
    (grid indices). None without "at" pins ("outside" pins are made invisible there)."""
    markers = pin_markers(pins)  # rows (point, future frame, x, y)
    if not len(markers):
        return None
    point, frame = markers[:, 0].astype(int), markers[:, 1].astype(int)
    distance = np.linalg.norm(tracks[:, frame, point] - markers[None, :, 2:], axis=-1)
    return [round(float(d), 3) for d in distance.max(axis=1)]


def _steer(forecaster: Forecaster, pins: list[Pin] | tuple[Pin, ...]) -> Forecaster:
    """``forecaster`` steered by ``pins`` (checked against its window); else DemoError."""
    try:
        return with_pins(forecaster, list(pins))
    except ForecastError as err:  # a baseline
        raise DemoError(f"{err} (press Clear under the boundary frame)") from None
    except PinError as err:
        raise DemoError(str(err)) from None


def _resolve(pins: tuple[Pin, ...], clip: Clip, grid: GridSpec) -> list[Pin]:
    """Pins with source pixels replaced by the grid point nearest them at the boundary."""
    boundary = torch.from_numpy(clip.hist_tracks[-1]), torch.from_numpy(clip.hist_vis[-1])
    try:
        return resolve_pins(pins, *boundary, grid)
    except PinError as err:
        raise DemoError(str(err)) from None


def _check(job: Job, settings: DemoSettings) -> None:
    if job.video is None:
        raise DemoError("no video: upload one or pick an example, then press Predict")
    if not 1 <= job.num_samples <= settings.max_samples:
        raise DemoError(f"samples must be 1 to {settings.max_samples}, got {job.num_samples}")
    if not 1 <= job.steps <= settings.max_steps:
        raise DemoError(f"steps must be 1 to {settings.max_steps}, got {job.steps}")


def run_job(job: Job, settings: DemoSettings, models: ModelCache, tell: Progress) -> JobResult:
    """Do one request; ``tell(fraction, stage)`` hears the progress."""
    _check(job, settings)
    tell(0.0, "loading the model")
    forecaster = models.get(job.checkpoint, job.steps)
    _steer(forecaster, job.pins)  # refuse bad pins (and pinned baselines) before any work
    video = check_upload(
        job.video, forecaster.history, settings.max_upload_mb, settings.max_upload_pixels
    )
    tell(0.1, "tracking")
    start = time.perf_counter()
    clip = _track(video, forecaster)
    seconds = {"tracking": time.perf_counter() - start}
    pins = _resolve(job.pins, clip, forecaster.grid)
    forecaster = _steer(forecaster, pins)  # this clip's grid points: exact markers, errors
    folder = _new_folder(settings.out, video)
    try:
        return _forecast_into(folder, job, forecaster, clip, pins, video.name, seconds, tell)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a failed request leaves no folder
        raise


def _forecast_into(
    folder: Path,
    job: Job,
    forecaster: Forecaster,
    clip: Clip,
    pins: list[Pin],
    video_name: str,
    seconds: dict[str, float],
    tell: Progress,
) -> JobResult:
    """Sample the futures of ``clip`` and write them, the report and the zip into ``folder``."""
    tell(0.4, "sampling")
    start = time.perf_counter()
    try:
        forecast = forecast_clip(forecaster, clip, num_samples=job.num_samples, seed=job.seed)
    except ForecastError as err:
        raise DemoError(str(err)) from err
    seconds["sampling"] = time.perf_counter() - start
    tell(0.6, "rendering")
    entry = write_predictions(
        clip,
        Futures(forecast.tracks, forecast.visibility, forecast.probability),
        forecaster.grid,
        folder,
        meta={"noise_seed": job.seed, **forecaster.describe()},
        options=OutputOptions(gif=False),
        markers=pin_markers(pins) if pins else None,
    )
    entry["seconds"] = {**{k: round(v, 3) for k, v in seconds.items()}, **entry["seconds"]}
    if clip.fut_tracks is not None:
        entry["metrics"] = forecast_summary(forecast.tracks, clip.fut_tracks, clip.fut_vis)
    if pins:
        entry["pins"] = _write_pins(folder, job.pins, pins, pin_errors(forecast.tracks, pins))
    write_predictions_report(folder, [entry], f"TrajLoom futures of {video_name}")
    tell(0.95, "packing")
    return _result(folder, clip, job.num_samples, entry)


def _write_pins(
    folder: Path, clicked: tuple[Pin, ...], pins: list[Pin], errors: list[float] | None
) -> dict[str, Any]:
    """``pins.json``: the pins on this clip's grid points (``apps/sample --pins pins.json``
    replays them), the pins as clicked (source pixels) and each sample's pin error (px)."""
    record = {
        **pins_to_json(pins),
        "clicked": pins_to_json(clicked)["pins"],
        "error_px": errors,
    }
    (folder / "pins.json").write_text(json.dumps(record, indent=2))
    return record


def _result(folder: Path, clip: Clip, num_samples: int, entry: dict[str, Any]) -> JobResult:
    """Zip the folder; where the page finds each output."""
    archive = Path(shutil.make_archive(str(folder), "zip", root_dir=folder))
    renders = {
        role: folder / "renders" / name
        for role, name in render_names(clip.id, num_samples, clip.fut_tracks is not None).items()
    }
    return JobResult(
        folder=folder,
        overlay=renders["sample_000"],
        grid=renders.get("grid"),
        truth=renders.get("truth"),
        archive=archive,
        summary=entry,
    )

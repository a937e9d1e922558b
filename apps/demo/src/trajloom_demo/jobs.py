"""One demo request: a video in, a folder of futures out (the sample app's outputs).

:func:`run_job` checks the upload, tracks the grid through the video's history (and its
future, when the video is long enough to give a ground truth), samples the futures with
the chosen checkpoint (``trajloom.flow.forecast``), writes run folders, Wan-Move export,
renders and ``index.html`` with ``trajloom.data.predictions`` (the code ``apps/sample``
runs), and zips the folder. Every request writes into its own new folder, so requests
running at once never share a file. Problems a user can fix raise :class:`DemoError`
with a message for the page.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajloom.data.clip import Clip
from trajloom.data.inputs import InputDamage, InputError, clips_from_video
from trajloom.data.predictions import (
    Futures,
    OutputOptions,
    render_names,
    write_predictions,
    write_predictions_report,
)
from trajloom.data.tracking import make_tracker
from trajloom.data.video import VIDEO_SUFFIXES, VideoReadError, probe_video
from trajloom.encoding import DEFAULT_FUTURE, DEFAULT_GRID, DEFAULT_HISTORY, GridSpec
from trajloom.flow.forecast import (
    Forecaster,
    ForecastError,
    RunFolders,
    forecast_clip,
    load_method,
    parse_method,
    resolve_device,
)
from trajloom.metrics import forecast_summary
from trajloom_demo.settings import DemoSettings

__all__ = ["DemoError", "Job", "JobResult", "ModelCache", "check_upload", "run_job"]

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
    # HOOK (issue 17, steerable futures): pinned points as ((x, y) at the boundary frame,
    # (x, y) target) pairs in working-resolution pixels, collected by clicks on the
    # boundary frame in the page. Not wired yet, so a job with pins is refused; wire them
    # in with trajloom.flow.forecast.with_pins (trajloom.flow.pins.Pin, source pixels).
    pins: tuple[tuple[tuple[float, float], tuple[float, float]], ...] = ()


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
    """Forecasters by (checkpoint, steps), loaded once and shared by every request."""

    settings: DemoSettings
    _models: dict[tuple[str, int], Forecaster] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, checkpoint: str, steps: int) -> Forecaster:
        with self._lock:  # one load at a time; later requests find it loaded
            key = (checkpoint, steps)
            if key not in self._models:
                self._models[key] = self._load(checkpoint, steps)
            return self._models[key]

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


def check_upload(video: Path | None, history: int, max_mb: float) -> Path:
    """The upload as a path, or a :class:`DemoError` saying what is wrong with it."""
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
    folder = out / f"{stamp}-{uuid.uuid4().hex[:8]}-{video.stem[:40]}"
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


def run_job(job: Job, settings: DemoSettings, models: ModelCache, tell: Progress) -> JobResult:
    """Do one request; ``tell(fraction, stage)`` hears the progress."""
    if job.video is None:
        raise DemoError("no video: upload one or pick an example, then press Predict")
    if job.pins:
        raise DemoError("the demo does not take pinned points yet; use apps/sample --pin")
    if not 1 <= job.num_samples <= settings.max_samples:
        raise DemoError(f"samples must be 1 to {settings.max_samples}, got {job.num_samples}")
    if not 1 <= job.steps <= settings.max_steps:
        raise DemoError(f"steps must be 1 to {settings.max_steps}, got {job.steps}")
    tell(0.0, "loading the model")
    forecaster = models.get(job.checkpoint, job.steps)
    video = check_upload(job.video, forecaster.history, settings.max_upload_mb)
    folder = _new_folder(settings.out, video)
    tell(0.1, "tracking")
    start = time.perf_counter()
    clip = _track(video, forecaster)
    seconds = {"tracking": time.perf_counter() - start}
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
    )
    entry["seconds"] = {**{k: round(v, 3) for k, v in seconds.items()}, **entry["seconds"]}
    if clip.fut_tracks is not None:
        entry["metrics"] = forecast_summary(forecast.tracks, clip.fut_tracks, clip.fut_vis)
    write_predictions_report(folder, [entry], f"TrajLoom futures of {video.name}")
    tell(0.95, "packing")
    archive = Path(shutil.make_archive(str(folder), "zip", root_dir=folder))
    renders = {
        role: folder / "renders" / name
        for role, name in render_names(
            clip.id, job.num_samples, clip.fut_tracks is not None
        ).items()
    }
    return JobResult(
        folder=folder,
        overlay=renders["sample_000"],
        grid=renders.get("grid"),
        truth=renders.get("truth"),
        archive=archive,
        summary=entry,
    )

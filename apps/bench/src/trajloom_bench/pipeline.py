"""Trained sets and released checkpoints as bench methods, through ``TrajLoomPipeline``.

Same rules as the sample app: a trained-set folder holds ``pipeline.json``; a run folder
of ``apps/train`` holds one up to three levels down (``trained`` - what apps/train
writes - ``final``, ``export`` or ``trained_set`` preferred, else the newest);
``released:DIR`` holds the authors' configs and ``.pt`` files (``*vae*``, ``*vis*``, the
generator the remaining one). A WHN-style trained set
(``PipelineConfig(mode="whn")``) is a trained-set folder like any other. The search
itself is ``trajloom.flow.checkpoints``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trajloom.flow import checkpoints
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom_bench.methods import Forecast, MethodError, MethodSpec

__all__ = ["PipelineMethod", "find_released_files", "find_trained_set", "load_pipeline_forecaster"]


def find_trained_set(folder: Path) -> Path:
    """The trained-set folder of ``folder`` (itself or inside a run folder)."""
    try:
        return checkpoints.find_trained_set(folder)
    except checkpoints.NoTrainedSetError as err:
        raise MethodError(
            f"{folder} holds no trained set (no pipeline.json in it or below it); give the "
            "folder apps/train exported, released:DIR, vae:DIR or runs:DIR"
        ) from err


def find_released_files(root: Path) -> dict[str, Path | None]:
    """The released configs and checkpoints under ``root``."""
    try:
        return checkpoints.find_released_files(root).as_kwargs()
    except checkpoints.CheckpointSpecError as err:
        raise MethodError(str(err)) from err


class PipelineMethod:
    """A ``TrajLoomPipeline`` as a bench forecaster (its own grid and window)."""

    def __init__(self, pipe: TrajLoomPipeline, *, solver: str, steps: int) -> None:
        self.pipe = pipe
        self.solver = solver
        self.steps = steps
        self.grid = pipe.grid
        self.history = pipe.num_frames
        self.future = pipe.num_frames
        self.wants_frames = pipe.video_encoder is not None and pipe.generator.config.use_video_cond

    def forecast(
        self,
        hist_tracks: np.ndarray,
        hist_vis: np.ndarray,
        *,
        future: int,
        frames: np.ndarray | None,
        caption: str,
        num_samples: int,
        seed: int,
        gt_tracks: np.ndarray | None = None,
        gt_vis: np.ndarray | None = None,
    ) -> Forecast:
        tracks, visibility, prob = checkpoints.forecast_arrays(
            self.pipe,
            hist_tracks,
            hist_vis,
            frames=frames,
            caption=caption,
            num_samples=num_samples,
            solver=self.solver,
            steps=self.steps,
            seed=seed,
        )
        return Forecast(tracks, visibility, prob)


def load_pipeline_forecaster(
    spec: MethodSpec, device: torch.device, *, solver: str, steps: int
) -> PipelineMethod:
    """Load a ``trained`` or ``released`` method on ``device``."""
    if spec.kind == "baseline":
        raise MethodError(
            f"method {spec.name}: the WHN-style baseline is a trained configuration "
            "(PipelineConfig(mode='whn')); train it with apps/train and give its trained-set "
            "folder as the SPEC"
        )
    try:
        if spec.kind == "released":
            pipe = TrajLoomPipeline.from_released(
                **find_released_files(Path(spec.target)), device=device
            )
        else:
            pipe = TrajLoomPipeline.from_pretrained(
                find_trained_set(Path(spec.target)), device=device
            )
    except (FileNotFoundError, KeyError, RuntimeError) as err:
        raise MethodError(f"method {spec.name}: {spec.target} cannot be loaded ({err})") from err
    return PipelineMethod(pipe, solver=solver, steps=steps)

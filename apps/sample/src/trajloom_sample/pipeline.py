"""Trained sets and released checkpoints as forecasters, through ``TrajLoomPipeline``.

Where a checkpoint is found:

* a trained-set folder: it holds ``pipeline.json`` (``TrajLoomPipeline.save_pretrained``);
* a run folder of ``apps/train``: the trained set inside it (searched up to three levels
  down; with several, one named ``trained`` (what apps/train writes), ``final``,
  ``export`` or ``trained_set`` wins, else the most recently written one);
* ``released:DIR``: the authors' files anywhere under DIR — configs
  ``trajloom_vae_config.json``, ``trajloom_generator_config.json``,
  ``vae_latent_stats.json``, optionally ``vis_predictor_config.json``, and ``.pt``
  checkpoints told apart by name (``*vae*``, ``*vis*``, the generator the remaining one).

The search itself is ``trajloom.flow.checkpoints``; this module turns its errors into
``CheckpointError`` and wraps the pipeline as the app's forecaster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajloom.flow import checkpoints
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom_sample.model import CheckpointError, Forecast

__all__ = [
    "PipelineForecaster",
    "find_released_files",
    "find_trained_set",
    "load_pipeline_forecaster",
]


def find_trained_set(folder: Path) -> Path:
    """The trained-set folder of ``folder`` (itself or inside a run folder)."""
    try:
        return checkpoints.find_trained_set(folder)
    except checkpoints.CheckpointSpecError as err:
        raise CheckpointError(str(err)) from err


def find_released_files(root: Path) -> dict[str, Path | None]:
    """The released configs and checkpoints under ``root`` (see the module docstring)."""
    try:
        return checkpoints.find_released_files(root).as_kwargs()
    except checkpoints.CheckpointSpecError as err:
        raise CheckpointError(str(err)) from err


class PipelineForecaster:
    """A ``TrajLoomPipeline`` behind the sample app's forecaster interface."""

    def __init__(self, pipe: TrajLoomPipeline, *, solver: str, steps: int, origin: str) -> None:
        self.pipe = pipe
        self.solver = solver
        self.steps = steps
        self.origin = origin
        self.grid = pipe.grid
        self.history = pipe.num_frames
        self.future = pipe.num_frames

    def forecast(
        self,
        hist_tracks: np.ndarray,
        hist_vis: np.ndarray,
        *,
        frames: np.ndarray | None,
        caption: str,
        num_samples: int,
        seed: int,
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

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.origin,
            "solver": self.solver,
            "steps": self.steps,
            "mode": self.pipe.config.mode,
            "video_context": self.pipe.video_encoder is not None,
            "text_context": self.pipe.text_encoder is not None,
            "H": self.grid.height,
            "W": self.grid.width,
        }


def load_pipeline_forecaster(
    checkpoint: str,
    device: torch.device,
    *,
    solver: str,
    steps: int,
    video_encoder: Path | None = None,
    text_encoder: Path | None = None,
) -> PipelineForecaster:
    """Load ``checkpoint`` (trained set, run folder or ``released:DIR``) on ``device``."""
    kind, colon, target = checkpoint.partition(":")
    try:
        if colon and kind == "released":
            files = find_released_files(Path(target))
            pipe = TrajLoomPipeline.from_released(
                **files, wan_vae_path=video_encoder, umt5_path=text_encoder, device=device
            )
            origin = f"released:{target}"
        else:
            folder = find_trained_set(Path(checkpoint))
            pipe = TrajLoomPipeline.from_pretrained(
                folder, device=device, wan_vae_path=video_encoder, umt5_path=text_encoder
            )
            origin = str(folder)
    except (FileNotFoundError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {checkpoint}: cannot be loaded ({err})") from err
    return PipelineForecaster(pipe, solver=solver, steps=steps, origin=origin)

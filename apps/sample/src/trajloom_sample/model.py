"""Checkpoints of the sample app, behind one small interface.

``--checkpoint`` is a trained-set folder (``TrajLoomPipeline.from_pretrained``), a run
folder of ``apps/train`` that holds one, ``released:DIR`` (the authors' checkpoints and
configs, loaded with ``TrajLoomPipeline.from_released``), or ``baseline:static`` /
``baseline:constvel`` (``trajloom.flow.baselines``; the grid and window then come from
the command line). Anything else - a VAE-only folder, a lone weights file, an empty
folder - is refused with a message saying what it is and what to give.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from trajloom.encoding import GridSpec
from trajloom.flow import checkpoints
from trajloom.flow.baselines import constant_velocity_future, static_future

__all__ = [
    "BaselineForecaster",
    "CheckpointError",
    "Forecast",
    "Forecaster",
    "load_forecaster",
    "resolve_device",
]


class CheckpointError(ValueError):
    """A checkpoint is missing or of the wrong kind; the message names it."""


@dataclass
class Forecast:
    """Sampled futures: tracks "s tf n 2" px, visibility "s tf n" bool, probability or None."""

    tracks: np.ndarray
    visibility: np.ndarray
    probability: np.ndarray | None = None


class Forecaster(Protocol):
    """Predicts futures of history tracks on its grid."""

    grid: GridSpec
    history: int
    future: int

    def forecast(
        self,
        hist_tracks: np.ndarray,
        hist_vis: np.ndarray,
        *,
        frames: np.ndarray | None,
        caption: str,
        num_samples: int,
        seed: int,
    ) -> Forecast: ...

    def describe(self) -> dict[str, Any]: ...


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU when one is present, else the CPU; otherwise a torch device name."""
    try:
        return checkpoints.resolve_device(name)
    except checkpoints.CheckpointSpecError as err:
        raise CheckpointError(str(err)) from err


@dataclass
class BaselineForecaster:
    """A non-learned baseline of ``trajloom.flow.baselines`` on a given grid and window."""

    kind: str
    grid: GridSpec
    history: int
    future: int
    options: dict[str, Any] = field(default_factory=dict)

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
        hist = torch.from_numpy(np.ascontiguousarray(hist_tracks, dtype=np.float32))
        vis = torch.from_numpy(np.ascontiguousarray(hist_vis, dtype=bool))
        fn = static_future if self.kind == "static" else constant_velocity_future
        out = fn(hist, vis, self.future, num_samples=num_samples, spec=self.grid)
        return Forecast(out.tracks.numpy(), out.visibility.numpy())

    def describe(self) -> dict[str, Any]:
        return {"method": f"baseline:{self.kind}", "H": self.grid.height, "W": self.grid.width}


def load_forecaster(
    checkpoint: str,
    device: torch.device,
    *,
    solver: str = "euler",
    steps: int = 100,
    baseline_setup: dict[str, int] | None = None,
    video_encoder: Path | None = None,
    text_encoder: Path | None = None,
) -> Forecaster:
    """The forecaster named by ``--checkpoint`` (see the module docstring)."""
    kind, colon, target = checkpoint.partition(":")
    if colon and kind == "baseline":
        if target not in ("static", "constvel"):
            raise CheckpointError(
                f"--checkpoint {checkpoint}: unknown baseline; use baseline:static or baseline:constvel"
            )
        setup = dict(baseline_setup or {})
        grid = GridSpec(setup.get("width", 832), setup.get("height", 480), setup.get("stride", 32))
        return BaselineForecaster(target, grid, setup.get("history", 81), setup.get("future", 81))
    from trajloom_sample.pipeline import load_pipeline_forecaster

    return load_pipeline_forecaster(
        checkpoint,
        device,
        solver=solver,
        steps=steps,
        video_encoder=video_encoder,
        text_encoder=text_encoder,
    )

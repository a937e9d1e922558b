"""The forecasters: baselines, a ``TrajLoomPipeline``, VAE reconstruction, the true future.

Each satisfies :class:`~trajloom.flow.forecast.base.Forecaster` on numpy arrays of one
clip; :func:`~trajloom.flow.forecast.methods.load_method` builds them from method specs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trajloom.encoding import GridSpec
from trajloom.flow.baselines import constant_velocity_future, linear_future, static_future
from trajloom.flow.forecast.base import Forecast, Forecaster, ForecastError
from trajloom.flow.guidance import GuidanceConfig
from trajloom.flow.pins import Pin, check_pins, pins_to_json
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom.vae import TrajLoomVAE

__all__ = [
    "BASELINES",
    "DEFAULT_WINDOWS",
    "BaselineForecaster",
    "PipelineForecaster",
    "TrueFuture",
    "VAEReconstruction",
    "baseline_name",
    "with_pins",
]

BASELINES = ("static", "constvel", "linear")
"""Non-learned baselines of ``trajloom.flow.baselines``, by their spec names."""

DEFAULT_WINDOWS: dict[str, int | None] = {"static": None, "constvel": 1, "linear": 8}
"""The history frames a baseline reads when its spec names none (``baseline:constvel`` is
the two-frame velocity; evaluations choose the window on a development split)."""

MIN_WINDOWS = {"constvel": 1, "linear": 2}


def baseline_name(kind: str, window: int | None) -> str:
    """The spec of a baseline: ``baseline:static``, ``baseline:constvel:8``, ..."""
    return f"baseline:{kind}" if window is None else f"baseline:{kind}:{window}"


def _tensor(array: np.ndarray, dtype: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))


def _true_future(
    name: str, fut_tracks: np.ndarray | None, fut_vis: np.ndarray | None, future: int
) -> tuple[np.ndarray, np.ndarray]:
    """The true future "tf n 2" / "tf n" a forecaster reads, checked against its length."""
    if fut_tracks is None or fut_vis is None:
        raise ForecastError(
            f"{name} reads the true future, and this clip has none; give clips with ground truth"
        )
    if fut_tracks.shape[0] != future:
        raise ForecastError(
            f"{name} takes {future} future frames, the clip has {fut_tracks.shape[0]}"
        )
    return np.ascontiguousarray(fut_tracks, np.float32), np.ascontiguousarray(fut_vis, bool)


@dataclass
class BaselineForecaster:
    """A non-learned baseline (``static``, ``constvel`` or ``linear``) on a given grid and
    window; ``window`` is the history frames it reads (constant velocity: the frames its
    velocity is averaged over; linear: the frames of the fit; None: its default).

    Points that leave the image turn invisible and are clipped to it (the released rule);
    the futures are deterministic, so the samples are copies.
    """

    kind: str
    grid: GridSpec
    history: int
    future: int
    window: int | None = None
    wants_frames: bool = False
    needs_future: bool = False

    def __post_init__(self) -> None:
        if self.kind not in BASELINES:
            raise ForecastError(
                f"baseline:{self.kind}: unknown baseline; use "
                + " or ".join(f"baseline:{b}" for b in BASELINES)
            )
        if self.kind == "static":
            if self.window is not None:
                raise ForecastError("baseline:static reads no window; give baseline:static")
            return
        window = DEFAULT_WINDOWS[self.kind] if self.window is None else self.window
        assert window is not None  # every kind but static has a default
        self.window = window
        low, high = MIN_WINDOWS[self.kind], self.history - (self.kind == "constvel")
        if not low <= window <= high:
            raise ForecastError(
                f"{baseline_name(self.kind, self.window)}: the window must be {low}..{high} "
                f"frames for {self.history} history frames; give a window in that range"
            )

    def forecast(
        self,
        hist_tracks: np.ndarray,
        hist_vis: np.ndarray,
        *,
        frames: np.ndarray | None,
        caption: str,
        num_samples: int,
        seed: int,
        fut_tracks: np.ndarray | None = None,
        fut_vis: np.ndarray | None = None,
    ) -> Forecast:
        hist, vis = _tensor(hist_tracks, np.float32), _tensor(hist_vis, bool)
        if self.kind == "static":
            out = static_future(hist, vis, self.future, num_samples=num_samples, spec=self.grid)
        else:
            fn = constant_velocity_future if self.kind == "constvel" else linear_future
            window = int(self.window or 1)
            out = fn(hist, vis, self.future, window=window, num_samples=num_samples, spec=self.grid)
        return Forecast(out.tracks.numpy(), out.visibility.numpy())

    def describe(self) -> dict[str, Any]:
        return {
            "method": baseline_name(self.kind, self.window),
            "window": self.window,
            "H": self.grid.height,
            "W": self.grid.width,
        }


class PipelineForecaster:
    """A ``TrajLoomPipeline`` (trained set or released checkpoints) sampling with ``solver``.

    History video frames are used when the pipeline has a video encoder and its generator
    is video-conditioned; the caption whenever the pipeline has a text encoder (an empty
    caption is the null embedding, as caption dropout trains it). ``origin`` names where
    the pipeline came from (``describe()["method"]``).
    ``pins``: constraints every clip's futures meet (guided sampling with ``guidance``).
    """

    def __init__(
        self,
        pipe: TrajLoomPipeline,
        *,
        solver: str,
        steps: int,
        origin: str,
        pins: tuple[Pin, ...] = (),
        guidance: GuidanceConfig | None = None,
    ) -> None:
        self.pipe = pipe
        self.solver = solver
        self.steps = steps
        self.origin = origin
        self.pins = tuple(pins)
        self.guidance = guidance
        self.grid = pipe.grid
        self.history = pipe.num_frames
        self.future = pipe.num_frames
        self.wants_frames = pipe.video_encoder is not None and pipe.generator.config.use_video_cond
        self.needs_future = False

    def forecast(
        self,
        hist_tracks: np.ndarray,
        hist_vis: np.ndarray,
        *,
        frames: np.ndarray | None,
        caption: str,
        num_samples: int,
        seed: int,
        fut_tracks: np.ndarray | None = None,
        fut_vis: np.ndarray | None = None,
    ) -> Forecast:
        use_frames = frames is not None and self.wants_frames
        use_text = self.pipe.text_encoder is not None
        out = self.pipe(
            _tensor(hist_tracks, np.float32),
            _tensor(hist_vis, bool),
            frames=torch.from_numpy(np.ascontiguousarray(frames)) if use_frames else None,
            caption=caption if use_text else None,
            num_samples=num_samples,
            solver=self.solver,
            steps=self.steps,
            seed=seed,
            constraints=list(self.pins) or None,
            guidance=self.guidance,
        )
        prob = out.visibility_prob
        return Forecast(
            out.tracks[0].cpu().numpy(),
            out.visibility[0].cpu().numpy(),
            None if prob is None else prob[0].float().cpu().numpy(),
            latents=out.latents[0].float().cpu().numpy(),
        )

    def describe(self) -> dict[str, Any]:
        info = {
            "method": self.origin,
            "solver": self.solver,
            "steps": self.steps,
            "mode": self.pipe.config.mode,
            "video_context": self.pipe.video_encoder is not None,
            "text_context": self.pipe.text_encoder is not None,
            "H": self.grid.height,
            "W": self.grid.width,
        }
        if self.pins:
            info["pins"] = pins_to_json(self.pins)["pins"]
            info["guidance"] = (self.guidance or GuidanceConfig()).to_dict()
        return info


def with_pins(
    forecaster: Forecaster, pins: list[Pin], guidance: GuidanceConfig | None = None
) -> Forecaster:
    """``forecaster`` sampling futures that meet ``pins`` (checked against its grid and window,
    and "hidden" pins against its visibility head).

    Only learned pipelines can be steered: any other forecaster with pins is a
    :class:`ForecastError`. No pins: ``forecaster`` itself.
    """
    if not pins:
        return forecaster
    if not isinstance(forecaster, PipelineForecaster):
        method = forecaster.describe().get("method", type(forecaster).__name__)
        raise ForecastError(
            f"{method} cannot be steered by pins (only a trained set or released checkpoints "
            "sample guided futures); drop the pins or give a model checkpoint"
        )
    check_pins(
        pins,
        forecaster.grid,
        forecaster.future,
        visibility_head=forecaster.pipe.visibility is not None,
    )
    return PipelineForecaster(
        forecaster.pipe,
        solver=forecaster.solver,
        steps=forecaster.steps,
        origin=forecaster.origin,
        pins=tuple(pins),
        guidance=guidance,
    )


class VAEReconstruction:
    """The true future encoded by a trajectory VAE and decoded again (posterior mean).

    The VAE fixes the grid and the future length; ``history`` is only the window the clip
    is cut with (the history itself is not read). Visibility is the true one.
    """

    def __init__(self, model: TrajLoomVAE, device: torch.device, *, history: int, origin: str):
        self.model = model
        self.device = device
        self.origin = origin
        self.grid = model.config.grid
        self.history = history
        self.future = int(model.config.num_frames)
        self.wants_frames = False
        self.needs_future = True

    @torch.no_grad()
    def forecast(
        self,
        hist_tracks: np.ndarray,
        hist_vis: np.ndarray,
        *,
        frames: np.ndarray | None,
        caption: str,
        num_samples: int,
        seed: int,
        fut_tracks: np.ndarray | None = None,
        fut_vis: np.ndarray | None = None,
    ) -> Forecast:
        gt, gvis = _true_future("VAE reconstruction", fut_tracks, fut_vis, self.future)
        x = torch.from_numpy(gt)[None].to(self.device)
        recon = self.model.decode_tracks(self.model.encode_tracks(x).mean)[0].float().cpu().numpy()
        return Forecast(
            np.repeat(recon[None], num_samples, 0), np.repeat(gvis[None], num_samples, 0)
        )

    def describe(self) -> dict[str, Any]:
        return {"method": self.origin, "H": self.grid.height, "W": self.grid.width}


@dataclass
class TrueFuture:
    """The true future itself: a reference whose errors are zero (VEPE 0)."""

    grid: GridSpec
    history: int
    future: int
    wants_frames: bool = False
    needs_future: bool = True

    def forecast(
        self,
        hist_tracks: np.ndarray,
        hist_vis: np.ndarray,
        *,
        frames: np.ndarray | None,
        caption: str,
        num_samples: int,
        seed: int,
        fut_tracks: np.ndarray | None = None,
        fut_vis: np.ndarray | None = None,
    ) -> Forecast:
        gt, gvis = _true_future("the true future", fut_tracks, fut_vis, self.future)
        return Forecast(np.repeat(gt[None], num_samples, 0), np.repeat(gvis[None], num_samples, 0))

    def describe(self) -> dict[str, Any]:
        return {"method": "ground_truth", "H": self.grid.height, "W": self.grid.width}

"""Methods TrajLoomBench scores, from ``--method NAME=SPEC``.

SPEC is one of

* ``baseline:static`` / ``baseline:constvel`` — the baselines of ``trajloom.flow.baselines``
  (``baseline:whn`` explains that the WHN-style baseline is a trained configuration:
  give its trained-set folder);
* ``runs:<folder>`` or a folder holding ``<source>/<video>/pred_tracks.npy`` — run folders
  produced elsewhere (scored as they are);
* ``vae:<folder>`` — VAE reconstruction of the true future (scored with VEPE too);
* ``released:<dir>`` — the authors' checkpoints and configs;
* a trained-set folder, or a run folder of ``apps/train`` that holds one.

Every method that predicts gives futures through :class:`Forecaster.forecast`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from trajloom.encoding import GridSpec
from trajloom.flow import checkpoints
from trajloom.flow.baselines import constant_velocity_future, static_future

__all__ = [
    "Baseline",
    "Forecast",
    "Forecaster",
    "MethodError",
    "MethodSpec",
    "VAEReconstruction",
    "load_method",
    "parse_method",
    "resolve_device",
]


class MethodError(ValueError):
    """A method spec cannot be used; the message names it and says what to give instead."""


@dataclass
class Forecast:
    """Sampled futures: tracks "s tf n 2" px, visibility "s tf n" bool, probability or None."""

    tracks: np.ndarray
    visibility: np.ndarray
    probability: np.ndarray | None = None


class Forecaster(Protocol):
    """Something that predicts futures of history tracks on a grid."""

    grid: GridSpec | None  # the grid it needs; None: any
    history: int | None  # history frames it needs; None: any
    future: int | None  # future frames it predicts; None: any
    wants_frames: bool  # whether it uses the history frames (else they are not decoded)

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
    ) -> Forecast: ...


@dataclass(frozen=True)
class MethodSpec:
    """A parsed ``NAME=SPEC``: kind in baseline | runs | vae | released | trained."""

    name: str
    kind: str
    target: str


_BASELINES = ("static", "constvel", "whn")


def parse_method(text: str) -> MethodSpec:
    """``NAME=SPEC`` (or a bare SPEC, named after it) -> MethodSpec; checks paths exist."""
    name, sep, spec = text.partition("=")
    if not sep:
        name, spec = "", text
    spec = spec.strip()
    kind, colon, target = spec.partition(":")
    if colon and kind in ("baseline", "runs", "vae", "released"):
        if kind == "baseline" and target not in _BASELINES:
            raise MethodError(
                f"method {text!r}: unknown baseline {target!r}; choose one of "
                + ", ".join(f"baseline:{b}" for b in _BASELINES)
            )
        if kind != "baseline" and not Path(target).exists():
            raise MethodError(f"method {text!r}: {target} does not exist")
        return MethodSpec(
            name or (target if kind == "baseline" else Path(target).name), kind, target
        )
    path = Path(spec)
    if not path.exists():
        raise MethodError(
            f"method {text!r}: {spec} is neither an existing folder nor baseline:NAME, runs:DIR, "
            "vae:DIR or released:DIR"
        )
    kind = "runs" if any(path.glob("*/*/pred_tracks.npy")) else "trained"
    return MethodSpec(name or path.name, kind, str(path))


# --------------------------------------------------------------------------- baselines


@dataclass
class Baseline:
    """``trajloom.flow.baselines``' static or constant-velocity future, on any grid and length."""

    kind: str
    grid: GridSpec | None = None
    history: int | None = None
    future: int | None = None
    wants_frames: bool = False

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
        hist = torch.from_numpy(np.ascontiguousarray(hist_tracks, dtype=np.float32))
        vis = torch.from_numpy(np.ascontiguousarray(hist_vis, dtype=bool))
        if self.kind == "static":
            out = static_future(hist, vis, future, num_samples=num_samples)
        else:
            out = constant_velocity_future(hist, vis, future, num_samples=num_samples)
        return Forecast(out.tracks.numpy(), out.visibility.numpy())


# --------------------------------------------------------------------------- VAE reconstruction


@dataclass
class VAEReconstruction:
    """Encode the true future with the trajectory VAE and decode it (posterior mean)."""

    model: Any
    device: torch.device
    grid: GridSpec | None = None
    history: int | None = None
    future: int | None = None
    wants_frames: bool = False

    def __post_init__(self) -> None:
        self.grid = self.model.config.grid
        self.future = int(self.model.config.num_frames)

    @torch.no_grad()
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
        if gt_tracks is None or gt_vis is None:
            raise MethodError("VAE reconstruction needs the true future of every clip")
        x = torch.from_numpy(np.ascontiguousarray(gt_tracks, dtype=np.float32))[None].to(
            self.device
        )
        z = self.model.encode_tracks(x).mean
        recon = self.model.decode_tracks(z)[0].float().cpu().numpy()
        return Forecast(recon[None], np.asarray(gt_vis, bool)[None])


# --------------------------------------------------------------------------- loading


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU when one is present, else the CPU; otherwise a torch device name."""
    try:
        return checkpoints.resolve_device(name)
    except checkpoints.CheckpointSpecError as err:
        raise MethodError(str(err)) from err


def _vae_folder(target: Path) -> Path:
    """A VAE checkpoint folder: ``target`` itself or the ``vae`` folder of a trained set."""
    for candidate in (target, target / "vae", *sorted(target.glob("*/vae"))):
        config = candidate / "config.json"
        if (candidate / "model.safetensors").is_file() and config.is_file():
            text = config.read_text()
            if '"latent_channels"' in text and '"encoder_depth"' in text:
                return candidate
    raise MethodError(
        f"{target}: holds no trajectory-VAE checkpoint (model.safetensors + a VAE config.json); "
        "give a folder written by trajloom.vae.save_pretrained or a trained set"
    )


def load_method(
    spec: MethodSpec, device: torch.device, *, solver: str = "euler", steps: int = 100
) -> Forecaster:
    """Build the forecaster of a predicting method (not ``runs``)."""
    if spec.kind == "baseline" and spec.target != "whn":
        return Baseline(spec.target)
    if spec.kind == "vae":
        from trajloom.vae.io import load_pretrained

        return VAEReconstruction(
            load_pretrained(_vae_folder(Path(spec.target)), device=device), device
        )
    from trajloom_bench.pipeline import load_pipeline_forecaster

    return load_pipeline_forecaster(spec, device, solver=solver, steps=steps)

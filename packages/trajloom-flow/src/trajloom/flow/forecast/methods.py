"""Method specs: one parser for what ``--checkpoint`` (apps/sample) and ``--method``
(apps/bench) accept, and the loader that turns a spec into a forecaster.

A spec is one of

* ``baseline:static`` / ``baseline:constvel`` — :class:`BaselineForecaster` on the window
  given to :func:`load_method` (``baseline:whn`` explains that the WHN-style baseline is
  a trained configuration: give its trained-set folder);
* ``released:DIR`` — the authors' checkpoints and configs under DIR;
* ``vae:DIR`` — VAE reconstruction of the true future (a VAE folder or a trained set);
* ``runs:DIR``, or a folder holding ``<source>/<video>/pred_tracks.npy`` — run folders
  made elsewhere (:class:`RunFolders`: scored as they are, nothing to load);
* any other folder — a trained set, or a run folder of ``apps/train`` that holds one.

Where each is looked for on disk: :mod:`trajloom.flow.forecast.locate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from trajloom.encoding import DEFAULT_FUTURE, DEFAULT_GRID, DEFAULT_HISTORY, GridSpec
from trajloom.flow.forecast.base import Forecaster, ForecastError
from trajloom.flow.forecast.forecasters import (
    BASELINES,
    BaselineForecaster,
    PipelineForecaster,
    VAEReconstruction,
)
from trajloom.flow.forecast.locate import find_released_files, find_trained_set, find_vae_folder
from trajloom.flow.pipeline import TrajLoomPipeline

__all__ = ["MethodSpec", "RunFolders", "load_method", "parse_method"]

_PREFIXED = ("baseline", "released", "vae", "runs")


@dataclass(frozen=True)
class MethodSpec:
    """A parsed spec: ``kind`` (baseline, released, vae, runs or trained) and its target
    (the baseline's name, or a path). ``str(spec)`` is ``kind:target``."""

    kind: str
    target: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"


@dataclass(frozen=True)
class RunFolders:
    """Run folders made elsewhere, ``root/<source>/<video>/``: futures to score, not to make."""

    root: Path

    def source(self, name: str) -> Path:
        """The runs root of one source."""
        return self.root / name


def parse_method(text: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``text`` (see the module docstring); paths must exist.

    Raises :class:`ForecastError` naming ``text`` for an unknown baseline or a path that
    does not exist.
    """
    text = text.strip()
    kind, colon, target = text.partition(":")
    if colon and kind in _PREFIXED:
        if kind == "baseline":
            if target == "whn":
                raise ForecastError(
                    f"{text}: the WHN-style baseline is a trained configuration "
                    "(PipelineConfig(mode='whn')); train it with apps/train and give its "
                    "trained-set folder"
                )
            if target not in BASELINES:
                raise ForecastError(
                    f"{text}: unknown baseline {target!r}; use "
                    + " or ".join(f"baseline:{b}" for b in BASELINES)
                )
        elif not Path(target).exists():
            raise ForecastError(f"{text}: {target} does not exist")
        return MethodSpec(kind, target)
    path = Path(text)
    if not path.exists():
        raise ForecastError(
            f"{text} does not exist; give a trained-set folder, an apps/train run folder, "
            "released:DIR, vae:DIR, runs:DIR, baseline:static or baseline:constvel"
        )
    kind = "runs" if any(path.glob("*/*/pred_tracks.npy")) else "trained"
    return MethodSpec(kind, text)


def load_method(
    spec: MethodSpec,
    device: torch.device,
    *,
    solver: str = "euler",
    steps: int = 100,
    grid: GridSpec = DEFAULT_GRID,
    history: int = DEFAULT_HISTORY,
    future: int = DEFAULT_FUTURE,
    video_encoder: Path | None = None,
    text_encoder: Path | None = None,
) -> Forecaster | RunFolders:
    """The forecaster of ``spec`` on ``device`` (or the :class:`RunFolders` of ``runs``).

    ``solver`` and ``steps`` set the sampler of trained sets and released checkpoints,
    ``video_encoder`` / ``text_encoder`` their conditioners' local paths. ``grid``,
    ``history`` and ``future`` are the window of the methods that take any: the baselines
    (all three) and VAE reconstruction (its history; the VAE fixes the rest).
    """
    if spec.kind == "runs":
        return RunFolders(Path(spec.target))
    if spec.kind == "baseline":
        return BaselineForecaster(spec.target, grid, history, future)
    if spec.kind == "vae":
        from trajloom.vae.io import load_pretrained

        model = load_pretrained(find_vae_folder(Path(spec.target)), device=device)
        return VAEReconstruction(model, device, history=history, origin=str(spec))
    try:
        if spec.kind == "released":
            files = find_released_files(Path(spec.target))
            pipe = TrajLoomPipeline.from_released(
                files.vae_ckpt,
                files.vae_cfg,
                files.gen_ckpt,
                files.gen_cfg,
                files.stats_json,
                vis_ckpt=files.vis_ckpt,
                vis_cfg=files.vis_cfg,
                wan_vae_path=video_encoder,
                umt5_path=text_encoder,
                device=device,
            )
            origin = str(spec)
        else:
            folder = find_trained_set(Path(spec.target))
            pipe = TrajLoomPipeline.from_pretrained(
                folder, device=device, wan_vae_path=video_encoder, umt5_path=text_encoder
            )
            origin = str(folder)
    except (FileNotFoundError, KeyError, RuntimeError) as err:
        raise ForecastError(f"checkpoint {spec.target}: cannot be loaded ({err})") from err
    return PipelineForecaster(pipe, solver=solver, steps=steps, origin=origin)

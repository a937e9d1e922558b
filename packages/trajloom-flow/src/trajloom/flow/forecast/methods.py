"""Method specs: one parser for what ``--checkpoint`` (apps/sample) and ``--method``
(apps/bench) accept, and the loader that turns a spec into a forecaster.

A spec is one of

* ``baseline:static``, ``baseline:constvel[:W]`` (velocity averaged over the last W
  frames; W = 1 by default), ``baseline:linear[:L]`` (a least-squares line through the
  last L positions; L = 8 by default) — :class:`BaselineForecaster` on the window given to
  :func:`load_method` (``baseline:whn`` explains that the WHN-style baseline is a trained
  configuration: give its trained-set folder);
* ``released:DIR`` — the authors' checkpoints and configs under DIR;
* ``vae:DIR`` — VAE reconstruction of the true future (a VAE folder or a trained set);
* ``runs:DIR``, or a folder holding ``<source>/<video>/pred_tracks.npy`` — run folders
  made elsewhere (:class:`RunFolders`: scored as they are, nothing to load);
* any other folder — a trained set, or a run folder of ``apps/train`` that holds one.

Where each is looked for on disk: :mod:`trajloom.flow.forecast.locate`.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError, safe_open

from trajloom.encoding import DEFAULT_FUTURE, DEFAULT_GRID, DEFAULT_HISTORY, GridSpec
from trajloom.flow.forecast.base import Forecaster, ForecastError, one_line
from trajloom.flow.forecast.forecasters import (
    BASELINES,
    DEFAULT_WINDOWS,
    BaselineForecaster,
    PipelineForecaster,
    VAEReconstruction,
)
from trajloom.flow.forecast.locate import find_released_files, find_trained_set, find_vae_folder
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom.vae.weights import WeightsMismatch

__all__ = ["MethodSpec", "RunFolders", "load_method", "parse_baseline", "parse_method"]

_PREFIXED = ("baseline", "released", "vae", "runs")

#: What loading a damaged, truncated or malicious checkpoint raises (torch's weights-only
#: unpickler, safetensors, zip readers, JSON configs, state-dict mismatches).
LOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    KeyError,
    RuntimeError,
    ValueError,
    pickle.UnpicklingError,
    SafetensorError,
)

T = TypeVar("T")


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


def parse_baseline(target: str) -> tuple[str, int | None]:
    """``(kind, window)`` of a baseline spec's target: ``static``, ``constvel:8``, ``linear``
    (its default window). Raises :class:`ForecastError` naming the spec when it is not one."""
    name, _, window_text = target.partition(":")
    text = f"baseline:{target}"
    if name == "whn":
        raise ForecastError(
            f"{text}: the WHN-style baseline is a trained configuration "
            "(PipelineConfig(mode='whn')); train it with apps/train and give its "
            "trained-set folder"
        )
    if name not in BASELINES:
        raise ForecastError(
            f"{text}: unknown baseline {name!r}; use baseline:static, baseline:constvel[:W] "
            "or baseline:linear[:L]"
        )
    if not window_text:
        return name, DEFAULT_WINDOWS[name]
    if name == "static" or not re.fullmatch("[0-9]{1,6}", window_text) or int(window_text) < 1:
        raise ForecastError(
            f"{text}: the window must be a positive number of frames (e.g. "
            "baseline:constvel:8, baseline:linear:8); baseline:static takes none"
        )
    return name, int(window_text)


def parse_method(text: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``text`` (see the module docstring); paths must exist.

    Raises :class:`ForecastError` naming ``text`` for an unknown baseline or a path that
    does not exist.
    """
    text = text.strip()
    kind, colon, target = text.partition(":")
    if colon and kind in _PREFIXED:
        if kind == "baseline":
            parse_baseline(target)
        elif not Path(target).exists():
            raise ForecastError(f"{text}: {target} does not exist")
        return MethodSpec(kind, target)
    path = Path(text)
    if not path.exists():
        raise ForecastError(
            f"{text} does not exist; give a trained-set folder, an apps/train run folder, "
            "released:DIR, vae:DIR, runs:DIR, baseline:static, baseline:constvel[:W] or "
            "baseline:linear[:L]"
        )
    kind = "runs" if any(path.glob("*/*/pred_tracks.npy")) else "trained"
    return MethodSpec(kind, text)


def _file_problem(path: Path) -> str | None:
    """Why ``path`` (a ``.safetensors``, ``.pt`` or ``.json`` file) cannot be read, or None."""
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    f.get_tensor(key)
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".json":
            json.loads(path.read_text())
    except LOAD_ERRORS as err:
        return one_line(err)
    return None


def _loaded(what: str, files: Iterable[Path], load: Callable[[], T]) -> T:
    """``load()``, with any load error turned into one :class:`ForecastError` line.

    ``files`` are the checkpoint's files: on failure each is read alone to name the one
    that is damaged (truncated, not a checkpoint, or a pickle that would run code, which
    the weights-only loader refuses without running it).
    """
    try:
        return load()
    except ForecastError:
        raise
    except WeightsMismatch as err:  # already one line naming the weights and the config
        raise ForecastError(f"checkpoint {what} cannot be loaded: {err}") from err
    except LOAD_ERRORS as err:
        for path in files:
            problem = _file_problem(path)
            if problem is not None:
                raise ForecastError(
                    f"checkpoint file {path} cannot be loaded ({problem}); it is damaged, "
                    "truncated or not a TrajLoom checkpoint: replace it"
                ) from err
        raise ForecastError(
            f"checkpoint {what} cannot be loaded ({one_line(err)}); check that its files "
            "belong together (one trained set, matching configs)"
        ) from err


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

    Every load error (a missing, truncated, damaged or malicious file) is one
    :class:`ForecastError` line naming the file; nothing is unpickled beyond tensors.
    """
    if spec.kind == "runs":
        return RunFolders(Path(spec.target))
    if spec.kind == "baseline":
        kind, window = parse_baseline(spec.target)
        return BaselineForecaster(kind, grid, history, future, window=window)
    if spec.kind == "vae":
        from trajloom.vae.io import load_pretrained

        vae_dir = find_vae_folder(Path(spec.target))
        model = _loaded(
            str(spec),
            [vae_dir / "config.json", vae_dir / "model.safetensors"],
            lambda: load_pretrained(vae_dir, device=device),
        )
        return VAEReconstruction(model, device, history=history, origin=str(spec))
    if spec.kind == "released":
        files = find_released_files(Path(spec.target))
        pipe = _loaded(
            str(spec),
            [p for p in vars(files).values() if p is not None],
            lambda: TrajLoomPipeline.from_released(
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
            ),
        )
        origin = str(spec)
    else:
        folder = find_trained_set(Path(spec.target))
        pipe = _loaded(
            str(folder),
            sorted(p for p in folder.rglob("*") if p.suffix in (".json", ".safetensors")),
            lambda: TrajLoomPipeline.from_pretrained(
                folder, device=device, wan_vae_path=video_encoder, umt5_path=text_encoder
            ),
        )
        origin = str(folder)
    return PipelineForecaster(pipe, solver=solver, steps=steps, origin=origin)

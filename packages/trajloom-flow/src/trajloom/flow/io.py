"""Save and load the generator and the visibility head: ``model.safetensors`` + ``config.json``.

A folder holds one module: its weights in ``model.safetensors`` (the config JSON and the
module kind also in the file's metadata, so the file alone is enough) and ``config.json``
``{"kind": ..., "format": 1, "config": {...}}``. Loading builds the module from the
stored config and loads the weights strictly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from trajloom.flow.config import GeneratorConfig
from trajloom.flow.model import TrajLoomGenerator
from trajloom.flow.visibility import VisibilityConfig, VisibilityPredictor
from trajloom.vae.weights import build_checked, safetensors_header

__all__ = ["load_generator", "load_visibility", "save_pretrained"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
_KINDS = {
    TrajLoomGenerator: "trajloom-flow-generator",
    VisibilityPredictor: "trajloom-flow-visibility",
}

PathLike = str | Path
M = TypeVar("M", bound=torch.nn.Module)


def save_pretrained(
    module: TrajLoomGenerator | VisibilityPredictor,
    folder: PathLike,
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``module`` to ``folder`` (created if needed); returns the folder.

    ``dtype`` casts the floating weights on export (e.g. ``torch.bfloat16``); default as is.
    """
    kind = _KINDS.get(type(module))
    if kind is None:
        raise TypeError(
            f"save_pretrained takes a TrajLoomGenerator or VisibilityPredictor, got {type(module).__name__}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = module.config.to_dict()
    state = {}
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[name] = tensor.contiguous()
    metadata = {"kind": kind, "format": str(FORMAT_VERSION), "config": json.dumps(config)}
    save_file(state, str(folder / WEIGHTS_NAME), metadata=metadata)
    payload = {"kind": kind, "format": FORMAT_VERSION, "config": config}
    (folder / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return folder


def _read(folder: PathLike, kind: str) -> tuple[dict, Path]:
    """The config of ``folder`` (config.json, else the weights' metadata) and its weights
    file, checked to hold a module of ``kind``."""
    folder = Path(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found; save the model with save_pretrained first")
    config_path = folder / CONFIG_NAME
    if config_path.is_file():
        payload = json.loads(config_path.read_text())
    else:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta:
            raise ValueError(f"{folder}: no {CONFIG_NAME} and no config in {WEIGHTS_NAME} metadata")
        payload = {"kind": meta.get("kind"), "config": json.loads(meta["config"])}
    if payload.get("kind") != kind:
        raise ValueError(
            f"{folder} holds a {payload.get('kind')!r}, not a {kind!r}; load it with the matching "
            "function (load_generator / load_visibility)"
        )
    return payload["config"], weights


def _build(
    folder: PathLike, weights: Path, build: Callable[[], M]
) -> tuple[M, dict[str, torch.Tensor]]:
    """``build()`` once its config matches the header of ``weights`` (keys, shapes, dtypes:
    :func:`trajloom.vae.weights.build_checked`), then the weights loaded into it."""
    config = Path(folder) / CONFIG_NAME
    model = build_checked(build, safetensors_header(weights), str(weights), str(config))
    state = load_file(str(weights))
    return model, state


def _finish(
    module: torch.nn.Module, state: dict[str, torch.Tensor], folder: PathLike, device, dtype
):
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{folder}: weights do not match config.json: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    return module.to(device=device, dtype=dtype).eval()


def load_generator(
    folder: PathLike,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> TrajLoomGenerator:
    """The generator saved in ``folder`` (eval mode), optionally moved/cast."""
    config, weights = _read(folder, _KINDS[TrajLoomGenerator])
    cfg = GeneratorConfig.from_dict(config)
    model, state = _build(folder, weights, lambda: TrajLoomGenerator(cfg))
    return _finish(model, state, folder, device, dtype)


def load_visibility(
    folder: PathLike,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> VisibilityPredictor:
    """The visibility head saved in ``folder`` (eval mode), optionally moved/cast."""
    config, weights = _read(folder, _KINDS[VisibilityPredictor])
    cfg = VisibilityConfig.from_dict(config)
    model, state = _build(folder, weights, lambda: VisibilityPredictor(cfg))
    return _finish(model, state, folder, device, dtype)

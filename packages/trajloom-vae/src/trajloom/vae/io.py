"""Checkpoints of our own: a folder with ``model.safetensors`` and ``config.json``.

The config travels twice, as ``config.json`` for people and in the safetensors
metadata so that a lone weights file still says what it is.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from trajloom.vae.config import VAEConfig
from trajloom.vae.model import TrajLoomVAE
from trajloom.vae.weights import build_checked, safetensors_header

__all__ = ["load_pretrained", "save_pretrained"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def save_pretrained(model: TrajLoomVAE, folder: str | Path) -> Path:
    """Write ``folder/model.safetensors`` (fp32 as held) and ``folder/config.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_json = model.config.to_json()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(
        state,
        str(folder / WEIGHTS_NAME),
        metadata={"format": "pt", "trajloom": "vae", "config": config_json},
    )
    (folder / CONFIG_NAME).write_text(config_json + "\n")
    return folder


def load_pretrained(folder: str | Path, device: torch.device | str | None = None) -> TrajLoomVAE:
    """Load a folder written by :func:`save_pretrained` (strict: every key must match).

    The config is checked against the weights' header (keys, shapes, dtypes) while the
    model is built, before its memory is used (:mod:`trajloom.vae.weights`)."""
    folder = Path(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} not found; expected a folder written by trajloom.vae.save_pretrained "
            "(for the authors' .pt checkpoints use trajloom.vae.from_released)"
        )
    config_path = folder / CONFIG_NAME
    if config_path.is_file():
        config = VAEConfig.from_json(config_path.read_text())
    else:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta:
            raise FileNotFoundError(f"{config_path} is missing and {weights} holds no config")
        config = VAEConfig.from_json(meta["config"])
    header = safetensors_header(weights)
    model = build_checked(lambda: TrajLoomVAE(config), header, str(weights), str(config_path))
    model.load_state_dict(load_file(str(weights)), strict=True)
    if device is not None:
        model.to(device)
    return model.eval()

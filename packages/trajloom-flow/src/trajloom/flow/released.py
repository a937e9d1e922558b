"""Load the authors' released TrajLoom-Flow checkpoints (``zewei-Zhang/TrajLoom``).

The released files are ``torch.save`` dicts: ``{"generator": state_dict}`` for the
generator (its loader also tries ``"model"``) and ``{"model": state_dict}`` for the
visibility predictor (also ``"predictor"``), with the architecture in JSON configs
(``configs/trajloom_generator_config.json``, section ``generator``;
``configs/vis_predictor_config.json``, section ``predictor``). They are read with
``torch.load(..., weights_only=True)`` (tensors only, no code) and loaded strictly: a
missing or unexpected key, or a shape mismatch, is an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from trajloom.encoding import DEFAULT_GRID, DEFAULT_HISTORY, DEFAULT_TEMPORAL_FACTOR, GridSpec
from trajloom.flow.config import LEGACY_GENERATOR_KEYS, GeneratorConfig, is_released_section
from trajloom.flow.model import TrajLoomGenerator
from trajloom.flow.visibility import VisibilityConfig, VisibilityPredictor
from trajloom.vae.weights import build_checked, state_specs

__all__ = [
    "from_released",
    "generator_config_from_section",
    "read_released_state_dict",
    "released_generator_config",
    "released_visibility_config",
    "visibility_from_released",
]

PathLike = str | Path
ConfigSource = PathLike | Mapping[str, Any]

_GENERATOR_KEYS = ("generator", "model")
_VISIBILITY_KEYS = ("model", "predictor")
_GENERIC_KEYS = ("state_dict", "model_state_dict")


def _read_json(source: ConfigSource) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"released config JSON not found: {path}")
    with path.open() as f:
        return json.load(f)


def released_generator_config(config_json: ConfigSource) -> GeneratorConfig:
    """:class:`GeneratorConfig` from a released generator config (file, full dict or its section)."""
    d = _read_json(config_json)
    section = d.get("generator", d)
    if not isinstance(section, Mapping) or "hidden_size" not in section:
        raise ValueError(
            "released generator config has no 'generator' section with 'hidden_size'; pass "
            "configs/trajloom_generator_config.json or its 'generator' dict"
        )
    # A generator config.json of ours written into a released-style file (tests, exports)
    # is read in its own layout.
    if is_released_section(section):
        return generator_config_from_section(section)
    return GeneratorConfig.from_dict(dict(section))


def generator_config_from_section(section: Mapping[str, Any]) -> GeneratorConfig:
    """:class:`GeneratorConfig` from a released ``generator`` section.

    Released names map as: ``input_width``/``input_height``/``patch_size`` -> ``grid``,
    ``num_frames_in`` -> ``num_frames``, ``latent_time_stride`` -> ``temporal_factor``;
    ``num_frames_latent`` (one T for history and future) must equal the latent steps these
    give; ``track_fusion="none"`` -> ``use_history_fusion=False``. Legacy keys
    (``dropout``) are ignored; any other unknown key is an error. Absent keys take our
    defaults (the released model's geometry).
    """
    d = {k: v for k, v in section.items() if k not in LEGACY_GENERATOR_KEYS}
    t_latent = d.pop("num_frames_latent", None)
    if d.get("track_fusion") == "none":
        d["track_fusion"] = "add_last_plus_vel"
        d["use_history_fusion"] = False
    geometry: dict[str, Any] = {
        "grid": GridSpec(
            width=int(d.pop("input_width", DEFAULT_GRID.width)),
            height=int(d.pop("input_height", DEFAULT_GRID.height)),
            stride=int(d.pop("patch_size", DEFAULT_GRID.stride)),
        ),
        "num_frames": int(d.pop("num_frames_in", DEFAULT_HISTORY)),
        "temporal_factor": int(d.pop("latent_time_stride", DEFAULT_TEMPORAL_FACTOR)),
    }
    known = {f.name for f in fields(GeneratorConfig)} - set(geometry)
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"released generator section has unknown keys {unknown}")
    config = GeneratorConfig(**geometry, **d)
    if t_latent is not None and int(t_latent) != config.hist_latent_frames:
        raise ValueError(
            f"released generator section: num_frames_latent={t_latent} does not match "
            f"num_frames_in={config.num_frames} with latent_time_stride="
            f"{config.temporal_factor} ({config.hist_latent_frames} latent steps)"
        )
    return config


def released_visibility_config(config_json: ConfigSource) -> VisibilityConfig:
    """:class:`VisibilityConfig` from a released visibility config (file, dict or section).

    The head is the ``predictor`` section; ``temp_stride`` (top level, default 4) gives the
    temporal factor and ``eval.thresh`` (default 0.5) the threshold.
    """
    d = _read_json(config_json)
    section = d.get("predictor", d)
    arch_names = {f.name for f in fields(VisibilityConfig)} - {"temporal_factor", "threshold"}
    if "predictor" in d:
        unknown = sorted(set(section) - arch_names)
        if unknown:
            raise ValueError(f"released visibility 'predictor' section has unknown keys {unknown}")
    arch = {k: v for k, v in section.items() if k in arch_names}
    evaluation = d.get("eval")
    threshold = evaluation.get("thresh", 0.5) if isinstance(evaluation, Mapping) else 0.5
    return VisibilityConfig(
        **arch,
        temporal_factor=int(d.get("temp_stride", DEFAULT_TEMPORAL_FACTOR)),
        threshold=float(threshold),
    )


def read_released_state_dict(
    checkpoint: PathLike, keys: tuple[str, ...] = _GENERATOR_KEYS
) -> dict[str, torch.Tensor]:
    """The state dict inside a released ``.pt`` (``weights_only=True``), tried under ``keys``.

    Falls back to ``state_dict`` / ``model_state_dict`` and to a bare state dict, as the
    released loader does.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"released checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, Mapping):
        for key in (*keys, *_GENERIC_KEYS):
            if isinstance(ckpt.get(key), Mapping):
                return dict(ckpt[key])
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return dict(ckpt)
    found = list(ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
    raise ValueError(
        f"{path}: no state dict under {[*keys, *_GENERIC_KEYS]} and not a bare state dict "
        f"(found {found})"
    )


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{source} does not match the configured {type(module).__name__}: missing keys "
            f"{result.missing_keys}, unexpected keys {result.unexpected_keys}; check that the "
            "config JSON is the one released with this checkpoint"
        )


def from_released(checkpoint: PathLike, config_json: ConfigSource) -> TrajLoomGenerator:
    """A :class:`TrajLoomGenerator` with the released weights, in eval mode, on the CPU."""
    config = released_generator_config(config_json)
    state = read_released_state_dict(checkpoint, _GENERATOR_KEYS)
    model = build_checked(
        lambda: TrajLoomGenerator(config), state_specs(state), str(checkpoint), "its config"
    )
    _load_strict(model, state, Path(checkpoint))
    return model.eval()


def visibility_from_released(
    checkpoint: PathLike, config_json: ConfigSource
) -> VisibilityPredictor:
    """A :class:`VisibilityPredictor` with the released weights, in eval mode, on the CPU."""
    config = released_visibility_config(config_json)
    state = read_released_state_dict(checkpoint, _VISIBILITY_KEYS)
    model = build_checked(
        lambda: VisibilityPredictor(config), state_specs(state), str(checkpoint), "its config"
    )
    _load_strict(model, state, Path(checkpoint))
    return model.eval()

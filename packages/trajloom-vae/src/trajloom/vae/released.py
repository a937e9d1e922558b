"""Loading the authors' released TrajLoom-VAE checkpoints (``zewei-Zhang/TrajLoom``).

A released checkpoint is ``torch.save({"vae": state_dict, "cfg": {"vae": kwargs}})``;
its loader also accepts ``{"model_state_dict": ...}`` and a bare state dict. Our module
tree has the released key names, so the state dict loads strictly without renaming.
Files are read with ``weights_only=True``: nothing is unpickled but tensors and
plain containers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trajloom.encoding import (
    DEFAULT_GRID,
    DEFAULT_HISTORY,
    DEFAULT_TEMPORAL_FACTOR,
    GridSpec,
    latent_frames,
)
from trajloom.vae.config import VAEConfig
from trajloom.vae.model import TrajLoomVAE
from trajloom.vae.weights import build_checked, state_specs

__all__ = [
    "config_from_released",
    "from_released",
    "load_released_state_dict",
    "released_config",
    "released_kwargs",
]

# Keys of released configs that the released model accepts and ignores.
_RELEASED_LEGACY_KEYS = frozenset(
    {"use_dino", "frame_features_dim", "num_frame_tokens", "temp_method", "use_refine3d"}
)

# The released TrajLoomVAE.__init__ defaults, used for keys a released config omits.
_RELEASED_DEFAULTS: dict[str, Any] = {
    "input_height": 480,
    "input_width": 832,
    "patch_size": 8,
    "in_channels": 2,
    "latent_channels": 8,
    "hidden_size": 384,
    "encoder_depth": 12,
    "decoder_depth": 12,
    "num_heads": 6,
    "mlp_ratio": 4.0,
    "num_frames_in": 81,
    "num_frames_latent": 21,
    "learn_sigma": False,
    "pos_embed_dim": 128,
    "beta": 5e-5,
    "use_temp_compress": True,
    "temp_stride": 4,
    "use_offsets": False,
}

# Keys the released loader keeps from a modern config (``canonicalize_trajloom_vae_config``).
_ALLOWED = frozenset(
    {
        "input_height", "input_width", "patch_size", "in_channels", "latent_channels",
        "hidden_size", "encoder_depth", "decoder_depth", "num_heads", "mlp_ratio",
        "num_frames_in", "num_frames_latent", "learn_sigma", "pos_embed_dim", "beta",
        "use_temp_compress", "temp_stride", "use_offsets", "use_dino", "frame_features_dim",
        "num_frame_tokens", "temp_method", "use_refine3d",
    }
)  # fmt: skip


def _canonicalize(d: dict[str, Any]) -> dict[str, Any]:
    """The released loader's reading of a config: drop unknown keys, map legacy names."""
    if "encoder_depth" in d and "decoder_depth" in d:
        return {k: v for k, v in d.items() if k in _ALLOWED}
    layers = d.get("num_layers", 12)
    out = {
        # The released loader's defaults for a legacy config: the working geometry.
        "input_height": d.get("input_height", DEFAULT_GRID.height),
        "input_width": d.get("input_width", DEFAULT_GRID.width),
        "patch_size": d.get("patch_size", DEFAULT_GRID.stride),
        "in_channels": d.get("in_channels", d.get("input_channels", 2)),
        "latent_channels": d.get("latent_channels", 16),
        "hidden_size": d.get("hidden_size", 384),
        "encoder_depth": d.get("encoder_depth", layers),
        "decoder_depth": d.get("decoder_depth", layers),
        "num_heads": d.get("num_heads", 6),
        "mlp_ratio": d.get("mlp_ratio", 4.0),
        "num_frames_in": d.get("num_frames_in", d.get("in_frames", DEFAULT_HISTORY)),
        "num_frames_latent": d.get(
            "num_frames_latent", d.get("latent_frames", latent_frames(DEFAULT_HISTORY))
        ),
        "use_offsets": bool(d.get("use_offsets", False)),
        "temp_stride": int(d.get("temp_stride", DEFAULT_TEMPORAL_FACTOR)),
        "use_temp_compress": bool(d.get("use_temp_compress", True)),
    }
    if "beta" in d:
        out["beta"] = d["beta"]
    elif "kl_weight" in d:
        out["beta"] = d["kl_weight"]
    for k in ("learn_sigma", "pos_embed_dim", "use_dino", "frame_features_dim",
              "num_frame_tokens", "temp_method", "use_refine3d"):  # fmt: skip
        if k in d:
            out[k] = d[k]
    return out


def released_config(source: str | Path | dict[str, Any]) -> VAEConfig:
    """A :class:`VAEConfig` from a released config.

    ``source`` is a path to, or the dict of: the full ``trajloom_vae_config.json``
    (``trajloom_vae.config``), the generator config (its ``trajloom_vae`` section), or the
    bare model kwargs (as stored in a checkpoint's ``cfg["vae"]``).
    """
    d = json.loads(Path(source).read_text()) if isinstance(source, (str, Path)) else dict(source)
    section = d.get("trajloom_vae", d.get("track_vae"))
    if isinstance(section, dict):
        d = section.get("config", {})
        if not d:
            raise ValueError(f"released config {source!r} has an empty trajloom_vae.config")
    return config_from_released(_canonicalize(d))


def config_from_released(d: Mapping[str, Any]) -> VAEConfig:
    """A :class:`VAEConfig` from the released model kwargs (``TrajLoomVAE.__init__``).

    The released names map as: ``input_width``/``input_height``/``patch_size`` ->
    ``grid``, ``num_frames_in`` -> ``num_frames``, ``temp_stride`` -> ``temporal_factor``,
    ``use_temp_compress`` -> ``temporal_compression``; ``num_frames_latent`` is checked
    against them. Legacy keys are ignored as the release ignores them. Options the release
    offers but the paper's model does not use (``learn_sigma``, ``in_channels != 2``) are
    refused with a reason.
    """
    d = dict(d)
    unknown = set(d) - _RELEASED_LEGACY_KEYS - set(_RELEASED_DEFAULTS)
    if unknown:
        raise ValueError(f"released VAE config has unknown keys {sorted(unknown)}")
    merged = {**_RELEASED_DEFAULTS, **{k: v for k, v in d.items() if k in _RELEASED_DEFAULTS}}
    if merged["learn_sigma"]:
        raise ValueError("released VAE config: learn_sigma=True is not supported (paper: False)")
    if merged["in_channels"] != 2:
        raise ValueError(
            f"released VAE config: in_channels must be 2 (x, y), got {merged['in_channels']}"
        )
    use_tc = bool(merged["use_temp_compress"])
    factor = int(merged["temp_stride"])
    t_in = int(merged["num_frames_in"])
    t_lat = merged["num_frames_latent"]
    if use_tc and t_lat is not None and t_lat < t_in and t_lat != latent_frames(t_in, factor):
        raise ValueError(
            f"released VAE config: num_frames_latent={t_lat} does not match "
            f"num_frames_in={t_in} with temp_stride={factor}"
        )
    return VAEConfig(
        grid=GridSpec(
            width=int(merged["input_width"]),
            height=int(merged["input_height"]),
            stride=int(merged["patch_size"]),
        ),
        num_frames=t_in,
        temporal_factor=factor,
        temporal_compression=use_tc,
        hidden_size=int(merged["hidden_size"]),
        num_heads=int(merged["num_heads"]),
        encoder_depth=int(merged["encoder_depth"]),
        decoder_depth=int(merged["decoder_depth"]),
        mlp_ratio=float(merged["mlp_ratio"]),
        latent_channels=int(merged["latent_channels"]),
        pos_embed_dim=int(merged["pos_embed_dim"]),
        use_offsets=bool(merged["use_offsets"]),
        beta=float(merged["beta"]),
    )


def released_kwargs(config: VAEConfig) -> dict[str, Any]:
    """The released model kwargs for ``config`` (inverse of :func:`config_from_released`)."""
    return {
        "encoder_depth": config.encoder_depth,
        "decoder_depth": config.decoder_depth,
        "hidden_size": config.hidden_size,
        "num_heads": config.num_heads,
        "patch_size": config.grid.stride,
        "in_channels": 2,
        "latent_channels": config.latent_channels,
        "input_height": config.grid.height,
        "input_width": config.grid.width,
        "num_frames_in": config.num_frames,
        "num_frames_latent": config.latent_frames,
        "use_temp_compress": config.temporal_compression,
        "temp_stride": config.temporal_factor,
        "use_offsets": config.use_offsets,
        "learn_sigma": False,
        "beta": config.beta,
        "pos_embed_dim": config.pos_embed_dim,
        "mlp_ratio": config.mlp_ratio,
    }


def load_released_state_dict(checkpoint: str | Path) -> tuple[dict[str, torch.Tensor], Any]:
    """``(state_dict, cfg or None)`` from a released ``.pt`` file, read with ``weights_only=True``."""
    ckpt = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    cfg = None
    if isinstance(ckpt, dict) and isinstance(ckpt.get("cfg"), dict):
        cfg = ckpt["cfg"].get("vae")
    if isinstance(ckpt, dict) and isinstance(ckpt.get("vae"), dict):
        return ckpt["vae"], cfg
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model_state_dict"), dict):
        return ckpt["model_state_dict"], cfg
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt, None
    keys = list(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
    raise ValueError(
        f"{checkpoint}: not a released TrajLoom-VAE checkpoint (expected a dict with 'vae', "
        f"'model_state_dict', or a bare state dict; found {keys})"
    )


def from_released(
    checkpoint: str | Path,
    config_json: str | Path | dict[str, Any] | None = None,
    *,
    device: torch.device | str | None = None,
) -> TrajLoomVAE:
    """Build the VAE from a released config and load a released checkpoint strictly.

    Args:
        checkpoint: the released ``.pt`` file.
        config_json: ``configs/trajloom_vae_config.json`` (or any source
            :func:`released_config` accepts); None uses the checkpoint's ``cfg["vae"]``.
        device: where to put the model; it is returned in eval mode, weights frozen.
    """
    state, ckpt_cfg = load_released_state_dict(checkpoint)
    if config_json is None:
        if ckpt_cfg is None:
            raise ValueError(
                f"{checkpoint} holds no cfg['vae']; pass the released config JSON as config_json"
            )
        config_json = ckpt_cfg
    config = released_config(config_json)
    specs = state_specs(state)  # checked before the model's memory is used
    model = build_checked(lambda: TrajLoomVAE(config), specs, str(checkpoint), "the VAE config")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint} does not match the configured VAE: missing keys "
            f"{result.missing_keys[:8]}, unexpected keys {result.unexpected_keys[:8]}; check "
            "that config_json is the checkpoint's config"
        )
    if device is not None:
        model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model

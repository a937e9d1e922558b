"""The VAE's configuration and its size presets.

One frozen dataclass, validated on construction and serialized to JSON. The geometry is
said in ``trajloom.encoding``'s vocabulary (a :class:`~trajloom.encoding.GridSpec`, the
frames per segment and the temporal factor), with its defaults from there. The
``paper`` preset is the released ``configs/trajloom_vae_config.json`` (paper appendix
A.1); ``small`` and ``tiny`` train on a CPU. The released key names are read and written
in :mod:`trajloom.vae.released` only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from dataclasses import replace as dc_replace
from typing import Any

from trajloom.encoding import (
    DEFAULT_GRID,
    DEFAULT_HISTORY,
    DEFAULT_TEMPORAL_FACTOR,
    GridSpec,
    latent_frames,
)

__all__ = ["PREVIOUS_VAE_KEYS", "VAE_PRESETS", "VAEConfig", "vae_preset"]

# Keys of our config.json before the geometry became a GridSpec (trained sets saved by
# earlier versions), and the GridSpec field each one sets.
PREVIOUS_VAE_KEYS = {"width": "width", "height": "height", "stride": "stride"}


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of TrajLoom-VAE (paper §3.2, appendix A.1)."""

    grid: GridSpec = DEFAULT_GRID  # working resolution; stride = patch: one token per point
    num_frames: int = DEFAULT_HISTORY  # frames per segment (T); history and future alike
    temporal_factor: int = DEFAULT_TEMPORAL_FACTOR  # latent steps 1 + (T - 1) / factor
    temporal_compression: bool = True  # False: latents keep all T frames
    hidden_size: int = 512
    num_heads: int = 8
    encoder_depth: int = 16  # blocks; the first half runs at T, the second at T'
    decoder_depth: int = 16  # blocks; the first half runs at T', the second at T
    mlp_ratio: float = 4.0
    latent_channels: int = 16
    pos_embed_dim: int = 64  # width of the learnable Fourier features of patch centres
    use_offsets: bool = True  # grid-anchor offsets (False: the paper's "w/o offset" ablation)
    beta: float = 5e-5  # KL weight, stored with the model as in the release
    # Recompute block activations in backward: ~1/3 more compute for far less memory.
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.grid, GridSpec):
            raise ValueError(
                f"VAEConfig.grid must be a trajloom.encoding.GridSpec (e.g. "
                f"{DEFAULT_GRID!r}), got {self.grid!r}"
            )
        for name in (
            "num_frames",
            "temporal_factor",
            "hidden_size",
            "num_heads",
            "latent_channels",
            "pos_embed_dim",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"VAEConfig.{name} must be a positive int, got {value!r}")
        for name in ("encoder_depth", "decoder_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2 or value % 2:
                raise ValueError(
                    f"VAEConfig.{name} must be an even int >= 2 (spatial + temporal pairs), "
                    f"got {value!r}"
                )
        if self.temporal_compression:
            try:
                latent_frames(self.num_frames, self.temporal_factor)
            except ValueError as err:
                raise ValueError(f"VAEConfig.num_frames: {err}") from None
            if self.latent_frames < 2:
                raise ValueError(
                    f"VAEConfig: num_frames={self.num_frames} gives a single latent step; "
                    f"use at least {1 + self.temporal_factor} frames"
                )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"VAEConfig: hidden_size={self.hidden_size} must be divisible by "
                f"num_heads={self.num_heads}"
            )
        if self.hidden_size % 4:
            raise ValueError(
                f"VAEConfig: hidden_size={self.hidden_size} must be a multiple of 4 "
                "(2D sin-cos position embedding)"
            )
        if self.pos_embed_dim % 2:
            raise ValueError(f"VAEConfig: pos_embed_dim must be even, got {self.pos_embed_dim}")
        if not (self.mlp_ratio > 0):
            raise ValueError(f"VAEConfig.mlp_ratio must be positive, got {self.mlp_ratio!r}")
        if not (self.beta >= 0):
            raise ValueError(f"VAEConfig.beta must be >= 0, got {self.beta!r}")

    # --- derived shapes -------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        """Tokens per frame, N = Hg * Wg."""
        return self.grid.num_points

    @property
    def frames_per_latent(self) -> int:
        """Frames per latent step: ``temporal_factor``, or 1 without temporal compression."""
        return self.temporal_factor if self.temporal_compression else 1

    @property
    def latent_frames(self) -> int:
        """T': latent steps (21 for 81 frames)."""
        return latent_frames(self.num_frames, self.frames_per_latent)

    # Read-only aliases of ``grid``'s fields, for callers written before the GridSpec.
    @property
    def width(self) -> int:
        return self.grid.width

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def stride(self) -> int:
        return self.grid.stride

    # --- serialization --------------------------------------------------------------
    def replace(self, **changes: Any) -> VAEConfig:
        """A copy with ``changes`` (fields, or the previous keys ``width/height/stride``)."""
        return VAEConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VAEConfig:
        """Build from :meth:`to_dict`'s layout, or the previous flat one (``width``, ...).

        The previous keys override the matching entries of ``grid``. Unknown keys are an
        error, so that a typo does not silently change the model.
        """
        d = dict(d)
        grid = d.pop("grid", DEFAULT_GRID)
        if isinstance(grid, Mapping):
            grid = GridSpec(**grid)
        previous = {new: d.pop(old) for old, new in PREVIOUS_VAE_KEYS.items() if old in d}
        if previous:
            grid = dc_replace(grid, **previous)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"VAEConfig.from_dict: unknown keys {sorted(unknown)}; known keys are "
                f"{sorted(known)} (for a released config use trajloom.vae.released_config)"
            )
        return cls(grid=grid, **d)

    @classmethod
    def from_json(cls, text: str) -> VAEConfig:
        return cls.from_dict(json.loads(text))


def _paper() -> VAEConfig:
    """The released/paper model: 16 + 16 blocks, width 512, 8 heads, 16 latent channels."""
    return VAEConfig()


def _small() -> VAEConfig:
    """A few minutes per hundred steps on 2 CPU cores: 256x192 (48 tokens), 33 frames."""
    return VAEConfig(
        grid=GridSpec(width=256, height=192, stride=32),
        num_frames=33,
        hidden_size=128,
        num_heads=4,
        encoder_depth=4,
        decoder_depth=4,
        latent_channels=16,
        pos_embed_dim=32,
    )


def _tiny() -> VAEConfig:
    """Seconds per hundred steps on 2 CPU cores: 128x96 (12 tokens), 17 frames."""
    return VAEConfig(
        grid=GridSpec(width=128, height=96, stride=32),
        num_frames=17,
        hidden_size=64,
        num_heads=4,
        encoder_depth=4,
        decoder_depth=4,
        latent_channels=8,
        pos_embed_dim=16,
    )


VAE_PRESETS: dict[str, Callable[[], VAEConfig]] = {
    "paper": _paper,
    "small": _small,
    "tiny": _tiny,
}


def vae_preset(name: str, **overrides: Any) -> VAEConfig:
    """The preset ``name`` (``"paper"``, ``"small"``, ``"tiny"``), with fields overridden."""
    if name not in VAE_PRESETS:
        raise ValueError(f"unknown VAE preset {name!r}; choose one of {sorted(VAE_PRESETS)}")
    config = VAE_PRESETS[name]()
    return config.replace(**overrides) if overrides else config

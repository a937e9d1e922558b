"""The VAE's configuration and its size presets.

One frozen dataclass, validated on construction and serialized to JSON. The
``paper`` preset is the released ``configs/trajloom_vae_config.json`` (paper
appendix A.1); ``small`` and ``tiny`` train on a CPU.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from trajloom.encoding import GridSpec, latent_frames

__all__ = ["VAE_PRESETS", "VAEConfig", "vae_preset"]

# Keys of released configs that the released model accepts and ignores.
_RELEASED_LEGACY_KEYS = frozenset(
    {"use_dino", "frame_features_dim", "num_frame_tokens", "temp_method", "use_refine3d"}
)


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of TrajLoom-VAE (paper §3.2, appendix A.1)."""

    width: int = 832  # working resolution in pixels
    height: int = 480
    stride: int = 32  # grid stride = patch size: one token per grid point
    num_frames: int = 81  # frames per segment (T)
    temporal_factor: int = 4  # latent steps 1 + (T - 1) / factor, first frame kept
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
        for name in (
            "width",
            "height",
            "stride",
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
        self.grid  # noqa: B018  (validates width/height against stride)
        if self.temporal_compression:
            latent_frames(self.num_frames, self.temporal_factor)  # raises with a suggestion
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

    @property
    def grid(self) -> GridSpec:
        return GridSpec(width=self.width, height=self.height, stride=self.stride)

    @property
    def num_tokens(self) -> int:
        """Tokens per frame, N = Hg * Wg."""
        return self.grid.num_points

    @property
    def latent_frames(self) -> int:
        """T': latent steps (21 for 81 frames)."""
        if not self.temporal_compression:
            return self.num_frames
        return latent_frames(self.num_frames, self.temporal_factor)

    def replace(self, **changes: Any) -> VAEConfig:
        return VAEConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAEConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"VAEConfig.from_dict: unknown keys {sorted(unknown)}; known keys are "
                f"{sorted(known)} (for a released config use VAEConfig.from_released_dict)"
            )
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> VAEConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_released_dict(cls, d: dict[str, Any]) -> VAEConfig:
        """Build from the released model kwargs (``trajloom_vae.config`` of the config JSON).

        Accepts the keys of the released ``TrajLoomVAE.__init__``; legacy keys are ignored
        as the release ignores them. Options the release offers but the paper's model
        does not use (``learn_sigma``, ``in_channels != 2``) are refused with a reason.
        """
        d = dict(d)
        unknown = set(d) - _RELEASED_LEGACY_KEYS - set(_RELEASED_DEFAULTS)
        if unknown:
            raise ValueError(f"released VAE config has unknown keys {sorted(unknown)}")
        merged = {**_RELEASED_DEFAULTS, **{k: v for k, v in d.items() if k in _RELEASED_DEFAULTS}}
        if merged["learn_sigma"]:
            raise ValueError(
                "released VAE config: learn_sigma=True is not supported (paper: False)"
            )
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
        return cls(
            width=int(merged["input_width"]),
            height=int(merged["input_height"]),
            stride=int(merged["patch_size"]),
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

    def to_released_dict(self) -> dict[str, Any]:
        """The released model kwargs for this architecture (inverse of ``from_released_dict``)."""
        return {
            "encoder_depth": self.encoder_depth,
            "decoder_depth": self.decoder_depth,
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "patch_size": self.stride,
            "in_channels": 2,
            "latent_channels": self.latent_channels,
            "input_height": self.height,
            "input_width": self.width,
            "num_frames_in": self.num_frames,
            "num_frames_latent": self.latent_frames,
            "use_temp_compress": self.temporal_compression,
            "temp_stride": self.temporal_factor,
            "use_offsets": self.use_offsets,
            "learn_sigma": False,
            "beta": self.beta,
            "pos_embed_dim": self.pos_embed_dim,
            "mlp_ratio": self.mlp_ratio,
        }


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


def _paper() -> VAEConfig:
    """The released/paper model: 16 + 16 blocks, width 512, 8 heads, 16 latent channels."""
    return VAEConfig()


def _small() -> VAEConfig:
    """A few minutes per hundred steps on 2 CPU cores: 256x192 (48 tokens), 33 frames."""
    return VAEConfig(
        width=256,
        height=192,
        stride=32,
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
        width=128,
        height=96,
        stride=32,
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

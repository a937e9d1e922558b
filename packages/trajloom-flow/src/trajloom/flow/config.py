"""The TrajLoom-Flow generator's configuration and its size presets (paper §3.3, app. A.2, E.1).

:class:`GeneratorConfig` holds every field of the released ``generator`` config section
that changes the architecture or the numbers, under the released names where one exists,
plus the fields that give tensor shapes and two ablation switches. It round-trips through
JSON (:meth:`GeneratorConfig.to_dict` / :meth:`GeneratorConfig.from_dict`);
``from_dict`` also reads a released ``generator`` section, ignoring its legacy keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from trajloom.encoding import GridSpec

__all__ = [
    "GENERATOR_PRESETS",
    "LEGACY_GENERATOR_KEYS",
    "GeneratorConfig",
    "generator_preset",
]

SPATIAL_CTX_MODES = ("pooled_last", "time_mean", "none")
VIDEO_CTX_MODES = ("concat", "sum")
TRACK_FUSION_MODES = ("add_last_plus_vel", "add_last")
VIDEO_FUSION_MODES = ("none", "add_last")

# Keys of the released ``generator`` section that change nothing in the model: ``dropout``
# is read by no layer of the released generator.
LEGACY_GENERATOR_KEYS = frozenset({"dropout"})


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of the TrajLoom-Flow generator (a DiT over VAE latent tokens).

    Shapes: future latents ``"b tf n c"`` with ``tf = fut_latent_frames``, history
    latents ``"b th n c"`` with ``th = hist_latent_frames``, ``n = num_tokens`` =
    (input_height / patch_size) x (input_width / patch_size), ``c = latent_channels``.
    """

    # --- shapes -------------------------------------------------------------------
    latent_channels: int = 16  # C of the trajectory VAE latent
    hist_latent_frames: int = 21  # history latent steps (81 frames / 4, first kept)
    fut_latent_frames: int = 21  # future latent steps
    input_height: int = 480  # working resolution, pixels; the token grid is height / patch
    input_width: int = 832
    patch_size: int = 32  # pixels per token cell = the VAE patch = the track grid stride
    # --- width and depth ----------------------------------------------------------
    hidden_size: int = 768
    num_heads: int = 12
    depth: int = 16  # blocks; even, used as (spatial, temporal) pairs
    mlp_ratio: float = 4.0
    qk_norm: bool = True  # RMSNorm (no affine) on each head's q and k, in both attentions
    # --- conditioning -------------------------------------------------------------
    use_video_cond: bool = True  # history video latents in the context and the cond vector
    video_latent_channels: int = 16  # Wan2.1 VAE latent channels
    use_text_cond: bool = True  # pooled caption embedding in the cond vector
    text_embed_dim: int = 4096  # umT5-xxl width
    use_hist_vis_cond: bool = True  # history visibility projected into the track context
    hist_vis_scale_init: float = 1.0
    # --- absolute time positions (frames of the latent steps) ---------------------
    num_frames_in: int = 81  # history frames; the future starts at this frame
    latent_time_stride: int = 4  # frames per latent step
    use_overlap: bool = False  # future starts at the last history frame instead
    # --- context routing ----------------------------------------------------------
    temporal_first: bool = True  # in each pair, temporal block before spatial block
    spatial_ctx_mode: str = "pooled_last"  # what spatial blocks cross-attend to
    spatial_ctx_pool: int = 1  # pooling window (tokens) of the pooled_last context
    spatial_ctx_last_k: int = 1  # last k history steps in the pooled_last context
    spatial_ctx_include_video: bool = True  # pooled_last also takes video steps (concat mode)
    video_ctx_mode: str = "concat"  # video context: "concat" along time, or "sum"
    # --- token-aligned history fusion (paper §3.3 boundary hints) ------------------
    use_history_fusion: bool = True  # ablation switch; the fusion parameters exist either way
    track_fusion: str = "add_last_plus_vel"  # c_last + w_t (c_last - c_prev), or "add_last"
    track_fusion_scale_init: float = 0.1
    track_fusion_use_time_gate: bool = True  # learnable per-future-step gate sigmoid(g_t)
    video_fusion: str = "none"  # "add_last": also add the last video context step
    video_fusion_scale_init: float = 0.05
    # --- runtime only (does not change the weights or the numbers) ----------------
    activation_checkpointing: bool = False  # recompute each block in backward (saves memory)

    def __post_init__(self) -> None:
        positive = (
            "latent_channels",
            "hist_latent_frames",
            "fut_latent_frames",
            "input_height",
            "input_width",
            "patch_size",
            "hidden_size",
            "num_heads",
            "depth",
            "video_latent_channels",
            "text_embed_dim",
            "num_frames_in",
            "latent_time_stride",
            "spatial_ctx_pool",
            "spatial_ctx_last_k",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GeneratorConfig.{name} must be a positive int, got {value!r}")
        if self.depth % 2:
            raise ValueError(
                f"GeneratorConfig.depth={self.depth} must be even: blocks come in "
                "(spatial, temporal) pairs"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"GeneratorConfig.hidden_size={self.hidden_size} is not divisible by "
                f"num_heads={self.num_heads}"
            )
        if self.hidden_size % 2:
            raise ValueError(f"GeneratorConfig.hidden_size must be even, got {self.hidden_size}")
        if self.input_height % self.patch_size or self.input_width % self.patch_size:
            raise ValueError(
                f"GeneratorConfig: input {self.input_width}x{self.input_height} must be a "
                f"multiple of patch_size={self.patch_size}"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(f"GeneratorConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")
        choices = (
            ("spatial_ctx_mode", SPATIAL_CTX_MODES),
            ("video_ctx_mode", VIDEO_CTX_MODES),
            ("track_fusion", TRACK_FUSION_MODES),
            ("video_fusion", VIDEO_FUSION_MODES),
        )
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"GeneratorConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if self.track_fusion == "add_last_plus_vel" and self.hist_latent_frames < 2:
            raise ValueError(
                "GeneratorConfig: track_fusion='add_last_plus_vel' needs hist_latent_frames >= 2 "
                "(the velocity is the difference of the last two history steps)"
            )

    # --- derived shapes -------------------------------------------------------------
    @property
    def grid_h(self) -> int:
        """Token rows, ``input_height / patch_size`` (15 for the paper)."""
        return self.input_height // self.patch_size

    @property
    def grid_w(self) -> int:
        """Token columns, ``input_width / patch_size`` (26 for the paper)."""
        return self.input_width // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Tokens per latent step, N = grid_h * grid_w (390 for the paper)."""
        return self.grid_h * self.grid_w

    @property
    def grid(self) -> GridSpec:
        """The track grid these tokens sit on."""
        return GridSpec(width=self.input_width, height=self.input_height, stride=self.patch_size)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of each block's MLP, ``int(hidden_size * mlp_ratio)`` as released."""
        return int(self.hidden_size * self.mlp_ratio)

    # --- serialization --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorConfig:
        """Build from our dict or from a released ``generator`` config section.

        Released names map as: ``num_frames_latent`` -> both ``hist_latent_frames`` and
        ``fut_latent_frames`` (the release uses one T for both); ``track_fusion="none"``
        -> ``use_history_fusion=False``. Legacy keys (``dropout``) are ignored; any other
        unknown key is an error, so that a typo does not silently change the model.
        """
        d = dict(d)
        for key in LEGACY_GENERATOR_KEYS:
            d.pop(key, None)
        if "num_frames_latent" in d:
            t = d.pop("num_frames_latent")
            d.setdefault("hist_latent_frames", t)
            d.setdefault("fut_latent_frames", t)
        if d.get("track_fusion") == "none":
            d["track_fusion"] = "add_last_plus_vel"
            d["use_history_fusion"] = False
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"GeneratorConfig.from_dict: unknown keys {unknown}; known keys are {sorted(known)}"
            )
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> GeneratorConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> GeneratorConfig:
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)


def _paper() -> GeneratorConfig:
    # The released configs/trajloom_generator_config.json "generator" section (= paper:
    # 16 blocks, hidden 768, 12 heads, 832x480 at stride 32, 21 + 21 latent steps).
    return GeneratorConfig()


def _small() -> GeneratorConfig:
    # Pairs with vae_preset("small"): 256x192 at stride 32 (48 tokens), 33 frames (9 latent
    # steps), 16 latent channels; every conditioning path of the paper model, a third of its
    # width and half its depth. 7.7 GFLOP per sample forward; an AdamW step on a batch
    # of 8 took 11 s on one core of a busy 2-core machine.
    return GeneratorConfig(
        hist_latent_frames=9,
        fut_latent_frames=9,
        input_height=192,
        input_width=256,
        hidden_size=256,
        num_heads=4,
        depth=8,
        num_frames_in=33,
    )


def _tiny() -> GeneratorConfig:
    # Pairs with vae_preset("tiny"): 128x96 at stride 32 (12 tokens), 17 frames (5 latent
    # steps), 8 latent channels, a small text embedding; every conditioning path is kept.
    # Trains on 2 CPU cores in seconds.
    return GeneratorConfig(
        latent_channels=8,
        hist_latent_frames=5,
        fut_latent_frames=5,
        input_height=96,
        input_width=128,
        hidden_size=64,
        num_heads=4,
        depth=2,
        text_embed_dim=32,
        num_frames_in=17,
    )


GENERATOR_PRESETS: dict[str, Callable[[], GeneratorConfig]] = {
    "paper": _paper,
    "small": _small,
    "tiny": _tiny,
}


def generator_preset(name: str, **overrides: Any) -> GeneratorConfig:
    """The preset ``name`` (``"paper"``, ``"small"``, ``"tiny"``), with ``overrides`` applied."""
    if name not in GENERATOR_PRESETS:
        raise ValueError(
            f"unknown generator preset {name!r}; choose one of {sorted(GENERATOR_PRESETS)}"
        )
    config = GENERATOR_PRESETS[name]()
    return config.replace(**overrides) if overrides else config

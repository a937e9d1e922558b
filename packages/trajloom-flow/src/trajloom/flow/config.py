"""The TrajLoom-Flow generator's configuration and its size presets (paper §3.3, app. A.2, E.1).

:class:`GeneratorConfig` holds every field of the released ``generator`` config section
that changes the architecture or the numbers, plus two ablation switches. Its geometry is
said as the VAE says it, in ``trajloom.encoding``'s vocabulary: a
:class:`~trajloom.encoding.GridSpec`, the frames per window and the temporal factor;
token counts and latent steps are derived from them. It round-trips through JSON
(:meth:`GeneratorConfig.to_dict` / :meth:`GeneratorConfig.from_dict`); ``from_dict`` also
reads the previous layout of our ``config.json`` (:data:`PREVIOUS_GENERATOR_KEYS`), and
hands a released ``generator`` section to :mod:`trajloom.flow.released`.

The fields a VAE fixes are :func:`vae_geometry`; :func:`check_matches_vae` is the one
check that a generator (and a visibility head) run on a given VAE.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from dataclasses import replace as dc_replace
from typing import Any, Protocol

from trajloom.encoding import (
    DEFAULT_GRID,
    DEFAULT_HISTORY,
    DEFAULT_TEMPORAL_FACTOR,
    GridSpec,
    latent_frames,
)
from trajloom.vae.config import VAEConfig


class _LatentReader(Protocol):
    """What a head reading the VAE's latents (e.g. ``VisibilityConfig``) must agree on."""

    @property
    def latent_channels(self) -> int: ...

    @property
    def temporal_factor(self) -> int: ...


__all__ = [
    "GENERATOR_PRESETS",
    "LEGACY_GENERATOR_KEYS",
    "PREVIOUS_GENERATOR_KEYS",
    "GeneratorConfig",
    "check_matches_vae",
    "generator_preset",
    "vae_geometry",
]

SPATIAL_CTX_MODES = ("pooled_last", "time_mean", "none")
VIDEO_CTX_MODES = ("concat", "sum")
TRACK_FUSION_MODES = ("add_last_plus_vel", "add_last")
VIDEO_FUSION_MODES = ("none", "add_last")

# Keys of the released ``generator`` section that change nothing in the model: ``dropout``
# is read by no layer of the released generator.
LEGACY_GENERATOR_KEYS = frozenset({"dropout"})

# Keys of our config.json before issue 13 (trained sets saved by earlier versions) and the
# field each maps to; "grid.<name>" is a field of ``grid``. The previous latent step counts
# are derived now and only checked.
PREVIOUS_GENERATOR_KEYS = {
    "input_width": "grid.width",
    "input_height": "grid.height",
    "patch_size": "grid.stride",
    "num_frames_in": "num_frames",
    "latent_time_stride": "temporal_factor",
}
_PREVIOUS_LATENT_KEYS = ("hist_latent_frames", "fut_latent_frames")
# Keys only a released ``generator`` section has (read by trajloom.flow.released).
_RELEASED_ONLY_KEYS = frozenset({"num_frames_latent"}) | LEGACY_GENERATOR_KEYS


def is_released_section(d: Mapping[str, Any]) -> bool:
    """Whether ``d`` is in the released ``generator`` layout rather than ours."""
    return bool(_RELEASED_ONLY_KEYS & set(d)) or (
        d.get("track_fusion") == "none" and "grid" not in d
    )


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of the TrajLoom-Flow generator (a DiT over VAE latent tokens).

    Shapes: future latents ``"b tf n c"`` with ``tf = fut_latent_frames``, history
    latents ``"b th n c"`` with ``th = hist_latent_frames`` (both
    ``1 + (num_frames - 1) / temporal_factor``), ``n = num_tokens`` = the points of
    ``grid``, ``c = latent_channels``.
    """

    # --- shapes (the VAE's geometry: see vae_geometry) ----------------------------
    grid: GridSpec = DEFAULT_GRID  # the track grid; one token per point (stride = VAE patch)
    num_frames: int = DEFAULT_HISTORY  # frames per window, history and future alike
    temporal_factor: int = DEFAULT_TEMPORAL_FACTOR  # frames per latent step
    latent_channels: int = 16  # C of the trajectory VAE latent
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
    # The history is frames [0, num_frames), the future starts at frame num_frames ...
    use_overlap: bool = False  # ... or at the last history frame instead
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
        if not isinstance(self.grid, GridSpec):
            raise ValueError(
                f"GeneratorConfig.grid must be a trajloom.encoding.GridSpec (e.g. "
                f"{DEFAULT_GRID!r}), got {self.grid!r}"
            )
        positive = (
            "num_frames",
            "temporal_factor",
            "latent_channels",
            "hidden_size",
            "num_heads",
            "depth",
            "video_latent_channels",
            "text_embed_dim",
            "spatial_ctx_pool",
            "spatial_ctx_last_k",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GeneratorConfig.{name} must be a positive int, got {value!r}")
        try:
            latent_frames(self.num_frames, self.temporal_factor)
        except ValueError as err:
            raise ValueError(f"GeneratorConfig.num_frames: {err}") from None
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
                "GeneratorConfig: track_fusion='add_last_plus_vel' needs at least 2 history "
                f"latent steps (the velocity is the difference of the last two); num_frames="
                f"{self.num_frames} with temporal_factor={self.temporal_factor} gives one"
            )

    # --- derived shapes -------------------------------------------------------------
    @property
    def hist_latent_frames(self) -> int:
        """History latent steps, ``1 + (num_frames - 1) / temporal_factor`` (21 for the paper)."""
        return latent_frames(self.num_frames, self.temporal_factor)

    @property
    def fut_latent_frames(self) -> int:
        """Future latent steps; the future window has as many frames as the history."""
        return latent_frames(self.num_frames, self.temporal_factor)

    @property
    def grid_h(self) -> int:
        """Token rows (15 for the paper)."""
        return self.grid.grid_h

    @property
    def grid_w(self) -> int:
        """Token columns (26 for the paper)."""
        return self.grid.grid_w

    @property
    def num_tokens(self) -> int:
        """Tokens per latent step, N = grid_h * grid_w (390 for the paper)."""
        return self.grid.num_points

    # Read-only aliases under the previous (released) names, for callers not yet switched.
    @property
    def input_width(self) -> int:
        return self.grid.width

    @property
    def input_height(self) -> int:
        return self.grid.height

    @property
    def patch_size(self) -> int:
        return self.grid.stride

    @property
    def num_frames_in(self) -> int:
        return self.num_frames

    @property
    def latent_time_stride(self) -> int:
        return self.temporal_factor

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
    def from_dict(cls, d: Mapping[str, Any]) -> GeneratorConfig:
        """Build from :meth:`to_dict`'s layout, or the previous layout of our ``config.json``.

        Previous keys map as :data:`PREVIOUS_GENERATOR_KEYS` says (they override the
        matching entries of ``grid``); ``hist_latent_frames`` and ``fut_latent_frames`` are
        derived now and checked. A released ``generator`` section (it has
        ``num_frames_latent`` or ``dropout``, or ``track_fusion="none"``) is read by
        :func:`trajloom.flow.released.generator_config_from_section`. Any other unknown key
        is an error, so that a typo does not silently change the model.
        """
        if is_released_section(d):
            raise ValueError(
                "GeneratorConfig.from_dict got a released 'generator' config section (it has "
                f"{sorted(_RELEASED_ONLY_KEYS & set(d)) or ['track_fusion']}); read it with "
                "trajloom.flow.released.generator_config_from_section"
            )
        d = dict(d)
        grid = d.pop("grid", DEFAULT_GRID)
        if isinstance(grid, Mapping):
            grid = GridSpec(**grid)
        grid_changes = {}
        for old, new in PREVIOUS_GENERATOR_KEYS.items():
            if old in d:
                if new.startswith("grid."):
                    grid_changes[new.removeprefix("grid.")] = d.pop(old)
                else:
                    d[new] = d.pop(old)
        if grid_changes:
            grid = dc_replace(grid, **grid_changes)
        previous_latent = {k: d.pop(k) for k in _PREVIOUS_LATENT_KEYS if k in d}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"GeneratorConfig.from_dict: unknown keys {unknown}; known keys are {sorted(known)}"
            )
        config = cls(grid=grid, **d)
        for key, value in previous_latent.items():
            if value != getattr(config, key):
                raise ValueError(
                    f"GeneratorConfig.from_dict: {key}={value} does not follow from num_frames="
                    f"{config.num_frames} with temporal_factor={config.temporal_factor} (that "
                    f"gives {getattr(config, key)}); latent steps are derived now: set num_frames "
                    "(the frames per window) instead"
                )
        return config

    @classmethod
    def from_json(cls, text: str) -> GeneratorConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> GeneratorConfig:
        """A copy with ``changes`` (fields, or the previous keys of :meth:`from_dict`)."""
        return GeneratorConfig.from_dict({**self.to_dict(), **changes})

    def for_vae(self, vae: VAEConfig) -> GeneratorConfig:
        """This generator on ``vae``'s latent space: the fields of :func:`vae_geometry` set."""
        return self.replace(**vae_geometry(vae))


def vae_geometry(vae: VAEConfig) -> dict[str, Any]:
    """The fields of a generator config that the VAE it runs on fixes.

    ``grid`` (one token per grid point), ``num_frames`` (frames per window: one VAE encodes
    history and future), ``temporal_factor`` (frames per latent step: 1 without temporal
    compression) and ``latent_channels``.
    """
    return {
        "grid": vae.grid,
        "num_frames": vae.num_frames,
        "temporal_factor": vae.frames_per_latent,
        "latent_channels": vae.latent_channels,
    }


def check_matches_vae(
    vae: VAEConfig,
    generator: GeneratorConfig,
    visibility: _LatentReader | None = None,
) -> None:
    """Raise ValueError if ``generator`` (or ``visibility``) cannot run on ``vae``'s latents.

    The generator must have every field of :func:`vae_geometry`; the visibility head the
    latent channels and the frames per latent step. The message names each disagreeing
    field and its two values.
    """
    problems = [
        f"generator.{name}={getattr(generator, name)!r} vs vae {value!r}"
        for name, value in vae_geometry(vae).items()
        if getattr(generator, name) != value
    ]
    if visibility is not None:
        if visibility.latent_channels != vae.latent_channels:
            problems.append(
                f"visibility.latent_channels={visibility.latent_channels} vs vae "
                f"{vae.latent_channels}"
            )
        if visibility.temporal_factor != vae.frames_per_latent:
            problems.append(
                f"visibility.temporal_factor={visibility.temporal_factor} vs vae "
                f"{vae.frames_per_latent}"
            )
    if problems:
        raise ValueError(
            "the generator/visibility head and the VAE disagree: "
            + "; ".join(problems)
            + ". They must come from one trained set (build them with .for_vae(vae_config))"
        )


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
        grid=GridSpec(width=256, height=192, stride=32),
        num_frames=33,
        hidden_size=256,
        num_heads=4,
        depth=8,
    )


def _tiny() -> GeneratorConfig:
    # Pairs with vae_preset("tiny"): 128x96 at stride 32 (12 tokens), 17 frames (5 latent
    # steps), 8 latent channels, a small text embedding; every conditioning path is kept.
    # Trains on 2 CPU cores in seconds.
    return GeneratorConfig(
        grid=GridSpec(width=128, height=96, stride=32),
        num_frames=17,
        latent_channels=8,
        hidden_size=64,
        num_heads=4,
        depth=2,
        text_embed_dim=32,
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

"""The training recipe: one frozen dataclass tree, overridable by dotted keys, saved as JSON.

A recipe holds every setting of every stage: the data, the model configs of the packages
(``VAEConfig``, ``GeneratorConfig``, ``VisibilityConfig``), their loss configs, and one
:class:`StageConfig` (steps, batches, optimizer, EMA, logging cadence) per trained stage.
Shape fields of the models follow from ``data`` (:func:`resolve`), so a run cannot train a
generator on a grid its VAE does not have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

from trajloom.data.synthetic import DYNAMICS
from trajloom.encoding import DEFAULT_FUTURE, DEFAULT_GRID, DEFAULT_HISTORY, GridSpec, WindowSpec
from trajloom.flow.conditioners import WAN_LATENT_CHANNELS, umt5_width, wan_resize_factor
from trajloom.flow.config import GeneratorConfig
from trajloom.flow.losses import FlowLossConfig
from trajloom.flow.onpolicy import OnPolicyConfig
from trajloom.flow.visibility import VisibilityConfig
from trajloom.vae.config import VAEConfig
from trajloom.vae.losses import VAELossConfig

__all__ = [
    "DERIVED_KEYS",
    "PREVIOUS_KEYS",
    "RUNTIME_KEYS",
    "ConditioningConfig",
    "DataConfig",
    "EvalConfig",
    "OptimConfig",
    "Recipe",
    "StageConfig",
    "StatsConfig",
    "VisTrainConfig",
    "apply_overrides",
    "config_diff",
    "recipe_from_dict",
    "recipe_to_dict",
    "resolve",
    "scale_steps",
]

SCHEDULES = ("constant", "cosine")
VIDEO_CONTEXTS = ("light", "wan", "none")
TEXT_CONTEXTS = ("hashed", "umt5", "none")
SOURCES = ("synthetic", "shards")
PRECISIONS = ("bf16", "fp32")


def _positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}.{name} must be a positive int, got {value!r}")


def _non_negative(owner: str, **values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{owner}.{name} must be an int >= 0, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where clips come from and the working geometry every model is built for."""

    source: str = "synthetic"  # "synthetic": scenes drawn on the fly; "shards": WebDataset
    shards: tuple[str, ...] = ()  # shard paths/URLs/folders (brace patterns allowed)
    width: int = DEFAULT_GRID.width  # working resolution, pixels
    height: int = DEFAULT_GRID.height
    stride: int = DEFAULT_GRID.stride  # grid stride = VAE patch = generator token cell
    history: int = DEFAULT_HISTORY  # frames per history window (= VAE segment length)
    future: int = DEFAULT_FUTURE  # frames per future window
    # Synthetic: distinct training scenes (clip i uses scene i mod pool); 0 draws a new scene
    # for every sample. A pool keeps scene generation out of the step time on small CPUs.
    scene_pool: int = 1024
    min_objects: int = 1
    max_objects: int = 4
    # Synthetic: the world's motion, a key of trajloom.data.synthetic.DYNAMICS ("rigid":
    # mostly constant velocity; "lively": swings, gravity and bounces, turns, more shake).
    dynamics: str = "rigid"
    val_clips: int = 16  # held-out clips for periodic validation
    shuffle_buffer: int = 256  # shards: samples held for shuffling
    window_stride: int | None = None  # shards: frames between windows (None: one per clip)
    # Shards: the fraction of source videos held out of training (every window of a video
    # goes with it; trajloom.data.stream.sample_split); `dev_fraction` of them (by another
    # hash) are dev videos that choose anything, the rest test videos that are reported.
    # With 0, every held-out video is a test video and dev choices read training videos.
    holdout: float = 0.1
    dev_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"data.source must be one of {SOURCES}, got {self.source!r}")
        object.__setattr__(self, "shards", tuple(str(s) for s in self.shards))
        if self.source == "shards" and not self.shards:
            raise ValueError("data.source='shards' needs data.shards (paths or URLs); none given")
        _positive("data", width=self.width, height=self.height, stride=self.stride)
        _positive("data", history=self.history, future=self.future, val_clips=self.val_clips)
        _non_negative("data", scene_pool=self.scene_pool, shuffle_buffer=self.shuffle_buffer)
        _positive("data", min_objects=self.min_objects, max_objects=self.max_objects)
        if self.dynamics not in DYNAMICS:
            raise ValueError(
                f"data.dynamics must be one of {sorted(DYNAMICS)}, got {self.dynamics!r}"
            )
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"data.holdout must be in [0, 1), got {self.holdout!r}")
        if not 0.0 <= self.dev_fraction <= 1.0:
            raise ValueError(f"data.dev_fraction must be in [0, 1], got {self.dev_fraction!r}")
        if self.width % self.stride or self.height % self.stride:
            raise ValueError(
                f"data: {self.width}x{self.height} must be a multiple of stride {self.stride}"
            )
        if self.history != self.future:
            raise ValueError(
                f"data.history={self.history} and data.future={self.future} must be equal: one "
                f"VAE encodes both windows (the paper uses {DEFAULT_HISTORY} + {DEFAULT_FUTURE})"
            )

    @property
    def grid(self) -> GridSpec:
        """The working geometry every model of the recipe is built for."""
        return GridSpec(width=self.width, height=self.height, stride=self.stride)

    @property
    def windows(self) -> WindowSpec:
        """History and future frames (the temporal factor is the VAE's: see ``resolve``)."""
        return WindowSpec(history=self.history, future=self.future)


@dataclass(frozen=True)
class ConditioningConfig:
    """The video and caption context the generator trains with (paper §3.3).

    The built-in context (the default) needs no download and trains jointly with the
    generator; the released conditioners are cached once from local weights.
    """

    # "light": the cache stores the history frames at video_cell x video_cell pixels per
    # token and a LightVideoEncoder trains with the generator; "wan": the cache stores
    # Wan2.1 VAE latents on the token grid (local weights in video_path); "none".
    video: str = "light"
    # "hashed": a HashedTextEncoder (hashed words and word pairs) trains with the generator
    # on the captions; "umt5": the cache stores pooled umT5 embeddings (text_path); "none".
    text: str = "hashed"
    video_cell: int = 4  # pixels per token side of the cached frames (a divisor of the stride)
    video_hidden: int = 64  # LightVideoEncoder conv channels
    text_dim: int = 64  # HashedTextEncoder width = the generator's text_embed_dim
    text_buckets: int = 4096  # HashedTextEncoder hash buckets
    video_path: str = ""  # local Wan2.1 VAE weights (video="wan")
    text_path: str = ""  # local umT5 encoder weights (text="umt5")

    def __post_init__(self) -> None:
        if self.video not in VIDEO_CONTEXTS:
            raise ValueError(
                f"conditioning.video must be one of {VIDEO_CONTEXTS}, got {self.video!r}"
            )
        if self.text not in TEXT_CONTEXTS:
            raise ValueError(f"conditioning.text must be one of {TEXT_CONTEXTS}, got {self.text!r}")
        _positive("conditioning", video_cell=self.video_cell, video_hidden=self.video_hidden)
        _positive("conditioning", text_dim=self.text_dim, text_buckets=self.text_buckets)
        if (self.video == "wan") != bool(self.video_path):
            raise ValueError(
                "conditioning: video='wan' goes with video_path (local Wan2.1 VAE weights; "
                f"`--video-encoder PATH`), got video={self.video!r}, video_path={self.video_path!r}"
            )
        if (self.text == "umt5") != bool(self.text_path):
            raise ValueError(
                "conditioning: text='umt5' goes with text_path (local umT5 weights; "
                f"`--text-encoder PATH`), got text={self.text!r}, text_path={self.text_path!r}"
            )

    def manifest(self) -> dict[str, Any]:
        """What a latent cache made for this context must record (``latents.json``)."""
        video: dict[str, Any] = {"kind": self.video}
        if self.video == "light":
            video["cell"] = self.video_cell
        elif self.video == "wan":
            video["path"] = self.video_path
        text: dict[str, Any] = {"kind": self.text}
        if self.text == "umt5":
            text["path"] = self.text_path
        return {"video": video, "text": text}


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup and a constant or cosine schedule; gradient-norm clipping."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    min_lr: float = 0.0  # cosine floor
    clip_grad_norm: float = 1.0  # 0 disables clipping

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not self.lr > 0 or self.min_lr < 0 or self.weight_decay < 0 or self.clip_grad_norm < 0:
            raise ValueError(
                f"optim: lr must be > 0 and min_lr, weight_decay, clip_grad_norm >= 0, got "
                f"{self.lr}, {self.min_lr}, {self.weight_decay}, {self.clip_grad_norm}"
            )
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _non_negative("optim", warmup_steps=self.warmup_steps)


@dataclass(frozen=True)
class StageConfig:
    """One trained stage: length, batches, optimizer, EMA, and the logging cadence.

    ``batch_size`` is the global batch per optimizer step, over all processes and
    accumulation steps; ``micro_batch_size`` is the most one process runs per forward pass
    (fewer when ``batch_size / world size`` is smaller). Accumulation = batch_size /
    (micro-batch x world size), so the same recipe gives the same updates on 1 CPU or 8
    GPUs.
    """

    steps: int = 100
    batch_size: int = 16
    micro_batch_size: int = 16
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema_decay: float = 0.0  # 0: no EMA; sampling and export use the EMA weights otherwise
    log_every: int = 10
    val_every: int = 0  # 0: validate only at the end
    preview_every: int = 0  # 0: no periodic preview
    save_every: int = 0  # 0: checkpoint only at the end
    keep_last: int = 3  # checkpoints kept

    def __post_init__(self) -> None:
        _positive("stage", steps=self.steps, batch_size=self.batch_size)
        _positive("stage", micro_batch_size=self.micro_batch_size, log_every=self.log_every)
        _positive("stage", keep_last=self.keep_last)
        _non_negative(
            "stage",
            val_every=self.val_every,
            preview_every=self.preview_every,
            save_every=self.save_every,
        )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"stage.ema_decay must be in [0, 1), got {self.ema_decay}")

    def micro_batch(self, world_size: int) -> int:
        """Samples one process runs per forward pass: ``micro_batch_size`` (a cap), or
        ``batch_size / world_size`` when the global batch leaves each process fewer."""
        return min(self.micro_batch_size, max(1, self.batch_size // world_size))

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per process per step; raises if the batch does not split evenly."""
        micro = self.micro_batch(world_size)
        if self.batch_size % (micro * world_size):
            raise ValueError(
                f"batch_size={self.batch_size} does not split into micro-batches of {micro} "
                f"on {world_size} processes; change micro_batch_size or the number of "
                "processes (--set <stage>.micro_batch_size=..., --procs)"
            )
        return self.batch_size // (micro * world_size)


@dataclass(frozen=True)
class StatsConfig:
    """Latent statistics: how many training clips to encode (both windows of each)."""

    clips: int = 256
    batch_size: int = 32  # per process

    def __post_init__(self) -> None:
        _positive("stats", clips=self.clips, batch_size=self.batch_size)


@dataclass(frozen=True)
class VisTrainConfig:
    """What the visibility head trains on (released ``vis_predictor_config.json`` ``train``)."""

    segments: tuple[str, ...] = ("hist", "fut")  # windows whose latents train the head
    pos_weight: float = 0.0  # BCE weight of the visible class (0: unweighted)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.segments))
        if not self.segments or not set(self.segments) <= {"hist", "fut"}:
            raise ValueError(
                f"vis_train.segments must be from ('hist', 'fut'), got {self.segments}"
            )
        if self.pos_weight < 0:
            raise ValueError(f"vis_train.pos_weight must be >= 0, got {self.pos_weight}")


@dataclass(frozen=True)
class EvalConfig:
    """The final evaluation on held-out clips (TrajLoomBench's protocol) and the preview.

    Test clips (reported): synthetic scenes of a seed stream no other split uses; with
    shards, the test videos of the training shards (``data.holdout``), or every window of
    ``shards`` when given (``--eval-data``). Dev clips (anything chosen, here the baseline
    windows): another seed stream, or the dev videos (the training videos where no
    held-out video is a dev one).
    """

    clips: int = 32  # held-out clips (at most this many from shards)
    samples: int = 1  # K futures per clip (minADE_K / minFDE_K / diversity)
    solver: str = "euler"  # "euler" or "dopri5"
    steps: int = 10  # Euler steps (paper default: 10)
    preview_clips: int = 2  # clips drawn side by side in preview.mp4
    fps: float = 8.0  # preview frame rate
    fvmd_clip_len: int = 16  # FVMD window length (<= future frames)
    fvmd_clip_stride: int = 1
    more_fvmd_clip_lens: tuple[int, ...] = (24,)  # FVMD over windows of these lengths too
    fvmd_long: bool = True  # FVMD over one window of the whole future (FVMD-Long)
    shards: tuple[str, ...] = ()  # evaluation shards (--eval-data); empty: see above
    # The model's caption at evaluation (trajloom.data.captions): "history" (the history
    # window's camera phrase: nothing from the future), "clip" (the whole clip's caption,
    # an oracle) or "none"; `oracle_row` adds the model with the clip's caption as a
    # labelled row when the main row does not use it.
    captions: str = "history"
    oracle_row: bool = True
    dev_clips: int = 32  # development clips the baseline windows are chosen on
    constvel_windows: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # candidates (frames)
    linear_windows: tuple[int, ...] = (2, 4, 8, 16, 32)

    def __post_init__(self) -> None:
        if self.solver not in ("euler", "dopri5"):
            raise ValueError(f"eval.solver must be 'euler' or 'dopri5', got {self.solver!r}")
        if self.captions not in ("history", "clip", "none"):
            raise ValueError(
                f"eval.captions must be 'history', 'clip' or 'none', got {self.captions!r}"
            )
        _positive("eval", dev_clips=self.dev_clips)
        for name in ("constvel_windows", "linear_windows"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            if not getattr(self, name):
                raise ValueError(f"eval.{name} needs at least one window")
            for w in getattr(self, name):
                _positive("eval", **{name: w})
        _positive("eval", clips=self.clips, steps=self.steps, fvmd_clip_len=self.fvmd_clip_len)
        _positive("eval", fvmd_clip_stride=self.fvmd_clip_stride, samples=self.samples)
        object.__setattr__(self, "shards", tuple(str(s) for s in self.shards))
        object.__setattr__(self, "more_fvmd_clip_lens", tuple(self.more_fvmd_clip_lens))
        for length in self.more_fvmd_clip_lens:
            _positive("eval", more_fvmd_clip_lens=length)
        _non_negative("eval", preview_clips=self.preview_clips)


@dataclass(frozen=True)
class Recipe:
    """Everything a run trains with. Build one with a recipe function, then :func:`resolve`."""

    name: str
    seed: int = 0
    precision: str = "bf16"  # autocast dtype on CUDA; CPU always runs float32
    activation_checkpointing: bool = False
    # Regional torch.compile of the VAE and generator blocks, on CUDA only (CPU runs skip
    # it: compiling costs more there than it saves). Numbers change at bf16 rounding.
    compile_blocks: bool = False
    # Probability of training a sample with the null caption (released
    # text_encoder.dropout_prob 0.1); used when the generator is caption-conditioned.
    text_dropout: float = 0.1
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    data: DataConfig = field(default_factory=DataConfig)
    vae_model: VAEConfig = field(default_factory=VAEConfig)
    vae_loss: VAELossConfig = field(default_factory=VAELossConfig)
    vae: StageConfig = field(default_factory=StageConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    flow_loss: FlowLossConfig = field(default_factory=FlowLossConfig)
    flow: StageConfig = field(default_factory=StageConfig)
    onpolicy_loss: OnPolicyConfig = field(default_factory=OnPolicyConfig)
    onpolicy: StageConfig = field(default_factory=StageConfig)
    visibility_model: VisibilityConfig = field(default_factory=VisibilityConfig)
    vis_train: VisTrainConfig = field(default_factory=VisTrainConfig)
    vis: StageConfig = field(default_factory=StageConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0.0 <= self.text_dropout <= 1.0:
            raise ValueError(f"text_dropout must be in [0, 1], got {self.text_dropout}")

    def stage(self, name: str) -> StageConfig:
        return getattr(self, name)


# Model fields that follow from the data and the VAE (set by `resolve`, never by hand).
DERIVED_KEYS = frozenset(
    {
        "vae_model.grid.width",
        "vae_model.grid.height",
        "vae_model.grid.stride",
        "vae_model.num_frames",
        "vae_model.gradient_checkpointing",
        "vae_loss.beta",
        "generator.grid.width",
        "generator.grid.height",
        "generator.grid.stride",
        "generator.num_frames",
        "generator.temporal_factor",
        "generator.latent_channels",
        "generator.activation_checkpointing",
        "generator.use_video_cond",
        "generator.use_text_cond",
        "visibility_model.latent_channels",
        "visibility_model.temporal_factor",
    }
)

# Override keys of recipes before the model configs shared trajloom.encoding's vocabulary,
# and what they are now (None: derived, no key of its own). All of them are derived.
PREVIOUS_KEYS: dict[str, str | None] = {
    "vae_model.width": "vae_model.grid.width",
    "vae_model.height": "vae_model.grid.height",
    "vae_model.stride": "vae_model.grid.stride",
    "generator.input_width": "generator.grid.width",
    "generator.input_height": "generator.grid.height",
    "generator.patch_size": "generator.grid.stride",
    "generator.num_frames_in": "generator.num_frames",
    "generator.latent_time_stride": "generator.temporal_factor",
    "generator.hist_latent_frames": None,
    "generator.fut_latent_frames": None,
}

# The model configs of a recipe; they read their own previous JSON layouts (from_dict).
_MODEL_SECTIONS: dict[str, Any] = {
    "vae_model": VAEConfig,
    "generator": GeneratorConfig,
    "visibility_model": VisibilityConfig,
}

# Keys that may change when a run is resumed: they change what is logged, kept or how the
# batch is split over processes, never a number the training computes (micro_batch_size:
# resume on another number of GPUs; eval runs after the trained stages).
RUNTIME_KEYS = frozenset(
    {
        "log_every",
        "val_every",
        "preview_every",
        "save_every",
        "keep_last",
        "micro_batch_size",
        "eval",
    }
)


def resolve(recipe: Recipe) -> Recipe:
    """Set every derived shape field from ``data`` and the VAE; returns the new recipe.

    Also checks what single fields cannot: each stage's batch splits into micro-batches.
    """
    for name in ("vae", "flow", "onpolicy", "vis"):
        stage = recipe.stage(name)
        if stage.batch_size % stage.micro_batch_size:
            raise ValueError(
                f"{name}.batch_size={stage.batch_size} must be a multiple of "
                f"{name}.micro_batch_size={stage.micro_batch_size}"
            )
    d = recipe.data
    ckpt = recipe.activation_checkpointing
    vae = replace(recipe.vae_model, grid=d.grid, num_frames=d.history, gradient_checkpointing=ckpt)
    cond = recipe.conditioning
    gen = replace(
        recipe.generator.for_vae(vae),
        activation_checkpointing=ckpt,
        use_video_cond=cond.video != "none",
        use_text_cond=cond.text != "none",
    )
    if cond.text == "hashed":
        gen = replace(gen, text_embed_dim=cond.text_dim)
    elif cond.text == "umt5":  # the width of the cached embeddings
        gen = replace(gen, text_embed_dim=umt5_width(cond.text_path))
    if cond.video == "wan":
        wan_resize_factor(d.grid)  # raises for a grid the Wan latents cannot lie on
        gen = replace(gen, video_latent_channels=WAN_LATENT_CHANNELS)
    vis = recipe.visibility_model.for_vae(vae)
    loss = replace(recipe.vae_loss, beta=vae.beta)
    return replace(recipe, vae_model=vae, generator=gen, visibility_model=vis, vae_loss=loss)


# ----------------------------------------------------------------------------- overrides


def _parse_value(key: str, text: str, current: Any) -> Any:
    """Parse ``text`` as the type of ``current`` (the field's present value)."""
    try:
        if isinstance(current, bool):
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if isinstance(current, int) or (current is None and text.strip().lstrip("-").isdigit()):
            return int(text)
        if isinstance(current, float):
            return _finite(float(text))
        if isinstance(current, tuple):
            if text.strip().startswith("["):
                return tuple(json.loads(text))
            items = [s.strip() for s in text.split(",") if s.strip()]
            if (
                current
                and isinstance(current[0], (int, float))
                and not isinstance(current[0], bool)
            ):
                kind = type(current[0])
                return tuple(_finite(kind(s)) for s in items)
            return tuple(items)
        if current is None and text.strip().lower() in ("none", "null"):
            return None
        return text
    except ValueError as err:
        raise ValueError(
            f"override {key}={text!r}: cannot parse as {type(current).__name__} ({err})"
        ) from err


def _finite(value: float) -> float:
    # every number of a recipe is finite: inf/nan hyper-parameters only train on NaN
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


def _keys(obj: Any, prefix: str = "") -> list[str]:
    out = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        if is_dataclass(value):
            out += _keys(value, path + ".")
        else:
            out.append(path)
    return out


def _set(obj: Any, parts: list[str], text: str, full: str) -> Any:
    names = {f.name for f in fields(obj)}
    head = parts[0]
    if head not in names:
        raise KeyError(head)
    current = getattr(obj, head)
    if len(parts) == 1:
        if is_dataclass(current):
            raise KeyError(head)
        value = _parse_value(full, text, current)
    else:
        if not is_dataclass(current):
            raise KeyError(head)
        value = _set(current, parts[1:], text, full)
    try:
        return replace(obj, **{head: value})
    except (ValueError, TypeError) as err:
        raise ValueError(f"override {full}={text!r} is invalid: {err}") from err


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """Apply ``key=value`` overrides (dotted keys, e.g. ``flow.optim.lr=3e-4``), then resolve.

    Unknown keys, unparsable values and derived shape keys raise ValueError naming the
    key and what to do.
    """
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value (e.g. flow.steps=200)")
        key, text = item.split("=", 1)
        key = key.strip()
        if key in DERIVED_KEYS or key in PREVIOUS_KEYS:
            renamed = PREVIOUS_KEYS.get(key)
            now = f" (now {renamed!r})" if renamed else ""
            raise ValueError(
                f"override {key!r}{now} is derived from the data geometry, the VAE and the "
                "conditioning; set data.width/height/stride/history, vae_model.* (e.g. "
                "vae_model.temporal_factor) or conditioning.video/text instead"
            )
        try:
            recipe = _set(recipe, key.split("."), text, key)
        except KeyError:
            valid = [k for k in _keys(recipe) if k not in DERIVED_KEYS]
            close = [k for k in valid if key.split(".")[-1] in k]
            hint = f"; did you mean one of {close[:8]}" if close else ""
            raise ValueError(
                f"unknown override key {key!r}{hint}. Valid keys: `trajloom-train config` "
                "prints the resolved recipe"
            ) from None
    return resolve(recipe)


def scale_steps(recipe: Recipe, factor: float) -> Recipe:
    """Every stage's steps (and warmups, cadences) times ``factor`` (at least 1 step)."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"--steps-scale must be a finite number > 0, got {factor}")

    def scaled(n: int, floor: int) -> int:
        return max(floor, round(n * factor)) if n else 0

    out = recipe
    for name in ("vae", "flow", "onpolicy", "vis"):
        s = recipe.stage(name)
        optim = replace(s.optim, warmup_steps=scaled(s.optim.warmup_steps, 0))
        out = replace(
            out,
            **{
                name: replace(
                    s,
                    steps=scaled(s.steps, 1),
                    optim=optim,
                    val_every=scaled(s.val_every, 1),
                    preview_every=scaled(s.preview_every, 1),
                    save_every=scaled(s.save_every, 1),
                    log_every=scaled(s.log_every, 1),
                )
            },
        )
    return out


# ----------------------------------------------------------------------------- JSON


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """JSON-ready nested dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(recipe)))


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (written by another version?)")
    kwargs = {}
    for name, value in data.items():
        kind = hints.get(name)
        if cls is Recipe and name in _MODEL_SECTIONS:
            kwargs[name] = _MODEL_SECTIONS[name].from_dict(value)  # reads previous layouts too
        elif isinstance(kind, type) and is_dataclass(kind):
            kwargs[name] = _build(kind, value, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Inverse of :func:`recipe_to_dict`."""
    return resolve(_build(Recipe, data, "recipe"))


def _current_layout(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved recipe dict with its model sections in today's layout (see ``from_dict``)."""
    out = dict(saved)
    for name, cls in _MODEL_SECTIONS.items():
        if isinstance(out.get(name), dict):
            # Unreadable: left as saved, and the diff shows what differs.
            with contextlib.suppress(ValueError, TypeError):
                out[name] = json.loads(json.dumps(cls.from_dict(out[name]).to_dict()))
    return out


def config_diff(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, ignoring :data:`RUNTIME_KEYS` at any depth.

    At the top level, model sections saved in a previous layout are compared in today's.
    """
    if not prefix:
        saved, current = _current_layout(saved), _current_layout(current)
    out = []
    for key in sorted(set(saved) | set(current)):
        if key in RUNTIME_KEYS:
            continue
        a, b = saved.get(key), current.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, path + ".")
        elif a != b:
            out.append(f"{path}: {a!r} -> {b!r}")
    return out

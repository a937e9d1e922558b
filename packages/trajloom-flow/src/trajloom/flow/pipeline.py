"""TrajLoomPipeline: history tracks (+ frames, + caption) -> sampled futures (paper §3.3.4).

Steps (the released ``run_trajloom_generator.py``, batched):

1. history tracks ``"b t n 2"`` px -> VAE posterior mean -> per-channel normalization
   (``z_all`` statistics) -> ``z_hist``; history visibility pooled to the latent steps
   (passed to the model; ``pass_history_visibility=False`` reproduces the released script,
   which feeds zeros);
2. video latents from the history frames, a pooled caption embedding (optional);
3. source state: ``N(0, I)`` with the first future step anchored on ``z_hist[:, -1]`` plus
   0.1 noise, drawn per sample from a generator seeded ``seed + j`` for sample ``j`` —
   the same draws and order as the released script's ``noise_seed`` for one clip, and the
   same futures for a clip whatever else is in the batch;
4. Euler on ``t_i = i / steps`` or adaptive DOPRI5 (atol = rtol = 1e-5), the model called
   with ``t`` clamped to ``[1e-5, 1 - 1e-5]``;
5. un-normalize, VAE decode, clamp to [-1, 1], denormalize, read at the query pixels;
   visibility from the visibility head (threshold 0.5, points outside the image
   invisible); tracks clipped to ``[0, W - 1 - 1e-3] x [0, H - 1 - 1e-3]``.

A trained set is one folder (written by :meth:`TrajLoomPipeline.save_pretrained`)::

    folder/
      pipeline.json        {"format": 1, "config": PipelineConfig, "latent_stats_key": "z_all",
                            "video_encoder": null | {"kind": "light"}
                                             | {"kind": "wan", "path": ..., "resize_factor": 4},
                            "text_encoder": null | {"kind": "hashed"}
                                            | {"kind": "umt5", "path": ..., "max_length": 128,
                                               "tokenizer_path": ...}}
      latent_stats.json    per-channel latent statistics (released schema, key "z_all")
      vae/                 trajloom.vae.save_pretrained (model.safetensors + config.json)
      generator/           trajloom.flow.io.save_pretrained
      visibility/          optional, trajloom.flow.io.save_pretrained
      video_encoder/       only for kind "light": save_light_video_encoder
      text_encoder/        only for kind "hashed": save_hashed_text_encoder

``video_encoder`` / ``text_encoder`` record which context the generator was trained with:
the built-in ones ("light", "hashed") are part of the set; the released ones ("wan",
"umt5") are loaded from local paths.

Paths of the Wan VAE and umT5 are machine-specific: ``from_pretrained(..., wan_vae_path=,
umt5_path=)`` overrides what ``pipeline.json`` holds.

WHN-style configuration (``PipelineConfig(mode="whn")``): the comparison of the paper with
an image-conditioned generator in the manner of WHN (``gboduljak/what-happens-next``). The
generator gets no track history (``z_hist`` zeros, no history visibility) and only the
boundary frame (the last history frame, the first of the forecast) repeated over the
history window as video context; the future starts at the query grid (its first latent
step anchored on the latent of the static grid, as WHN pins its first frame to the query
points). Use it with a VAE in absolute coordinates (``use_offsets=False``) and a generator
trained the same way (:func:`whn_condition` builds the same inputs for training). It is
not WHN itself: no DINO features, the TrajLoom backbone and 81-frame horizon, and the
ground truth must be tracked from the boundary frame's grid.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from einops import rearrange, repeat

from trajloom.encoding import GridSpec, check_tracks, check_visibility, denormalize, query_points
from trajloom.flow.baselines import clip_to_image
from trajloom.flow.conditioners import (
    HashedTextEncoder,
    LightVideoEncoder,
    TextEncoder,
    UMT5TextEncoder,
    VideoEncoder,
    WanVideoEncoder,
    drop_text,
    load_hashed_text_encoder,
    load_light_video_encoder,
    save_hashed_text_encoder,
    save_light_video_encoder,
)
from trajloom.flow.guidance import (
    AnchoredLoss,
    EndpointLoss,
    GuidanceConfig,
    anchored_velocity,
    grid_smoother,
    guided_velocity,
    hidden_loss,
    pin_loss,
)
from trajloom.flow.path import anchor_source
from trajloom.flow.pins import Pin, PinError, PinTargets, check_pins, pin_targets, resolve_pins
from trajloom.flow.samplers import SolverProgress, sample_dopri5, sample_euler, uniform_time_grid

if TYPE_CHECKING:
    from trajloom.flow.model import TrajLoomGenerator
    from trajloom.flow.visibility import VisibilityPredictor
    from trajloom.vae import TrajLoomVAE

__all__ = [
    "PipelineConfig",
    "PipelineOutput",
    "TrajLoomPipeline",
    "umt5_spec",
    "wan_spec",
    "whn_condition",
]

MODES = ("trajloom", "whn")
SOLVERS = ("euler", "dopri5")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PipelineConfig:
    """Sampling settings of a trained set (defaults: the released sampler)."""

    mode: str = "trajloom"  # "trajloom", or "whn": first frame only, no track history
    anchor: bool = True  # boundary-anchored source (released x0_mode "anchor_first")
    anchor_std: float = 0.1  # released x0_noise_std
    t_min: float = 1e-5  # the model sees t clamped to [t_min, 1 - t_min]
    pass_history_visibility: bool = True  # False: released script behaviour (zeros)
    visibility_threshold: float = 0.5
    atol: float = 1e-5  # DOPRI5 tolerances (released)
    rtol: float = 1e-5
    dtype: str = "float32"  # generator compute dtype: float32, bfloat16 (autocast) or float16

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"PipelineConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.dtype not in DTYPES:
            raise ValueError(
                f"PipelineConfig.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}"
            )
        if not 0.0 <= self.t_min < 0.5:
            raise ValueError(f"PipelineConfig.t_min must be in [0, 0.5), got {self.t_min}")
        if self.anchor_std < 0 or self.atol <= 0 or self.rtol < 0:
            raise ValueError("PipelineConfig: need anchor_std >= 0, atol > 0, rtol >= 0")
        if not 0.0 < self.visibility_threshold < 1.0:
            raise ValueError(
                f"PipelineConfig.visibility_threshold must be in (0, 1), got "
                f"{self.visibility_threshold}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        return cls(**d)

    @classmethod
    def whn(cls, **changes: Any) -> PipelineConfig:
        """The WHN-style baseline configuration (see the module docstring)."""
        return cls(mode="whn", pass_history_visibility=False, **changes)


@dataclass
class PipelineOutput:
    """Sampled futures. ``s`` = ``num_samples``; sample ``j`` used seed ``seed + j``."""

    tracks: torch.Tensor  # "b s tf n 2" pixels, clipped to the image
    visibility: torch.Tensor  # "b s tf n" bool
    visibility_prob: torch.Tensor | None  # "b s tf n" head probabilities (None without a head)
    nfe: int  # generator evaluations per solve
    latents: torch.Tensor  # "b s tf' n c" normalized generated latents


def whn_condition(
    vae: TrajLoomVAE, latent_stats: Any, frames: torch.Tensor | None, batch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Inputs of the WHN-style configuration: ``(z_hist, anchor, frames)``.

    ``z_hist: "b th n c"`` zeros (no track history), ``anchor: "b th n c"`` normalized
    latents of the static query grid (its last step anchors the source), ``frames``: the
    last frame of ``"b t h w 3"`` repeated ``t`` times (first-frame-only video context).
    """
    cfg = vae.config
    device = next(vae.parameters()).device
    grid = query_points(cfg.grid, device=device)
    static = repeat(grid, "n c -> b t n c", b=1, t=cfg.num_frames)
    with torch.no_grad():
        anchor = latent_stats.normalize(vae.encode_tracks(static).mean).expand(batch, -1, -1, -1)
    z_hist = torch.zeros_like(anchor)
    if frames is not None:
        frames = frames[:, -1:].expand(-1, frames.shape[1], -1, -1, -1)
    return z_hist, anchor, frames


class TrajLoomPipeline:
    """History tracks -> ``n`` sampled futures with visibility (see the module docstring)."""

    def __init__(
        self,
        vae: TrajLoomVAE,
        generator: TrajLoomGenerator,
        latent_stats: Any,
        visibility: VisibilityPredictor | None = None,
        video_encoder: VideoEncoder | None = None,
        text_encoder: TextEncoder | None = None,
        config: PipelineConfig = PipelineConfig(),
    ) -> None:
        from trajloom.flow.config import check_matches_vae

        check_matches_vae(
            vae.config, generator.config, visibility.config if visibility is not None else None
        )
        if latent_stats.channels != vae.config.latent_channels:
            raise ValueError(
                f"the latent statistics have {latent_stats.channels} channels, the VAE "
                f"{vae.config.latent_channels}; they must come from one trained set"
            )
        self.vae = vae.eval()
        self.generator = generator.eval()
        self.latent_stats = latent_stats
        self.visibility = visibility.eval() if visibility is not None else None
        self.video_encoder = video_encoder
        self.text_encoder = text_encoder
        self.config = config

    # ------------------------------------------------------------------ properties
    @property
    def grid(self) -> GridSpec:
        return self.vae.config.grid

    @property
    def num_frames(self) -> int:
        """Frames of the history window and of each future (81 for the paper)."""
        return self.vae.config.num_frames

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def to(self, device: torch.device | str) -> TrajLoomPipeline:
        """Move every module to ``device`` (in place); returns self."""
        for module in (self.vae, self.generator, self.visibility):
            if module is not None:
                module.to(device)
        for enc in (self.video_encoder, self.text_encoder):
            if isinstance(enc, torch.nn.Module):
                enc.to(device)
        return self

    # ------------------------------------------------------------------ inputs
    def _tracks(
        self, hist_tracks: torch.Tensor, hist_vis: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hist_tracks = torch.as_tensor(hist_tracks)
        if hist_tracks.dim() == 3:
            hist_tracks = hist_tracks[None]
            hist_vis = None if hist_vis is None else torch.as_tensor(hist_vis)[None]
        check_tracks(hist_tracks, "hist_tracks", spec=self.grid, min_ndim=4)
        if hist_tracks.dim() != 4 or hist_tracks.shape[1] != self.num_frames:
            raise ValueError(
                f"hist_tracks must be 't n 2' or 'b t n 2' with t={self.num_frames} history "
                f"frames, got shape {tuple(hist_tracks.shape)}"
            )
        if hist_vis is None:
            hist_vis = torch.ones(hist_tracks.shape[:-1], dtype=torch.bool)
        hist_vis = torch.as_tensor(hist_vis)
        check_visibility(hist_vis, tuple(hist_tracks.shape), "hist_vis")
        return hist_tracks.to(self.device, torch.float32), hist_vis.to(self.device)

    def _frames(self, frames: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if frames is None:
            return None
        frames = torch.as_tensor(frames)
        if frames.dim() == 4:
            frames = frames[None]
        if frames.dim() != 5 or frames.shape[0] != batch or frames.shape[1] != self.num_frames:
            raise ValueError(
                f"frames must be 't h w 3' or 'b t h w 3' with b={batch}, t={self.num_frames}, "
                f"got shape {tuple(frames.shape)}"
            )
        if self.video_encoder is None:
            raise ValueError(
                "frames were given but the pipeline has no video encoder; build it with "
                "video_encoder= (LightVideoEncoder, or WanVideoEncoder for released checkpoints)"
            )
        return frames.to(self.device)

    def _text(self, caption: Any, batch: int) -> torch.Tensor | None:
        if caption is None or not self.generator.config.use_text_cond:
            return None
        if isinstance(caption, torch.Tensor):
            text = caption if caption.dim() == 2 else caption[None]
        else:
            captions = [caption] if isinstance(caption, str) else list(caption)
            if self.text_encoder is None:
                raise ValueError(
                    "a caption string was given but the pipeline has no text encoder; pass "
                    "text_encoder= (UMT5TextEncoder) or a precomputed 'b dt' embedding"
                )
            # an empty caption is the null embedding (what caption dropout trains)
            given = torch.tensor([bool(str(c).strip()) for c in captions])
            text = self.text_encoder(captions).float()
            text = drop_text(text, given.to(text.device))
        if text.shape[0] == 1 and batch > 1:
            text = text.expand(batch, -1)
        if text.shape[0] != batch:
            raise ValueError(f"got {text.shape[0]} captions for a batch of {batch}")
        return text.to(self.device, torch.float32)

    @torch.no_grad()
    def condition(
        self,
        hist_tracks: torch.Tensor,
        hist_vis: torch.Tensor | None = None,
        *,
        frames: torch.Tensor | None = None,
        caption: Any = None,
    ) -> tuple[Any, torch.Tensor]:
        """The generator's :class:`~trajloom.flow.model.FlowCondition` and the anchor latents.

        Returns ``(cond, anchor)`` with ``anchor: "b th n c"`` (its last step anchors the source).
        """
        from trajloom.flow.model import FlowCondition, latent_visibility

        tracks, vis = self._tracks(hist_tracks, hist_vis)
        b = tracks.shape[0]
        frames = self._frames(frames, b)
        gcfg = self.generator.config
        if self.config.mode == "whn":
            z_hist, anchor, frames = whn_condition(self.vae, self.latent_stats, frames, b)
            hist_vis_lat = None
        else:
            z_hist = self.latent_stats.normalize(self.vae.encode_tracks(tracks).mean)
            anchor = z_hist
            hist_vis_lat = None
            if self.config.pass_history_visibility and gcfg.use_hist_vis_cond:
                hist_vis_lat = latent_visibility(vis, self.vae.config.frames_per_latent)
        video = None
        if frames is not None and gcfg.use_video_cond:
            encoder = self.video_encoder
            assert encoder is not None  # self._frames raised for frames without an encoder
            video = encoder(frames).float()
        cond = FlowCondition(
            z_hist=z_hist, hist_vis=hist_vis_lat, video=video, text=self._text(caption, b)
        )
        return cond, anchor

    # ------------------------------------------------------------------ sampling
    def _source(
        self,
        anchor: torch.Tensor,
        num_samples: int,
        seed: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Source states ``"(b s) tf n c"``; per-sample generators unless ``generator`` is given."""
        b, _, n, c = anchor.shape
        tf = self.generator.config.fut_latent_frames
        anchors = anchor.repeat_interleave(num_samples, dim=0)
        if generator is not None:
            noise = torch.randn(
                (b * num_samples, tf, n, c), generator=generator, device=self.device
            )
            anchor_noise = torch.randn(
                (b * num_samples, 1, n, c), generator=generator, device=self.device
            )
        else:
            per_sample = []
            for j in range(num_samples):
                g = torch.Generator(device=self.device).manual_seed(int(seed) + j)
                noise_j = torch.randn((1, tf, n, c), generator=g, device=self.device)
                anchor_j = torch.randn((1, 1, n, c), generator=g, device=self.device)
                per_sample.append((noise_j, anchor_j))
            noise = torch.cat([p[0] for p in per_sample]).repeat(b, 1, 1, 1)
            anchor_noise = torch.cat([p[1] for p in per_sample]).repeat(b, 1, 1, 1)
        if not self.config.anchor:
            return noise
        return anchor_source(noise, anchors, anchor_noise, anchor_std=self.config.anchor_std)

    def velocity_fn(self, cond: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The model as a sampler velocity function, with the released time clamp and dtype."""
        dtype = DTYPES[self.config.dtype]
        lo, hi = self.config.t_min, 1.0 - self.config.t_min
        use_autocast = dtype != torch.float32 and self.device.type == "cuda"

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            ctx = torch.autocast("cuda", dtype=dtype) if use_autocast else nullcontext()
            with ctx:
                v = self.generator(x, t.float().clamp(lo, hi), cond)
            return v.float()

        return velocity

    @torch.no_grad()
    def __call__(
        self,
        hist_tracks: torch.Tensor,
        hist_vis: torch.Tensor | None = None,
        *,
        frames: torch.Tensor | None = None,
        caption: str | Sequence[str] | torch.Tensor | None = None,
        num_samples: int = 1,
        solver: str = "euler",
        steps: int = 10,
        seed: int = 0,
        generator: torch.Generator | None = None,
        callback: Callable[[SolverProgress], None] | None = None,
        constraints: Sequence[Pin] | Sequence[Sequence[Pin]] | None = None,
        guidance: GuidanceConfig | None = None,
    ) -> PipelineOutput:
        """Sample ``num_samples`` futures per history clip.

        ``hist_tracks: "t n 2"`` or ``"b t n 2"`` pixels of the grid points over the history
        window, ``hist_vis`` bool of the same shape without the last axis (None: all
        visible), ``frames: "[b] t h w 3"`` uint8 history frames (needs a video encoder),
        ``caption``: string(s) (needs a text encoder) or a precomputed ``"[b] dt"`` embedding.
        ``solver``: ``"euler"`` (``steps`` steps) or ``"dopri5"`` (adaptive; a batch shares
        step sizes, so DOPRI5 futures depend on the batch within the tolerance).
        ``generator``: one torch generator for all draws instead of the per-sample seeds.
        ``constraints``: pins (:class:`~trajloom.flow.pins.Pin`) that every clip's futures
        must meet, or one list of pins per clip; sampling is then guided
        (:mod:`trajloom.flow.guidance`, settings ``guidance``); at the pinned frames the
        pinned points are visible ("at" pins) or invisible ("outside", "hidden" pins;
        ``visibility_prob`` keeps the head's own probabilities). None or no pins:
        unguided, bit for bit.
        """
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        pins = self.pin_targets(constraints, hist_tracks, hist_vis, num_samples)
        cond, anchor = self.condition(hist_tracks, hist_vis, frames=frames, caption=caption)
        b = anchor.shape[0]
        cond = cond.repeat_interleave(num_samples)
        x0 = self._source(anchor, num_samples, seed, generator)
        guidance = guidance or GuidanceConfig()
        velocity = guided_velocity(
            self.velocity_fn(cond),
            self.pin_loss(pins),
            guidance,
            precondition=grid_smoother(self.grid, guidance.spread),
        )
        # Hidden pins steer last and unspread (the head is per token; spreading its step
        # would hide the neighbours too), one point per row at a time: one shared step
        # length would under-step the points whose logit is less sensitive.
        for group in [] if pins is None else pins.hidden_groups():
            loss_from = self.hidden_loss(group, cond.z_hist, keep=guidance.keep)
            velocity = anchored_velocity(velocity, loss_from, guidance)
        if solver == "euler":
            grid = uniform_time_grid(steps, device=self.device)
            z1 = sample_euler(velocity, x0, grid, callback=callback)
            nfe = steps
        else:
            z1, stats = sample_dopri5(
                velocity, x0, atol=self.config.atol, rtol=self.config.rtol, callback=callback
            )
            nfe = stats.nfe
        out = self.decode(z1, b, num_samples, nfe, z_hist=cond.z_hist)
        if pins is not None:
            # A pin states visibility: "at" visible there; "outside" and "hidden" invisible
            # (the released clamp puts a point that left by the left or top edge at 0, still
            # "inside"; a hidden pin's head probability is measured, not overwritten).
            flat = out.visibility.view(-1, *out.visibility.shape[2:])
            flat[pins.row, pins.frame, pins.point] = pins.visible
        return out

    # ------------------------------------------------------------------ pins
    def pin_targets(
        self,
        constraints: Sequence[Pin] | Sequence[Sequence[Pin]] | None,
        hist_tracks: torch.Tensor,
        hist_vis: torch.Tensor | None,
        num_samples: int,
    ) -> PinTargets | None:
        """Checked, resolved pins of every ``(b s)`` row; None when there are none.

        ``constraints``: pins for every clip, or one sequence of pins per clip; source
        pixels resolve against each clip's last history frame.
        """
        if constraints is None or len(constraints) == 0:
            return None
        tracks, vis = self._tracks(hist_tracks, hist_vis)
        b = tracks.shape[0]
        if all(isinstance(c, Pin) for c in constraints):
            per_clip: list[Sequence[Pin]] = [list(constraints)] * b  # type: ignore[arg-type]
        else:
            per_clip = [list(c) for c in constraints]  # type: ignore[arg-type]
            if len(per_clip) != b:
                raise PinError(
                    f"constraints: {len(per_clip)} lists of pins for {b} clips; give one list "
                    "per clip, or one list of pins for all"
                )
        rows: list[Sequence[Pin]] = []
        for i, pins in enumerate(per_clip):
            check_pins(
                pins, self.grid, self.num_frames, visibility_head=self.visibility is not None
            )
            resolved = resolve_pins(pins, tracks[i, -1], vis[i, -1], self.grid)
            rows += [resolved] * num_samples
        targets = pin_targets(rows, device=self.device)
        return targets if len(targets) else None

    def decode_points(self, z: torch.Tensor) -> torch.Tensor:
        """Normalized latents ``"b tf' n c"`` -> unclamped pixel tracks ``"b tf n 2"``
        through the VAE's query-row decode (differentiable: the pins' guidance uses it)."""
        vae_dtype = next(self.vae.parameters()).dtype
        coords = self.vae.decode_query(self.latent_stats.denormalize(z).to(vae_dtype))
        return denormalize(coords.float(), self.grid)

    def pin_loss(self, pins: PinTargets | None) -> EndpointLoss | None:
        """The guidance loss of ``pins`` on normalized endpoint latents (None: no pins)."""
        return None if pins is None else pin_loss(self.decode_points, pins, self.grid)

    def visibility_logits(
        self, z: torch.Tensor, z_hist: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Normalized latents ``"b tf' n c"`` -> the visibility head's frame logits
        ``"b tf n"`` (each latent step repeated, as :func:`predict_visibility` reads them;
        differentiable: the hidden pins' guidance uses it). ``z_hist: "b th n c"``."""
        from trajloom.flow.visibility import upsample_visibility

        head = self.visibility
        if head is None:
            raise ValueError("this pipeline has no visibility head: it has no visibility logits")
        dtype = next(head.parameters()).dtype
        logits = head(z.to(dtype), None if z_hist is None else z_hist.to(dtype)).float()
        return upsample_visibility(logits, self.num_frames, head.config.temporal_factor)

    def hidden_loss(
        self, pins: PinTargets | None, z_hist: torch.Tensor | None, keep: float = 1.0
    ) -> AnchoredLoss | None:
        """The guidance loss of the "hidden" ``pins`` (None: none). ``z_hist: "b th n c"``
        the normalized history latents of the sampler's rows (the head may read them)."""
        if pins is None or not bool(pins.hidden.any()):
            return None
        return hidden_loss(
            lambda z: self.visibility_logits(z, z_hist),
            self.decode_points,
            pins,
            self.grid,
            threshold=self.config.visibility_threshold,
            keep=keep,
        )

    @torch.no_grad()
    def decode(
        self,
        z1: torch.Tensor,
        batch: int,
        num_samples: int,
        nfe: int = 0,
        *,
        z_hist: torch.Tensor | None = None,
    ) -> PipelineOutput:
        """Normalized latents ``"(b s) tf' n c"`` -> :class:`PipelineOutput`."""
        vae_dtype = next(self.vae.parameters()).dtype
        raw = self.vae.decode_tracks(self.latent_stats.denormalize(z1).to(vae_dtype)).float()
        probs = None
        if self.visibility is not None:
            from trajloom.flow.visibility import predict_visibility

            vis, probs = predict_visibility(
                self.visibility,
                z1,
                num_frames=raw.shape[1],
                tracks=raw,
                spec=self.grid,
                z_hist=z_hist,
                threshold=self.config.visibility_threshold,
            )
        else:
            from trajloom.flow.visibility import inside_image

            vis = inside_image(raw, self.grid)
        tracks = clip_to_image(raw, self.grid)

        def split(x: torch.Tensor) -> torch.Tensor:
            return rearrange(x, "(b s) ... -> b s ...", b=batch, s=num_samples)

        return PipelineOutput(
            tracks=split(tracks),
            visibility=split(vis),
            visibility_prob=None if probs is None else split(probs),
            nfe=nfe,
            latents=split(z1),
        )

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the trained-set folder (layout in the module docstring)."""
        from trajloom.flow.io import save_pretrained as save_module
        from trajloom.vae import save_pretrained as save_vae

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_vae(self.vae, folder / "vae")
        save_module(self.generator, folder / "generator")
        if self.visibility is not None:
            save_module(self.visibility, folder / "visibility")
        self.latent_stats.to_json(folder / "latent_stats.json", key="z_all")
        video: dict[str, Any] | None = None
        if isinstance(self.video_encoder, LightVideoEncoder):
            save_light_video_encoder(self.video_encoder, folder / "video_encoder")
            video = {"kind": "light"}
        elif isinstance(self.video_encoder, WanVideoEncoder):
            video = wan_spec(self.video_encoder.path, self.video_encoder.resize_factor)
        text: dict[str, Any] | None = None
        if isinstance(self.text_encoder, HashedTextEncoder):
            save_hashed_text_encoder(self.text_encoder, folder / "text_encoder")
            text = {"kind": "hashed"}
        elif isinstance(self.text_encoder, UMT5TextEncoder):
            enc = self.text_encoder
            text = umt5_spec(enc.path, enc.max_length, tokenizer_path=enc.tokenizer_path)
        meta = {
            "format": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "latent_stats_key": "z_all",
            "video_encoder": video,
            "text_encoder": text,
        }
        (folder / "pipeline.json").write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        device: torch.device | str | None = None,
        wan_vae_path: str | Path | None = None,
        umt5_path: str | Path | None = None,
        config: PipelineConfig | None = None,
    ) -> TrajLoomPipeline:
        """Load a trained-set folder written by :meth:`save_pretrained`."""
        from trajloom.flow.io import load_generator, load_visibility
        from trajloom.vae import LatentStats, load_pretrained

        folder = Path(folder)
        meta_path = folder / "pipeline.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path} not found: {folder} is not a trained-set folder (expected "
                "pipeline.json, latent_stats.json, vae/, generator/[, visibility/])"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: unsupported format {meta.get('format')!r}")
        vae = load_pretrained(folder / "vae")
        generator = load_generator(folder / "generator")
        visibility = (
            load_visibility(folder / "visibility") if (folder / "visibility").is_dir() else None
        )
        stats = LatentStats.from_json(folder / "latent_stats.json", key=meta["latent_stats_key"])
        video_encoder = _load_video_encoder(folder, meta.get("video_encoder"), wan_vae_path, vae)
        text_encoder = _load_text_encoder(folder, meta.get("text_encoder"), umt5_path)
        pipe = cls(
            vae,
            generator,
            stats,
            visibility=visibility,
            video_encoder=video_encoder,
            text_encoder=text_encoder,
            config=config or PipelineConfig.from_dict(meta["config"]),
        )
        return pipe.to(device) if device is not None else pipe

    @classmethod
    def from_released(
        cls,
        vae_ckpt: str | Path,
        vae_cfg: str | Path | dict,
        gen_ckpt: str | Path,
        gen_cfg: str | Path,
        stats_json: str | Path,
        vis_ckpt: str | Path | None = None,
        vis_cfg: str | Path | None = None,
        wan_vae_path: str | Path | None = None,
        umt5_path: str | Path | None = None,
        *,
        device: torch.device | str | None = None,
        config: PipelineConfig | None = None,
    ) -> TrajLoomPipeline:
        """The authors' checkpoints (``.pt``, loaded with ``weights_only=True``) and configs.

        ``gen_cfg`` is ``configs/trajloom_generator_config.json``; its ``train`` section gives
        the source anchoring (``x0_mode``, ``x0_noise_std``) and ``text_encoder.max_length``
        the caption length. Without ``wan_vae_path``/``umt5_path`` the model samples without
        video/caption context (as the released script's ``--no_video_cond/--no_text_cond``).
        """
        from trajloom.flow.released import from_released as generator_from_released
        from trajloom.flow.released import visibility_from_released
        from trajloom.vae import LatentStats
        from trajloom.vae import from_released as vae_from_released

        if (vis_ckpt is None) != (vis_cfg is None):
            raise ValueError("pass vis_ckpt and vis_cfg together (or neither)")
        full = json.loads(Path(gen_cfg).read_text())
        train = full.get("train", {})
        mode = train.get("x0_mode", "anchor_first")
        if config is None:
            config = PipelineConfig(
                anchor=mode == "anchor_first", anchor_std=float(train.get("x0_noise_std", 0.1))
            )
        vae = vae_from_released(vae_ckpt, vae_cfg)
        generator = generator_from_released(gen_ckpt, gen_cfg)
        visibility = (
            visibility_from_released(vis_ckpt, vis_cfg)
            if vis_ckpt is not None and vis_cfg is not None  # given together (checked above)
            else None
        )
        stats = LatentStats.from_json(stats_json, key=train.get("latent_stats_key", "z_all"))
        video_encoder = None
        if wan_vae_path is not None:
            rf = int(full.get("video_vae", {}).get("resize_factor", 4))
            video_encoder = WanVideoEncoder(wan_vae_path, grid=vae.config.grid, resize_factor=rf)
        text_encoder = None
        if umt5_path is not None:
            max_length = int(full.get("text_encoder", {}).get("max_length", 128))
            text_encoder = UMT5TextEncoder(umt5_path, max_length=max_length)
        pipe = cls(
            vae,
            generator,
            stats,
            visibility=visibility,
            video_encoder=video_encoder,
            text_encoder=text_encoder,
            config=config,
        )
        return pipe.to(device) if device is not None else pipe


def wan_spec(path: str | Path, resize_factor: int | None = None) -> dict[str, Any]:
    """``pipeline.json``'s ``video_encoder`` for the Wan2.1 VAE at a local ``path``
    (absolute, so the set loads from any working directory)."""
    spec: dict[str, Any] = {"kind": "wan", "path": str(Path(path).resolve())}
    if resize_factor is not None:
        spec["resize_factor"] = int(resize_factor)
    return spec


def umt5_spec(
    path: str | Path, max_length: int = 128, *, tokenizer_path: str | Path | None = None
) -> dict[str, Any]:
    """``pipeline.json``'s ``text_encoder`` for umT5 at a local ``path`` (absolute)."""
    spec: dict[str, Any] = {
        "kind": "umt5",
        "path": str(Path(path).resolve()),
        "max_length": int(max_length),
    }
    if tokenizer_path is not None:
        spec["tokenizer_path"] = str(Path(tokenizer_path).resolve())
    return spec


def _load_video_encoder(
    folder: Path, spec: dict | None, wan_vae_path: str | Path | None, vae: TrajLoomVAE
) -> VideoEncoder | None:
    if spec is None:
        return None
    if spec["kind"] == "light":
        return load_light_video_encoder(folder / "video_encoder")
    if spec["kind"] == "wan":
        # Without a local path the set samples without video context (frames then raise).
        path = wan_vae_path or spec.get("path")
        if path is None:
            return None
        return WanVideoEncoder(path, grid=vae.config.grid, resize_factor=spec.get("resize_factor"))
    raise ValueError(f"unknown video encoder kind {spec['kind']!r} in pipeline.json")


def _load_text_encoder(
    folder: Path, spec: dict | None, umt5_path: str | Path | None
) -> TextEncoder | None:
    if spec is None:
        return None
    if spec["kind"] == "hashed":
        return load_hashed_text_encoder(folder / "text_encoder")
    if spec["kind"] == "umt5":
        # Without a local path captions must come as precomputed embeddings.
        path = umt5_path or spec.get("path")
        if path is None:
            return None
        # a tokenizer recorded with the weights goes with them, not with an override
        tokenizer = None if umt5_path else spec.get("tokenizer_path")
        return UMT5TextEncoder(
            path, tokenizer_path=tokenizer, max_length=int(spec.get("max_length", 128))
        )
    raise ValueError(f"unknown text encoder kind {spec['kind']!r} in pipeline.json")

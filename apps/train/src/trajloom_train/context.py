"""The generator with the context encoders it trains with (paper §3.3; ``recipe.conditioning``).

The built-in encoders train jointly with the generator: a
``trajloom.flow.conditioners.LightVideoEncoder`` on the cached low-resolution history frames
(``conditioning.video == "light"``) and a ``HashedTextEncoder`` on the captions
(``conditioning.text == "hashed"``). The released conditioners (Wan2.1 VAE, umT5) are frozen
and were applied once by the cache stage: their cached outputs go to the generator as they
are. A stage's model is a :class:`ConditionedGenerator`; its ``final/`` folder holds the
generator (``trajloom.flow.io``) and the built-in encoders in ``video_encoder/`` and
``text_encoder/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trajloom.data.latents import LatentBatch
from trajloom.flow.conditioners import (
    HashedTextConfig,
    HashedTextEncoder,
    LightVideoEncoder,
    LightVideoEncoderConfig,
    drop_text,
    load_hashed_text_encoder,
    load_light_video_encoder,
    save_hashed_text_encoder,
    save_light_video_encoder,
)
from trajloom.flow.io import load_generator
from trajloom.flow.io import save_pretrained as save_flow_module
from trajloom.flow.model import FlowCondition, TrajLoomGenerator
from trajloom_train.config import Recipe

__all__ = [
    "ConditionedGenerator",
    "FlowContext",
    "build_conditioned",
    "flow_context",
    "load_conditioned",
    "save_conditioned",
]

VIDEO_DIR = "video_encoder"
TEXT_DIR = "text_encoder"


@dataclass
class FlowContext:
    """A micro-batch's conditioning inputs before the trained encoders (on the device).

    ``video_frames`` "b th h w 3" uint8 (built-in video encoder) or ``video_latent``
    "b th' n cv" (cached Wan latents); ``captions`` (built-in caption encoder) or
    ``text_emb`` "b dt" (cached umT5); ``keep`` "b" bool: False drops the caption.
    """

    z_hist: torch.Tensor
    hist_vis: torch.Tensor | None
    video_frames: torch.Tensor | None = None
    video_latent: torch.Tensor | None = None
    captions: list[str] | None = None
    text_emb: torch.Tensor | None = None
    keep: torch.Tensor | None = None


class ConditionedGenerator(nn.Module):
    """``generator`` with the built-in encoders trained with it (either may be None).

    Calling it calls the generator; :meth:`condition` turns a :class:`FlowContext` into the
    generator's ``FlowCondition`` through the encoders (inside the loss, so that the
    encoders get gradients and DDP sees them as part of one forward).
    """

    def __init__(
        self,
        generator: TrajLoomGenerator,
        video_encoder: LightVideoEncoder | None = None,
        text_encoder: HashedTextEncoder | None = None,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.video_encoder = video_encoder
        self.text_encoder = text_encoder

    @property
    def config(self):  # the generator's, for code that reads module.config
        return self.generator.config

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: FlowCondition) -> torch.Tensor:
        return self.generator(x, t, cond)

    def compile_blocks(self, **compile_kwargs: Any) -> ConditionedGenerator:
        """The generator's regional compilation (the small encoders stay eager)."""
        self.generator.compile_blocks(**compile_kwargs)
        return self

    def condition(self, ctx: FlowContext) -> FlowCondition:
        video = ctx.video_latent
        if self.video_encoder is not None and ctx.video_frames is not None:
            video = self.video_encoder(ctx.video_frames)
        text = ctx.text_emb
        if self.text_encoder is not None and ctx.captions is not None:
            text = self.text_encoder(ctx.captions)
        if text is not None and ctx.keep is not None:
            text = drop_text(text, ctx.keep)
        return FlowCondition(z_hist=ctx.z_hist, hist_vis=ctx.hist_vis, video=video, text=text)


def build_conditioned(recipe: Recipe) -> ConditionedGenerator:
    """A fresh generator of the recipe with the built-in encoders its conditioning asks for."""
    gcfg = recipe.generator
    cond = recipe.conditioning
    video = None
    if cond.video == "light":
        video = LightVideoEncoder(
            LightVideoEncoderConfig.for_grid(
                recipe.data.grid,
                cell=cond.video_cell,
                temporal_factor=gcfg.temporal_factor,
                hidden=cond.video_hidden,
                out_channels=gcfg.video_latent_channels,
            )
        )
    text = None
    if cond.text == "hashed":
        text = HashedTextEncoder(HashedTextConfig(dim=cond.text_dim, buckets=cond.text_buckets))
    return ConditionedGenerator(TrajLoomGenerator(gcfg), video, text)


def save_conditioned(module: ConditionedGenerator, folder: Path) -> None:
    """The generator in ``folder``, the built-in encoders in its subfolders."""
    save_flow_module(module.generator, folder)
    if module.video_encoder is not None:
        save_light_video_encoder(module.video_encoder, folder / VIDEO_DIR)
    if module.text_encoder is not None:
        save_hashed_text_encoder(module.text_encoder, folder / TEXT_DIR)


def load_conditioned(folder: Path) -> ConditionedGenerator:
    """Inverse of :func:`save_conditioned` (encoders only where their subfolder exists)."""
    video = load_light_video_encoder(folder / VIDEO_DIR) if (folder / VIDEO_DIR).is_dir() else None
    text = load_hashed_text_encoder(folder / TEXT_DIR) if (folder / TEXT_DIR).is_dir() else None
    return ConditionedGenerator(load_generator(folder), video, text)


def flow_context(
    batch: LatentBatch, keep: torch.Tensor, recipe: Recipe, device: torch.device
) -> FlowContext:
    """The conditioning inputs of a latent batch for the recipe's generator and context."""
    gcfg, cond = recipe.generator, recipe.conditioning
    ctx = FlowContext(
        z_hist=batch.z_hist.to(device),
        hist_vis=batch.hist_vis.to(device) if gcfg.use_hist_vis_cond else None,
        keep=keep,
    )
    if gcfg.use_video_cond:
        have = batch.video_frames if cond.video == "light" else batch.video_latent
        if have is None:
            raise ValueError(
                f"clips {batch.ids[:3]} have no cached video context ({cond.video!r}); rerun "
                "`apps/train cache` for this run"
            )
        if cond.video == "light":
            ctx.video_frames = have.to(device)
        else:
            ctx.video_latent = have.to(device)
    if gcfg.use_text_cond:
        if cond.text == "hashed":
            ctx.captions = list(batch.captions)
        elif batch.text_emb is None:
            raise ValueError(
                f"clips {batch.ids[:3]} have no cached caption embedding; rerun "
                "`apps/train cache` for this run"
            )
        else:
            ctx.text_emb = batch.text_emb.to(device)
    return ctx

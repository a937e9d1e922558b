"""The cache stage and the latent data of the generator and visibility stages.

``cache`` (after ``stats``) encodes every training window once with the frozen VAE and
writes latent shards (``trajloom.data.latents``) to ``<run>/cache/``: each process its
share, then rank 0 writes ``latents.json`` with the VAE fingerprint and the context. Next to
the latents each window keeps its video and caption context (:class:`CacheContext`, after
``recipe.conditioning``): the history frames at a few pixels per token for the built-in
video encoder, or Wan2.1 VAE latents; umT5 caption embeddings when asked (the built-in
caption encoder reads the caption string, which every window keeps). The flow, on-policy and
visibility stages read latents through :class:`LatentSource` and never call the VAE:

* shards: the cached latent shards, streamed and split by rank like the track shards,
  addressed by this process's sample position (exact resume by fast-forward);
* synthetic scenes with a pool: the pool's latents held in memory, sample ``g`` is pool
  scene ``scene_index(g)`` as in ``trajloom_train.data``;
* synthetic scenes without a pool (a fresh scene per sample, nothing to cache): the same
  :func:`encode_clips` the cache stage uses, on the fly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajloom.data.clip import ClipBatch
from trajloom.data.latents import (
    LatentBatch,
    LatentClip,
    LatentStream,
    collate_latents,
    fingerprint,
    read_latent_index,
    write_latent_index,
    write_latent_shards,
)
from trajloom.data.outputs import atomic_write_json
from trajloom.data.stream import StreamConfig
from trajloom.flow.conditioners import (
    UMT5TextEncoder,
    WanVideoEncoder,
    context_frames,
    drop_text,
)
from trajloom.flow.model import latent_visibility
from trajloom.vae import TrajLoomVAE
from trajloom_train.config import Recipe
from trajloom_train.data import TRAIN, ShardClips, SyntheticSplit
from trajloom_train.distributed import Dist, barrier

__all__ = [
    "CACHE_STAGE",
    "CacheContext",
    "LatentSource",
    "encode_clips",
    "run_cache",
    "vae_fingerprint",
]

CACHE_STAGE = "cache"
_PART = "part-rank{rank:04d}.json"


def vae_fingerprint(run_dir: Path) -> str:
    """Fingerprint of the run's trained VAE weights (what a latent cache must match)."""
    return fingerprint(run_dir / "vae" / "final" / "model.safetensors")


class CacheContext:
    """The video and caption context cached with each window, as ``recipe.conditioning`` says.

    * video ``"light"``: the history frames reduced to ``video_cell`` pixels per token side
      (``trajloom.flow.conditioners.context_frames``), uint8; ``"wan"``: the Wan2.1 VAE's
      latents of the history frames on the token grid (local weights); ``"none"``: nothing.
    * text ``"umt5"``: pooled umT5 embeddings of the captions (local weights); ``"hashed"``
      and ``"none"``: nothing (the built-in encoder reads the caption string).
    """

    def __init__(self, recipe: Recipe, device: torch.device | str = "cpu") -> None:
        cond = recipe.conditioning
        grid = recipe.data.grid
        self.conditioning = cond
        self.history = recipe.data.history
        self.size = (grid.grid_h * cond.video_cell, grid.grid_w * cond.video_cell)
        self.wan = None
        self.umt5 = None
        if cond.video == "wan":
            self.wan = WanVideoEncoder(cond.video_path, grid=grid).to(device)
        if cond.text == "umt5":
            self.umt5 = UMT5TextEncoder(cond.text_path).to(device)

    @property
    def needs_frames(self) -> bool:
        """Whether the windows' video frames must be read (decoded or rendered)."""
        return self.conditioning.video != "none"

    def manifest(self) -> dict[str, Any]:
        return self.conditioning.manifest()

    @torch.no_grad()
    def arrays(self, batch: ClipBatch) -> dict[str, np.ndarray | None]:
        """Per-batch ``video_frames`` / ``video_latent`` / ``text_emb`` (``"b ..."``) or None."""
        out: dict[str, np.ndarray | None] = dict.fromkeys(
            ("video_frames", "video_latent", "text_emb")
        )
        if self.needs_frames:
            if batch.frames is None or batch.frames.shape[1] < self.history:
                raise ValueError(
                    f"clips {batch.ids[:3]} have no video frames, and the video context "
                    f"{self.conditioning.video!r} is made from them: give shards with video.mp4 "
                    "(apps/bench build writes them), or train without video context "
                    "(--set conditioning.video=none)"
                )
            hist = batch.frames[:, : self.history]
            if self.wan is None:
                out["video_frames"] = context_frames(hist, self.size).numpy()
            else:
                out["video_latent"] = self.wan(hist).float().cpu().numpy()
        if self.umt5 is not None:
            # a window without a caption gets the null embedding, as the pipeline gives it
            given = torch.tensor([bool(str(c).strip()) for c in batch.captions])
            text = drop_text(self.umt5(batch.captions).float().cpu(), given)
            out["text_emb"] = text.numpy()
        return out


@torch.no_grad()
def encode_clips(
    vae: TrajLoomVAE, batch: ClipBatch, factor: int, context: CacheContext
) -> list[LatentClip]:
    """The latent clips of a batch: posterior means of both windows, latent visibility,
    caption and the cached context."""
    device = next(vae.parameters()).device
    z = {
        w: vae.encode_tracks(batch.window(w)[0].to(device)).mean.float().cpu()
        for w in ("hist", "fut")
    }
    vis = {w: latent_visibility(batch.window(w)[1], factor).bool() for w in ("hist", "fut")}
    extra = context.arrays(batch)
    out = []
    for i, clip_id in enumerate(batch.ids):
        out.append(
            LatentClip(
                id=clip_id,
                z_hist=z["hist"][i].numpy(),
                z_fut=z["fut"][i].numpy(),
                hist_vis=vis["hist"][i].numpy(),
                fut_vis=vis["fut"][i].numpy(),
                caption=batch.captions[i],
                camera=batch.cameras[i],
                video_frames=_row(extra["video_frames"], i),
                video_latent=_row(extra["video_latent"], i),
                text_emb=_row(extra["text_emb"], i),
            )
        )
    return out


def _row(values: np.ndarray | None, i: int) -> np.ndarray | None:
    return None if values is None else values[i]


def _pool_ids(recipe: Recipe, rank: int, world_size: int) -> list[int]:
    return list(range(rank, recipe.data.scene_pool, world_size))


def _training_batches(
    recipe: Recipe, dist: Dist, batch_size: int, report: dict[str, Any], frames: bool
) -> Iterator[ClipBatch]:
    """This process's share of the training windows to cache, in batches: every pool scene
    (synthetic), or one pass over its shards (the stream skips bad samples; their counts
    are put in ``report`` when the pass ends); with their video ``frames`` when asked."""
    if recipe.data.source == "shards":
        clips = ShardClips(recipe.data, recipe.seed, dist, shuffle=False, frames=frames)
        yield from clips.one_pass(batch_size)
        report.update(clips.data_report())
        return
    split = SyntheticSplit(recipe.data, recipe.seed, TRAIN)
    mine = _pool_ids(recipe, dist.rank, dist.world_size)
    for i in range(0, len(mine), batch_size):
        yield split.scene_batch(mine[i : i + batch_size], frames=frames)


def run_cache(
    recipe: Recipe,
    run_dir: Path,
    dist: Dist,
    vae: TrajLoomVAE,
    factor: int,
    context: CacheContext,
) -> dict[str, Any]:
    """Write this process's latent shards and part file; rank 0 then writes ``latents.json``.

    Resumable: a process whose part file exists has finished its share and skips it.
    """
    folder = run_dir / CACHE_STAGE
    part = folder / _PART.format(rank=dist.rank)
    if not part.is_file():
        report: dict[str, Any] = {}
        batches = _training_batches(
            recipe, dist, recipe.stats.batch_size, report, context.needs_frames
        )
        latents = (c for batch in batches for c in encode_clips(vae, batch, factor, context))
        shards = write_latent_shards(latents, folder, prefix=f"latents-r{dist.rank:04d}")
        atomic_write_json(part, {"rank": dist.rank, "shards": shards, "data": report})
    # the others may still be encoding their share (of unbounded length): no timeout
    barrier(patient=True)
    parts = [
        json.loads((folder / _PART.format(rank=r)).read_text()) for r in range(dist.world_size)
    ]
    shards = [s for p in parts for s in p["shards"]]
    summary: dict[str, Any] = {
        "stage": CACHE_STAGE,
        "windows": sum(s["count"] for s in shards),
        "shards": len(shards),
    }
    skipped: dict[str, int] = {}
    for p in parts:
        for reason, n in p.get("data", {}).get("skipped", {}).items():
            skipped[reason] = skipped.get(reason, 0) + n
    if recipe.data.source == "shards":
        summary["samples_skipped"] = sum(skipped.values())
        summary["skipped"] = skipped
    if not summary["windows"]:
        part.unlink()  # nothing cached: a rerun (e.g. with other settings) starts afresh
        hint = ""
        if "missing_video" in skipped:
            hint = (
                "; the video context is made from each window's video.mp4: give shards with "
                "videos, or train without video context (--set conditioning.video=none)"
            )
        raise ValueError(
            f"the cache stage found no usable training window (skipped by reason: {skipped}){hint}"
        )
    if dist.is_main:
        write_latent_index(
            folder,
            shards,
            vae_fingerprint=vae_fingerprint(run_dir),
            source=recipe.data.source,
            context=context.manifest(),
        )
    barrier("the barrier after rank 0 wrote the latent index")
    return summary


class LatentSource:
    """The latents of a training stage, addressed by (step, micro-batch, global indices)."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        dist: Dist,
        micro_batch: int,
        accum: int,
        encode: Callable[[ClipBatch], list[LatentClip]],
        frames: bool = False,
    ) -> None:
        self.micro_batch, self.accum = micro_batch, accum
        self.split = SyntheticSplit(recipe.data, recipe.seed, TRAIN)
        self.encode = encode
        self.frames = frames  # render the fresh scenes' frames (video context)
        self.pool: dict[str, LatentClip] | None = None
        self.stream: ShardClips | None = None
        if recipe.data.source == "synthetic" and not recipe.data.scene_pool:
            return  # a fresh scene per sample: encoded on the fly
        urls = read_latent_index(
            run_dir / CACHE_STAGE,
            vae_fingerprint=vae_fingerprint(run_dir),
            context=recipe.conditioning.manifest(),
        )
        if recipe.data.source == "synthetic":
            self.pool = {c.id: c for url in urls for c in _read_all(url)}
            return
        config = StreamConfig(
            urls=tuple(urls),
            width=recipe.data.width,
            height=recipe.data.height,
            stride=recipe.data.stride,
            shuffle_buffer=recipe.data.shuffle_buffer,
            seed=recipe.seed,
        )
        stream = LatentStream(config, rank=dist.rank, world_size=dist.world_size)
        self.stream = ShardClips.over(stream, collate_latents)
        self.stream.check()

    def batch(self, step: int, micro: int, indices: list[int]) -> LatentBatch:
        if self.stream is not None:
            start = (step * self.accum + micro) * self.micro_batch
            return self.stream.take(start, len(indices))
        if self.pool is not None:
            return collate_latents([self.pool[self.split.clip_id(g)] for g in indices])
        return collate_latents(self.encode(self.split.batch(indices, frames=self.frames)))

    def data_report(self) -> dict[str, Any]:
        return {} if self.stream is None else self.stream.data_report()


def _read_all(url: str) -> Iterator[LatentClip]:
    stream = LatentStream(StreamConfig(urls=(url,), shuffle_shards=False, strict=True))
    yield from stream.iter_worker(0, 1)

"""Flow-stage throughput: training from cached latent shards vs re-encoding with the VAE.

    .venv/bin/python benchmarks/cache.py                    # quick recipe models and geometry
    .venv/bin/python benchmarks/cache.py --recipe paper     # paper models at 832x480, 81 + 81
    .venv/bin/python benchmarks/cache.py --quick            # fewer steps

One process, one machine, the same generator and the same batches, side by side: a flow
training step (batch, forward, backward, AdamW) fed

1. by the track shards, encoding both windows with the frozen VAE at every step (what
   the flow stage did before the cache stage), and
2. by the latent shards the cache stage writes (what it does now),

reported as samples/s and their ratio, plus the one-off cost of writing the cache. The VAE
and generator keep their initial weights: speed does not depend on training.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from trajloom.data.latents import LatentStream, collate_latents, write_latent_shards
from trajloom.data.shards import write_shards
from trajloom.data.stream import StreamConfig
from trajloom.data.synthetic import synthetic_shard_samples
from trajloom.flow.losses import draw_flow_inputs, flow_matching_terms
from trajloom.flow.model import FlowCondition, TrajLoomGenerator
from trajloom.vae import LatentStats, TrajLoomVAE
from trajloom_train.data import ShardClips, scene_config
from trajloom_train.distributed import Dist
from trajloom_train.latents import encode_clips
from trajloom_train.recipes import get_recipe


def _step(model, optimizer, batch, stats) -> None:
    z_hist, x1 = stats.normalize(batch.z_hist), stats.normalize(batch.z_fut)
    draws = draw_flow_inputs(z_hist, x1.shape[1], generator=torch.Generator().manual_seed(0))
    cond = FlowCondition(z_hist=z_hist, hist_vis=batch.hist_vis)
    out = flow_matching_terms(lambda x, t: model(x, t, cond), x1, draws, token_vis=batch.fut_vis)
    (out.numerator / out.weight_sum).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _rate(next_batch, model, optimizer, stats, batch_size: int, steps: int) -> tuple[float, float]:
    """(samples/s of whole steps, samples/s of the data side alone: reading + encoding).

    ``model=None`` times the data side only (the first figure is then the same).
    """
    if model is None:
        next_batch()  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            next_batch()
        rate = batch_size * steps / (time.perf_counter() - start)
        return rate, rate
    _step(model, optimizer, next_batch(), stats)  # warm-up: kernels, first shard open
    data_s = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next_batch()
        data_s += time.perf_counter() - t0
        _step(model, optimizer, batch, stats)
    samples = batch_size * steps
    return samples / (time.perf_counter() - start), samples / data_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="quick", help="recipe whose models and data to use")
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: recipe)")
    parser.add_argument(
        "--data-only",
        action="store_true",
        help="time only the data side (no generator step): for paper-size models on a CPU",
    )
    args = parser.parse_args()
    recipe = get_recipe(args.recipe)
    batch_size = args.batch or min(recipe.flow.micro_batch_size, 8)
    steps = 3 if args.quick else 10
    clips = batch_size * (steps + 1)
    torch.manual_seed(0)
    vae = TrajLoomVAE(recipe.vae_model).eval().requires_grad_(False)
    model = None if args.data_only else TrajLoomGenerator(recipe.generator)
    optimizer = None if model is None else torch.optim.AdamW(model.parameters(), lr=1e-4)
    c = recipe.vae_model.latent_channels
    stats = LatentStats(mean=torch.zeros(c), std=torch.ones(c))
    factor = recipe.vae_model.frames_per_latent
    print(
        f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; recipe "
        f"{recipe.name}: {recipe.data.width}x{recipe.data.height} stride {recipe.data.stride}, "
        f"{recipe.data.history} + {recipe.data.future} frames, batch {batch_size}, {steps} steps"
    )
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        cfg = scene_config(recipe.data)
        write_shards(synthetic_shard_samples(clips, cfg, seed=0), shards, maxcount=16)
        data = replace(recipe.data, source="shards", shards=(str(shards),), shuffle_buffer=0)
        tracks = ShardClips(data, 0, Dist(), shuffle=False)

        start = time.perf_counter()
        latents = (c for b in tracks.one_pass(batch_size) for c in encode_clips(vae, b, factor))
        written = write_latent_shards(latents, Path(tmp) / "cache", prefix="latents")
        cache_s = time.perf_counter() - start
        urls = tuple(str(Path(tmp) / "cache" / s["url"]) for s in written)
        cached = ShardClips.over(
            LatentStream(StreamConfig(urls=urls, shuffle_shards=False)), collate_latents
        )

        position = {"tracks": 0, "latents": 0}

        def reencoded():
            batch = tracks.take(position["tracks"], batch_size)
            position["tracks"] += batch_size
            return collate_latents(encode_clips(vae, batch, factor))

        def from_cache():
            batch = cached.take(position["latents"], batch_size)
            position["latents"] += batch_size
            return batch

        slow = _rate(reencoded, model, optimizer, stats, batch_size, steps)
        fast = _rate(from_cache, model, optimizer, stats, batch_size, steps)
    print(
        f"cache stage: {clips} windows encoded and written in {cache_s:.1f} s ({clips / cache_s:.2f}/s)"
    )
    print(
        f"flow step re-encoding with the VAE: {slow[0]:8.2f} samples/s "
        f"(data side alone {slow[1]:8.2f}/s)"
    )
    print(
        f"flow step from latent shards:       {fast[0]:8.2f} samples/s "
        f"(data side alone {fast[1]:8.2f}/s): {fast[0] / slow[0]:.2f}x the "
        + ("data rate" if args.data_only else "step rate")
    )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

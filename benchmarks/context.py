"""What the built-in video and caption context costs a flow training step.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/context.py             # quick recipe
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/context.py --recipe ci

Two generators of the recipe, the same latents and draws, one training step each (context
encoders when there are any, forward, backward, AdamW), interleaved repeats:

1. with the recipe's built-in context: a ``LightVideoEncoder`` on the cached history frames
   (``conditioning.video_cell`` px per token) and a ``HashedTextEncoder`` on the captions,
   trained with the generator (``trajloom_train.context``);
2. the same generator fed precomputed context tensors of the same shapes (no encoders: what
   the generator's own video/caption pathways cost, e.g. its cross-attention over the
   history video steps concatenated to the track steps);
3. without context (``conditioning.video=none``, ``conditioning.text=none``).

Prints the parameter counts and the median CPU time of a step (process time: steadier
than wall time on a shared machine; run it with one thread). Synthetic inputs: speed does
not depend on the values.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from trajloom.data.synthetic import make_scene
from trajloom.flow.losses import draw_flow_inputs, flow_matching_terms
from trajloom_train.config import resolve
from trajloom_train.context import FlowContext, build_conditioned
from trajloom_train.data import scene_config
from trajloom_train.recipes import get_recipe


def _inputs(recipe, batch: int) -> dict:
    g = recipe.generator
    grid, cond = recipe.data.grid, recipe.conditioning
    shape = (batch, g.hist_latent_frames, g.num_tokens, g.latent_channels)
    gen = torch.Generator().manual_seed(0)
    size = (recipe.data.history, grid.grid_h * cond.video_cell, grid.grid_w * cond.video_cell, 3)
    cfg = scene_config(recipe.data)
    return {
        "z_hist": torch.randn(shape, generator=gen),
        "x1": torch.randn(shape, generator=gen),
        "hist_vis": torch.ones(shape[:3]),
        "frames": torch.randint(0, 256, (batch, *size), generator=gen, dtype=torch.uint8),
        "video": torch.randn(*shape[:3], g.video_latent_channels, generator=gen),
        "text": torch.randn(batch, g.text_embed_dim, generator=gen),
        "captions": [make_scene(i, cfg).caption for i in range(batch)],
    }


def _step(model, optimizer, x: dict, precomputed: bool = False) -> None:
    gcfg = model.generator.config
    ctx = FlowContext(z_hist=x["z_hist"], hist_vis=x["hist_vis"])
    if precomputed:
        ctx.video_latent = x["video"] if gcfg.use_video_cond else None
        ctx.text_emb = x["text"] if gcfg.use_text_cond else None
    else:
        ctx.video_frames = x["frames"] if model.video_encoder is not None else None
        ctx.captions = x["captions"] if model.text_encoder is not None else None
    cond = model.condition(ctx)
    draws = draw_flow_inputs(
        x["z_hist"], x["x1"].shape[1], generator=torch.Generator().manual_seed(1)
    )
    out = flow_matching_terms(lambda z, t: model(z, t, cond), x["x1"], draws)
    (out.numerator / out.weight_sum).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _params(module) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="quick")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
    args = parser.parse_args()
    with_context = get_recipe(args.recipe)
    none = replace(with_context.conditioning, video="none", text="none")
    without = resolve(replace(with_context, conditioning=none))
    batch = with_context.flow.micro_batch_size
    x = _inputs(with_context, batch)
    runs = {}
    variants = (
        ("with context", with_context, False),
        ("precomputed", with_context, True),
        ("without context", without, False),
    )
    for name, recipe, precomputed in variants:
        torch.manual_seed(0)
        model = build_conditioned(recipe)
        if precomputed:
            model.video_encoder = model.text_encoder = None
        runs[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4), [], precomputed)
        _step(runs[name][0], runs[name][1], x, precomputed)  # warm-up
    for _ in range(args.repeats):
        for model, optimizer, times, precomputed in runs.values():
            start = time.process_time()
            for _ in range(args.steps):
                _step(model, optimizer, x, precomputed)
            times.append((time.process_time() - start) / args.steps)
    print(f"recipe {args.recipe}, micro-batch {batch}, torch threads {torch.get_num_threads()}")
    for name, (model, _, times, _) in runs.items():
        print(
            f"{name:16s} generator {_params(model.generator):>9,d}  video encoder "
            f"{_params(model.video_encoder):>7,d}  text encoder {_params(model.text_encoder):>7,d}"
            f"  step {statistics.median(times) * 1e3:7.1f} ms CPU (median of {args.repeats})"
        )
    base = statistics.median(runs["without context"][2])
    for name in ("with context", "precomputed"):
        ratio = statistics.median(runs[name][2]) / base
        print(f"step time {name} / without context: {ratio:.3f}")


if __name__ == "__main__":
    main()

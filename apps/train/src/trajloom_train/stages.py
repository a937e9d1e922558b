"""The five stages: VAE, latent statistics, generator, on-policy fine-tuning, visibility head.

Each stage reads what the previous ones wrote in the run folder and writes
``<run>/<stage>/`` (``metrics.jsonl``, ``checkpoints/``, ``final/``, ``DONE.json``):

* ``vae``: TrajLoom-VAE on history and future windows separately (sample ``g`` takes the
  history window when ``g`` is even, the future window when odd), trajloom.vae losses
  (masked Huber + beta KL + velocity and neighbour consistency; paper eqs. 1-5).
* ``stats``: per-channel statistics of the posterior means of both windows over
  ``stats.clips`` training clips, in the released ``vae_latent_stats.json`` schema.
* ``flow``: the generator with the rectified-flow objective (eqs. 7-9) on
  (z_hist, z_fut) pairs encoded by the frozen VAE (posterior means) and normalized with the
  ``z_all`` statistics, history visibility pooled to latent steps as a condition, and the
  video and caption context of ``recipe.conditioning`` (the built-in encoders train with
  the generator: ``trajloom_train.context``).
* ``onpolicy``: from the flow stage's (EMA) weights, flow matching plus the on-policy
  K-step loss (eqs. 10-14) on a sub-batch spread evenly over the global batch.
* ``vis``: the visibility head on normalized VAE latents of the windows named by
  ``vis_train.segments`` (as released), BCE against max-pooled visibility.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from trajloom.data.clip import ClipBatch
from trajloom.data.latents import LatentBatch, collate_latents
from trajloom.encoding import normalize
from trajloom.flow.conditioners import text_dropout_mask
from trajloom.flow.io import save_pretrained as save_flow_module
from trajloom.flow.losses import (
    FlowDraws,
    draw_flow_inputs,
    flow_matching_terms,
    flow_token_weights,
)
from trajloom.flow.model import FlowCondition
from trajloom.flow.onpolicy import OnPolicyConfig, onpolicy_loss, select_samples
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom.flow.visibility import (
    VisibilityPredictor,
    visibility_loss,
)
from trajloom.vae import (
    LatentStats,
    LatentStatsAccumulator,
    TrajLoomVAE,
    load_pretrained,
    save_pretrained,
    write_latent_stats_json,
)
from trajloom.vae.losses import vae_losses
from trajloom_train.checkpoint import atomic_write_text
from trajloom_train.config import Recipe
from trajloom_train.context import (
    ConditionedGenerator,
    FlowContext,
    build_conditioned,
    flow_context,
    load_conditioned,
    save_conditioned,
)
from trajloom_train.data import VAL, SyntheticSplit, TrainSource, sample_generator
from trajloom_train.distributed import (
    Dist,
    all_reduce_sum,
    barrier,
    from_main,
    set_place,
    waiting,
)
from trajloom_train.evaluate import pipeline_config, render_preview
from trajloom_train.latents import CacheContext, LatentSource, encode_clips, run_cache
from trajloom_train.trainer import DONE_NAME, LossOut, Task, run_task, stage_done

__all__ = [
    "STAGES",
    "RunContext",
    "build_flow_task",
    "build_vae_task",
    "build_vis_task",
    "run_stage",
    "run_stats",
]

STAGES = ("vae", "stats", "cache", "flow", "onpolicy", "vis")
# Salts that keep the random draws of different stages independent.
_SALT = {"vae": 1, "flow": 2, "onpolicy": 3, "vis": 4}
STATS_FILE = "vae_latent_stats.json"


@dataclass
class RunContext:
    """What every stage needs: the recipe, the run folder, this process."""

    recipe: Recipe
    run_dir: Path
    dist: Dist
    stop_after: int | None = None
    progress: bool = True

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name

    @property
    def device(self) -> torch.device:
        return self.dist.device


def _require(ctx: RunContext, stage: str, needed_by: str) -> Path:
    folder = ctx.stage_dir(stage)
    if not stage_done(folder):
        raise FileNotFoundError(
            f"stage '{needed_by}' needs the finished '{stage}' stage in {folder}; run "
            f"`trajloom-train {stage}` (or `all`) on this run folder first"
        )
    return folder


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _source(ctx: RunContext, stage: str) -> TrainSource:
    cfg = ctx.recipe.stage(stage)
    return TrainSource(
        ctx.recipe.data,
        ctx.recipe.seed,
        ctx.dist,
        cfg.micro_batch(ctx.dist.world_size),
        cfg.accumulation(ctx.dist.world_size),
    )


def _val_clips(ctx: RunContext, frames: bool = False) -> ClipBatch:
    clips = SyntheticSplit(ctx.recipe.data, ctx.recipe.seed, VAL)
    return clips.batch(list(range(ctx.recipe.data.val_clips)), frames=frames)


def _windows(batch: ClipBatch, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """History window for even sample indices, future window for odd ones: ``"b t n 2"``, ``"b t n"``."""
    fut = torch.tensor([g % 2 == 1 for g in indices])
    tracks = torch.where(fut[:, None, None, None], batch.fut_tracks, batch.hist_tracks)
    vis = torch.where(fut[:, None, None], batch.fut_vis, batch.hist_vis)
    return tracks, vis


# ----------------------------------------------------------------------------- VAE


@dataclass
class VAEBatch:
    """One micro-batch of the VAE stage: one window per sample, on the training device."""

    values: torch.Tensor  # "b t n 2" normalized track coordinates
    vis: torch.Tensor  # "b t n" visibility
    eps: torch.Tensor  # "b t' n c" reparameterization noise (per-sample generators)


M = TypeVar("M", TrajLoomVAE, ConditionedGenerator)


def _compiled(ctx: RunContext, model: M) -> M:
    """The model with its blocks compiled when the recipe asks and the device is CUDA."""
    if ctx.recipe.compile_blocks and ctx.device.type == "cuda":
        model.compile_blocks()
    return model


def build_vae_task(ctx: RunContext) -> Task:
    r = ctx.recipe
    torch.manual_seed(r.seed)
    model = _compiled(ctx, TrajLoomVAE(r.vae_model).to(ctx.device))
    spec = r.vae_model.grid
    source = _source(ctx, "vae")
    latent_shape = (r.vae_model.latent_frames, r.vae_model.num_tokens, r.vae_model.latent_channels)

    def make_batch(step: int, micro: int, indices: list[int]) -> VAEBatch:
        tracks, vis = _windows(source.batch(step, micro, indices), indices)
        eps = torch.stack(
            [
                torch.randn(latent_shape, generator=sample_generator(r.seed, _SALT["vae"], g))
                for g in indices
            ]
        )
        return VAEBatch(
            values=normalize(tracks, spec).to(ctx.device),
            vis=vis.to(ctx.device),
            eps=eps.to(ctx.device),
        )

    def loss(module: nn.Module, batch: VAEBatch, step: int, indices: list[int]) -> LossOut:
        posterior = module.encode(batch.values)
        z = posterior.mean + posterior.std * batch.eps.to(posterior.mean.dtype)
        recon = module.decode(z)
        terms = vae_losses(recon.float(), batch.values, batch.vis, posterior, spec, r.vae_loss)
        logs = {
            k: float(getattr(terms, k).detach()) for k in ("recon", "kl", "velocity", "neighbor")
        }
        return LossOut(terms.total * len(indices), logs)

    val = _val_clips(ctx)

    def validate(module: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in ("hist", "fut"):
            tracks, vis = (x.to(ctx.device) for x in val.window(name))
            recon = module.decode_tracks(module.encode_tracks(tracks).mean).float()
            err = (recon - tracks).norm(dim=-1)
            out[f"vepe_px_{name}"] = float(err[vis].mean())
        return out

    def export(module: nn.Module, folder: Path) -> None:
        save_pretrained(module, folder)

    return Task(
        "vae",
        model,
        r.vae,
        make_batch,
        loss,
        export,
        validate=validate,
        data_report=source.data_report,
    )


# ----------------------------------------------------------------------------- stats


def run_stats(ctx: RunContext) -> dict[str, Any]:
    """Encode ``stats.clips`` training clips (both windows) and write the latent statistics."""
    folder = ctx.stage_dir("stats")
    if from_main(stage_done(folder), "rank 0's look at the stats stage"):
        return json.loads((folder / DONE_NAME).read_text())
    r = ctx.recipe
    vae = _frozen(load_pretrained(_require(ctx, "vae", "stats") / "final", device=ctx.device))
    source = TrainSource(r.data, r.seed, ctx.dist, r.stats.batch_size, 1)
    c = r.vae_model.latent_channels
    accs = {k: LatentStatsAccumulator(c) for k in ("z_hist", "z_fut", "z_all")}
    mine = list(range(ctx.dist.rank, r.stats.clips, ctx.dist.world_size))
    with torch.no_grad():
        for i in range(0, len(mine), r.stats.batch_size):
            indices = mine[i : i + r.stats.batch_size]
            batch = source.batch(0, i // r.stats.batch_size, indices)
            for key, name in (("z_hist", "hist"), ("z_fut", "fut")):
                z = vae.encode_tracks(batch.window(name)[0].to(ctx.device)).mean.float()
                accs[key].update(z)
                accs["z_all"].update(z)
    if ctx.dist.distributed:
        for acc in accs.values():
            packed = torch.cat([acc.sum, acc.sumsq, torch.tensor([float(acc.count)])]).to(
                ctx.device
            )
            packed = all_reduce_sum(packed, "the sums of the latent statistics").cpu()
            acc.sum, acc.sumsq = packed[:c].clone(), packed[c : 2 * c].clone()
            acc.count = int(packed[-1])
            for attr, op in (
                ("min", torch.distributed.ReduceOp.MIN),
                ("max", torch.distributed.ReduceOp.MAX),
            ):
                value = getattr(acc, attr).to(ctx.device)
                with waiting(f"the {attr} of the latent statistics"):
                    torch.distributed.all_reduce(value, op=op)
                setattr(acc, attr, value.cpu())
    summary = {"stage": "stats", "clips": r.stats.clips, "vectors": accs["z_all"].count}
    if ctx.dist.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"clips": r.stats.clips, "source": r.data.source, "encoding": "posterior mean"}
        write_latent_stats_json(folder / STATS_FILE, accs, meta)
        stats = accs["z_all"].result()
        summary["z_all_mean"] = stats.mean.tolist()
        summary["z_all_std"] = stats.std.tolist()
        atomic_write_text(folder / DONE_NAME, json.dumps(summary, indent=2) + "\n")
    barrier("the barrier after rank 0 wrote the latent statistics")
    return summary


# ----------------------------------------------------------------------------- cache


def _cache(ctx: RunContext) -> dict[str, Any]:
    """Encode every training window once (``trajloom_train.latents.run_cache``)."""
    vae = _frozen(load_pretrained(_require(ctx, "vae", "cache") / "final", device=ctx.device))
    _require(ctx, "stats", "cache")
    context = CacheContext(ctx.recipe, ctx.device)
    wall0 = time.perf_counter()
    summary = run_cache(
        ctx.recipe, ctx.run_dir, ctx.dist, vae, ctx.recipe.vae_model.frames_per_latent, context
    )
    summary["wall_s"] = time.perf_counter() - wall0
    if ctx.dist.is_main:
        atomic_write_text(ctx.stage_dir("cache") / DONE_NAME, json.dumps(summary, indent=2) + "\n")
        skips = summary.get("samples_skipped", 0)
        print(
            f"[cache] {summary['windows']} windows in {summary['shards']} latent shards"
            + (f", {skips} bad samples skipped ({summary['skipped']})" if skips else "")
        )
    barrier("the barrier after rank 0 finished the cache stage")
    return summary


# ----------------------------------------------------------------------------- flow


class _Latents:
    """A stage's training latents (:class:`~trajloom_train.latents.LatentSource`), normalized
    with the run's ``z_all`` statistics; the frozen VAE only encodes the validation clips
    (once) and, for a synthetic run without a scene pool, the fresh scenes (with the same
    cached context as the cache stage's)."""

    def __init__(
        self,
        ctx: RunContext,
        stage: str,
        vae: TrajLoomVAE,
        stats: LatentStats,
        context: CacheContext,
    ):
        if ctx.recipe.data.source == "shards" or ctx.recipe.data.scene_pool:
            _require(ctx, "cache", stage)
        cfg = ctx.recipe.stage(stage)
        factor = ctx.recipe.vae_model.frames_per_latent
        self.stats = stats
        frames = context.needs_frames
        self.source = LatentSource(
            ctx.recipe,
            ctx.run_dir,
            ctx.dist,
            cfg.micro_batch(ctx.dist.world_size),
            cfg.accumulation(ctx.dist.world_size),
            encode=lambda batch: encode_clips(vae, batch, factor, context),
            frames=frames,
        )
        self._val = lambda: collate_latents(
            encode_clips(vae, _val_clips(ctx, frames), factor, context)
        )

    @cached_property
    def val(self) -> LatentBatch:
        """The validation clips' latents (normalized), encoded on first use."""
        return self.normalized(self._val())

    def batch(self, step: int, micro: int, indices: list[int]) -> LatentBatch:
        return self.normalized(self.source.batch(step, micro, indices))

    def normalized(self, batch: LatentBatch) -> LatentBatch:
        return replace(
            batch,
            z_hist=self.stats.normalize(batch.z_hist),
            z_fut=self.stats.normalize(batch.z_fut),
        )


def _trained_set_parts(ctx: RunContext, stage: str) -> tuple[TrajLoomVAE, LatentStats]:
    vae = _frozen(load_pretrained(_require(ctx, "vae", stage) / "final", device=ctx.device))
    stats = LatentStats.from_json(_require(ctx, "stats", stage) / STATS_FILE, key="z_all")
    return vae, stats


@dataclass
class FlowBatch:
    """One micro-batch of the flow and on-policy stages, on the training device."""

    context: FlowContext  # history latents "b th n c", visibility, video and caption inputs
    x1: torch.Tensor  # "b tf n c" normalized future latents (the data)
    draws: FlowDraws  # source state, flow time, tube noise (per-sample generators)
    token_vis: torch.Tensor  # "b tf n" latent-level future visibility
    weight_sum: torch.Tensor  # scalar: this micro-batch's share of the loss denominator
    onpolicy: list[int]  # rows that also get the on-policy rollout


def _add_onpolicy(
    out: LossOut,
    module: nn.Module,
    batch: FlowBatch,
    cond: FlowCondition,
    op: OnPolicyConfig,
    sub_total: int,
) -> None:
    """Add the on-policy K-step loss of the batch's sub-batch rows to ``out``."""
    sel = batch.onpolicy
    sub = select_samples(cond, torch.tensor(sel))
    res = onpolicy_loss(
        lambda x, t: module(x, t, sub),
        batch.x1[sel],
        sub.z_hist,
        token_vis=batch.token_vis[sel],
        x0=batch.draws.x0[sel],
        config=op,
    )
    # This micro-batch's share of the mean over the step's whole sub-batch.
    out.extra = res.loss * (len(sel) / sub_total)
    out.logs.update(rollout=float(res.rollout.detach()), endpoint=float(res.endpoint.detach()))


def build_flow_task(ctx: RunContext, stage: str = "flow") -> Task:
    """The generator stage (``stage="flow"``) or its on-policy fine-tuning (``"onpolicy"``).

    The loss is ``trajloom.flow.losses.flow_matching_terms`` (plus ``onpolicy_loss`` on an
    evenly spread sub-batch); every random draw of sample ``g`` comes from its own
    generator, in the order source state, flow time, tube noise, caption dropout.
    """
    r = ctx.recipe
    vae, stats = _trained_set_parts(ctx, stage)
    torch.manual_seed(r.seed)
    model = build_conditioned(r).to(ctx.device)
    if stage == "onpolicy":
        trained = load_conditioned(_require(ctx, "flow", stage) / "final")
        model.load_state_dict(trained.state_dict(), strict=True)
    model = _compiled(ctx, model)
    context = CacheContext(r, ctx.device)
    latents = _Latents(ctx, stage, vae, stats, context)
    cfg = r.stage(stage)
    op = r.onpolicy_loss
    # On-policy sub-batch: every `every`-th sample of the global batch (spread over ranks).
    every = max(1, cfg.batch_size // op.sub_batch)
    sub_total = len(range(0, cfg.batch_size, every))

    def make_batch(step: int, micro: int, indices: list[int]) -> FlowBatch:
        lat = latents.batch(step, micro, indices)
        dev = ctx.device
        z_hist, x1 = lat.z_hist.to(dev), lat.z_fut.to(dev)
        gens = [sample_generator(r.seed, _SALT[stage], g, device=dev) for g in indices]
        draws = draw_flow_inputs(z_hist, x1.shape[1], config=r.flow_loss, generators=gens)
        keep = torch.cat(
            [text_dropout_mask(1, r.text_dropout, generator=g, device=dev) for g in gens]
        )
        token_vis = lat.fut_vis.to(dev)
        weights = flow_token_weights(token_vis, r.flow_loss)
        step_pos = torch.tensor([g - step * cfg.batch_size for g in indices])
        return FlowBatch(
            context=flow_context(lat, keep, r, dev),
            x1=x1,
            draws=draws,
            token_vis=token_vis,
            weight_sum=torch.tensor(float(token_vis.numel())) if weights is None else weights.sum(),
            onpolicy=(step_pos % every == 0).nonzero().flatten().tolist(),
        )

    def loss(module: nn.Module, batch: FlowBatch, step: int, indices: list[int]) -> LossOut:
        assert isinstance(module, ConditionedGenerator)
        cond = module.condition(batch.context)
        fm = flow_matching_terms(
            lambda x, t: module(x, t, cond),
            batch.x1,
            batch.draws,
            token_vis=batch.token_vis,
            config=r.flow_loss,
        )
        out = LossOut(fm.numerator, {"fm": float(fm.loss.detach())})
        if stage == "onpolicy" and op.enabled and batch.onpolicy:
            _add_onpolicy(out, module, batch, cond, op, sub_total)
        return out

    val = _val_clips(ctx, frames=context.needs_frames)

    def pipeline(module: nn.Module) -> TrajLoomPipeline:
        assert isinstance(module, ConditionedGenerator)
        # the trained built-in encoders, or the frozen released ones the cache used
        video = module.video_encoder if module.video_encoder is not None else context.wan
        text = module.text_encoder if module.text_encoder is not None else context.umt5
        return TrajLoomPipeline(
            vae,
            module.generator,
            stats,
            video_encoder=video,
            text_encoder=text,
            config=pipeline_config(r),
        )

    def validate(module: nn.Module) -> dict[str, float]:
        th = r.data.history
        pred = pipeline(module)(
            val.hist_tracks,
            val.hist_vis,
            frames=None if val.frames is None else val.frames[:, :th],
            caption=val.captions if r.generator.use_text_cond else None,
            steps=r.eval.steps,
            seed=r.seed,
        )
        gt, vis = val.fut_tracks.to(ctx.device), val.fut_vis.to(ctx.device)
        err = (pred.tracks[:, 0] - gt).norm(dim=-1)
        return {"vepe_px": float(err[vis].mean())}

    def preview(module: nn.Module, step: int) -> None:
        path = ctx.stage_dir(stage) / "previews" / f"step-{step:08d}.mp4"
        render_preview(pipeline(module), r, path, clips=1)

    def export(module: nn.Module, folder: Path) -> None:
        assert isinstance(module, ConditionedGenerator)
        save_conditioned(module, folder)

    return Task(
        stage,
        model,
        cfg,
        make_batch,
        loss,
        export,
        denominator=lambda batch: batch.weight_sum.double(),
        validate=validate,
        preview=preview,
        info={"onpolicy_sub_batch": sub_total} if stage == "onpolicy" else {},
        data_report=latents.source.data_report,
    )


# ----------------------------------------------------------------------------- visibility


@dataclass
class VisBatch:
    """One micro-batch of the visibility head: latents, history latents, targets."""

    z: torch.Tensor  # "b t' n c" normalized latents of the chosen window
    z_hist: torch.Tensor | None  # "b th' n c" when the head reads the last history latent
    targets: torch.Tensor  # "b t' n" max-pooled visibility in {0, 1}


def build_vis_task(ctx: RunContext) -> Task:
    r = ctx.recipe
    vae, stats = _trained_set_parts(ctx, "vis")
    torch.manual_seed(r.seed)
    model = VisibilityPredictor(r.visibility_model).to(ctx.device)
    # The head reads latents only: no video context for its validation clips.
    none = replace(r.conditioning, video="none", text="none", video_path="", text_path="")
    no_context = replace(r, conditioning=none)
    latents = _Latents(ctx, "vis", vae, stats, CacheContext(no_context))
    segments = r.vis_train.segments
    use_hist = r.visibility_model.use_hist_last

    def make_batch(step: int, micro: int, indices: list[int]) -> VisBatch:
        lat = latents.batch(step, micro, indices)
        pick = [lat.window(segments[g % len(segments)]) for g in indices]
        return VisBatch(
            z=torch.stack([z[i] for i, (z, _) in enumerate(pick)]).to(ctx.device),
            z_hist=lat.z_hist.to(ctx.device) if use_hist else None,
            targets=torch.stack([v[i] for i, (_, v) in enumerate(pick)]).to(ctx.device),
        )

    def loss(module: nn.Module, batch: VisBatch, step: int, indices: list[int]) -> LossOut:
        logits = module(batch.z, batch.z_hist).float()
        bce = visibility_loss(logits, batch.targets, pos_weight=r.vis_train.pos_weight)
        acc = float(((logits > 0).float() == batch.targets).float().mean())
        return LossOut(bce * len(indices), {"accuracy": acc})

    def validate(module: nn.Module) -> dict[str, float]:
        val = latents.val
        z_hist = val.z_hist.to(ctx.device) if use_hist else None
        targets = val.fut_vis.to(ctx.device)
        logits = module(val.z_fut.to(ctx.device), z_hist).float()
        acc = float(((logits > 0).float() == targets).float().mean())
        return {"bce": float(visibility_loss(logits, targets)), "accuracy": acc}

    def export(module: nn.Module, folder: Path) -> None:
        save_flow_module(module, folder)

    return Task(
        "vis",
        model,
        r.vis,
        make_batch,
        loss,
        export,
        validate=validate,
        data_report=latents.source.data_report,
    )


# ----------------------------------------------------------------------------- dispatch


def run_stage(ctx: RunContext, name: str) -> dict[str, Any]:
    """Run (or resume, or skip when done) one stage; returns its summary."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; choose one of {STAGES}")
    folder = ctx.stage_dir(name)
    set_place(name)
    # rank 0's look at the folder, sent to all: every process skips the stage or none does
    if from_main(stage_done(folder), f"rank 0's look at the {name} stage"):
        if ctx.dist.is_main:
            print(f"[{name}] already done: {folder / DONE_NAME}")
        return json.loads((folder / DONE_NAME).read_text())
    if name == "stats":
        return run_stats(ctx)
    if name == "cache":
        return _cache(ctx)
    builders = {
        "vae": build_vae_task,
        "flow": lambda c: build_flow_task(c, "flow"),
        "onpolicy": lambda c: build_flow_task(c, "onpolicy"),
        "vis": build_vis_task,
    }
    task = builders[name](ctx)
    return run_task(
        task,
        folder,
        ctx.dist,
        precision=ctx.recipe.precision,
        tb_dir=ctx.run_dir / "tensorboard" / name,
        stop_after=ctx.stop_after,
        progress=ctx.progress,
    )

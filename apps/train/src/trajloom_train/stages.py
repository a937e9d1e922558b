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
  ``z_all`` statistics, history visibility pooled to latent steps as a condition.
* ``onpolicy``: from the flow stage's (EMA) weights, flow matching plus the on-policy
  K-step loss (eqs. 10-14) on a sub-batch spread evenly over the global batch.
* ``vis``: the visibility head on normalized VAE latents of the windows named by
  ``vis_train.segments`` (as released), BCE against max-pooled visibility.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trajloom.encoding import normalize
from trajloom.flow.conditioners import drop_text, text_dropout_mask
from trajloom.flow.io import load_generator
from trajloom.flow.io import save_pretrained as save_flow_module
from trajloom.flow.losses import sample_flow_time, token_squared_error, token_weights
from trajloom.flow.model import FlowCondition, TrajLoomGenerator, latent_visibility
from trajloom.flow.onpolicy import onpolicy_loss, select_samples
from trajloom.flow.path import draw_source, interpolate, velocity_target
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom.flow.visibility import (
    VisibilityPredictor,
    visibility_loss,
    visibility_targets,
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
from trajloom_train.data import VAL, SyntheticClips, TrainSource, sample_generator
from trajloom_train.distributed import Dist, all_reduce_sum, barrier
from trajloom_train.evaluate import pipeline_config, render_preview
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

STAGES = ("vae", "stats", "flow", "onpolicy", "vis")
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
        cfg.micro_batch_size,
        cfg.accumulation(ctx.dist.world_size),
    )


def _val_clips(ctx: RunContext) -> dict[str, Any]:
    clips = SyntheticClips(ctx.recipe.data, ctx.recipe.seed, VAL)
    return clips.batch(list(range(ctx.recipe.data.val_clips)))


def _windows(batch: dict[str, Any], indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """History window for even sample indices, future window for odd ones: ``"b t n 2"``, ``"b t n"``."""
    fut = torch.tensor([g % 2 == 1 for g in indices])
    tracks = torch.where(fut[:, None, None, None], batch["fut_tracks"], batch["hist_tracks"])
    vis = torch.where(fut[:, None, None], batch["fut_vis"], batch["hist_vis"])
    return tracks, vis


# ----------------------------------------------------------------------------- VAE


def build_vae_task(ctx: RunContext) -> Task:
    r = ctx.recipe
    torch.manual_seed(r.seed)
    model = TrajLoomVAE(r.vae_model).to(ctx.device)
    spec = r.vae_model.grid
    source = _source(ctx, "vae")
    latent_shape = (r.vae_model.latent_frames, r.vae_model.num_tokens, r.vae_model.latent_channels)

    def make_batch(step: int, micro: int, indices: list[int]) -> dict[str, torch.Tensor]:
        tracks, vis = _windows(source.batch(step, micro, indices), indices)
        eps = torch.stack(
            [
                torch.randn(latent_shape, generator=sample_generator(r.seed, _SALT["vae"], g))
                for g in indices
            ]
        )
        return {
            "values": normalize(tracks, spec).to(ctx.device),
            "vis": vis.to(ctx.device),
            "eps": eps.to(ctx.device),
        }

    def loss(module: nn.Module, batch: dict, step: int, indices: list[int]) -> LossOut:
        posterior = module.encode(batch["values"])
        z = posterior.mean + posterior.std * batch["eps"].to(posterior.mean.dtype)
        recon = module.decode(z)
        terms = vae_losses(
            recon.float(), batch["values"], batch["vis"], posterior, spec, r.vae_loss
        )
        logs = {
            k: float(getattr(terms, k).detach()) for k in ("recon", "kl", "velocity", "neighbor")
        }
        return LossOut(terms.total * len(indices), logs)

    val = _val_clips(ctx)

    def validate(module: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in ("hist", "fut"):
            tracks = val[f"{name}_tracks"].to(ctx.device)
            vis = val[f"{name}_vis"].to(ctx.device)
            recon = module.decode_tracks(module.encode_tracks(tracks).mean).float()
            err = (recon - tracks).norm(dim=-1)
            out[f"vepe_px_{name}"] = float(err[vis].mean())
        return out

    def export(module: nn.Module, folder: Path) -> None:
        save_pretrained(module, folder)

    return Task("vae", model, r.vae, make_batch, loss, export, validate=validate)


# ----------------------------------------------------------------------------- stats


def run_stats(ctx: RunContext) -> dict[str, Any]:
    """Encode ``stats.clips`` training clips (both windows) and write the latent statistics."""
    folder = ctx.stage_dir("stats")
    if stage_done(folder):
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
            for key, name in (("z_hist", "hist_tracks"), ("z_fut", "fut_tracks")):
                z = vae.encode_tracks(batch[name].to(ctx.device)).mean.float()
                accs[key].update(z)
                accs["z_all"].update(z)
    if ctx.dist.distributed:
        for acc in accs.values():
            packed = torch.cat([acc.sum, acc.sumsq, torch.tensor([float(acc.count)])]).to(
                ctx.device
            )
            packed = all_reduce_sum(packed).cpu()
            acc.sum, acc.sumsq = packed[:c].clone(), packed[c : 2 * c].clone()
            acc.count = int(packed[-1])
            for attr, op in (
                ("min", torch.distributed.ReduceOp.MIN),
                ("max", torch.distributed.ReduceOp.MAX),
            ):
                value = getattr(acc, attr).to(ctx.device)
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
    barrier()
    return summary


# ----------------------------------------------------------------------------- flow


class _LatentEncoder:
    """Frozen VAE + statistics: window tracks -> normalized posterior means, cached per clip."""

    def __init__(self, vae: TrajLoomVAE, stats: LatentStats, cache: bool) -> None:
        self.vae = vae
        self.stats = stats
        self.cache: dict[tuple[str, str], torch.Tensor] | None = {} if cache else None

    @torch.no_grad()
    def __call__(self, batch: dict[str, Any], window: str) -> torch.Tensor:
        """``"b t' n c"`` normalized latents of ``window`` ("hist" or "fut") for the batch."""
        ids = batch["id"]
        if self.cache is not None and all((i, window) in self.cache for i in ids):
            return torch.stack([self.cache[(i, window)] for i in ids])
        device = next(self.vae.parameters()).device
        z = self.vae.encode_tracks(batch[f"{window}_tracks"].to(device)).mean.float()
        z = self.stats.normalize(z)
        if self.cache is not None:
            for i, zi in zip(ids, z, strict=True):
                self.cache[(i, window)] = zi
        return z


def _trained_set_parts(ctx: RunContext, stage: str) -> tuple[TrajLoomVAE, LatentStats]:
    vae = _frozen(load_pretrained(_require(ctx, "vae", stage) / "final", device=ctx.device))
    stats = LatentStats.from_json(_require(ctx, "stats", stage) / STATS_FILE, key="z_all")
    return vae, stats


def build_flow_task(ctx: RunContext, stage: str = "flow") -> Task:
    """The generator stage (``stage="flow"``) or its on-policy fine-tuning (``"onpolicy"``)."""
    r = ctx.recipe
    gcfg = r.generator
    vae, stats = _trained_set_parts(ctx, stage)
    torch.manual_seed(r.seed)
    model = TrajLoomGenerator(gcfg).to(ctx.device)
    if stage == "onpolicy":
        trained = load_generator(_require(ctx, "flow", stage) / "final")
        model.load_state_dict(trained.state_dict(), strict=True)
    source = _source(ctx, stage)
    encode = _LatentEncoder(vae, stats, cache=source.reusable)
    factor = r.vae_model.temporal_factor
    fl = r.flow_loss
    op = r.onpolicy_loss
    cfg = r.stage(stage)
    salt = _SALT[stage]
    # On-policy sub-batch: every `every`-th sample of the global batch (spread over ranks).
    every = max(1, cfg.batch_size // op.sub_batch)
    sub_total = len(range(0, cfg.batch_size, every))

    def make_batch(step: int, micro: int, indices: list[int]) -> dict[str, Any]:
        clips = source.batch(step, micro, indices)
        z_hist = encode(clips, "hist")
        x1 = encode(clips, "fut")
        dev = ctx.device
        x0s, ts, tubes, keeps = [], [], [], []
        for i, g in enumerate(indices):
            gen = sample_generator(r.seed, salt, g, device=dev)
            x0s.append(
                draw_source(
                    z_hist[i : i + 1].to(dev),
                    x1.shape[1],
                    generator=gen,
                    anchor=fl.anchor,
                    anchor_std=fl.anchor_std,
                    anchor_slices=fl.anchor_slices,
                )
            )
            ts.append(
                sample_flow_time(
                    1,
                    generator=gen,
                    device=dev,
                    t_small_prob=fl.t_small_prob,
                    t_small_max=fl.t_small_max,
                    logit_mean=fl.logit_mean,
                    logit_std=fl.logit_std,
                    t_eps=fl.t_eps,
                )
            )
            if fl.sigma:
                tubes.append(torch.randn((1, *x1.shape[1:]), generator=gen, device=dev))
            keeps.append(text_dropout_mask(1, r.text_dropout, generator=gen, device=dev))
        token_vis = latent_visibility(clips["fut_vis"], factor).to(dev)
        weights = (
            token_weights(token_vis, fl.invisible_weight)
            if fl.use_visibility_weights
            else torch.ones_like(token_vis)
        )
        text = None
        if gcfg.use_text_cond and "text_emb" in clips:
            text = drop_text(clips["text_emb"].float().to(dev), torch.cat(keeps))
        video = None
        if gcfg.use_video_cond and "video_latent" in clips:
            video = clips["video_latent"].float().to(dev)
        hist_vis = (
            latent_visibility(clips["hist_vis"], factor).to(dev) if gcfg.use_hist_vis_cond else None
        )
        step_pos = torch.tensor([g - step * cfg.batch_size for g in indices])
        return {
            "cond": FlowCondition(z_hist=z_hist.to(dev), hist_vis=hist_vis, video=video, text=text),
            "x1": x1.to(dev),
            "x0": torch.cat(x0s),
            "t": torch.cat(ts),
            "tube": torch.cat(tubes) if tubes else None,
            "token_vis": token_vis,
            "weights": weights,
            "onpolicy": (step_pos % every == 0).nonzero().flatten().tolist(),
        }

    def denominator(batch: dict[str, Any]) -> torch.Tensor:
        return batch["weights"].sum().double()

    def loss(module: nn.Module, batch: dict, step: int, indices: list[int]) -> LossOut:
        x0, x1, t, cond = batch["x0"], batch["x1"], batch["t"], batch["cond"]
        xt = interpolate(x0, x1, t, sigma=fl.sigma, noise=batch["tube"])
        pred = module(xt, t, cond)
        per_token = token_squared_error(pred, velocity_target(x0, x1))
        numerator = (batch["weights"] * per_token).sum()
        logs = {"fm": float(numerator.detach() / batch["weights"].sum())}
        out = LossOut(numerator, logs)
        sel = batch["onpolicy"]
        if stage == "onpolicy" and op.enabled and sel:
            sub = select_samples(cond, torch.tensor(sel))
            res = onpolicy_loss(
                lambda x, tt: module(x, tt, sub),
                x1[sel],
                sub.z_hist,
                token_vis=batch["token_vis"][sel],
                x0=x0[sel],
                config=op,
            )
            # This micro-batch's share of the mean over the step's whole sub-batch.
            out.extra = res.loss * (len(sel) / sub_total)
            out.logs.update(
                rollout=float(res.rollout.detach()), endpoint=float(res.endpoint.detach())
            )
        return out

    val = _val_clips(ctx)

    def validate(module: nn.Module) -> dict[str, float]:
        pipe = TrajLoomPipeline(vae, module, stats, config=pipeline_config(r))
        pred = pipe(val["hist_tracks"], val["hist_vis"], steps=r.eval.steps, seed=r.seed)
        gt, vis = val["fut_tracks"].to(ctx.device), val["fut_vis"].to(ctx.device)
        err = (pred.tracks[:, 0] - gt).norm(dim=-1)
        return {"vepe_px": float(err[vis].mean())}

    def preview(module: nn.Module, step: int) -> None:

        pipe = TrajLoomPipeline(vae, module, stats, config=pipeline_config(r))
        render_preview(pipe, r, ctx.stage_dir(stage) / "previews" / f"step-{step:08d}.mp4", clips=1)

    def export(module: nn.Module, folder: Path) -> None:
        save_flow_module(module, folder)

    info = {"onpolicy_sub_batch": sub_total} if stage == "onpolicy" else {}
    return Task(
        stage,
        model,
        cfg,
        make_batch,
        loss,
        export,
        denominator=denominator,
        validate=validate,
        preview=preview,
        info=info,
    )


# ----------------------------------------------------------------------------- visibility


def build_vis_task(ctx: RunContext) -> Task:
    r = ctx.recipe
    vae, stats = _trained_set_parts(ctx, "vis")
    torch.manual_seed(r.seed)
    model = VisibilityPredictor(r.visibility_model).to(ctx.device)
    source = _source(ctx, "vis")
    encode = _LatentEncoder(vae, stats, cache=source.reusable)
    segments = r.vis_train.segments
    factor = r.vae_model.temporal_factor

    def make_batch(step: int, micro: int, indices: list[int]) -> dict[str, torch.Tensor]:
        clips = source.batch(step, micro, indices)
        lat = {s: encode(clips, s) for s in segments}
        pick = [segments[g % len(segments)] for g in indices]
        z = torch.stack([lat[s][i] for i, s in enumerate(pick)])
        vis = torch.stack([clips[f"{s}_vis"][i] for i, s in enumerate(pick)])
        z_hist = encode(clips, "hist") if r.visibility_model.use_hist_last else None
        return {
            "z": z.to(ctx.device),
            "z_hist": None if z_hist is None else z_hist.to(ctx.device),
            "targets": visibility_targets(vis, factor).to(ctx.device),
        }

    def loss(module: nn.Module, batch: dict, step: int, indices: list[int]) -> LossOut:
        logits = module(batch["z"], batch["z_hist"]).float()
        bce = visibility_loss(logits, batch["targets"], pos_weight=r.vis_train.pos_weight)
        acc = float(((logits > 0).float() == batch["targets"]).float().mean())
        return LossOut(bce * len(indices), {"accuracy": acc})

    val = _val_clips(ctx)

    def validate(module: nn.Module) -> dict[str, float]:
        z = encode(val, "fut").to(ctx.device)
        z_hist = encode(val, "hist").to(ctx.device) if r.visibility_model.use_hist_last else None
        targets = visibility_targets(val["fut_vis"], factor).to(ctx.device)
        logits = module(z, z_hist).float()
        acc = float(((logits > 0).float() == targets).float().mean())
        return {"bce": float(visibility_loss(logits, targets)), "accuracy": acc}

    def export(module: nn.Module, folder: Path) -> None:
        save_flow_module(module, folder)

    return Task("vis", model, r.vis, make_batch, loss, export, validate=validate)


# ----------------------------------------------------------------------------- dispatch


def run_stage(ctx: RunContext, name: str) -> dict[str, Any]:
    """Run (or resume, or skip when done) one stage; returns its summary."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; choose one of {STAGES}")
    folder = ctx.stage_dir(name)
    if stage_done(folder):
        if ctx.dist.is_main:
            print(f"[{name}] already done: {folder / DONE_NAME}")
        return json.loads((folder / DONE_NAME).read_text())
    if name == "stats":
        return run_stats(ctx)
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

"""Export the trained set, evaluate it against the baselines, render a preview.

* :func:`export_trained_set`: ``<run>/trained/``, the folder
  ``trajloom.flow.TrajLoomPipeline.from_pretrained`` loads (VAE, generator — the
  on-policy weights when that stage ran —, visibility head, latent statistics, and the
  video and caption context the generator trained with: the built-in encoders' weights, or
  the local paths of the released ones, in ``pipeline.json``).
* :func:`evaluate`: held-out clips (synthetic scenes of a seed stream no training or
  validation clip uses; with shards, the held-out split of the training shards or
  ``--eval-data``), K futures per clip from the trained set, the static and
  constant-velocity baselines, and the ground truth itself as a reference row
  (``trajloom.flow.forecast`` forecasters); run folders under ``<run>/eval/runs/<method>/``
  scored by ``trajloom.metrics.score_method`` with TrajLoomBench's protocol (FVMD at two
  window lengths, FVMD-Long, FlowTV, DivCurlE, VEPE, minADE_K / minFDE_K, diversity);
  the table (``trajloom.metrics.format_method_table``) is printed and written to
  ``eval/table.md`` and ``eval/metrics.json``.
* :func:`render_preview`: history tracks and predicted futures over the synthetic frames.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajloom.data.clip import Clip
from trajloom.data.formats import RunFolder, write_run_folder
from trajloom.data.render import RenderConfig, render_overlay
from trajloom.data.video import write_video
from trajloom.flow.conditioners import UMT5_MAX_LENGTH, wan_resize_factor
from trajloom.flow.forecast import (
    BaselineForecaster,
    Forecaster,
    PipelineForecaster,
    TrueFuture,
    forecast_runs,
    sample_folder,
)
from trajloom.flow.io import load_visibility
from trajloom.flow.pipeline import PipelineConfig, TrajLoomPipeline, umt5_spec, wan_spec
from trajloom.metrics import FVMDConfig, json_ready, score_method
from trajloom.metrics import format_method_table as format_table
from trajloom.metrics.report import fvmd_key
from trajloom.vae import LatentStats, load_pretrained
from trajloom_train.checkpoint import atomic_write_text
from trajloom_train.config import Recipe
from trajloom_train.context import load_conditioned
from trajloom_train.data import EVAL, SyntheticSplit, heldout_clips
from trajloom_train.trainer import stage_done

__all__ = [
    "METHODS",
    "describe_eval",
    "eval_clips",
    "evaluate",
    "export_trained_set",
    "format_table",
    "render_preview",
    "table_columns",
]

METHODS = ("trajloom", "static", "constant_velocity", "ground_truth")
STATS_FILE = "vae_latent_stats.json"


def pipeline_config(recipe: Recipe) -> PipelineConfig:
    """Sampling settings matching how the generator was trained (source anchoring)."""
    return PipelineConfig(anchor=recipe.flow_loss.anchor, anchor_std=recipe.flow_loss.anchor_std)


def export_trained_set(run_dir: Path, recipe: Recipe) -> Path:
    """Write ``<run>/trained/`` from the finished stages; returns the folder."""
    for stage in ("vae", "stats", "flow"):
        if not stage_done(run_dir / stage):
            raise FileNotFoundError(f"cannot export: stage '{stage}' of {run_dir} is not done")
    vae = load_pretrained(run_dir / "vae" / "final")
    gen_stage = "onpolicy" if stage_done(run_dir / "onpolicy") else "flow"
    trained = load_conditioned(run_dir / gen_stage / "final")
    visibility = load_visibility(run_dir / "vis" / "final") if stage_done(run_dir / "vis") else None
    stats = LatentStats.from_json(run_dir / "stats" / STATS_FILE, key="z_all")
    pipe = TrajLoomPipeline(
        vae,
        trained.generator,
        stats,
        visibility=visibility,
        video_encoder=trained.video_encoder,
        text_encoder=trained.text_encoder,
        config=pipeline_config(recipe),
    )
    folder = pipe.save_pretrained(run_dir / "trained")
    _record_released_context(folder, recipe)
    return folder


def _record_released_context(folder: Path, recipe: Recipe) -> None:
    """Name the released conditioners (local paths) in ``pipeline.json`` without loading them."""
    cond = recipe.conditioning
    path = folder / "pipeline.json"
    meta = json.loads(path.read_text())
    if cond.video == "wan":
        meta["video_encoder"] = wan_spec(cond.video_path, wan_resize_factor(recipe.data.grid))
    if cond.text == "umt5":
        meta["text_encoder"] = umt5_spec(cond.text_path, UMT5_MAX_LENGTH)
    atomic_write_text(path, json.dumps(meta, indent=2) + "\n")


def _forecasters(pipe: TrajLoomPipeline, recipe: Recipe, origin: str) -> dict[str, Forecaster]:
    """The evaluated methods by name (:data:`METHODS`): the trained set ``pipe`` (from
    ``origin``) with the recipe's sampler, the two baselines on its grid, the true future."""
    grid, history, future = pipe.grid, recipe.data.history, recipe.data.future
    return {
        "trajloom": PipelineForecaster(
            pipe, solver=recipe.eval.solver, steps=recipe.eval.steps, origin=origin
        ),
        "static": BaselineForecaster("static", grid, history, future),
        "constant_velocity": BaselineForecaster("constvel", grid, history, future),
        "ground_truth": TrueFuture(grid, history, future),
    }


def table_columns(recipe: Recipe) -> list[tuple[str, str]]:
    """Columns of the evaluation table: the paper's metrics, then the multi-sample ones."""
    ev = recipe.eval
    columns = [("vepe", "VEPE (px)"), ("fvmd", f"FVMD-{ev.fvmd_clip_len}")]
    columns += [(fvmd_key(n), f"FVMD-{n}") for n in ev.more_fvmd_clip_lens]
    if ev.fvmd_long:
        columns.append(("fvmd_long", "FVMD-Long"))
    columns += [("flow_tv", "FlowTV"), ("div_curl_energy", "DivCurlE")]
    k = ev.samples
    columns += [("min_ade", f"minADE_{k} (px)"), ("min_fde", f"minFDE_{k} (px)")]
    if k > 1:
        columns.append(("diversity", f"diversity_{k} (px)"))
    return columns


def eval_clips(recipe: Recipe, *, frames: bool = False) -> tuple[str, list[Clip]]:
    """The held-out clips (:class:`~trajloom_train.config.EvalConfig`) and where they are
    from: synthetic scenes of the evaluation seed stream, or shard windows the training
    never read (``heldout_clips``)."""
    ev, data = recipe.eval, recipe.data
    if data.source != "shards" and not ev.shards:
        split = SyntheticSplit(data, recipe.seed, EVAL)
        return "held-out synthetic clips", [split.sample(g, frames=frames) for g in range(ev.clips)]
    clips = heldout_clips(data, recipe.seed, limit=ev.clips, shards=ev.shards, frames=frames)
    where = (
        "--eval-data windows" if ev.shards else f"held-out shard windows (holdout {data.holdout})"
    )
    return where, clips


def _run_name(clip: Clip) -> str:
    # windows of one sample share its id: the later ones are named by their first frame
    return clip.id if clip.start == 0 else f"{clip.id}-from{clip.start}"


def evaluate(recipe: Recipe, run_dir: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Score the trained set and the baselines on up to ``recipe.eval.clips`` held-out clips.

    Clip ``g`` is forecast ``K = recipe.eval.samples`` times by every method, the K noises
    drawn together from seed ``recipe.seed + g`` (``trajloom.flow.forecast.forecast_runs``);
    the baselines and the true future are deterministic, so their K futures are copies
    (minADE_K = their single-future ADE, diversity 0). Sample k of a method goes to
    ``eval/runs/<method>/sample_<k>/`` (``eval/runs/<method>/`` when K = 1). Scored with
    ``trajloom.metrics.score_method`` as ``apps/bench eval`` does (motion gated by the
    true visibility): FVMD over ``fvmd_clip_len``-frame windows and ``more_fvmd_clip_lens``,
    FVMD-Long, FlowTV, DivCurlE and VEPE of sample 0, minADE_K / minFDE_K / diversity
    over the K samples.
    """
    trained = run_dir / "trained"
    pipe = TrajLoomPipeline.from_pretrained(trained, device=device)
    forecasters = _forecasters(pipe, recipe, origin=str(trained))
    ev = recipe.eval
    wants_frames = any(f.wants_frames for f in forecasters.values())
    where, clips = eval_clips(recipe, frames=wants_frames)
    out_dir = run_dir / "eval"
    runs = out_dir / "runs"
    if runs.exists():
        shutil.rmtree(runs)  # a rerun must not score folders of an earlier, larger one
    k = ev.samples
    for g, clip in enumerate(clips):
        for method, forecaster in forecasters.items():
            meta = {"method": method, "caption": clip.caption, "source": clip.source}
            futures = forecast_runs(
                forecaster, clip, num_samples=k, seed=recipe.seed + g, meta=meta
            )
            for i, run in enumerate(futures):
                folder = sample_folder(runs / method, i, k) / _run_name(clip)
                write_run_folder(folder, RunFolder(**run.as_dict()))
    fvmd_cfg = FVMDConfig(clip_len=ev.fvmd_clip_len, clip_stride=ev.fvmd_clip_stride)
    results: dict[str, dict[str, Any]] = {}
    keys = [key for key, _ in table_columns(recipe)] + ["diversity", "num_samples"]
    for method in METHODS:
        samples = [sample_folder(runs / method, i, k) for i in range(k)]
        scored = score_method(
            samples[0],
            fvmd_config=fvmd_cfg,
            grid_stride=float(pipe.grid.stride),
            use_visibility=True,
            fvmd_long=ev.fvmd_long,
            samples=samples,
            more_clip_lens=ev.more_fvmd_clip_lens,
        )
        results[method] = {key: scored[key] for key in (*keys, "num_videos", "notes")}
    table = format_table(results, table_columns(recipe))
    summary = {
        "clips": len(clips),
        "clip_source": where,
        "samples": k,
        "solver": ev.solver,
        "steps": ev.steps,
        "fvmd_clip_len": ev.fvmd_clip_len,
        "fvmd_clip_stride": ev.fvmd_clip_stride,
        "more_fvmd_clip_lens": list(ev.more_fvmd_clip_lens),
        "use_gt_visibility": True,
        "results": results,
    }
    text = json.dumps(json_ready(summary), indent=2, allow_nan=False)
    atomic_write_text(out_dir / "metrics.json", text + "\n")
    atomic_write_text(out_dir / "table.md", f"{describe_eval(summary)}\n\n{table}\n")
    return summary


def describe_eval(summary: dict[str, Any]) -> str:
    """One line saying what the evaluation table scores."""
    lens = ", ".join(str(n) for n in [summary["fvmd_clip_len"], *summary["more_fvmd_clip_lens"]])
    return (
        f"{summary['clips']} {summary['clip_source']}; K = {summary['samples']} futures per "
        f"clip ({summary['solver']} {summary['steps']} steps; baselines are deterministic: K "
        f"copies); FVMD windows of {lens} frames at stride {summary['fvmd_clip_stride']}, "
        "motion gated by the true visibility."
    )


# ----------------------------------------------------------------------------- preview


#: Thin strokes and short trails for the small synthetic frames of the preview.
PREVIEW_STYLE = RenderConfig(trail=6, thickness=1, radius=2)


def render_preview(
    pipe: TrajLoomPipeline, recipe: Recipe, path: Path, clips: int = 2
) -> Path | None:
    """``clips`` held-out clips side by side: ground-truth future (left), predicted (right).

    Drawn with ``trajloom.data.render`` (the sample app's overlays) in ``PREVIEW_STYLE``;
    one row per clip, ``th + tf`` frames, written to ``path`` at ``recipe.eval.fps``.
    """
    if clips < 1:
        return None
    source = SyntheticSplit(recipe.data, recipe.seed, EVAL)
    grid = pipe.grid
    rows = []
    for g in range(clips):
        clip = source.sample(g, frames=True)
        hist = torch.from_numpy(clip.hist_tracks)[None]
        hvis = torch.from_numpy(clip.hist_vis)[None]
        video = None
        if pipe.video_encoder is not None and clip.frames is not None:
            video = torch.from_numpy(clip.frames[: clip.history])[None]
        caption = clip.caption if pipe.text_encoder is not None else None
        out = pipe(
            hist, hvis, frames=video, caption=caption, steps=recipe.eval.steps, seed=recipe.seed
        )
        futures = [
            (clip.fut_tracks, clip.fut_vis),
            (out.tracks[0, 0].cpu().numpy(), out.visibility[0, 0].cpu().numpy()),
        ]
        overlays = [
            render_overlay(
                clip.frames,
                clip.hist_tracks,
                clip.hist_vis,
                tracks,
                vis,
                grid_hw=(grid.grid_h, grid.grid_w),
                size=grid.size,
                config=PREVIEW_STYLE,
            )
            for tracks, vis in futures
        ]
        rows.append(np.concatenate(overlays, axis=2))
    return write_video(path, np.concatenate(rows, axis=1), fps=recipe.eval.fps)

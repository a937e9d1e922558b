"""Export the trained set, evaluate it against the baselines, render a preview.

* :func:`export_trained_set`: ``<run>/trained/``, the folder
  ``trajloom.flow.TrajLoomPipeline.from_pretrained`` loads (VAE, generator — the
  on-policy weights when that stage ran —, visibility head, latent statistics, and the
  video and caption context the generator trained with: the built-in encoders' weights, or
  the local paths of the released ones, in ``pipeline.json``).
* :func:`evaluate`: held-out synthetic clips (a seed stream no training or validation
  clip uses), one future per clip from the trained set, the static and constant-velocity
  baselines, and the ground truth itself as a reference row (``trajloom.flow.forecast``
  forecasters); run folders under ``<run>/eval/runs/<method>/`` scored by
  ``trajloom.metrics.score_method``; the table (``trajloom.metrics.format_method_table``)
  is printed and written to ``eval/table.md`` and ``eval/metrics.json``.
* :func:`render_preview`: history tracks and predicted futures over the synthetic frames.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajloom.data.formats import RunFolder, write_run_folder
from trajloom.data.render import RenderConfig, render_overlay
from trajloom.data.video import write_video
from trajloom.flow.forecast import (
    BaselineForecaster,
    Forecaster,
    PipelineForecaster,
    TrueFuture,
    forecast_run,
)
from trajloom.flow.io import load_visibility
from trajloom.flow.pipeline import PipelineConfig, TrajLoomPipeline
from trajloom.metrics import FVMDConfig, score_method
from trajloom.metrics import format_method_table as format_table
from trajloom.vae import LatentStats, load_pretrained
from trajloom_train.checkpoint import atomic_write_text
from trajloom_train.config import Recipe
from trajloom_train.context import load_conditioned
from trajloom_train.data import EVAL, SyntheticSplit
from trajloom_train.trainer import stage_done

__all__ = [
    "METHODS",
    "evaluate",
    "export_trained_set",
    "format_table",
    "render_preview",
]

METHODS = ("trajloom", "static", "constant_velocity", "ground_truth")
_METRICS = ("vepe", "fvmd", "flow_tv", "div_curl_energy")
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
        meta["video_encoder"] = {"kind": "wan", "path": cond.video_path}
    if cond.text == "umt5":
        meta["text_encoder"] = {"kind": "umt5", "path": cond.text_path, "max_length": 128}
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


def evaluate(recipe: Recipe, run_dir: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Score the trained set and the baselines on ``recipe.eval.clips`` held-out clips.

    Clip ``g`` is forecast once by every method with noise seed ``recipe.seed + g``
    (``trajloom.flow.forecast.forecast_run``); the run folders are scored by
    ``trajloom.metrics.score_method`` (ungated) and tabled by ``format_table``.
    """
    trained = run_dir / "trained"
    pipe = TrajLoomPipeline.from_pretrained(trained, device=device)
    forecasters = _forecasters(pipe, recipe, origin=str(trained))
    clips = SyntheticSplit(recipe.data, recipe.seed, EVAL)
    out_dir = run_dir / "eval"
    runs = out_dir / "runs"
    frames = any(f.wants_frames for f in forecasters.values())
    for g in range(recipe.eval.clips):
        clip = clips.sample(g, frames=frames)
        for method, forecaster in forecasters.items():
            meta = {"method": method, "caption": clip.caption}
            run = forecast_run(forecaster, clip, seed=recipe.seed + g, meta=meta)
            write_run_folder(runs / method / clip.id, RunFolder(**run.as_dict()))
    fvmd_cfg = FVMDConfig(
        clip_len=recipe.eval.fvmd_clip_len, clip_stride=recipe.eval.fvmd_clip_stride
    )
    results: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        scored = score_method(
            runs / method,
            fvmd_config=fvmd_cfg,
            grid_stride=float(pipe.grid.stride),
            use_visibility=False,
            fvmd_long=False,
        )
        results[method] = {k: scored[k] for k in (*_METRICS, "num_videos", "notes")}
    table = format_table(results)
    summary = {
        "clips": recipe.eval.clips,
        "solver": recipe.eval.solver,
        "steps": recipe.eval.steps,
        "fvmd_clip_len": recipe.eval.fvmd_clip_len,
        "results": results,
    }
    atomic_write_text(out_dir / "metrics.json", json.dumps(summary, indent=2, default=str) + "\n")
    atomic_write_text(
        out_dir / "table.md",
        f"Held-out synthetic clips: {recipe.eval.clips}; {recipe.eval.solver} "
        f"{recipe.eval.steps} steps; FVMD windows of {recipe.eval.fvmd_clip_len} frames.\n\n"
        f"{table}\n",
    )
    return summary


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

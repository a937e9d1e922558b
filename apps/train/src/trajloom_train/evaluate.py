"""Export the trained set, evaluate it against the baselines, render a preview.

* :func:`export_trained_set`: ``<run>/trained/``, the folder
  ``trajloom.flow.TrajLoomPipeline.from_pretrained`` loads (VAE, generator — the
  on-policy weights when that stage ran —, visibility head, latent statistics).
* :func:`evaluate`: held-out synthetic clips (a seed stream no training or validation
  clip uses), one future per clip from the trained set, the static and constant-velocity
  baselines, and the ground truth itself as a reference row; run folders under
  ``<run>/eval/runs/<method>/`` scored by ``trajloom.metrics.score_runs``; the table is
  printed and written to ``eval/table.md`` and ``eval/metrics.json``.
* :func:`render_preview`: history tracks and predicted futures over the synthetic frames.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from trajloom.data.formats import RunFolder, write_run_folder
from trajloom.data.video import write_video
from trajloom.encoding import query_points
from trajloom.flow.baselines import constant_velocity_future, static_future
from trajloom.flow.io import load_generator, load_visibility
from trajloom.flow.pipeline import PipelineConfig, TrajLoomPipeline
from trajloom.metrics import FVMDConfig, score_runs
from trajloom.vae import LatentStats, load_pretrained
from trajloom_train.checkpoint import atomic_write_text
from trajloom_train.config import Recipe
from trajloom_train.data import EVAL, SyntheticSplit
from trajloom_train.trainer import stage_done

__all__ = [
    "METHODS",
    "draw_tracks",
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
    generator = load_generator(run_dir / gen_stage / "final")
    visibility = load_visibility(run_dir / "vis" / "final") if stage_done(run_dir / "vis") else None
    stats = LatentStats.from_json(run_dir / "stats" / STATS_FILE, key="z_all")
    pipe = TrajLoomPipeline(
        vae, generator, stats, visibility=visibility, config=pipeline_config(recipe)
    )
    folder = pipe.save_pretrained(run_dir / "trained")
    return folder


def _predict(
    method: str, pipe: TrajLoomPipeline, batch: dict[str, Any], recipe: Recipe
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(tracks ``"b tf n 2"``, visibility ``"b tf n"``, probabilities or None) of ``method``."""
    hist, hvis = batch.hist_tracks, batch.hist_vis
    tf = recipe.data.future
    spec = pipe.grid
    if method == "trajloom":
        out = pipe(
            hist,
            hvis,
            solver=recipe.eval.solver,
            steps=recipe.eval.steps,
            seed=recipe.seed,
        )
        probs = None if out.visibility_prob is None else out.visibility_prob[:, 0].cpu()
        return out.tracks[:, 0].cpu(), out.visibility[:, 0].cpu(), probs
    if method == "static":
        out = static_future(hist, hvis, tf, spec=spec)
    elif method == "constant_velocity":
        out = constant_velocity_future(hist, hvis, tf, spec=spec)
    else:
        return batch.fut_tracks, batch.fut_vis, None
    return out.tracks[:, 0], out.visibility[:, 0], None


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one row per method, VEPE / FVMD / FlowTV / DivCurlE."""
    head = "| method | VEPE (px) | FVMD | FlowTV | DivCurlE |"
    lines = [head, "|---|---|---|---|---|"]
    for method, r in results.items():
        cells = []
        for key in _METRICS:
            value = r.get(key)
            cells.append("-" if value is None else f"{value:.4g}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate(recipe: Recipe, run_dir: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Score the trained set and the baselines on ``recipe.eval.clips`` held-out clips."""
    pipe = TrajLoomPipeline.from_pretrained(run_dir / "trained", device=device)
    clips = SyntheticSplit(recipe.data, recipe.seed, EVAL)
    out_dir = run_dir / "eval"
    runs = out_dir / "runs"
    spec = pipe.grid
    query = query_points(spec).numpy()
    chunk = 16
    for start in range(0, recipe.eval.clips, chunk):
        indices = list(range(start, min(recipe.eval.clips, start + chunk)))
        batch = clips.batch(indices)
        for method in METHODS:
            tracks, vis, probs = _predict(method, pipe, batch, recipe)
            for i, clip_id in enumerate(batch.ids):
                write_run_folder(
                    runs / method / clip_id,
                    RunFolder(
                        query_xy=query,
                        pred_tracks=tracks[i].numpy(),
                        pred_visibility=vis[i].numpy(),
                        gt_tracks=batch.fut_tracks[i].numpy(),
                        gt_visibility=batch.fut_vis[i].numpy(),
                        pred_visibility_prob=None if probs is None else probs[i].numpy(),
                        meta={"method": method, "caption": batch.captions[i]},
                    ),
                )
    fvmd_cfg = FVMDConfig(
        clip_len=recipe.eval.fvmd_clip_len, clip_stride=recipe.eval.fvmd_clip_stride
    )
    results: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        scored = score_runs(runs / method, fvmd_config=fvmd_cfg, grid_stride=float(spec.stride))
        results[method] = {k: scored.get(k) for k in (*_METRICS, "num_videos", "notes")}
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


def draw_tracks(
    frames: np.ndarray,
    hist: np.ndarray,
    hist_vis: np.ndarray,
    future: np.ndarray,
    future_vis: np.ndarray,
    *,
    tail: int = 6,
) -> np.ndarray:
    """Overlay tracks on ``frames "t h w 3"`` (history then future frames, in order).

    ``hist "th n 2"`` / ``future "tf n 2"`` pixels; history in white, the future in
    orange; each visible point gets a dot and a trail of its last ``tail`` positions.
    """
    path = np.concatenate([hist, future])
    vis = np.concatenate([hist_vis, future_vis])
    out = frames.copy()
    th = hist.shape[0]
    for t in range(out.shape[0]):
        color = (255, 255, 255) if t < th else (255, 140, 0)
        img = out[t]
        for k in range(max(0, t - tail), t):
            seg = vis[k] & vis[k + 1]
            for p, q in zip(path[k][seg], path[k + 1][seg], strict=True):
                cv2.line(
                    img, tuple(int(v) for v in p), tuple(int(v) for v in q), color, 1, cv2.LINE_AA
                )
        for p in path[t][vis[t]]:
            cv2.circle(img, (int(p[0]), int(p[1])), 2, color, -1, cv2.LINE_AA)
    return out


def render_preview(
    pipe: TrajLoomPipeline, recipe: Recipe, path: Path, clips: int = 2
) -> Path | None:
    """``clips`` held-out clips side by side: ground-truth future (left), predicted (right)."""
    if clips < 1:
        return None
    source = SyntheticSplit(recipe.data, recipe.seed, EVAL)
    rows = []
    for g in range(clips):
        clip = source.sample(g, frames=True)
        hist = torch.from_numpy(clip.hist_tracks)[None]
        hvis = torch.from_numpy(clip.hist_vis)[None]
        out = pipe(hist, hvis, steps=recipe.eval.steps, seed=recipe.seed)
        pred = out.tracks[0, 0].cpu().numpy()
        pvis = out.visibility[0, 0].cpu().numpy()
        frames, h_np, hv_np = clip.frames, clip.hist_tracks, clip.hist_vis
        gt = draw_tracks(frames, h_np, hv_np, clip.fut_tracks, clip.fut_vis)
        pr = draw_tracks(frames, h_np, hv_np, pred, pvis)
        rows.append(np.concatenate([gt, pr], axis=2))
    return write_video(path, np.concatenate(rows, axis=1), fps=recipe.eval.fps)

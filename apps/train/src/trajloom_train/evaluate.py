"""Export the trained set, evaluate it against tuned baselines, render a preview.

* :func:`export_trained_set`: ``<run>/trained/``, the folder
  ``trajloom.flow.TrajLoomPipeline.from_pretrained`` loads (VAE, generator — the
  on-policy weights when that stage ran —, visibility head, latent statistics, and the
  video and caption context the generator trained with: the built-in encoders' weights, or
  the local paths of the released ones, in ``pipeline.json``).
* :func:`evaluate`: the protocol a reviewer accepts. Baseline windows (constant velocity,
  the least-squares line) are chosen on *dev* clips; the model, static, constant velocity
  over one frame and at the chosen window, the line and the true future are reported on
  *test* clips that chose nothing (synthetic: disjoint seed streams; shards: disjoint
  source videos). The model's caption reads only the history (``eval.captions``); the
  whole-clip caption is a labelled oracle row. Run folders under
  ``<run>/eval/runs/<method>/`` are scored by ``trajloom.metrics.score_method`` with
  TrajLoomBench's protocol plus minADE_K / minFDE_K, the energy score and diversity; the
  table (strongest baseline per column in bold) goes to ``eval/table.md``, everything
  (split, caption source, what dev chose) to ``eval/metrics.json``.
* :func:`render_preview`: history tracks and predicted futures over the synthetic frames.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajloom.data.captions import with_caption_policy
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
    WindowChoice,
    baseline_rows,
    choose_baseline_windows,
    forecast_runs,
    sample_folder,
)
from trajloom.flow.io import load_visibility
from trajloom.flow.pipeline import PipelineConfig, TrajLoomPipeline, umt5_spec, wan_spec
from trajloom.metrics import FVMDConfig, json_ready, mean_ade, paired_bootstrap, score_method
from trajloom.metrics import format_method_table as format_table
from trajloom.metrics.report import fvmd_key
from trajloom.vae import LatentStats, load_pretrained
from trajloom_train.checkpoint import atomic_write_text
from trajloom_train.config import Recipe
from trajloom_train.context import load_conditioned
from trajloom_train.data import DEV, EVAL, TEST, SyntheticSplit, heldout_clips
from trajloom_train.trainer import stage_done

__all__ = [
    "METHODS",
    "choose_windows",
    "describe_eval",
    "eval_clips",
    "evaluate",
    "export_trained_set",
    "format_table",
    "render_preview",
    "table_columns",
]

METHODS = ("trajloom", "static", "constvel_1", "ground_truth")
"""Rows every evaluation has; the tuned baselines (``constvel_W``, ``linear_L``) and the
oracle-caption row (``trajloom_clip_caption``) join them."""
ORACLE = "trajloom_clip_caption"
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


def _forecasters(
    pipe: TrajLoomPipeline, recipe: Recipe, origin: str, choices: dict[str, WindowChoice]
) -> dict[str, tuple[Forecaster, str]]:
    """The evaluated rows by name, each a forecaster and the caption policy of its clips:
    the trained set ``pipe`` (from ``origin``) with the recipe's sampler and history-only
    captions, the same with the clip's caption (oracle, when it has a text encoder), the
    baselines at the windows dev chose, and the true future."""
    grid, history, future = pipe.grid, recipe.data.history, recipe.data.future
    ev = recipe.eval
    model = PipelineForecaster(pipe, solver=ev.solver, steps=ev.steps, origin=origin)
    rows: dict[str, tuple[Forecaster, str]] = {"trajloom": (model, ev.captions)}
    if ev.oracle_row and ev.captions != "clip" and pipe.text_encoder is not None:
        rows[ORACLE] = (model, "clip")
    for name, (kind, window) in baseline_rows(choices).items():
        rows[name] = (BaselineForecaster(kind, grid, history, future, window=window), "none")
    rows["ground_truth"] = (TrueFuture(grid, history, future), "none")
    return rows


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
    columns.append(("energy_score", f"ES_{k} (px)"))
    if k > 1:
        columns.append(("diversity", f"diversity_{k} (px)"))
    return columns


def eval_clips(
    recipe: Recipe, *, frames: bool = False, split: str = "test"
) -> tuple[str, list[Clip]]:
    """The ``split`` clips ("test": reported; "dev": for choosing) and where they are from:
    synthetic scenes of that split's seed stream, or the shard windows of that split's
    held-out videos (``heldout_clips``; ``--eval-data`` windows are all test)."""
    ev, data = recipe.eval, recipe.data
    count = ev.clips if split == "test" else ev.dev_clips
    if data.source != "shards" and not ev.shards:
        stream = SyntheticSplit(data, recipe.seed, TEST if split == "test" else DEV)
        where = f"held-out synthetic {split} clips"
        return where, [stream.sample(g, frames=frames) for g in range(count)]
    if ev.shards and split == "test":
        clips = heldout_clips(data, recipe.seed, limit=count, shards=ev.shards, frames=frames)
        return "--eval-data windows", clips
    if split == "test":
        where = f"windows of held-out test videos (holdout {data.holdout})"
        return where, heldout_clips(data, recipe.seed, limit=count, frames=frames)
    try:
        clips = heldout_clips(data, recipe.seed, limit=count, frames=frames, split="dev")
        return f"windows of held-out dev videos (holdout {data.holdout})", clips
    except ValueError:  # no held-out video fell on the dev side: the training videos
        clips = heldout_clips(data, recipe.seed, limit=count, frames=frames, split="train")
        return "windows of training videos (no held-out dev video)", clips


def choose_windows(recipe: Recipe, grid: Any) -> tuple[str, dict[str, WindowChoice]]:
    """Where the dev clips came from, and the constant-velocity and line windows with the
    lowest ADE on them (``trajloom.flow.forecast.choose_baseline_windows``)."""
    ev, data = recipe.eval, recipe.data
    where, clips = eval_clips(recipe, split="dev")
    candidates = {"constvel": ev.constvel_windows, "linear": ev.linear_windows}
    choices = choose_baseline_windows(
        clips, grid, data.history, data.future, candidates, score=mean_ade
    )
    return f"{len(clips)} {where}", choices


def _run_name(clip: Clip) -> str:
    # windows of one sample share its id: the later ones are named by their first frame
    return clip.id if clip.start == 0 else f"{clip.id}-from{clip.start}"


def _write_runs(
    rows: dict[str, tuple[Forecaster, str]], clips: list[Clip], recipe: Recipe, runs: Path
) -> None:
    """K futures of every clip by every row into ``runs/<row>/[sample_<k>/]<clip>/``."""
    k = recipe.eval.samples
    for g, clip in enumerate(clips):
        for method, (forecaster, policy) in rows.items():
            given = with_caption_policy(clip, policy, forecaster.grid.size)
            meta = {"method": method, "caption": given.caption, "source": clip.source}
            futures = forecast_runs(
                forecaster, given, num_samples=k, seed=recipe.seed + g, meta=meta
            )
            for i, run in enumerate(futures):
                folder = sample_folder(runs / method, i, k) / _run_name(clip)
                write_run_folder(folder, RunFolder(**run.as_dict()))


def _score_rows(
    rows: list[str], runs: Path, recipe: Recipe, stride: float
) -> dict[str, dict[str, Any]]:
    ev, k = recipe.eval, recipe.eval.samples
    fvmd_cfg = FVMDConfig(clip_len=ev.fvmd_clip_len, clip_stride=ev.fvmd_clip_stride)
    keys = [key for key, _ in table_columns(recipe)] + ["diversity", "num_samples"]
    results: dict[str, dict[str, Any]] = {}
    for method in rows:
        samples = [sample_folder(runs / method, i, k) for i in range(k)]
        scored = score_method(
            samples[0],
            fvmd_config=fvmd_cfg,
            grid_stride=stride,
            use_visibility=True,
            fvmd_long=ev.fvmd_long,
            samples=samples,
            more_clip_lens=ev.more_fvmd_clip_lens,
        )
        results[method] = {key: scored[key] for key in (*keys, "num_videos", "notes")}
        results[method]["per_video"] = {
            v["video"]: {m: v.get(m) for m in MARGIN_METRICS}
            for v in scored.get("per_video_forecast", [])
        }
    return results


MARGIN_METRICS = ("min_ade", "energy_score")
"""Per-clip metrics whose model-minus-baseline differences get a bootstrap interval."""


def margins(results: dict[str, dict[str, Any]], baselines: list[str]) -> dict[str, Any]:
    """For each per-clip metric and baseline: the model's mean difference over the test
    clips (negative: the model is better) with a 95 % paired bootstrap interval."""
    model = results["trajloom"].get("per_video", {})
    out: dict[str, Any] = {}
    for metric in MARGIN_METRICS:
        out[metric] = {}
        for name in baselines:
            theirs = results[name].get("per_video", {})
            videos = sorted(set(model) & set(theirs))
            a = [np.nan if model[v][metric] is None else model[v][metric] for v in videos]
            b = [np.nan if theirs[v][metric] is None else theirs[v][metric] for v in videos]
            out[metric][name] = paired_bootstrap(a, b)
    return out


def evaluate(recipe: Recipe, run_dir: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Choose the baseline windows on dev clips, then score every row on test clips.

    Clip ``g`` is forecast ``K = recipe.eval.samples`` times by every row, the K noises
    drawn together from seed ``recipe.seed + g`` (``trajloom.flow.forecast.forecast_runs``);
    the baselines and the true future are deterministic, so their K futures are copies
    (minADE_K = ES_K = their single-future ADE, diversity 0). Sample k of a row goes to
    ``eval/runs/<row>/sample_<k>/`` (``eval/runs/<row>/`` when K = 1). Scored with
    ``trajloom.metrics.score_method`` as ``apps/bench eval`` does (motion gated by the
    true visibility).
    """
    trained = run_dir / "trained"
    pipe = TrajLoomPipeline.from_pretrained(trained, device=device)
    dev_where, choices = choose_windows(recipe, pipe.grid)
    rows = _forecasters(pipe, recipe, origin=str(trained), choices=choices)
    ev = recipe.eval
    wants_frames = any(f.wants_frames for f, _ in rows.values())
    where, clips = eval_clips(recipe, frames=wants_frames)
    out_dir = run_dir / "eval"
    runs = out_dir / "runs"
    if runs.exists():
        shutil.rmtree(runs)  # a rerun must not score folders of an earlier, larger one
    _write_runs(rows, clips, recipe, runs)
    results = _score_rows(list(rows), runs, recipe, float(pipe.grid.stride))
    baselines = [name for name in rows if name not in ("trajloom", ORACLE, "ground_truth")]
    table = format_table(results, table_columns(recipe), baselines=baselines)
    gaps = margins(results, baselines)
    summary = {
        "clips": len(clips),
        "clip_source": where,
        "split": {"dev": dev_where, "test": f"{len(clips)} {where}"},
        "chosen_on_dev": {kind: c.to_dict() for kind, c in choices.items()},
        "captions": {"trajloom": ev.captions, **({ORACLE: "clip"} if ORACLE in rows else {})},
        "baselines": baselines,
        "samples": ev.samples,
        "solver": ev.solver,
        "steps": ev.steps,
        "fvmd_clip_len": ev.fvmd_clip_len,
        "fvmd_clip_stride": ev.fvmd_clip_stride,
        "more_fvmd_clip_lens": list(ev.more_fvmd_clip_lens),
        "use_gt_visibility": True,
        "margins": gaps,
        "results": results,
    }
    text = json.dumps(json_ready(summary), indent=2, allow_nan=False)
    atomic_write_text(out_dir / "metrics.json", text + "\n")
    text = f"{describe_eval(summary)}\n\n{table}\n\n{describe_margins(gaps)}\n"
    atomic_write_text(out_dir / "table.md", text)
    return summary


def describe_margins(gaps: dict[str, Any]) -> str:
    """One line per metric: trajloom minus each baseline, with its 95 % interval."""
    lines = []
    for metric, rows in gaps.items():
        parts = [
            f"{name} {g['mean']:+.3g} [{g['low']:+.3g}, {g['high']:+.3g}]"
            for name, g in rows.items()
            if g["mean"] is not None
        ]
        if parts:
            lines.append(f"trajloom - baseline, {metric} (px, 95 % bootstrap over clips; "
                         f"negative: trajloom better): " + "; ".join(parts))  # fmt: skip
    return "\n".join(lines)


def describe_eval(summary: dict[str, Any]) -> str:
    """What the evaluation table scores, in a few lines."""
    lens = ", ".join(str(n) for n in [summary["fvmd_clip_len"], *summary["more_fvmd_clip_lens"]])
    chosen = ", ".join(c["method"] for c in summary.get("chosen_on_dev", {}).values())
    captions = summary.get("captions", {})
    oracle = f"; {ORACLE} is an oracle with the whole clip's caption" if ORACLE in captions else ""
    return (
        f"Test: {summary['clips']} {summary['clip_source']}; K = {summary['samples']} futures "
        f"per clip ({summary['solver']} {summary['steps']} steps; baselines are deterministic: "
        f"K copies); FVMD windows of {lens} frames at stride {summary['fvmd_clip_stride']}, "
        "motion gated by the true visibility.\n"
        f"Dev: {summary.get('split', {}).get('dev', '-')} chose {chosen or 'nothing'} (lowest "
        f"ADE). The model's caption: {captions.get('trajloom', 'clip')}{oracle}. "
        "Bold: the strongest baseline per column; ES = energy score."
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

"""Score methods on TrajLoomBench: predict, write run folders, compute the paper's metrics.

For each method and source the futures of every clip are written as released-layout run
folders ``OUT/runs/<method>/<source>/<id>/`` (methods given as run folders are read where
they are, ``<dir>/<source>/<id>/``), then scored with ``trajloom.metrics.score_method``:

* FVMD: clips of ``clip_len`` frames at stride ``clip_stride`` (the released README: 24
  and 1), motion vectors gated by the ground-truth visibility;
* FVMD-Long: one clip over the whole future window, gated the same way;
* FlowTV and DivCurlE: masked by the ground-truth visibility (``--use_visibility`` of
  the released script), grid spacing = the grid stride;
* VEPE (pixels, masked by the ground-truth visibility): reported for every method that
  has ground truth, meaningful for VAE reconstruction;
* with K > 1 samples per clip (``--samples K``; run folders ``.../<source>/sample_<k>/``):
  minADE_K / minFDE_K (pixels over the visible future, best of K per clip, mean over
  clips) and the diversity of the K futures (mean pairwise distance, pixels), next to the
  metrics above, which are those of sample 0. Deterministic methods (the baselines) give
  K copies: their minADE_K is their single-future ADE and their diversity 0.

Dev and test: ``dev_fraction`` of each source's videos (by ``source_video``, so every
window of a video is on one side) are development clips, never scored; on them the
windows of the tuned baselines (constant velocity, the least-squares line) are chosen
(:func:`tuned_baselines`). Everything in the tables is scored on the other, test videos.
Methods get the caption of ``captions`` (``trajloom.data.captions``: by default the
history window's camera phrase, nothing from the future).

Results (``trajloom.metrics.write_results``): ``OUT/results.json`` (everything, with
settings), ``OUT/table.csv`` (one row per method x source), ``OUT/table.md`` (the
paper-style table: metric x method rows, source columns) and ``OUT/per_video.csv``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trajloom.data.captions import CAPTION_POLICIES, with_caption_policy
from trajloom.data.clip import Clip
from trajloom.data.formats import (
    FormatError,
    RunFolder,
    ShardSample,
    read_manifest,
    sanitize_predictions,
    write_run_folder,
)
from trajloom.data.names import UnsafeNameError, check_name, safe_child
from trajloom.data.shards import iter_shard_items
from trajloom.data.stream import caption_with_camera, heldout_key, source_video
from trajloom.data.video import VideoReadError, read_video
from trajloom.encoding import DEFAULT_GRID, GridSpec, rescale_tracks
from trajloom.flow.forecast import (
    BaselineForecaster,
    Forecaster,
    MethodSpec,
    RunFolders,
    baseline_rows,
    choose_baseline_windows,
    forecast_runs,
    sample_folder,
    window_candidates,
)
from trajloom.metrics import FVMDConfig, mean_ade, score_method
from trajloom_bench.build import read_bench

__all__ = [
    "EvalConfig",
    "bench_sources",
    "cut_clip",
    "evaluate_method",
    "is_dev",
    "predict_source",
    "sample_roots",
    "score_source",
    "tuned_baselines",
]


@dataclass(frozen=True)
class EvalConfig:
    """Metric settings (released README defaults) and sampling of the predicting methods."""

    clip_len: int = 24
    clip_stride: int = 1
    seed: int = 0
    limit: int | None = None  # clips per source (None: all)
    samples: int = 1  # K futures per clip; K > 1 adds minADE_K / minFDE_K / diversity
    # videos of each source kept for choosing, never scored (apps/bench eval: 0.25; the
    # ablation study scores every clip of its held-out bench: 0)
    dev_fraction: float = 0.0
    captions: str = "history"  # trajloom.data.captions policy of the methods' captions

    def __post_init__(self) -> None:
        if not 0.0 <= self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in [0, 1), got {self.dev_fraction}")
        if self.captions not in CAPTION_POLICIES:
            raise ValueError(f"captions must be one of {CAPTION_POLICIES}, got {self.captions!r}")
        if self.samples < 1:
            raise ValueError(f"EvalConfig.samples must be >= 1, got {self.samples}")
        if self.clip_stride < 1:
            raise ValueError(f"EvalConfig.clip_stride must be >= 1, got {self.clip_stride}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"EvalConfig.limit must be >= 1 or None, got {self.limit}")


def _source_samples(
    bench_root: Path, source: dict[str, Any]
) -> Iterator[ShardSample | FormatError]:
    """Every sample of a source's shards in order; a bad sample, an unreadable or
    truncated shard (with the count its manifest promised) or manifest as a FormatError."""
    try:
        urls, manifest = read_manifest(bench_root / source["path"])
    except FormatError as err:
        yield err
        return
    counts = {s.get("url"): s.get("count") for s in manifest.get("shards", [])}
    for url in urls:
        for item in iter_shard_items(Path(url)):
            if isinstance(item, FormatError) and item.reason == "truncated_shard":
                promised = counts.get(Path(url).name)
                if promised is not None:
                    item = FormatError(f"{item} (its manifest lists {promised})", item.reason)
            yield item


def cut_clip(sample: ShardSample, method: Forecaster, boundary: int) -> Clip:
    """The sample's window for ``method``: tracks in its grid's pixels, the history its
    ``history`` frames ending at ``boundary`` (the bench's history length, where every
    method's forecast starts), the future its ``future`` frames from there; the history
    frames when it wants them."""
    meta = sample.meta
    src = GridSpec(
        int(meta["width"]), int(meta["height"]), int(meta.get("stride", DEFAULT_GRID.stride))
    )
    grid = method.grid
    if grid.num_points != sample.tracks.shape[1]:
        raise ValueError(
            f"{sample.id}: {sample.tracks.shape[1]} tracks on a {src.width}x{src.height} grid, "
            f"but the method's grid {grid.width}x{grid.height} at stride {grid.stride} has "
            f"{grid.num_points} points (resolution mismatch); build the bench at the method's "
            "resolution"
        )
    tracks = sample.tracks
    if grid.size != src.size:
        tracks = rescale_tracks(tracks, src.size, grid.size).astype(np.float32)
    t = tracks.shape[0]
    boundary = min(boundary, t)
    th, tf = method.history, method.future
    if th > boundary or boundary + tf > t:
        raise ValueError(
            f"{sample.id}: the method needs {th} history + {tf} future frames around frame "
            f"{boundary}, but the clip has {boundary} history + {t - boundary} future frames; "
            "build the bench with --history/--future at least the method's"
        )
    start = boundary - th
    frames = None
    if sample.video is not None and method.wants_frames:
        frames = read_video(
            sample.video, size=grid.size, start=start, num_frames=th, name=sample.id
        )
    return Clip.cut(
        sample.id,
        tracks,
        sample.visibility,
        start=start,
        history=th,
        future=tf,
        frames=frames,
        # as training reads shard captions: with the camera phrase (app. E.2)
        caption=caption_with_camera(str(meta.get("caption", "")), str(meta.get("camera", ""))),
    )


def predict_source(
    bench_root: Path,
    source_name: str,
    source: dict[str, Any],
    method_name: str,
    spec: str,
    method: Forecaster,
    out: Path,
    cfg: EvalConfig,
    *,
    boundary: int,
    progress: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Write a run folder per clip of one source under ``out`` (K = ``cfg.samples``
    futures: one under each ``out/sample_<k>/``, the K noises drawn together from seed
    ``cfg.seed + i`` for clip i); returns the failures.

    ``boundary``: the bench's history length, the frame every forecast starts from. Dev
    videos (:func:`is_dev`) are skipped; ``cfg.limit`` counts test clips.
    A bad clip (unreadable sample, truncated shard, a clip the method cannot take, a
    model that emits non-finite numbers) is a failure naming source and clip; the others
    go on. A run folder that cannot be written (``OutputError``) ends the evaluation.
    """
    failures: list[str] = []
    i = -1
    for sample in _source_samples(bench_root, source):
        if isinstance(sample, FormatError):
            failures.append(f"{source_name}: {sample}")
            progress(f"fail {source_name}: {sample}")
            continue
        if is_dev(sample, cfg):
            continue
        i += 1
        if cfg.limit is not None and i >= cfg.limit:
            break
        try:
            check_name("shard sample id", sample.id)
        except UnsafeNameError as err:
            failures.append(f"{source_name}: {err}; the sample is skipped")
            progress(f"fail {source_name}: {err}")
            continue
        try:
            clip = cut_clip(sample, method, boundary)
            clip = with_caption_policy(clip, cfg.captions, method.grid.size)
            meta = {
                "source": source_name,
                "method": method_name,
                "spec": spec,
                "cond_index": clip.start + clip.history,
            }
            runs = forecast_runs(
                method, clip, num_samples=cfg.samples, seed=cfg.seed + i, meta=meta
            )
        except (ValueError, VideoReadError, FormatError) as err:
            failures.append(f"{source_name}/{sample.id}: {err}")
            progress(f"fail {source_name}/{sample.id}: {err}")
            continue
        for k, run in enumerate(runs):
            run.pred_tracks, run.pred_visibility = sanitize_predictions(
                run.pred_tracks, run.pred_visibility, method.grid.size
            )
            folder = safe_child(sample_folder(out, k, cfg.samples), sample.id, kind="sample id")
            write_run_folder(folder, RunFolder(**run.as_dict()))
        progress(f"{method_name}/{source_name}/{sample.id}")
    return failures


def is_dev(sample: ShardSample, cfg: EvalConfig) -> bool:
    """Whether ``sample``'s source video is a development video (chosen on, never scored)."""
    return heldout_key(f"dev/{source_video(sample.meta, sample.id)}", cfg.dev_fraction)


def _dev_clips(
    bench_root: Path, names: list[str], sources: dict[str, Any], cfg: EvalConfig, cutter: Any
) -> list[Clip]:
    """The development clips of every source, cut for ``cutter``'s window."""
    clips = []
    for name in names:
        for sample in _source_samples(bench_root, sources[name]):
            if isinstance(sample, FormatError) or not is_dev(sample, cfg):
                continue
            try:
                clips.append(cut_clip(sample, cutter, cutter.history))
            except ValueError:
                continue  # a clip no method can take: scored (and named) on no side
    return clips


def tuned_baselines(
    bench_root: Path,
    names: list[str],
    sources: dict[str, Any],
    cfg: EvalConfig,
    window: dict[str, Any],
    candidates: dict[str, tuple[int, ...]],
) -> tuple[list[tuple[str, MethodSpec]], dict[str, Any]]:
    """The baseline rows (static, constant velocity over 1 frame and at the window with the
    lowest dev ADE, the line at its best window) and what dev chose, for ``settings``.

    Without a dev clip only static and constant velocity over 1 frame are returned, and
    the record says so.
    """
    grid, history, future = window["grid"], window["history"], window["future"]
    cutter = BaselineForecaster("static", grid, history, future)
    clips = _dev_clips(bench_root, names, sources, cfg, cutter)
    usable = {k: window_candidates(k, history, w) for k, w in candidates.items()}
    usable = {k: w for k, w in usable.items() if w}
    if not clips or not usable:
        record = {"dev_clips": len(clips), "note": "no dev clip: tuned baselines left out"}
        choices = {}
    else:
        choices = choose_baseline_windows(clips, grid, history, future, usable, score=mean_ade)
        record = {"dev_clips": len(clips), **{k: c.to_dict() for k, c in choices.items()}}
    rows = [
        (name, MethodSpec("baseline", kind if w is None else f"{kind}:{w}"))
        for name, (kind, w) in baseline_rows(choices).items()
    ]
    return rows, record


def sample_roots(runs: Path) -> list[Path]:
    """The sample folders of one method on one source: ``runs/sample_*`` when there are
    such folders (K samples), else ``[runs]`` (one)."""
    found = sorted(d for d in runs.glob("sample_[0-9]*") if d.is_dir())
    return found or [runs]


def score_source(runs: Path, cfg: EvalConfig, grid_stride: float) -> dict[str, Any]:
    """The paper's metrics of one runs root (one method on one source), gated by the
    ground-truth visibility, with FVMD-Long; with K > 1 sample folders (:func:`sample_roots`)
    also minADE_K / minFDE_K / diversity over them (the others of sample 0)."""
    fvmd_config = FVMDConfig(clip_len=cfg.clip_len, clip_stride=cfg.clip_stride)
    samples = sample_roots(runs)
    return score_method(
        samples[0],
        fvmd_config=fvmd_config,
        grid_stride=grid_stride,
        samples=samples if len(samples) > 1 else None,
    )


def evaluate_method(
    bench: Path,
    names: list[str],
    sources: dict[str, Any],
    name: str,
    spec: str,
    forecaster: Forecaster | RunFolders,
    out: Path,
    cfg: EvalConfig,
    window: dict[str, Any],
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Forecast (or read) and score one method on the sources ``names`` of a bench.

    ``window``: the bench's ``grid``, ``history`` and ``future``. Forecasts are written to
    ``out/runs/<name>/<source>/<video>/`` (replaced when present); :class:`RunFolders` are
    scored where they are. Returns the scores by source and the failures, each naming
    method, source and clip or run folder.
    """
    results: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for source_name in names:
        if isinstance(forecaster, RunFolders):
            runs = forecaster.source(source_name)
            if not runs.is_dir():
                failures.append(f"{name}/{source_name}: {runs} does not exist")
                continue
        else:
            runs = out / "runs" / name / source_name
            if runs.exists():
                shutil.rmtree(runs)
            failed = predict_source(
                bench,
                source_name,
                sources[source_name],
                name,
                spec,
                forecaster,
                runs,
                cfg,
                boundary=window["history"],
                progress=progress,
            )
            failures += [f"{name}/{f}" for f in failed]
        try:
            scores = score_source(runs, cfg, float(window["grid"].stride))
        except ValueError as err:
            failures.append(f"{name}/{source_name}: cannot score ({err})")
            continue
        results[source_name] = scores
        failures += [f"{name}/{source_name}: {f['reason']}" for f in scores.get("failed", [])]
    return results, failures


def bench_sources(bench_root: Path, only: list[str] | None) -> tuple[list[str], dict[str, Any]]:
    """Source names (bench order) and their entries, restricted to ``only`` when given."""
    index = read_bench(bench_root)
    sources = index["sources"]
    names = list(sources)
    for name in names:  # source names become folders of --out; their paths lie in the bench
        check_name(f"{bench_root}: source name", name)
        entry = sources[name]
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ValueError(f"{bench_root}: source {name} has no 'path'; rebuild the bench")
        safe_child(bench_root, *Path(entry["path"]).parts, kind=f"source {name}: path")
    if only:
        missing = [n for n in only if n not in sources]
        if missing:
            raise ValueError(f"{bench_root}: no source {missing}; the bench has {names}")
        names = [n for n in names if n in only]
    return names, sources

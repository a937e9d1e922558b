"""Score methods on TrajLoomBench: predict, write run folders, compute the paper's metrics.

For each method and source the futures of every clip are written as released-layout run
folders ``OUT/runs/<method>/<source>/<id>/`` (methods given as run folders are read where
they are, ``<dir>/<source>/<id>/``), then scored with ``trajloom.metrics.score_runs``:

* FVMD: clips of ``clip_len`` frames at stride ``clip_stride`` (the released README: 24
  and 1), motion vectors gated by the ground-truth visibility;
* FVMD-Long: one clip over the whole future window, gated the same way;
* FlowTV and DivCurlE: masked by the ground-truth visibility (``--use_visibility`` of
  the released script), grid spacing = the grid stride;
* VEPE (pixels, masked by the ground-truth visibility): reported for every method that
  has ground truth, meaningful for VAE reconstruction.

Results: ``OUT/results.json`` (everything, with settings), ``OUT/table.csv`` (one row per
method x source), ``OUT/table.md`` (the paper-style table: metric x method rows, source
columns) and ``OUT/per_video.csv``.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trajloom.data.formats import (
    FormatError,
    RunFolder,
    ShardSample,
    iter_shard_samples,
    read_manifest,
    sanitize_predictions,
    write_run_folder,
)
from trajloom.data.video import VideoReadError, read_video
from trajloom.encoding import GridSpec, query_points, rescale_tracks
from trajloom.metrics import FVMDConfig, score_runs
from trajloom_bench.build import read_bench
from trajloom_bench.methods import Forecaster, MethodSpec

__all__ = [
    "METRICS",
    "EvalConfig",
    "format_markdown",
    "predict_source",
    "score_source",
    "write_results",
]

#: Table rows: result key, label (lower is better for all).
METRICS = (
    ("fvmd", "FVMD"),
    ("fvmd_long", "FVMD-Long"),
    ("flow_tv", "FlowTV"),
    ("div_curl_energy", "DivCurlE"),
    ("vepe", "VEPE (px)"),
)


@dataclass(frozen=True)
class EvalConfig:
    """Metric settings (released README defaults) and sampling of the predicting methods."""

    clip_len: int = 24
    clip_stride: int = 1
    seed: int = 0
    limit: int | None = None  # clips per source (None: all)

    def __post_init__(self) -> None:
        if self.clip_stride < 1:
            raise ValueError(f"EvalConfig.clip_stride must be >= 1, got {self.clip_stride}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"EvalConfig.limit must be >= 1 or None, got {self.limit}")


# --------------------------------------------------------------------------- prediction


def _source_samples(bench_root: Path, source: dict[str, Any]) -> Iterator[ShardSample]:
    urls, _ = read_manifest(bench_root / source["path"])
    for url in urls:
        yield from iter_shard_samples(Path(url))


@dataclass(frozen=True)
class _Window:
    """A clip cut for one method: history ``[boundary - th, boundary)``, future after it."""

    grid: GridSpec
    boundary: int  # first future frame: the bench's own history length
    th: int
    tf: int
    tracks: np.ndarray  # "t n 2" in pixels of ``grid``
    vis: np.ndarray  # "t n"

    @property
    def start(self) -> int:
        return self.boundary - self.th

    def history(self) -> tuple[np.ndarray, np.ndarray]:
        return self.tracks[self.start : self.boundary], self.vis[self.start : self.boundary]

    def future(self) -> tuple[np.ndarray, np.ndarray]:
        end = self.boundary + self.tf
        return self.tracks[self.boundary : end], self.vis[self.boundary : end]


def _prepare(sample: ShardSample, method: Forecaster, split: tuple[int, int]) -> _Window:
    """The sample's tracks in the method's grid pixels, cut at the bench's boundary.

    Every method forecasts from the same frame, the bench's history length, whatever
    windows it takes: a shorter history ends there, a shorter future starts there.
    """
    src = GridSpec(
        int(sample.meta["width"]), int(sample.meta["height"]), int(sample.meta.get("stride", 32))
    )
    grid = method.grid or src
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
    boundary = min(split[0], t)
    th = method.history or boundary
    tf = method.future or min(split[1], t - boundary)
    if th > boundary or boundary + tf > t:
        raise ValueError(
            f"{sample.id}: the method needs {th} history + {tf} future frames around frame "
            f"{boundary}, but the clip has {boundary} history + {t - boundary} future frames; "
            "build the bench with --history/--future at least the method's"
        )
    return _Window(grid, boundary, th, tf, tracks, sample.visibility)


def predict_source(
    bench_root: Path,
    source_name: str,
    source: dict[str, Any],
    spec: MethodSpec,
    method: Forecaster,
    out: Path,
    cfg: EvalConfig,
    *,
    split: tuple[int, int] = (81, 81),
    progress: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Write a run folder per clip of one source under ``out``; returns the failures.

    ``split`` = the bench's (history, future) frames: where every forecast starts, and the
    lengths for methods that take any (baselines).
    """
    failures: list[str] = []
    for i, sample in enumerate(_source_samples(bench_root, source)):
        if cfg.limit is not None and i >= cfg.limit:
            break
        try:
            w = _prepare(sample, method, split)
            frames = None
            if sample.video is not None and method.wants_frames:
                frames = read_video(
                    sample.video, size=w.grid.size, start=w.start, num_frames=w.th, name=sample.id
                )
            (hist, hvis), (gt, gvis) = w.history(), w.future()
            forecast = method.forecast(
                hist,
                hvis,
                future=w.tf,
                frames=frames,
                caption=str(sample.meta.get("caption", "")),
                num_samples=1,
                seed=cfg.seed + i,
                gt_tracks=gt,
                gt_vis=gvis,
            )
        except (ValueError, VideoReadError, FormatError) as err:
            failures.append(f"{source_name}/{sample.id}: {err}")
            progress(f"fail {source_name}/{sample.id}: {err}")
            continue
        pred, pvis = sanitize_predictions(forecast.tracks[0], forecast.visibility[0], w.grid.size)
        write_run_folder(
            out / sample.id,
            RunFolder(
                query_xy=query_points(w.grid).numpy(),
                pred_tracks=pred,
                pred_visibility=pvis,
                gt_tracks=gt,
                gt_visibility=gvis,
                pred_visibility_prob=None
                if forecast.probability is None
                else forecast.probability[0],
                meta={
                    "id": sample.id,
                    "source": source_name,
                    "method": spec.name,
                    "spec": f"{spec.kind}:{spec.target}",
                    "cond_index": w.boundary,
                    "hist_len": w.th,
                    "future_len": w.tf,
                    "H": w.grid.height,
                    "W": w.grid.width,
                    "grid_stride": w.grid.stride,
                    "noise_seed": cfg.seed + i,
                },
            ),
        )
        progress(f"{spec.name}/{source_name}/{sample.id}")
    return failures


# --------------------------------------------------------------------------- scoring


def score_source(runs: Path, cfg: EvalConfig, grid_stride: float) -> dict[str, Any]:
    """The paper's metrics of one runs root (one method on one source)."""
    common = {
        "use_gt_visibility": True,
        "use_visibility": True,
        "grid_stride": grid_stride,
    }
    with warnings.catch_warnings():
        # clip_len longer than the future is reported once below, not per video.
        warnings.simplefilter("ignore", RuntimeWarning)
        main = score_runs(
            runs,
            fvmd_config=FVMDConfig(clip_len=cfg.clip_len, clip_stride=cfg.clip_stride),
            **common,
        )
        long = score_runs(runs, fvmd_config=FVMDConfig(clip_len=None), **common)
    notes = list(main.get("notes", []))
    notes += [f"long: {n}" for n in long.get("notes", []) if n not in notes]
    return {
        "fvmd": main["fvmd"],
        "fvmd_velocity": main["fvmd_velocity"],
        "fvmd_acceleration": main["fvmd_acceleration"],
        "fvmd_long": long["fvmd"],
        "flow_tv": main["flow_tv"],
        "div_curl_energy": main["div_curl_energy"],
        "vepe": main["vepe"],
        "num_videos": main["num_videos"],
        "num_windows": main["num_windows"],
        "notes": notes,
        "per_video": main["per_video"],
    }


# --------------------------------------------------------------------------- tables


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 0.01 else f"{value:.2e}"
    return str(value)


def format_markdown(results: dict[str, dict[str, dict[str, Any]]], sources: list[str]) -> str:
    """The paper-style table: rows (metric, method), columns sources."""
    methods = list(results)
    lines = [
        "| Metric | Method | " + " | ".join(sources) + " |",
        "|---|---|" + "---|" * len(sources),
    ]
    for key, label in METRICS:
        if all(results[m].get(s, {}).get(key) is None for m in methods for s in sources):
            continue
        for j, method in enumerate(methods):
            cells = [_fmt(results[method].get(s, {}).get(key)) for s in sources]
            lines.append(f"| {label if j == 0 else ''} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_results(
    out: Path,
    results: dict[str, dict[str, dict[str, Any]]],
    sources: list[str],
    settings: dict[str, Any],
    failures: list[str],
) -> dict[str, Path]:
    """Write results.json, table.csv, table.md and per_video.csv under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "csv": out / "table.csv",
        "markdown": out / "table.md",
        "per_video": out / "per_video.csv",
    }
    paths["json"].write_text(
        json.dumps(
            _json_ready(
                {"settings": settings, "sources": sources, "results": results, "failures": failures}
            ),
            indent=2,
            allow_nan=False,
        )
    )
    keys = [k for k, _ in METRICS] + [
        "fvmd_velocity",
        "fvmd_acceleration",
        "num_videos",
        "num_windows",
    ]
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "source", *keys])
        for method, per_source in results.items():
            for source in sources:
                r = per_source.get(source, {})
                writer.writerow([method, source, *[_json_ready(r.get(k)) for k in keys]])
    paths["markdown"].write_text(format_markdown(results, sources) + "\n")
    with paths["per_video"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["method", "source", "video", "flow_tv", "div_curl_energy", "vepe", "fvmd_windows"]
        )
        for method, per_source in results.items():
            for source in sources:
                for entry in per_source.get(source, {}).get("per_video", []):
                    writer.writerow(
                        [
                            method,
                            source,
                            entry.get("video"),
                            *[
                                _json_ready(entry.get(k))
                                for k in ("flow_tv", "div_curl_energy", "vepe", "fvmd_windows")
                            ],
                        ]
                    )
    return paths


def bench_sources(bench_root: Path, only: list[str] | None) -> tuple[list[str], dict[str, Any]]:
    """Source names (bench order) and their entries, restricted to ``only`` when given."""
    index = read_bench(bench_root)
    sources = index["sources"]
    names = list(sources)
    if only:
        missing = [n for n in only if n not in sources]
        if missing:
            raise ValueError(f"{bench_root}: no source {missing}; the bench has {names}")
        names = [n for n in names if n in only]
    return names, sources

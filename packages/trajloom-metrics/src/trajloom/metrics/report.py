"""Score methods' run folders and write the tables (numpy only).

An evaluation writes one runs root per method (and source) in the released run-folder
layout, scores each with :func:`score_method`, and reports the results:

* :func:`format_paper_table`: the paper-style Markdown table, rows (metric, method),
  columns the sources (``apps/bench eval``);
* :func:`format_method_table`: one row per method, VEPE / FVMD / FlowTV / DivCurlE
  (the end of ``apps/train``);
* :func:`write_results`: ``results.json``, ``table.csv``, ``table.md`` and
  ``per_video.csv`` (:func:`result_texts` gives their texts, for callers that write
  files their own way, e.g. atomically);
* :func:`json_ready`: NaN and infinities to null, numpy scalars to Python, for strict JSON.

``results`` maps method -> source -> the dict :func:`score_method` returns.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from trajloom.metrics.fvmd import FVMDConfig
from trajloom.metrics.runs import forecast_metrics, score_runs

__all__ = [
    "PAPER_ROWS",
    "RESULT_FILES",
    "format_method_table",
    "format_paper_table",
    "fvmd_key",
    "json_ready",
    "result_texts",
    "score_method",
    "write_results",
]

PAPER_ROWS = (
    ("fvmd", "FVMD"),
    ("fvmd_long", "FVMD-Long"),
    ("flow_tv", "FlowTV"),
    ("div_curl_energy", "DivCurlE"),
    ("vepe", "VEPE (px)"),
    ("min_ade", "minADE_K (px)"),
    ("min_fde", "minFDE_K (px)"),
    ("energy_score", "Energy score (px)"),
    ("diversity", "Diversity (px)"),
)
"""Rows of the paper-style table: result key, label (lower is better for all but the
diversity, which describes the K samples). The multi-sample rows appear only where an
evaluation scored several samples (:func:`score_method` with ``samples``)."""

METHOD_COLUMNS = (
    ("vepe", "VEPE (px)"),
    ("fvmd", "FVMD"),
    ("flow_tv", "FlowTV"),
    ("div_curl_energy", "DivCurlE"),
)
"""Columns of the one-row-per-method table: result key, label."""

_CSV_KEYS = (*(k for k, _ in PAPER_ROWS), "fvmd_velocity", "fvmd_acceleration")
_CSV_COUNTS = ("num_videos", "num_windows", "num_samples")
_PER_VIDEO_KEYS = ("flow_tv", "div_curl_energy", "vepe", "fvmd_windows")


def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as None and numpy scalars as Python numbers,
    through dicts, lists and tuples (tuples become lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return json_ready(value.item())
    return value


def fvmd_key(clip_len: int) -> str:
    """The result key of FVMD over clips of ``clip_len`` frames beside the main one."""
    return f"fvmd_{clip_len}"


def score_method(
    runs: str | Path,
    *,
    fvmd_config: FVMDConfig,
    grid_stride: float,
    use_visibility: bool = True,
    fvmd_long: bool = True,
    samples: Sequence[str | Path] | None = None,
    more_clip_lens: Sequence[int] = (),
) -> dict[str, Any]:
    """The paper's metrics of one method's runs root (a folder of run folders).

    ``use_visibility``: gate FVMD motion vectors and mask FlowTV / DivCurlE with the
    ground-truth visibility (the bench's setting). ``fvmd_long``: also FVMD over one clip
    of the whole future window (``fvmd_long``; None otherwise). ``more_clip_lens``: FVMD
    over clips of these lengths too (stride and the rest of ``fvmd_config`` kept), as
    :func:`fvmd_key` ``(L)``. ``samples``: the method's K >= 1 sample folders (``runs``
    usually the first): adds ``min_ade``, ``min_fde`` (pixels over the visible future),
    ``diversity`` (pixels, None for K = 1), ``energy_score`` (pixels) and ``num_samples`` (K) of
    :func:`~trajloom.metrics.runs.forecast_metrics`; without it those are None.

    Returns ``fvmd``, ``fvmd_velocity``, ``fvmd_acceleration``, ``fvmd_long``, ``flow_tv``,
    ``div_curl_energy``, ``vepe``, the keys above, ``num_videos``, ``num_windows``,
    ``notes`` (why a metric is None; those of the long clip prefixed ``long:``),
    ``per_video``, and the run folders that could not be scored (``failed``,
    ``num_failed``; see ``score_runs``). Raises ``ValueError`` when ``runs`` holds no run
    folder.
    """
    common: dict[str, Any] = {
        "use_gt_visibility": use_visibility,
        "use_visibility": use_visibility,
        "grid_stride": grid_stride,
    }
    with warnings.catch_warnings():
        # A clip_len longer than the future is said once in the notes, not per video.
        warnings.simplefilter("ignore", RuntimeWarning)
        main = score_runs(runs, fvmd_config=fvmd_config, **common)
        extra = {"long": FVMDConfig(clip_len=None)} if fvmd_long else {}
        for length in more_clip_lens:
            extra[f"clip {length}"] = replace(fvmd_config, clip_len=length)
        more = {name: score_runs(runs, fvmd_config=cfg, **common) for name, cfg in extra.items()}
    notes = list(main.get("notes", []))
    for name, scored in more.items():
        notes += [f"{name}: {n}" for n in scored.get("notes", []) if n not in notes]
    result: dict[str, Any] = {
        "fvmd": main["fvmd"],
        "fvmd_velocity": main["fvmd_velocity"],
        "fvmd_acceleration": main["fvmd_acceleration"],
        "fvmd_long": more["long"]["fvmd"] if fvmd_long else None,
        **{fvmd_key(n): more[f"clip {n}"]["fvmd"] for n in more_clip_lens},
        "flow_tv": main["flow_tv"],
        "div_curl_energy": main["div_curl_energy"],
        "vepe": main["vepe"],
        "min_ade": None,
        "min_fde": None,
        "diversity": None,
        "energy_score": None,
        "num_samples": None,
        "num_videos": main["num_videos"],
        "num_windows": main["num_windows"],
        "notes": notes,
        "per_video": main["per_video"],
        "num_failed": main["num_failed"],
        "failed": main["failed"],
    }
    if samples is not None:
        already = [f["video"] for f in main["failed"]] if Path(samples[0]) == Path(runs) else []
        multi = forecast_metrics(samples, already_failed=already)
        result["failed"] = main["failed"] + multi["failed"]
        result["num_failed"] = len(result["failed"])
        result["notes"] += multi["notes"]
        keys = ("min_ade", "min_fde", "diversity", "energy_score", "num_samples")
        for key in (*keys, "per_video_forecast"):
            result[key] = multi[key]
    return result


def _paper_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 0.01 else f"{value:.2e}"
    return str(value)


def format_paper_table(
    results: dict[str, dict[str, dict[str, Any]]],
    sources: list[str],
    *,
    baselines: Sequence[str] = (),
) -> str:
    """The paper-style Markdown table: rows (metric, method), columns ``sources``.

    A metric no method has on any source is left out; a missing value is ``-``. Among the
    ``baselines`` rows, the strongest (lowest) value of each metric and source is in bold
    (not the diversity, which describes the samples).
    """
    methods = list(results)
    lines = [
        "| Metric | Method | " + " | ".join(sources) + " |",
        "|---|---|" + "---|" * len(sources),
    ]
    for key, label in PAPER_ROWS:
        if all(results[m].get(s, {}).get(key) is None for m in methods for s in sources):
            continue
        best = {s: _lowest(results, baselines, s, key) for s in sources}
        for j, method in enumerate(methods):
            cells = []
            for s in sources:
                value = results[method].get(s, {}).get(key)
                cell = _paper_cell(value)
                if method in baselines and value is not None and value == best[s]:
                    cell = f"**{cell}**"
                cells.append(cell)
            lines.append(f"| {label if j == 0 else ''} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _lowest(
    results: dict[str, dict[str, dict[str, Any]]], rows: Sequence[str], source: str, key: str
) -> float | None:
    """The lowest finite ``key`` of ``rows`` on ``source`` (None for the diversity)."""
    if key.startswith("diversity"):
        return None
    values = [results[m].get(source, {}).get(key) for m in rows if m in results]
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return min(finite) if finite else None


def format_method_table(
    results: dict[str, dict[str, Any]],
    columns: Sequence[tuple[str, str]] = METHOD_COLUMNS,
    *,
    baselines: Sequence[str] = (),
) -> str:
    """Markdown table of ``results`` (method -> metrics): one row per method, one column
    per ``(key, label)`` of ``columns`` (default VEPE / FVMD / FlowTV / DivCurlE), to four
    significant digits (``-`` when None).

    ``baselines``: the rows that are baselines; in each column the strongest of them (the
    lowest value; ``diversity`` describes the samples and is not marked) is in bold, so a
    reader compares the model with the best baseline of that column, not the weakest.
    """
    best: dict[str, float] = {}
    for key, _ in columns:
        found = [results[m].get(key) for m in baselines if m in results]
        values = [float(v) for v in found if v is not None and math.isfinite(v)]
        if values and not key.startswith("diversity"):
            best[key] = min(values)
    lines = [
        "| method | " + " | ".join(label for _, label in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for method, r in results.items():
        cells = []
        for k, _ in columns:
            value = r.get(k)
            cell = "-" if value is None else f"{value:.4g}"
            if method in baselines and value is not None and best.get(k) == value:
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


RESULT_FILES = {
    "json": "results.json",
    "csv": "table.csv",
    "markdown": "table.md",
    "per_video": "per_video.csv",
}
"""The files of an evaluation's results, by kind."""


def _csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerows(rows)
    return buffer.getvalue()


def result_texts(
    results: dict[str, dict[str, dict[str, Any]]],
    sources: list[str],
    settings: dict[str, Any],
    failures: list[str],
) -> dict[str, str]:
    """The texts of :data:`RESULT_FILES`, by kind (what :func:`write_results` writes).

    * ``json``: settings, sources, results, failures, strict JSON;
    * ``csv``: one row per method x source, the metrics and counts;
    * ``markdown``: :func:`format_paper_table` (``settings["baselines"]``: rows marked as
      baselines);
    * ``per_video``: FlowTV, DivCurlE, VEPE and FVMD clips per video.
    """
    document = {"settings": settings, "sources": sources, "results": results, "failures": failures}
    keys = (*_CSV_KEYS, *_CSV_COUNTS)
    table = [["method", "source", *keys]]
    per_video = [["method", "source", "video", *_PER_VIDEO_KEYS]]
    for method, per_source in results.items():
        for source in sources:
            r = per_source.get(source, {})
            table.append([method, source, *[json_ready(r.get(k)) for k in keys]])
            for entry in r.get("per_video", []):
                values = [json_ready(entry.get(k)) for k in _PER_VIDEO_KEYS]
                per_video.append([method, source, entry.get("video"), *values])
    return {
        "json": json.dumps(json_ready(document), indent=2, allow_nan=False),
        "csv": _csv_text(table),
        "markdown": format_paper_table(results, sources, baselines=settings.get("baselines", ()))
        + "\n",
        "per_video": _csv_text(per_video),
    }


def write_results(
    out: Path,
    results: dict[str, dict[str, dict[str, Any]]],
    sources: list[str],
    settings: dict[str, Any],
    failures: list[str],
) -> dict[str, Path]:
    """Write the results of methods x ``sources`` under ``out`` (:func:`result_texts`,
    named as :data:`RESULT_FILES`); returns the paths by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, text in result_texts(results, sources, settings, failures).items():
        paths[kind] = out / RESULT_FILES[kind]
        with paths[kind].open("w", newline="") as f:
            f.write(text)
    return paths

"""The sample app's ``OUT/index.html``: each clip's futures, the truth and its metrics.

Per-clip metrics need the true future (videos long enough, npz and shards that hold it):
per sample ADE / FDE in pixels, and for the clip minADE_K, minFDE_K and, with K >= 2,
the diversity of the samples (``trajloom.metrics.forecast``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from trajloom.data.predictions import render_names
from trajloom.data.report import ClipView, Table, write_report
from trajloom.metrics import sample_diversity, sample_errors

__all__ = ["clip_metrics", "write_sample_report"]

_METRICS = {"min_ade": "minADE (px)", "min_fde": "minFDE (px)", "diversity": "diversity (px)"}


def clip_metrics(
    tracks: np.ndarray, gt_tracks: np.ndarray | None, gt_visibility: np.ndarray | None
) -> dict[str, Any]:
    """ADE / FDE of each of K futures "k tf n 2" against the truth, minADE_K, minFDE_K and
    the diversity (pixels); empty without a truth. NaN where no point is visible."""
    if gt_tracks is None:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no visible point: NaN, shown empty
        ade, fde = sample_errors(tracks, gt_tracks, gt_visibility)
        diversity = sample_diversity(tracks, gt_visibility) if len(tracks) > 1 else None
    return {
        "ade": [float(a) for a in ade],
        "fde": [float(f) for f in fde],
        "min_ade": float(np.nanmin(ade)) if not np.isnan(ade).all() else None,
        "min_fde": float(np.nanmin(fde)) if not np.isnan(fde).all() else None,
        "diversity": None if diversity is None else float(diversity),
    }


def _view(entry: dict[str, Any], renders: dict[str, Path]) -> ClipView | None:
    """The clip's view, or None when it was not rendered."""
    k = entry["num_samples"]
    samples = [renders.get(f"sample_{i:03d}") for i in range(k)]
    if any(p is None or not p.is_file() for p in samples):
        return None
    m = entry.get("metrics") or {}
    rows = [{"ADE (px)": m["ade"][i], "FDE (px)": m["fde"][i]} for i in range(k)] if m else []
    links = {label: renders.get(role) for role, label in (("grid", "sample grid"), ("gif", "GIF"))}
    return ClipView(
        id=entry["id"],
        samples=[p for p in samples if p is not None],
        truth=renders.get("truth"),
        caption=entry.get("caption", ""),
        sample_metrics=rows,
        metrics={label: m.get(name) for name, label in _METRICS.items() if m},
        links={label: p for label, p in links.items() if p is not None and p.is_file()},
    )


def _renders(out: Path, entry: dict[str, Any]) -> dict[str, Path]:
    names = render_names(entry["id"], entry["num_samples"], entry["has_ground_truth"])
    return {role: out / "renders" / name for role, name in names.items()}


def write_sample_report(out: Path, done: list[dict[str, Any]], title: str) -> Path:
    """``out/index.html`` of the clips ``done`` (the summary's entries, renders under
    ``out/renders`` named by ``trajloom.data.predictions.render_names``)."""
    views = [v for e in done if (v := _view(e, _renders(out, e))) is not None]
    rows = [
        [e["id"], e["num_samples"], *[(e.get("metrics") or {}).get(n) for n in _METRICS]]
        for e in done
    ]
    table = Table(
        "clips",
        ["clip", "samples", *_METRICS.values()],
        rows,
        note="Errors against the tracked true future (empty where the clip has none); "
        "click a column to sort.",
    )
    return write_report(out, title, clips=views, tables=[table])

"""A self-contained HTML report of forecasts: ``index.html`` beside the media it shows.

One file with its CSS and JavaScript inline, no network and no server: it opens from the
file system (``file://``) and stays readable when the output folder is copied elsewhere,
because every video is referenced by a path relative to the report. It shows

* per clip, the history + future overlay of each of the K sampled futures, one at a time
  with a switch (buttons, or the keys 1-9) or all at once, and the ground-truth overlay
  when the clip has one;
* per clip, its metrics: one row per sample (the shown sample's row is marked) and
  clip-level values;
* per clip, a plot of the error over future time of each sample and of the reference
  methods (inline SVG, no script), and its still motion summary (tracks drawn on the last
  history frame), which is also the clip's thumbnail in the table of clips;
* tables (a bench's method x source table, per-clip metrics) whose columns sort on a
  click (numbers numerically; empty cells last).

The writer takes plain values (no metrics code here): ``apps/sample`` and ``apps/bench``
compute what they show and call :func:`write_report`.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trajloom.data.outputs import atomic_write_text

__all__ = ["REPORT_NAME", "ClipView", "Table", "render_report", "write_report"]

REPORT_NAME = "index.html"

Cell = str | int | float | None


@dataclass(frozen=True)
class ClipView:
    """What the report shows of one clip; video paths are files under the report's folder.

    ``samples`` holds one overlay video per sampled future (sample k at index k),
    ``truth`` the overlay of the true future (None without one), ``together`` the overlay
    of every sample in one (or None), ``sample_metrics`` one dict per sample (same keys in
    each; may be empty) and ``metrics`` clip-level values. ``curves``: label -> error (px)
    per future frame (None where unknown), plotted; ``thumbnail``: the still motion
    summary (an image).
    """

    id: str
    samples: Sequence[Path]
    truth: Path | None = None
    caption: str = ""
    sample_metrics: Sequence[dict[str, Cell]] = ()
    metrics: dict[str, Cell] = field(default_factory=dict)
    links: dict[str, Path] = field(default_factory=dict)  # label -> file (grid, GIF, ...)
    together: Path | None = None
    curves: dict[str, Sequence[float | None]] = field(default_factory=dict)
    thumbnail: Path | None = None

    def media(self) -> list[Path]:
        """Every file the view shows or links to."""
        extra = [p for p in (self.truth, self.together, self.thumbnail) if p is not None]
        return [*self.samples, *extra, *self.links.values()]

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError(f"ClipView {self.id!r}: no sample video given; give at least one")
        if self.sample_metrics and len(self.sample_metrics) != len(self.samples):
            raise ValueError(
                f"ClipView {self.id!r}: {len(self.sample_metrics)} rows of sample metrics for "
                f"{len(self.samples)} samples; give one row per sample or none"
            )


@dataclass(frozen=True)
class Table:
    """A sortable table: a title, column labels and rows of cells (None shows as empty)."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    note: str = ""
    # per row, an image shown in a leading column and linking to the clip named by the
    # row's first cell (the clips' motion summaries); empty: no such column
    thumbnails: Sequence[Path | None] = ()

    def __post_init__(self) -> None:
        bad = [i for i, row in enumerate(self.rows) if len(row) != len(self.columns)]
        if bad:
            raise ValueError(
                f"Table {self.title!r}: rows {bad} do not have {len(self.columns)} cells "
                f"(columns {list(self.columns)})"
            )
        if self.thumbnails and len(self.thumbnails) != len(self.rows):
            raise ValueError(
                f"Table {self.title!r}: {len(self.thumbnails)} thumbnails for "
                f"{len(self.rows)} rows; give one per row (None for none) or none"
            )


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin: 0 0 .4em; }
section.clip { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 1em;
  margin: 1em 0; }
.caption { color: #555; font-style: italic; }
.switch button { margin: 0 .2em .4em 0; padding: .25em .7em; border: 1px solid #999;
  border-radius: 4px; background: #eee; cursor: pointer; }
.switch button[aria-pressed="true"] { background: #2b6cb0; color: #fff; border-color: #2b6cb0; }
.views { display: flex; flex-wrap: wrap; gap: .5em; }
.views figure { margin: 0; } .views figcaption { font-size: .85em; color: #555; }
.views video { width: min(832px, 95vw); display: block; background: #000; }
.views.all video { width: min(410px, 95vw); }
table { border-collapse: collapse; margin: .5em 0 1em; background: #fff; }
th, td { border: 1px solid #ccc; padding: .2em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
table.sortable th { cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
tr.shown td { background: #e6f0fb; }
.glance { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; margin: .3em 0 .8em; }
.glance figure { margin: 0; } .glance figcaption { font-size: .85em; color: #555; max-width: 420px; }
img.summary { width: min(420px, 95vw); display: block; border: 1px solid #ccc; }
img.thumb { width: 120px; display: block; }
svg.errplot { background: #fff; border: 1px solid #ccc; font: 11px system-ui, sans-serif; }
svg.errplot .axis { stroke: #888; stroke-width: 1; } svg.errplot .tick { fill: #555; }
svg.errplot polyline { fill: none; stroke-width: 2; }
svg.errplot polyline.baseline { stroke-dasharray: 5 3; stroke-width: 1.5; }
.note { color: #555; font-size: .9em; }
"""

# Switching: a clip's buttons show one view (a sample, the truth) or all of them, and mark
# the shown sample's metrics row. Sorting: a header click sorts its table by that column.
_JS = """
"use strict";
function showView(clip, view) {
  for (const b of clip.querySelectorAll(".switch button"))
    b.setAttribute("aria-pressed", String(b.dataset.view === view));
  const box = clip.querySelector(".views");
  box.classList.toggle("all", view === "all");
  for (const f of box.querySelectorAll("figure")) {
    const on = view === "all" || f.dataset.view === view;
    f.hidden = !on;
    const v = f.querySelector("video");
    if (!on) v.pause();
  }
  for (const r of clip.querySelectorAll("tr[data-view]"))
    r.classList.toggle("shown", r.dataset.view === view);
  clip.dataset.shown = view;
}
function sortTable(th) {
  const table = th.closest("table"), col = th.cellIndex, body = table.tBodies[0];
  const dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
  for (const h of table.tHead.rows[0].cells) h.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", dir);
  const key = r => r.cells[col].dataset.value ?? r.cells[col].textContent;
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === "" || y === "") return (x === "") - (y === "");
    const nx = Number(x), ny = Number(y);
    const c = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
    return dir === "ascending" ? c : -c;
  });
  for (const r of rows) body.appendChild(r);
}
document.addEventListener("click", e => {
  const b = e.target.closest(".switch button");
  if (b) showView(b.closest("section.clip"), b.dataset.view);
  const th = e.target.closest("table.sortable th");
  if (th) sortTable(th);
});
document.addEventListener("keydown", e => {
  const clip = document.querySelector("section.clip:hover") || document.querySelector("section.clip");
  if (!clip || e.target.closest("input, textarea")) return;
  const n = Number(e.key);
  if (n >= 1 && n <= 9 && clip.querySelector(`button[data-view="sample_${String(n - 1).padStart(3, "0")}"]`))
    showView(clip, `sample_${String(n - 1).padStart(3, "0")}`);
  if (e.key === "a") showView(clip, "all");
});
for (const clip of document.querySelectorAll("section.clip")) showView(clip, "sample_000");
"""


def _text(value: Cell) -> tuple[str, str]:
    """A cell's shown text and its sort key (numbers at full precision, empty for None)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "", ""
    if isinstance(value, float):
        return f"{value:.4g}", repr(value)
    return str(value), str(value)


def _table(
    title: str | None,
    columns: Sequence[str],
    rows: list[tuple[str, list[Cell]]],
    thumbnails: Sequence[str] = (),
) -> str:
    """A sortable table; each row is (its data-view or "", cells). ``thumbnails``: per
    row, the ``<img>``/link HTML of a leading "motion" column (not sorted on)."""
    lead = ["motion"] if thumbnails else []
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [*lead, *columns])
    body = []
    for r, (view, cells) in enumerate(rows):
        tds = [f'<td data-value="">{thumbnails[r]}</td>'] if thumbnails else []
        for cell in cells:
            shown, key = _text(cell)
            tds.append(f'<td data-value="{html.escape(key)}">{html.escape(shown)}</td>')
        attr = f' data-view="{view}"' if view else ""
        body.append(f"<tr{attr}>{''.join(tds)}</tr>")
    caption = f"<caption>{html.escape(title)}</caption>" if title else ""
    return (
        f'<table class="sortable">{caption}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


#: Line colours of the samples in the error plot; reference methods are dashed greys.
_SAMPLE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
_BASELINE_COLORS = ("#222222", "#888888", "#555555")


def _nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value`` (> 0)."""
    k = math.floor(math.log10(value))
    return next(m * 10**k for m in (1, 2, 2.5, 5, 10) if m * 10**k >= value)


def _error_plot(curves: dict[str, Sequence[float | None]]) -> str:
    """An inline SVG line plot of error (px) over future frames, one line per label
    (``sample k`` solid and coloured, anything else a dashed reference), with axes and a
    legend; gaps where a value is None."""
    width, height, left, right, top, bottom = 460, 230, 44, 150, 12, 34
    pw, ph = width - left - right, height - top - bottom
    frames = max(len(v) for v in curves.values())
    finite = [x for v in curves.values() for x in v if x is not None and math.isfinite(x)]
    ymax = _nice_max(max(finite)) if finite and max(finite) > 0 else 1.0

    def xy(i: int, value: float) -> str:
        x = left + pw * (i / max(frames - 1, 1))
        return f"{x:.1f},{top + ph * (1 - min(value, ymax) / ymax):.1f}"

    parts = [
        f'<svg class="errplot" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        "<title>error over future time: mean distance to the true future (px) per frame</title>",
        f'<line class="axis" x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}"/>',
        f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}"/>',
    ]
    for f in (0.0, 0.5, 1.0):
        y = top + ph * (1 - f)
        parts.append(
            f'<text class="tick" x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{f * ymax:g}</text>"
        )
    for i in sorted({0, (frames - 1) // 2, frames - 1}):
        x, _ = xy(i, 0).split(",")
        parts.append(
            f'<text class="tick" x="{x}" y="{top + ph + 14}" text-anchor="middle">{i + 1}</text>'
        )
    parts.append(
        f'<text class="tick" x="{left + pw / 2:.0f}" y="{height - 4}" text-anchor="middle">'
        "future frame</text>"
        f'<text class="tick" x="10" y="{top + ph / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 10 {top + ph / 2:.0f})">error (px)</text>'
    )
    samples = baselines = 0
    for n, (label, values) in enumerate(curves.items()):
        is_sample = label.startswith("sample ")
        if is_sample:
            color, kind = _SAMPLE_COLORS[samples % len(_SAMPLE_COLORS)], "sample"
            samples += 1
        else:
            color, kind = _BASELINE_COLORS[baselines % len(_BASELINE_COLORS)], "baseline"
            baselines += 1
        runs: list[list[str]] = [[]]
        for i, v in enumerate(values):
            if v is None or not math.isfinite(v):
                runs.append([])
            else:
                runs[-1].append(xy(i, v))
        name = html.escape(label)
        for run in runs:
            if run:
                points = " ".join(run if len(run) > 1 else run * 2)
                parts.append(
                    f'<polyline class="{kind}" data-label="{name}" stroke="{color}" '
                    f'points="{points}"><title>{name}</title></polyline>'
                )
        ly = top + 6 + 15 * n
        dash = ' stroke-dasharray="5 3"' if kind == "baseline" else ""
        parts.append(
            f'<line x1="{left + pw + 8}" y1="{ly}" x2="{left + pw + 26}" y2="{ly}" '
            f'stroke="{color}" stroke-width="2"{dash}/>'
            f'<text class="legend" x="{left + pw + 30}" y="{ly + 4}">{name}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _href(path: Path, folder: Path) -> str:
    """``path`` relative to the report's folder, as a URL path."""
    rel = os.path.relpath(Path(path).resolve(), folder.resolve())
    return html.escape("/".join(Path(rel).parts))


def _glance(view: ClipView, folder: Path) -> str:
    """The still motion summary and the error plot of a clip, side by side."""
    parts = []
    if view.thumbnail is not None:
        parts.append(
            f'<figure class="summary"><img class="summary" src="{_href(view.thumbnail, folder)}" '
            f'alt="motion summary of {html.escape(view.id)}"><figcaption>Motion summary, on the '
            "last history frame: grey trails the history, coloured paths sample 0's future "
            "(arrowheads where each point ends), faint ones the other samples.</figcaption>"
            "</figure>"
        )
    if view.curves:
        parts.append(
            f'<figure class="errors">{_error_plot(view.curves)}<figcaption>Error over future '
            "time: per frame, the mean distance (px) to the tracked true future over the "
            "points visible in it; dashed: reference methods.</figcaption></figure>"
        )
    return f'<div class="glance">{"".join(parts)}</div>' if parts else ""


def _clip(view: ClipView, folder: Path) -> str:
    videos = [(f"sample_{k:03d}", f"sample {k}", p) for k, p in enumerate(view.samples)]
    if view.together is not None:
        videos.append(("together", "all samples in one", view.together))
    if view.truth is not None:
        videos.append(("truth", "ground truth", view.truth))
    buttons = [
        f'<button type="button" data-view="{key}">{html.escape(label)}</button>'
        for key, label, _ in videos
    ]
    buttons.append('<button type="button" data-view="all">show all</button>')
    figures = [
        f'<figure data-view="{key}"><video src="{_href(p, folder)}" controls muted loop '
        f'playsinline preload="metadata"></video><figcaption>{html.escape(label)}</figcaption>'
        "</figure>"
        for key, label, p in videos
    ]
    parts = [f'<section class="clip" id="clip-{html.escape(view.id)}">']
    parts.append(f"<h2>{html.escape(view.id)}</h2>")
    if view.caption:
        parts.append(f'<p class="caption">{html.escape(view.caption)}</p>')
    parts.append(_glance(view, folder))
    parts.append(f'<div class="switch">{"".join(buttons)}</div>')
    parts.append(f'<div class="views">{"".join(figures)}</div>')
    if view.sample_metrics:
        keys = list(view.sample_metrics[0])
        rows = [
            (f"sample_{k:03d}", [f"sample {k}", *[m.get(c) for c in keys]])
            for k, m in enumerate(view.sample_metrics)
        ]
        parts.append(_table(None, ["future", *keys], rows))
    if view.metrics:
        parts.append(_table(None, list(view.metrics), [("", list(view.metrics.values()))]))
    if view.links:
        links = " · ".join(
            f'<a href="{_href(p, folder)}">{html.escape(label)}</a>'
            for label, p in view.links.items()
        )
        parts.append(f'<p class="note">{links}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _thumbnail(path: Path | None, clip_id: str, folder: Path) -> str:
    """A thumbnail image linking to its clip's section (empty without an image)."""
    if path is None:
        return ""
    return (
        f'<a href="#clip-{html.escape(clip_id)}"><img class="thumb" '
        f'src="{_href(path, folder)}" alt="motion of {html.escape(clip_id)}"></a>'
    )


def render_report(
    folder: Path,
    title: str,
    clips: Sequence[ClipView] = (),
    tables: Sequence[Table] = (),
    notes: Sequence[str] = (),
) -> str:
    """The HTML text of the report that :func:`write_report` writes into ``folder``."""
    folder = Path(folder)
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    for t in tables:
        thumbs = (
            [
                _thumbnail(p, str(r[0]) if r else "", folder)
                for p, r in zip(t.thumbnails, t.rows, strict=True)
            ]
            if t.thumbnails
            else []
        )
        body.append(_table(t.title, t.columns, [("", list(r)) for r in t.rows], thumbs))
        if t.note:
            body.append(f'<p class="note">{html.escape(t.note)}</p>')
    body += [_clip(c, folder) for c in clips]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # nothing may come from the network: only files beside the report
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; media-src 'self' file:; "
        "img-src 'self' file: data:\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{_JS}</script>\n</body></html>\n"
    )


def write_report(
    folder: Path,
    title: str,
    clips: Sequence[ClipView] = (),
    tables: Sequence[Table] = (),
    notes: Sequence[str] = (),
) -> Path:
    """Write ``folder/index.html`` (atomically) showing ``clips`` and ``tables``; returns it.

    Every video and image of ``clips`` and ``tables`` must lie under ``folder`` (so that the folder travels whole);
    a missing one is refused, naming it.
    """
    folder = Path(folder)
    root = folder.resolve()
    media = [(f"clip {c.id!r}", p) for c in clips for p in c.media()]
    media += [(f"table {t.title!r}", p) for t in tables for p in t.thumbnails if p is not None]
    for what, p in media:
        resolved = Path(p).resolve()
        if not resolved.is_file():
            raise FileNotFoundError(f"report of {what}: {p} does not exist")
        if not resolved.is_relative_to(root):
            raise ValueError(
                f"report of {what}: {p} is outside the report folder {folder}; "
                "write the media under it so that the folder can be copied whole"
            )
    return atomic_write_text(
        folder / REPORT_NAME, render_report(folder, title, clips, tables, notes)
    )

"""``OUT/index.html`` of ``apps/bench eval``: the results tables, sortable, in one file.

The tables are those of ``table.csv`` (one row per method x source) and
``per_video.csv``, read back from the texts ``trajloom.metrics.result_texts`` gives, so
the page and the CSV files never disagree.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from trajloom.data.report import Table, write_report

__all__ = ["bench_tables", "write_bench_report"]

_TABLES = (
    ("csv", "methods x sources (lower is better)"),
    ("per_video", "per video"),
)


def _cell(text: str) -> str | float | None:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def bench_tables(texts: dict[str, str]) -> list[Table]:
    """Sortable tables from the CSV texts of ``result_texts`` (kinds ``csv``, ``per_video``)."""
    tables = []
    for kind, title in _TABLES:
        header, *rows = list(csv.reader(io.StringIO(texts[kind])))
        tables.append(Table(title, header, [[_cell(c) for c in row] for row in rows]))
    return tables


def write_bench_report(
    out: Path, texts: dict[str, str], settings: dict[str, Any], failures: list[str]
) -> Path:
    """Write ``out/index.html``: the settings, the failures and the tables."""
    notes = [f"settings: {', '.join(f'{k}={v}' for k, v in settings.items())}"]
    notes += [f"failed: {f}" for f in failures]
    return write_report(out, "TrajLoomBench results", tables=bench_tables(texts), notes=notes)

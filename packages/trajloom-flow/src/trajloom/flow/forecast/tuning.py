"""Baselines tuned as well as the model: their windows chosen on development clips.

A forecasting model is judged against simple extrapolation tuned as carefully as itself
(Schöller et al. 2020). :func:`choose_baseline_windows` scores every candidate window of
constant velocity and of the least-squares line on *development* clips (never the clips
that are reported) and returns the best per kind, with every candidate's score, for the
results file. :func:`baseline_rows` names the rows an evaluation then reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trajloom.encoding import GridSpec
from trajloom.flow.forecast.forecasters import MIN_WINDOWS, BaselineForecaster, baseline_name
from trajloom.flow.forecast.harness import ClipLike, forecast_clip

__all__ = ["WindowChoice", "baseline_rows", "choose_baseline_windows", "window_candidates"]

#: ``score(samples "k t n 2", gt "t n 2", visibility "t n") -> float`` (lower is better),
#: e.g. the mean ADE of ``trajloom.metrics.sample_errors``; NaN when nothing is visible.
ClipScore = Callable[[np.ndarray, np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class WindowChoice:
    """The window chosen for one baseline kind, and the dev score of every candidate."""

    kind: str
    window: int
    scores: dict[int, float]
    clips: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": baseline_name(self.kind, self.window),
            "window": self.window,
            "dev_scores": {str(w): s for w, s in self.scores.items()},
            "dev_clips": self.clips,
        }


def window_candidates(kind: str, history: int, windows: Iterable[int]) -> list[int]:
    """The ``windows`` a ``kind`` baseline can use with ``history`` frames, sorted."""
    high = history - (kind == "constvel")
    return sorted({int(w) for w in windows if MIN_WINDOWS[kind] <= int(w) <= high})


def choose_baseline_windows(
    clips: Sequence[ClipLike],
    grid: GridSpec,
    history: int,
    future: int,
    candidates: dict[str, Iterable[int]],
    score: ClipScore,
) -> dict[str, WindowChoice]:
    """For each kind of ``candidates`` (``constvel``, ``linear``), the window with the
    lowest mean ``score`` over ``clips`` (clips with nothing visible are left out; ties go
    to the shorter window). ``clips`` must be development clips with their true future.

    Raises ValueError when no clip has a true future or a kind has no usable candidate.
    """
    scored = [c for c in clips if c.fut_tracks is not None and c.fut_vis is not None]
    if not scored:
        raise ValueError("choosing baseline windows needs development clips with a future")
    out: dict[str, WindowChoice] = {}
    for kind, windows in candidates.items():
        usable = window_candidates(kind, history, windows)
        if not usable:
            raise ValueError(
                f"no {kind} window among {sorted(windows)} fits {history} history frames"
            )
        scores = {}
        for w in usable:
            method = BaselineForecaster(kind, grid, history, future, window=w)
            values = []
            for clip in scored:
                assert clip.fut_tracks is not None and clip.fut_vis is not None
                forecast = forecast_clip(method, clip, num_samples=1, seed=0)
                values.append(score(forecast.tracks, clip.fut_tracks, clip.fut_vis))
            finite = [v for v in values if np.isfinite(v)]
            scores[w] = float(np.mean(finite)) if finite else float("inf")
        best = min(usable, key=lambda w: (scores[w], w))
        out[kind] = WindowChoice(kind, best, scores, len(scored))
    return out


def baseline_rows(choices: dict[str, WindowChoice]) -> dict[str, tuple[str, int | None]]:
    """The baseline rows of an evaluation table, by row name: static, constant velocity
    over one frame (the classic two-frame estimate) and at the chosen window, and the line
    at its chosen window. A chosen window of 1 gives one constant-velocity row."""
    rows: dict[str, tuple[str, int | None]] = {"static": ("static", None)}
    rows["constvel_1"] = ("constvel", 1)
    for kind in ("constvel", "linear"):
        if kind in choices:
            rows[f"{kind}_{choices[kind].window}"] = (kind, choices[kind].window)
    return rows

"""Trackers by name, and the grid convenience every TrajLoom app uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from trajloom.data.tracking.base import Tracker, TrackResult
from trajloom.encoding import GridSpec

__all__ = ["TRACKERS", "make_tracker", "track_grid"]


def _flow(**kwargs) -> Tracker:
    from trajloom.data.tracking.flow import FlowTracker, FlowTrackerConfig

    return FlowTracker(FlowTrackerConfig(**kwargs))


def _alltracker(**kwargs) -> Tracker:
    from trajloom.data.tracking.alltracker import AllTracker, AllTrackerConfig

    return AllTracker(AllTrackerConfig(**kwargs))


def _cotracker3(**kwargs) -> Tracker:
    from trajloom.data.tracking.cotracker import CoTracker3, CoTracker3Config

    return CoTracker3(CoTracker3Config(**kwargs))


#: Name -> factory taking the backend config's fields as keyword arguments.
TRACKERS: dict[str, Callable[..., Tracker]] = {
    "flow": _flow,
    "alltracker": _alltracker,
    "cotracker3": _cotracker3,
}


def make_tracker(name: str = "flow", **kwargs) -> Tracker:
    """Build a tracker by name: ``"flow"`` (default, no weights), ``"alltracker"``, ``"cotracker3"``.

    Keyword arguments are the fields of the backend's config dataclass
    (``FlowTrackerConfig``, ``AllTrackerConfig``, ``CoTracker3Config``); the learned
    backends need ``repo_path`` (a local clone) and ``weights_path`` and never download.
    """
    factory = TRACKERS.get(name)
    if factory is None:
        raise ValueError(f"unknown tracker {name!r}; choose one of {sorted(TRACKERS)}")
    return factory(**kwargs)


def track_grid(
    frames: np.ndarray | Sequence[np.ndarray],
    spec: GridSpec = GridSpec(),
    tracker: Tracker | None = None,
) -> TrackResult:
    """Track the ``spec`` grid from frame 0 through ``frames "t h w 3"`` uint8.

    Point ``(i, j)`` starts at ``(x, y) = (j * s, i * s)`` of the ``spec`` working
    resolution (row-major, ``N = spec.num_points``), as ``trajloom.encoding`` seeds it.
    Frames of another size are tracked at their own size with the seeds mapped by
    ``rescale_tracks``; the result is in ``spec`` pixels either way: tracks
    ``"t n 2"``, visibility ``"t n"``. ``tracker`` defaults to ``make_tracker("flow")``.
    """
    return (tracker or make_tracker("flow")).track(frames, grid=spec)

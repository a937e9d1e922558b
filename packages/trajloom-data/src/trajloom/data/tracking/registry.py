"""Trackers by name, and the grid convenience every TrajLoom app uses."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from trajloom.data.tracking._clone import TrackerError
from trajloom.data.tracking.base import Tracker, TrackResult
from trajloom.encoding import GridSpec

__all__ = ["TRACKERS", "TrackerError", "make_tracker", "track_grid"]

#: Name -> (module, tracker class, config class), imported on first use.
_BACKENDS = {
    "flow": ("trajloom.data.tracking.flow", "FlowTracker", "FlowTrackerConfig"),
    "alltracker": ("trajloom.data.tracking.alltracker", "AllTracker", "AllTrackerConfig"),
    "cotracker3": ("trajloom.data.tracking.cotracker", "CoTracker3", "CoTracker3Config"),
}

#: What to do when a learned tracker's clone cannot be imported.
_INSTALL = {
    "alltracker": "install what its code imports: pip install 'trajloom-data[alltracker]' "
    "(torchvision), or uv sync in this repository",
    "cotracker3": "its code needs only torch and numpy: check that repo_path is a clone of "
    "facebookresearch/co-tracker",
}


def _backend(name: str) -> tuple[type, type]:
    module, tracker, config = _BACKENDS[name]
    mod = importlib.import_module(module)
    return getattr(mod, tracker), getattr(mod, config)


def _build(name: str, **kwargs) -> Tracker:
    tracker_cls, config_cls = _backend(name)
    return tracker_cls(config_cls(**kwargs))


#: Name -> factory taking the backend config's fields as keyword arguments.
TRACKERS: dict[str, Callable[..., Tracker]] = {name: partial(_build, name) for name in _BACKENDS}


def make_tracker(name: str = "flow", **kwargs) -> Tracker:
    """Build a tracker by name: ``"flow"`` (default, no weights), ``"alltracker"``, ``"cotracker3"``.

    Keyword arguments are the fields of the backend's config dataclass
    (``FlowTrackerConfig``, ``AllTrackerConfig``, ``CoTracker3Config``); the learned
    backends need ``repo_path`` (a local clone) and ``weights_path`` and never download.
    Every failure (unknown name or option, a missing clone or weights file, an import
    error in the clone, weights that do not fit) raises :class:`TrackerError`, a
    ``ValueError`` whose one-line message names the tracker, the path and what to do.
    """
    if name not in _BACKENDS:
        raise TrackerError(f"unknown tracker {name!r}; choose one of {sorted(_BACKENDS)}")
    try:
        return _build(name, **kwargs)
    except TrackerError:
        raise
    except Exception as err:  # re-raised as one line with what to do; the cause is chained
        raise TrackerError(_explain(name, kwargs, err)) from err


def _explain(name: str, kwargs: dict, err: Exception) -> str:
    """One line: which tracker, which paths, what went wrong, what to do."""
    paths = ", ".join(f"{k}={kwargs[k]!r}" for k in ("repo_path", "weights_path") if k in kwargs)
    where = f"tracker {name}" + (f" ({paths})" if paths else "")
    text = " ".join(str(err).split())
    if text.startswith(f"{name}: "):
        text = text[len(name) + 2 :]
    if isinstance(err, TypeError):
        fields = dataclasses.fields(_backend(name)[1])
        names = [f.name for f in fields]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            return f"{where}: unknown option(s) {unknown}; its options are {names}"
        missing = [
            f.name
            for f in fields
            if f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            return (
                f"{where}: needs {', '.join(missing)}; give them as options (repo_path: a "
                "local clone of the authors' repository, weights_path: its weights file)"
            )
        fix = "check the option values"
    elif isinstance(err, ImportError):
        fix = _INSTALL.get(name, "install what it imports")
        text = f"importing its code failed ({type(err).__name__}: {text})"
    elif isinstance(err, FileNotFoundError | ValueError):  # our checks: they name the path
        return f"tracker {name}: {text}"
    elif isinstance(err, OSError):  # URLError included: code in the clone reached for the network
        fix = "nothing here downloads; report this with the clone's commit"
        text = f"{type(err).__name__}: {text}"
    else:  # e.g. RuntimeError from load_state_dict(strict=True) on weights of another model
        fix = "give the weights released for this model and this clone's commit"
        text = f"{type(err).__name__}: {text[:300]}"
    return f"{where}: {text}; {fix}"


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

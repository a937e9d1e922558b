"""Point tracking for raw video: weights-free by default, measured against real annotations.

``make_tracker("flow")`` (the default) needs no learned weights: chained OpenCV DIS
optical flow with forward-backward occlusion checks and Lucas-Kanade re-anchoring to
the query frame. ``make_tracker("alltracker" | "cotracker3", repo_path=..., weights_path=...)``
runs those models from a local clone and weights file, never downloading.

Every tracker takes frames ``"t h w 3"`` uint8 and either query points ``"n 3"`` rows
``(t, x, y)`` (frame index, then pixels) or a grid, tracks each point forward and
backward from its own frame, and returns a :class:`TrackResult` with tracks
``"t n 2"`` ``(x, y)`` pixels and visibility ``"t n"``. :func:`track_grid` seeds a
``GridSpec`` grid at frame 0 the way ``trajloom.encoding`` does.
"""

from trajloom.data.tracking.base import Tracker, TrackResult, as_frames, as_queries, grid_queries
from trajloom.data.tracking.flow import FlowTracker, FlowTrackerConfig
from trajloom.data.tracking.metrics import evaluation_mask, mean_metrics, tapvid_metrics
from trajloom.data.tracking.registry import TRACKERS, TrackerError, make_tracker, track_grid

__all__ = [
    "TRACKERS",
    "FlowTracker",
    "FlowTrackerConfig",
    "TrackResult",
    "Tracker",
    "TrackerError",
    "as_frames",
    "as_queries",
    "evaluation_mask",
    "grid_queries",
    "make_tracker",
    "mean_metrics",
    "tapvid_metrics",
    "track_grid",
]

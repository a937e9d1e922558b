"""Scoring a tracker against annotated points: real annotations and synthetic scenes.

Real sets are folders holding one ``*_tap.npz`` (``tracks "n t 2"`` pixels, NaN where
occluded or unannotated; ``occluded "n t"``; BADJA sets also ``annotated_frames "t"``)
beside the video (a file, or a ``frames/`` folder), as in ``shared/data/annotated``.
Each point is queried at its first visible annotated frame and scored on the later
annotated frames with :func:`~trajloom.data.tracking.metrics.tapvid_metrics`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trajloom.data.tracking.base import Tracker
from trajloom.data.tracking.metrics import tapvid_metrics

__all__ = [
    "AnnotatedClip",
    "evaluate_on_clip",
    "evaluate_on_scene",
    "first_visible_queries",
    "load_annotated",
]

_VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


@dataclass(frozen=True)
class AnnotatedClip:
    """Ground truth of one annotated video, time-major.

    ``tracks "t n 2"`` float32 ``(x, y)`` pixels (NaN where not visible),
    ``visibility "t n"`` bool, ``annotated "t"`` bool (frames that carry labels; on
    others visibility means nothing), ``size = (W, H)``, ``video``: file or folder whose
    frames ``[start, start + t)`` the arrays describe.
    """

    name: str
    video: Path
    tracks: np.ndarray
    visibility: np.ndarray
    annotated: np.ndarray
    size: tuple[int, int]
    start: int = 0  # index of the clip's first frame in ``video``

    @property
    def num_frames(self) -> int:
        return self.tracks.shape[0]

    def window(self, start: int, num_frames: int) -> AnnotatedClip:
        """Frames ``[start, start + num_frames)`` of this clip (read the video from ``.start``)."""
        if start < 0 or num_frames < 2 or start + num_frames > self.num_frames:
            raise ValueError(
                f"{self.name}: window [{start}, {start + num_frames}) does not fit in its "
                f"{self.num_frames} frames (or has fewer than 2)"
            )
        stop = start + num_frames
        return AnnotatedClip(
            self.name,
            self.video,
            self.tracks[start:stop],
            self.visibility[start:stop],
            self.annotated[start:stop],
            self.size,
            self.start + start,
        )


def load_annotated(folder: str | Path) -> AnnotatedClip:
    """Load the ``*_tap.npz`` of an annotated folder (one npz, one video or ``frames/``)."""
    folder = Path(folder)
    npzs = sorted(folder.glob("*_tap*.npz"))
    if len(npzs) != 1:
        raise FileNotFoundError(
            f"{folder}: expected exactly one '*_tap*.npz' annotation file, found {len(npzs)}"
        )
    videos = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in _VIDEO_SUFFIXES]
    if (folder / "frames").is_dir():
        videos.append(folder / "frames")
    if len(videos) != 1:
        raise FileNotFoundError(
            f"{folder}: expected one video file or a frames/ folder, found {len(videos)}"
        )
    with np.load(npzs[0]) as d:
        tracks = np.swapaxes(d["tracks"].astype(np.float32), 0, 1)
        occluded = np.swapaxes(d["occluded"].astype(bool), 0, 1)
        annotated = (
            d["annotated_frames"].astype(bool)
            if "annotated_frames" in d.files
            else np.ones(tracks.shape[0], bool)
        )
        size = (int(d["width"]), int(d["height"]))
    visibility = ~occluded & np.isfinite(tracks).all(-1) & annotated[:, None]
    return AnnotatedClip(folder.name, videos[0], tracks, visibility, annotated, size)


def first_visible_queries(clip: AnnotatedClip) -> tuple[np.ndarray, np.ndarray]:
    """Queries ``"m 3"`` rows ``(t, x, y)`` at each point's first visible annotated frame.

    Returns the queries and ``keep "n"`` bool: points never visible, or visible only on
    the last annotated frame (nothing left to score), are left out.
    """
    vis = clip.visibility
    t_count = vis.shape[0]
    first = np.where(vis.any(0), vis.argmax(0), t_count)
    later = np.array(
        [
            bool((vis[first[i] + 1 :, i] | clip.annotated[first[i] + 1 :]).any())
            if first[i] < t_count
            else False
            for i in range(vis.shape[1])
        ]
    )
    keep = (first < t_count) & later
    idx = np.flatnonzero(keep)
    xy = clip.tracks[first[idx], idx]
    return np.concatenate([first[idx, None].astype(np.float64), xy], axis=1), keep


def evaluate_on_clip(tracker: Tracker, frames: np.ndarray, clip: AnnotatedClip) -> dict[str, float]:
    """Track ``clip``'s points through ``frames "t h w 3"`` (the clip's size) and score them.

    Returns :func:`tapvid_metrics` (``"first"`` mode, annotated frames only) plus
    ``seconds`` (tracking wall time), ``frames`` and ``points``.
    """
    if frames.shape[0] != clip.num_frames or (frames.shape[2], frames.shape[1]) != clip.size:
        raise ValueError(
            f"{clip.name}: frames have shape {frames.shape} but the annotations cover "
            f"{clip.num_frames} frames of {clip.size[0]}x{clip.size[1]}"
        )
    queries, keep = first_visible_queries(clip)
    start = time.perf_counter()
    result = tracker.track(frames, queries)
    seconds = time.perf_counter() - start
    metrics = tapvid_metrics(
        result.tracks,
        result.visibility,
        clip.tracks[:, keep],
        clip.visibility[:, keep],
        queries[:, 0].astype(np.intp),
        clip.size,
        evaluate=clip.annotated,
    )
    metrics.update(seconds=seconds, frames=float(clip.num_frames), points=float(keep.sum()))
    return metrics


def evaluate_on_scene(
    tracker: Tracker, frames: np.ndarray, tracks: np.ndarray, visibility: np.ndarray
) -> dict[str, float]:
    """Track the points of a synthetic scene from frame 0 and score them (``"first"`` mode).

    ``frames "t h w 3"`` uint8, exact ``tracks "t n 2"`` pixels and ``visibility "t n"``
    (e.g. ``trajloom.data.synthetic.make_scene``). Points hidden at frame 0 are left out.
    Returns :func:`tapvid_metrics` plus ``seconds``, ``frames`` and ``points``.
    """
    keep = visibility[0]
    queries = np.concatenate([np.zeros((int(keep.sum()), 1)), tracks[0, keep]], axis=1)
    size = (frames.shape[2], frames.shape[1])
    start = time.perf_counter()
    result = tracker.track(frames, queries)
    seconds = time.perf_counter() - start
    metrics = tapvid_metrics(
        result.tracks,
        result.visibility,
        tracks[:, keep],
        visibility[:, keep],
        np.zeros(int(keep.sum()), np.intp),
        size,
    )
    metrics.update(seconds=seconds, frames=float(frames.shape[0]), points=float(keep.sum()))
    return metrics

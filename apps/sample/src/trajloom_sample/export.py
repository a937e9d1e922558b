"""What the sample app writes: released-layout run folders and Wan-Move exports.

Run folders follow the released ``run_trajloom_generator.py``: one folder per video with
``query_xy.npy``, ``pred_tracks.npy`` "tf n 2" float32, ``pred_visibility.npy`` "tf n"
uint8, ``pred_visibility_prob.npy``, ``meta.json`` and, when the input holds the true
future, ``gt_tracks.npy`` / ``gt_visibility.npy``. Sample k of a video goes to
``OUT/runs/sample_<k>/<id>/``, so each ``runs/sample_<k>`` is a complete runs root for
the released benchmark scripts and ``trajloom-metrics score``.

Wan-Move (ali-vilab/Wan-Move, ``WanMove.generate``) takes tracks "1 F N 2" float32 in
pixels of its conditioning image and visibility "1 F N" bool, with frame 0 being the
conditioning image itself: it copies the image's latent features found at each track's
frame-0 position to the track's positions at later latent steps (every 4th frame), and
skips points that are invisible or outside the image. The conditioning image of a
forecast is the last history frame, so the export is that frame's history positions
followed by the first ``F - 1`` predicted future frames, with ``F = tf`` (81 for the
paper: Wan-Move's 4n+1 frame count). The image is written beside the arrays as
``<id>_image.jpg``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from trajloom.data.formats import (
    RunFolder,
    sanitize_predictions,
    write_run_folder,
    write_wanmove,
    write_wanmove_pins,
)
from trajloom.encoding import GridSpec, query_points

__all__ = [
    "wanmove_arrays",
    "write_sample_runs",
    "write_wanmove_export",
]


def write_sample_runs(
    runs_root: Path,
    clip_id: str,
    *,
    grid: GridSpec,
    pred_tracks: np.ndarray,
    pred_visibility: np.ndarray,
    pred_probability: np.ndarray | None,
    gt_tracks: np.ndarray | None,
    gt_visibility: np.ndarray | None,
    meta: dict[str, Any],
) -> list[Path]:
    """Write one run folder per sample: ``runs_root/sample_<k>/<id>/``; returns them.

    ``pred_*`` "s tf n 2" / "s tf n"; ground truth "tf n 2" / "tf n" or None.
    """
    query = query_points(grid).numpy()
    folders = []
    for k in range(pred_tracks.shape[0]):
        tracks, vis = sanitize_predictions(pred_tracks[k], pred_visibility[k], grid.size)
        run = RunFolder(
            query_xy=query,
            pred_tracks=tracks,
            pred_visibility=vis,
            gt_tracks=gt_tracks,
            gt_visibility=gt_visibility,
            pred_visibility_prob=None if pred_probability is None else pred_probability[k],
            meta={**meta, "sample_index": k, "H": grid.height, "W": grid.width},
        )
        folders.append(write_run_folder(runs_root / f"sample_{k:03d}" / clip_id, run))
    return folders


def wanmove_arrays(
    hist_tracks: np.ndarray,
    hist_vis: np.ndarray,
    fut_tracks: np.ndarray,
    fut_vis: np.ndarray,
    *,
    num_frames: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Tracks "F n 2" and visibility "F n" for Wan-Move: last history frame + future.

    ``num_frames`` F defaults to ``tf`` (= 81 for the paper, Wan-Move's frame count);
    it must lie in ``[2, tf + 1]``.
    """
    tf = fut_tracks.shape[0]
    f = tf if num_frames is None else int(num_frames)
    if not 2 <= f <= tf + 1:
        raise ValueError(
            f"Wan-Move frames must be in [2, {tf + 1}] for a {tf}-frame future, got {f}"
        )
    tracks = np.concatenate([hist_tracks[-1:], fut_tracks[: f - 1]], axis=0).astype(np.float32)
    vis = np.concatenate([hist_vis[-1:], fut_vis[: f - 1]], axis=0).astype(bool)
    return tracks, vis


def write_wanmove_export(
    out_dir: Path,
    export_id: str,
    *,
    hist_tracks: np.ndarray,
    hist_vis: np.ndarray,
    fut_tracks: np.ndarray,
    fut_vis: np.ndarray,
    size: tuple[int, int],
    image: np.ndarray | None,
    num_frames: int | None = None,
    markers: np.ndarray | None = None,
) -> list[Path]:
    """Write ``<id>_tracks.npy`` "1 F n 2" float32, ``<id>_visibility.npy`` "1 F n" bool,
    and the conditioning image ``<id>_image.jpg`` (the last history frame) when given.

    Tracks are in pixels of ``size`` (the working resolution, which is the image's).
    ``markers`` "k 4" (point, future frame, x, y) of pins: also ``<id>_pins.json`` and
    ``<id>_pins.jpg`` (``write_wanmove_pins``), in export frames (future frame + 1);
    targets past the export's last frame are left out.
    """
    fut_tracks, fut_vis = sanitize_predictions(fut_tracks, fut_vis, size)
    tracks, vis = wanmove_arrays(hist_tracks, hist_vis, fut_tracks, fut_vis, num_frames=num_frames)
    paths = list(write_wanmove(out_dir, export_id, tracks, vis))
    if image is not None:
        path = Path(out_dir) / f"{export_id}_image.jpg"
        cv2.imwrite(
            str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        paths.append(path)
    if markers is not None and len(markers):
        shifted = np.asarray(markers, np.float64).reshape(-1, 4).copy()
        shifted[:, 1] += 1  # export frame 0 is the conditioning image
        shifted = shifted[shifted[:, 1] < len(tracks)]
        paths += write_wanmove_pins(out_dir, export_id, shifted, image)
    return paths

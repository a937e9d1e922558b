"""Run folders: one video's predictions as the released benchmark scripts read them.

A folder holds `query_xy.npy` "n 2", `pred_tracks.npy` and `gt_tracks.npy` "tf n 2",
`pred_visibility.npy` and `gt_visibility.npy` "tf n" uint8 (bool in memory),
`pred_visibility_prob.npy` "tf n" and `meta.json`.

A run folder is written whole or not at all (:func:`write_run_folder`: a temporary
sibling folder renamed into place), so a folder never mixes the files of two runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trajloom.data.checks import FormatError, check_tracks
from trajloom.data.outputs import OutputError

__all__ = [
    "PREDICTION_CLIP_EPS",
    "RunFolder",
    "read_run_folder",
    "sanitize_predictions",
    "write_run_folder",
]


@dataclass
class RunFolder:
    """One video's predictions as the released benchmark scripts read them.

    `query_xy` "n 2"; `gt_tracks`, `pred_tracks` "tf n 2"; `gt_visibility`,
    `pred_visibility` "tf n" bool in memory (uint8 on disk); `pred_visibility_prob` "tf n".
    """

    query_xy: np.ndarray
    pred_tracks: np.ndarray
    pred_visibility: np.ndarray
    gt_tracks: np.ndarray | None = None
    gt_visibility: np.ndarray | None = None
    pred_visibility_prob: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


#: The released clip of predicted tracks into the image: [0, W - 1 - eps] x [0, H - 1 - eps].
PREDICTION_CLIP_EPS = 1e-3


def sanitize_predictions(
    tracks: np.ndarray, visibility: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The released post-processing of predictions: outside the image = invisible, then clip.

    ``tracks`` "... t n 2" pixels of ``size`` = (w, h); ``visibility`` "... t n". A point is
    visible only if it was and lies in ``[0, w - 1] x [0, h - 1]`` with finite coordinates;
    then NaN and infinite coordinates become 0 and every coordinate is clipped into
    ``[0, w - 1 - eps] x [0, h - 1 - eps]`` (eps = :data:`PREDICTION_CLIP_EPS`). Returns
    new float32 tracks and bool visibility; the inputs are not changed.

    Model output reaches this function finite: ``trajloom.flow.forecast.forecast_clip``
    refuses a forecast with NaN or infinite numbers (a broken model is a failed clip, not
    a future at 0); the NaN rule here is the released scripts' for run folders made
    elsewhere.
    """
    width, height = size
    tracks = np.asarray(tracks, dtype=np.float32)
    x, y = tracks[..., 0], tracks[..., 1]
    inside = (
        (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1) & np.isfinite(x) & np.isfinite(y)
    )
    vis = np.asarray(visibility).astype(bool) & inside
    out = np.nan_to_num(tracks, nan=0.0, posinf=0.0, neginf=0.0)
    out[..., 0] = np.clip(out[..., 0], 0.0, float(width - 1) - PREDICTION_CLIP_EPS)
    out[..., 1] = np.clip(out[..., 1], 0.0, float(height - 1) - PREDICTION_CLIP_EPS)
    return out, vis


def write_run_folder(folder: str | Path, run: RunFolder) -> Path:
    """Write a RunFolder's arrays (`query_xy.npy`, `pred_tracks.npy`, ... , `meta.json`).

    The files go into a temporary sibling folder first, which then replaces ``folder``
    (a previous run's folder is removed only once the new one is complete): a folder is
    never a mix of two runs' files, and a crash or a full disk leaves the previous folder
    or none. Raises FormatError for bad arrays and ``OutputError`` naming the folder when
    it cannot be written.
    """
    folder = Path(folder)
    pred = np.asarray(run.pred_tracks, dtype=np.float32)
    pvis = np.asarray(run.pred_visibility)
    check_tracks(pred, pvis, f"{folder}/pred_tracks", allow_nonfinite=False)
    query = np.asarray(run.query_xy, dtype=np.float32)
    if query.shape != (pred.shape[1], 2):
        raise FormatError(
            f"{folder}: query_xy must be 'n 2' = {(pred.shape[1], 2)}, got {query.shape}"
        )
    arrays: dict[str, np.ndarray] = {
        "query_xy.npy": query,
        "pred_tracks.npy": pred,
        "pred_visibility.npy": pvis.astype(bool).astype(np.uint8),
    }
    if run.pred_visibility_prob is not None:
        prob = np.asarray(run.pred_visibility_prob, dtype=np.float32)
        if prob.shape != pvis.shape:
            raise FormatError(f"{folder}: pred_visibility_prob shape {prob.shape} != {pvis.shape}")
        arrays["pred_visibility_prob.npy"] = prob
    if run.gt_tracks is not None:
        gt = np.asarray(run.gt_tracks, dtype=np.float32)
        gvis = np.asarray(
            run.gt_visibility if run.gt_visibility is not None else np.ones(gt.shape[:2], bool)
        )
        check_tracks(gt, gvis, f"{folder}/gt_tracks", allow_nonfinite=True)
        arrays["gt_tracks.npy"] = gt
        arrays["gt_visibility.npy"] = gvis.astype(bool).astype(np.uint8)
    meta = json.dumps(run.meta, indent=2, sort_keys=True)
    _replace_folder(folder, arrays, meta)
    return folder


def _replace_folder(folder: Path, arrays: dict[str, np.ndarray], meta: str) -> None:
    """Write ``arrays`` and ``meta.json`` into a temporary sibling, then swap it in."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for name, array in arrays.items():
            np.save(tmp / name, array)
        (tmp / "meta.json").write_text(meta)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    except OSError as err:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        if old.exists() and not folder.exists():
            os.replace(old, folder)  # the previous run's folder stays as it was
        raise OutputError(
            f"could not write run folder {folder}: {err.strerror or err}; free space or "
            "choose another output folder"
        ) from err
    shutil.rmtree(old, ignore_errors=True)


def read_run_folder(folder: str | Path) -> RunFolder:
    """Read a run folder written by write_run_folder (or the released scripts)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FormatError(f"{folder}: run folder does not exist")

    def _opt(name: str) -> np.ndarray | None:
        p = folder / name
        return np.load(p, allow_pickle=False) if p.is_file() else None

    for required in ("query_xy.npy", "pred_tracks.npy", "pred_visibility.npy"):
        if not (folder / required).is_file():
            raise FormatError(f"{folder}: {required} is missing")
    gvis = _opt("gt_visibility.npy")
    meta_file = folder / "meta.json"
    return RunFolder(
        query_xy=np.load(folder / "query_xy.npy"),
        pred_tracks=np.load(folder / "pred_tracks.npy"),
        pred_visibility=np.load(folder / "pred_visibility.npy").astype(bool),
        gt_tracks=_opt("gt_tracks.npy"),
        gt_visibility=None if gvis is None else gvis.astype(bool),
        pred_visibility_prob=_opt("pred_visibility_prob.npy"),
        meta=json.loads(meta_file.read_text()) if meta_file.is_file() else {},
    )

"""Readers for the released run-folder layout, and scoring of a whole runs root.

A run folder holds one video: `pred_tracks.npy` `[t, n, 2]` (pixels), and usually
`gt_tracks.npy` `[t, n, 2]`, `gt_visibility.npy` / `pred_visibility.npy` `[t, n]`,
`pred_visibility_prob.npy`, `query_xy.npy` `[n, 2]`, `meta.json`. Discovery and
loading follow the released scripts of zewei-Zhang/TrajLoom: a root that itself
holds the files is one run; otherwise every folder below it that holds them, sorted;
FVMD and VEPE use folders with both `gt_tracks.npy` and `pred_tracks.npy`, FlowTV and
DivCurlE every folder with `pred_tracks.npy`; a leading batch axis of 1 is dropped;
mismatched lengths are cropped to the common frames and tracks (with a note); the
grid and track order come from `query_xy.npy` (`trajloom.metrics.grid.infer_grid`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trajloom.metrics.flowfield import DEFAULT_GRID_STRIDE, div_curl_energy, flow_tv, video_mean
from trajloom.metrics.fvmd import FVMDAccumulator, FVMDConfig
from trajloom.metrics.grid import infer_grid
from trajloom.metrics.vepe import VEPEAccumulator

__all__ = [
    "RunVideo",
    "discover_run_dirs",
    "load_run",
    "load_tracks",
    "load_visibility",
    "score_runs",
]

PRED_TRACKS = "pred_tracks.npy"
GT_TRACKS = "gt_tracks.npy"
GT_VISIBILITY = "gt_visibility.npy"
QUERY_XY = "query_xy.npy"
META = "meta.json"


@dataclass
class RunVideo:
    """One run folder: tracks `[t, n, 2]` pixels, visibility `[t, n]` bool."""

    path: Path
    pred_tracks: np.ndarray
    gt_tracks: np.ndarray | None = None
    visibility: np.ndarray | None = None
    gt_visibility: np.ndarray | None = None
    query_xy: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def discover_run_dirs(root: str | Path, *, require_gt: bool = True) -> list[Path]:
    """Folders under `root` holding `pred_tracks.npy` (and `gt_tracks.npy` if `require_gt`)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"runs root must be an existing folder; got {str(root)!r}")

    def ok(d: Path) -> bool:
        return (d / PRED_TRACKS).exists() and (not require_gt or (d / GT_TRACKS).exists())

    if ok(root):
        return [root]
    return sorted({p.parent for p in root.rglob(PRED_TRACKS) if ok(p.parent)})


def load_tracks(path: str | Path) -> np.ndarray:
    """Load `[t, n, 2]` tracks (a leading axis of 1 is dropped) or raise a `ValueError`."""
    arr = np.load(str(path))
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[-1] != 2:
        raise ValueError(f"{path} must hold tracks of shape [T, N, 2]; got {arr.shape}")
    return arr


def load_visibility(path: str | Path) -> np.ndarray | None:
    """Load `[t, n]` visibility as bool (`> 0.5`), None if the file is absent."""
    path = Path(path)
    if not path.exists():
        return None
    arr = np.load(str(path))
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{path} must hold visibility of shape [T, N]; got {arr.shape}")
    return arr > 0.5


def load_run(run_dir: str | Path, *, visibility_name: str = GT_VISIBILITY) -> RunVideo:
    """Read one run folder; `visibility_name` picks the file used for masking/gating."""
    d = Path(run_dir)
    query = np.load(str(d / QUERY_XY)) if (d / QUERY_XY).exists() else None
    meta = json.loads((d / META).read_text()) if (d / META).exists() else {}
    return RunVideo(
        path=d,
        pred_tracks=load_tracks(d / PRED_TRACKS),
        gt_tracks=load_tracks(d / GT_TRACKS) if (d / GT_TRACKS).exists() else None,
        visibility=load_visibility(d / visibility_name),
        gt_visibility=load_visibility(d / GT_VISIBILITY),
        query_xy=query,
        meta=meta,
    )


def _crop(arrays: list[np.ndarray | None], t: int, n: int) -> list[np.ndarray | None]:
    return [None if a is None else a[:t, :n] for a in arrays]


def score_runs(
    runs_root: str | Path,
    *,
    fvmd_config: FVMDConfig | None = None,
    use_gt_visibility: bool = False,
    use_visibility: bool = False,
    visibility_name: str = GT_VISIBILITY,
    grid_stride: float = DEFAULT_GRID_STRIDE,
    vepe_use_visibility: bool = True,
    exclude_first_frame: bool = False,
) -> dict[str, Any]:
    """Score every run folder under `runs_root`, streaming (one video in memory at a time).

    Args:
        runs_root: a run folder or a folder of run folders.
        fvmd_config: `FVMDConfig` (clip length and stride, ...).
        use_gt_visibility: gate FVMD motion vectors by `visibility_name`.
        use_visibility: mask FlowTV / DivCurlE by `visibility_name`.
        visibility_name: visibility file used by both options (released default).
        grid_stride: grid spacing in pixels for FlowTV / DivCurlE.
        vepe_use_visibility: mask VEPE by `gt_visibility.npy` (released default).
        exclude_first_frame: leave frame 0 out of VEPE.

    Returns:
        JSON-ready dict: `fvmd`, `fvmd_velocity`, `fvmd_acceleration`, `flow_tv`,
        `div_curl_energy`, `vepe`, `num_videos`, counts, settings, `notes` (why a
        metric is null), and `per_video` values.
    """
    cfg = fvmd_config or FVMDConfig()
    root = Path(runs_root)
    dirs = discover_run_dirs(root, require_gt=False)
    notes: list[str] = []
    if not dirs:
        raise ValueError(f"runs_root {str(root)!r} holds no run folder with {PRED_TRACKS}")
    fvmd_acc = FVMDAccumulator(cfg)
    vepe_acc = VEPEAccumulator(exclude_first_frame=exclude_first_frame)
    fvmd_error: str | None = None
    tv_values: list[float] = []
    dc_values: list[float] = []
    per_video: list[dict[str, Any]] = []
    num_paired = 0
    missing_vis = 0
    cropped = 0
    for d in dirs:
        run = load_run(d, visibility_name=visibility_name)
        name = str(d.relative_to(root)) if d != root else "."
        entry: dict[str, Any] = {"video": name}
        pred = run.pred_tracks.astype(np.float32)
        vis = run.visibility
        if vis is None and (use_visibility or use_gt_visibility):
            missing_vis += 1
        entry.update(_flow_entry(run, pred, vis if use_visibility else None, grid_stride))
        tv_values.append(entry["flow_tv"])
        dc_values.append(entry["div_curl_energy"])
        if run.gt_tracks is not None:
            num_paired += 1
            gt = run.gt_tracks
            t, n = min(gt.shape[0], pred.shape[0]), min(gt.shape[1], pred.shape[1])
            if gt.shape != pred.shape:
                cropped += 1
            gt_c, pred_c = gt[:t, :n], run.pred_tracks[:t, :n]
            vis_c, gvis_c = _crop([vis, run.gt_visibility], t, n)
            vepe_vis = gvis_c if vepe_use_visibility else None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    entry["vepe"] = vepe_acc.update(pred_c, gt_c, vepe_vis)
            except ValueError as err:
                notes.append(f"vepe: left out {name}: {err}")
            if fvmd_error is None:
                try:
                    hw, order = infer_grid(run.query_xy, n)
                    if order is not None:
                        gt_c, pred_c = gt_c[:, order], pred_c[:, order]
                        vis_c = None if vis_c is None else vis_c[:, order]
                    entry["fvmd_windows"] = fvmd_acc.update(
                        gt_c, pred_c, vis_c if use_gt_visibility else None, grid_hw=hw
                    )
                except ValueError as err:
                    fvmd_error = f"{name}: {err}"
        per_video.append(entry)

    result: dict[str, Any] = {
        "fvmd": None,
        "fvmd_velocity": None,
        "fvmd_acceleration": None,
        "flow_tv": None,
        "div_curl_energy": None,
        "vepe": None,
        "num_videos": len(dirs),
        "num_videos_with_gt": num_paired,
        "num_windows": fvmd_acc.num_windows,
    }
    if fvmd_error is not None:
        notes.append(f"fvmd: {fvmd_error}")
    elif num_paired == 0:
        notes.append(f"fvmd, vepe: no run folder has {GT_TRACKS}")
    else:
        try:
            r = fvmd_acc.result()
            result.update(
                fvmd=r.combined, fvmd_velocity=r.velocity, fvmd_acceleration=r.acceleration
            )
            result.update(
                grid_hw=list(fvmd_acc.grid_hw or ()),
                feature_dim_velocity=r.feature_dim_velocity,
                feature_dim_acceleration=r.feature_dim_acceleration,
            )
        except ValueError as err:
            notes.append(f"fvmd: {err}")
    if num_paired:
        if vepe_acc.count:
            result["vepe"] = vepe_acc.total / vepe_acc.count
        else:
            notes.append("vepe: no visible point with a finite error in any video")
    for key, values in (("flow_tv", tv_values), ("div_curl_energy", dc_values)):
        finite = [v for v in values if np.isfinite(v)]
        if finite:
            result[key] = video_mean(finite)
        else:
            notes.append(f"{key}: no video has a valid neighbour pair (grid or visibility)")
    if missing_vis:
        notes.append(
            f"{missing_vis} run folders lack {visibility_name}: scored without visibility there"
        )
    if cropped:
        notes.append(f"{cropped} run folders had gt and pred of different shapes: cropped")
    result.update(
        clip_len=cfg.clip_len,
        clip_stride=cfg.clip_stride,
        use_gt_visibility=use_gt_visibility,
        use_visibility=use_visibility,
        visibility_name=visibility_name,
        grid_stride=grid_stride,
        exclude_first_frame=exclude_first_frame,
        runs_root=str(root),
        notes=notes,
        per_video=per_video,
    )
    return result


def _flow_entry(
    run: RunVideo, pred: np.ndarray, vis: np.ndarray | None, grid_stride: float
) -> dict[str, Any]:
    """FlowTV and DivCurlE of one run, cropping and grid handling as released."""
    if vis is not None:
        t, n = min(pred.shape[0], vis.shape[0]), min(pred.shape[1], vis.shape[1])
        pred, vis = pred[:t, :n], vis[:t, :n]
    t, n = pred.shape[:2]
    hw, order = infer_grid(run.query_xy, n)
    if order is not None:
        pred = pred[:, order]
        vis = None if vis is None else vis[:, order]
    out: dict[str, Any] = {
        "grid_hw": list(hw),
        "flow_tv": float("nan"),
        "div_curl_energy": float("nan"),
    }
    if t < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["flow_tv"] = float(flow_tv(pred, vis, grid_hw=hw, grid_stride=grid_stride))
        out["div_curl_energy"] = float(
            div_curl_energy(pred, vis, grid_hw=hw, grid_stride=grid_stride)
        )
    return out

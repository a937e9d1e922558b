"""Readers for the released run-folder layout, and scoring of a whole runs root.

A run folder holds one video: `pred_tracks.npy` `[t, n, 2]` (pixels), and usually
`gt_tracks.npy` `[t, n, 2]`, `gt_visibility.npy` / `pred_visibility.npy` `[t, n]`,
`pred_visibility_prob.npy`, `query_xy.npy` `[n, 2]`, `meta.json`. Discovery and
loading follow the released scripts of zewei-Zhang/TrajLoom: a root that itself
holds the files is one run; otherwise every folder below it that holds them, sorted;
FVMD and VEPE use folders with both `gt_tracks.npy` and `pred_tracks.npy`, FlowTV and
DivCurlE every folder with `pred_tracks.npy`; a leading batch axis of 1 is dropped;
mismatched lengths are cropped to the common frames (with a note); the grid and track
order come from `query_xy.npy` (`trajloom.metrics.grid.infer_grid`).

Where the released scripts would score a wrong answer silently, a run folder is refused
instead (:class:`RunFolderError`): a file that does not load or is empty, a prediction
with NaN or infinite coordinates (the released scripts drop such points, which hides a
broken model), files whose numbers of points disagree (cropping them would pair
different points), a visibility file of the wrong shape. :func:`score_runs` skips such
folders, names them in ``failed`` and counts them in ``num_failed``; the others are
scored as before.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trajloom.metrics.flowfield import DEFAULT_GRID_STRIDE, _tv_and_energy, video_mean
from trajloom.metrics.forecast import ForecastAccumulator
from trajloom.metrics.fvmd import FVMDAccumulator, FVMDConfig
from trajloom.metrics.grid import infer_grid
from trajloom.metrics.vepe import VEPEAccumulator

__all__ = [
    "RunFolderError",
    "RunVideo",
    "discover_run_dirs",
    "forecast_metrics",
    "load_run",
    "load_tracks",
    "load_visibility",
    "score_runs",
    "score_samples",
]

PRED_TRACKS = "pred_tracks.npy"
GT_TRACKS = "gt_tracks.npy"
GT_VISIBILITY = "gt_visibility.npy"
QUERY_XY = "query_xy.npy"
META = "meta.json"


_Grid = tuple[tuple[int, int], np.ndarray | None]  # infer_grid: (Hg, Wg), track order


class RunFolderError(ValueError):
    """A run folder that cannot be scored; the message names the folder, file and shapes."""


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

    def visible(d: Path) -> bool:  # temporaries of writers (".name.tmp-PID") are not runs
        return not any(part.startswith(".") for part in d.relative_to(root).parts)

    if ok(root):
        return [root]
    return sorted({p.parent for p in root.rglob(PRED_TRACKS) if ok(p.parent) and visible(p.parent)})


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
    gt_vis = load_visibility(d / GT_VISIBILITY)
    return RunVideo(
        path=d,
        pred_tracks=load_tracks(d / PRED_TRACKS),
        gt_tracks=load_tracks(d / GT_TRACKS) if (d / GT_TRACKS).exists() else None,
        visibility=gt_vis
        if visibility_name == GT_VISIBILITY
        else load_visibility(d / visibility_name),
        gt_visibility=gt_vis,
        query_xy=query,
        meta=meta,
    )


def _crop(arrays: list[np.ndarray | None], t: int, n: int) -> list[np.ndarray | None]:
    return [None if a is None else a[:t, :n] for a in arrays]


def _load_checked(d: Path, visibility_name: str) -> RunVideo:
    """:func:`load_run` of ``d``, refused (:class:`RunFolderError`) where scoring it would
    give a wrong number: an unloadable or empty file, a non-finite prediction, point counts
    that disagree between files, a visibility whose points are not the tracks'."""
    try:
        run = load_run(d, visibility_name=visibility_name)
    except (OSError, ValueError, EOFError) as err:
        raise RunFolderError(f"{d}: cannot be read ({err})") from err
    pred = run.pred_tracks
    if pred.size == 0:
        raise RunFolderError(f"{d}/{PRED_TRACKS}: empty (shape {pred.shape}); nothing to score")
    if not np.issubdtype(pred.dtype, np.number):
        raise RunFolderError(f"{d}/{PRED_TRACKS}: must be numeric, got dtype {pred.dtype}")
    bad = int(pred.size - np.count_nonzero(np.isfinite(pred)))
    if bad:
        raise RunFolderError(
            f"{d}/{PRED_TRACKS}: {bad} of {pred.size} coordinates are NaN or infinite; a "
            "prediction must be finite (the method is broken there)"
        )
    _check_magnitude(d, run)
    n = pred.shape[1]
    shapes = {PRED_TRACKS: pred.shape}
    if run.gt_tracks is not None:
        shapes[GT_TRACKS] = run.gt_tracks.shape
    for name, vis in ((visibility_name, run.visibility), (GT_VISIBILITY, run.gt_visibility)):
        if vis is not None:
            shapes[name] = vis.shape
    if run.query_xy is not None:
        shapes[QUERY_XY] = run.query_xy.shape
    if any(shape[1 if name != QUERY_XY else 0] != n for name, shape in shapes.items()):
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise RunFolderError(
            f"{d}: its files disagree on the number of points ({listed}); they must describe "
            "the same N points: rewrite the folder"
        )
    return run


#: A prediction farther than this many image sizes from the image is a broken method, not
#: a forecast: scoring it would swamp (or, in float32, overflow) every mean it enters.
MAX_PIXELS_OUTSIDE = 1e4


def _image_size(run: RunVideo) -> float:
    """The larger side of the run's image in pixels: ``meta.json`` W/H, else the extent of
    the ground truth and query points (at least 1)."""
    sides = [run.meta.get(k) for k in ("W", "H", "width", "height")] if run.meta else []
    known = [float(v) for v in sides if isinstance(v, int | float) and not isinstance(v, bool)]
    for arr in (run.gt_tracks, run.query_xy):
        if arr is not None and np.issubdtype(np.asarray(arr).dtype, np.number):
            finite = np.abs(np.asarray(arr, np.float64))
            finite = finite[np.isfinite(finite)]
            if finite.size:
                known.append(float(finite.max()))
    return max([1.0, *known])


def _check_magnitude(d: Path, run: RunVideo) -> None:
    """RunFolderError when a predicted coordinate lies more than :data:`MAX_PIXELS_OUTSIDE`
    image sizes from the origin (|x| > 1e4 * max(W, H))."""
    size = _image_size(run)
    largest = float(np.abs(run.pred_tracks.astype(np.float64)).max())
    if largest > MAX_PIXELS_OUTSIDE * size:
        raise RunFolderError(
            f"{d}/{PRED_TRACKS}: a coordinate of {largest:.3g} px, more than "
            f"{MAX_PIXELS_OUTSIDE:g} times the image size ({size:g} px); a prediction that "
            "far out is a broken method, not a forecast"
        )


@dataclass
class _Scores:
    """What :func:`score_runs` accumulates over run folders, one folder at a time."""

    root: Path
    fvmd_acc: FVMDAccumulator
    vepe_acc: VEPEAccumulator
    use_gt_visibility: bool
    use_visibility: bool
    visibility_name: str
    grid_stride: float
    vepe_use_visibility: bool
    notes: list[str] = field(default_factory=list)
    fvmd_error: str | None = None
    tv_values: list[float] = field(default_factory=list)
    dc_values: list[float] = field(default_factory=list)
    per_video: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    num_paired: int = 0
    missing_vis: int = 0
    cropped: int = 0
    grids: dict[tuple[Any, ...], _Grid] = field(default_factory=dict)

    def _grid(self, query: np.ndarray | None, n: int) -> _Grid:
        """`infer_grid(query, n)`, once per distinct `query_xy` (the folders of a benchmark
        usually share one)."""
        key = (n,) if query is None else (n, query.dtype.str, query.shape, query.tobytes())
        if key not in self.grids:
            if len(self.grids) >= 64:
                self.grids.clear()
            self.grids[key] = infer_grid(query, n)
        return self.grids[key]

    def add(self, d: Path) -> None:
        """Score one run folder, or record why it cannot be."""
        name = str(d.relative_to(self.root)) if d != self.root else "."
        try:
            run = _load_checked(d, self.visibility_name)
        except RunFolderError as err:
            self.failed.append({"video": name, "reason": str(err)})
            return
        entry: dict[str, Any] = {"video": name}
        pred = run.pred_tracks.astype(np.float32)
        vis = run.visibility
        if vis is None and (self.use_visibility or self.use_gt_visibility):
            self.missing_vis += 1
        flow_vis = vis if self.use_visibility else None
        grid = self._grid(run.query_xy, pred.shape[1])  # every file has these n points
        entry.update(_flow_entry(pred, flow_vis, grid, self.grid_stride))
        self._add_paired(run, vis, grid, name, entry)
        self.tv_values.append(entry["flow_tv"])
        self.dc_values.append(entry["div_curl_energy"])
        self.per_video.append(entry)

    def _add_paired(
        self,
        run: RunVideo,
        vis: np.ndarray | None,
        grid: _Grid,
        name: str,
        entry: dict[str, Any],
    ) -> None:
        """VEPE and FVMD of a folder with ground truth (cropped to the common frames);
        nothing for a folder without."""
        if run.gt_tracks is None:
            return
        self.num_paired += 1
        gt = run.gt_tracks
        t, n = (
            min(gt.shape[0], run.pred_tracks.shape[0]),
            min(gt.shape[1], run.pred_tracks.shape[1]),
        )
        if gt.shape != run.pred_tracks.shape:
            self.cropped += 1
        gt_c, pred_c = gt[:t, :n], run.pred_tracks[:t, :n]
        vis_c, gvis_c = _crop([vis, run.gt_visibility], t, n)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                vepe_vis = gvis_c if self.vepe_use_visibility else None
                entry["vepe"] = self.vepe_acc.update(pred_c, gt_c, vepe_vis)
        except ValueError as err:
            self.notes.append(f"vepe: left out {name}: {err}")
        if self.fvmd_error is not None:
            return
        try:
            hw, order = grid
            if order is not None:
                gt_c, pred_c = gt_c[:, order], pred_c[:, order]
                vis_c = None if vis_c is None else vis_c[:, order]
            entry["fvmd_windows"] = self.fvmd_acc.update(
                gt_c, pred_c, vis_c if self.use_gt_visibility else None, grid_hw=hw
            )
        except ValueError as err:
            self.fvmd_error = f"{name}: {err}"

    def metrics(self) -> dict[str, Any]:
        """The summary values and their notes (``notes`` grows with why one is null)."""
        result: dict[str, Any] = {
            "fvmd": None,
            "fvmd_velocity": None,
            "fvmd_acceleration": None,
            "flow_tv": None,
            "div_curl_energy": None,
            "vepe": None,
            "num_videos": len(self.per_video),
            "num_videos_with_gt": self.num_paired,
            "num_windows": self.fvmd_acc.num_windows,
        }
        result.update(self._fvmd())
        if self.num_paired:
            if self.vepe_acc.count:
                result["vepe"] = self.vepe_acc.total / self.vepe_acc.count
            else:
                self.notes.append("vepe: no visible point with a finite error in any video")
        for key, values in (("flow_tv", self.tv_values), ("div_curl_energy", self.dc_values)):
            finite = [v for v in values if np.isfinite(v)]
            if finite:
                result[key] = video_mean(finite)
            else:
                self.notes.append(
                    f"{key}: no video has a valid neighbour pair (grid or visibility)"
                )
        if self.missing_vis:
            self.notes.append(
                f"{self.missing_vis} run folders lack {self.visibility_name}: scored without "
                "visibility there"
            )
        if self.cropped:
            self.notes.append(
                f"{self.cropped} run folders had gt and pred of different shapes: cropped"
            )
        if self.failed:
            self.notes.append(f"{len(self.failed)} run folders could not be scored: see failed")
        return result

    def _fvmd(self) -> dict[str, Any]:
        if self.fvmd_error is not None:
            self.notes.append(f"fvmd: {self.fvmd_error}")
            return {}
        if self.num_paired == 0:
            self.notes.append(f"fvmd, vepe: no run folder has {GT_TRACKS}")
            return {}
        try:
            r = self.fvmd_acc.result()
        except ValueError as err:
            self.notes.append(f"fvmd: {err}")
            return {}
        return {
            "fvmd": r.combined,
            "fvmd_velocity": r.velocity,
            "fvmd_acceleration": r.acceleration,
            "grid_hw": list(self.fvmd_acc.grid_hw or ()),
            "feature_dim_velocity": r.feature_dim_velocity,
            "feature_dim_acceleration": r.feature_dim_acceleration,
        }


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
    workers: int = 1,
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
        workers: 2 computes FVMD's ground-truth and predicted halves side by side in two
            threads (`FVMDAccumulator`), for a machine with an idle core; 1 (default)
            one after the other. The numbers are bit-identical.

    Returns:
        JSON-ready dict: `fvmd`, `fvmd_velocity`, `fvmd_acceleration`, `flow_tv`,
        `div_curl_energy`, `vepe`, `num_videos` (folders scored), counts, settings,
        `notes` (why a metric is null), `per_video` values, and `failed` (folders that
        could not be scored, with the reason) with their count `num_failed`.

    Raises:
        ValueError: `runs_root` is no folder or holds no run folder; `grid_stride` is not
            a finite number > 0 (DivCurlE divides by it).
    """
    if not (isinstance(grid_stride, int | float) and 0 < float(grid_stride) < float("inf")):
        raise ValueError(
            f"grid_stride must be a finite number of pixels > 0 (the grid spacing, 32 at "
            f"832x480), got {grid_stride!r}"
        )
    cfg = fvmd_config or FVMDConfig()
    root = Path(runs_root)
    dirs = discover_run_dirs(root, require_gt=False)
    if not dirs:
        raise ValueError(f"runs_root {str(root)!r} holds no run folder with {PRED_TRACKS}")
    scores = _Scores(
        root,
        FVMDAccumulator(cfg, workers=workers),
        VEPEAccumulator(exclude_first_frame=exclude_first_frame),
        use_gt_visibility=use_gt_visibility,
        use_visibility=use_visibility,
        visibility_name=visibility_name,
        grid_stride=grid_stride,
        vepe_use_visibility=vepe_use_visibility,
    )
    for d in dirs:
        scores.add(d)
    result = scores.metrics()
    result.update(
        clip_len=cfg.clip_len,
        clip_stride=cfg.clip_stride,
        use_gt_visibility=use_gt_visibility,
        use_visibility=use_visibility,
        visibility_name=visibility_name,
        grid_stride=grid_stride,
        exclude_first_frame=exclude_first_frame,
        runs_root=str(root),
        notes=scores.notes,
        per_video=scores.per_video,
        num_failed=len(scores.failed),
        failed=scores.failed,
    )
    return result


def _flow_entry(
    pred: np.ndarray, vis: np.ndarray | None, grid: _Grid, grid_stride: float
) -> dict[str, Any]:
    """FlowTV and DivCurlE of one run (`grid`: its `infer_grid`), cropped as released."""
    if vis is not None:
        t = min(pred.shape[0], vis.shape[0])
        pred, vis = pred[:t], vis[:t]
    t = pred.shape[0]
    hw, order = grid
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
    # Without warnings: a video without a valid pair is NaN (noted if no video has one).
    with np.errstate(all="ignore"):
        tv, dc = _tv_and_energy(pred, vis, hw, float(grid_stride))
    out["flow_tv"], out["div_curl_energy"] = float(tv), float(dc)
    return out


def _point_order(d: Path, ref_q: np.ndarray | None, q: np.ndarray | None, n: int) -> np.ndarray:
    """Indices that put a folder's points (query `q`) in the order of the reference
    `ref_q`; the identity where either is absent or they are equal."""
    if ref_q is None or q is None or np.array_equal(ref_q, q):
        return np.arange(n)
    if q.shape == ref_q.shape and q.ndim == 2:
        a, b = np.lexsort(ref_q.T[::-1]), np.lexsort(q.T[::-1])
        if np.array_equal(ref_q[a], q[b]):
            order = np.empty(n, dtype=np.int64)
            order[a] = b
            return order
    raise RunFolderError(
        f"{d}/{QUERY_XY}: its query points are not those of the first sample folder; every "
        "sample of a video must forecast the same points"
    )


def _forecast_video(
    name: str, dirs: list[Path], runs: list[RunVideo], acc: ForecastAccumulator
) -> tuple[dict[str, Any], bool]:
    """Best-of-K and diversity of one video from its K loaded sample folders (the first
    gives the truth and its visibility); returns its entry and whether frames were cropped."""
    ref = runs[0]
    ns = {r.pred_tracks.shape[1] for r in runs}
    if len(ns) > 1:
        listed = ", ".join(f"{d} {r.pred_tracks.shape}" for d, r in zip(dirs, runs, strict=True))
        raise RunFolderError(
            f"{name}: the sample folders disagree on the number of points ({listed}); every "
            "sample must forecast the same N points"
        )
    n = ns.pop()
    shapes = [r.pred_tracks.shape[0] for r in runs]
    if ref.gt_tracks is not None:
        shapes.append(ref.gt_tracks.shape[0])
    t = min(shapes)
    cropped = len(set(shapes)) > 1
    preds, gt = [], None if ref.gt_tracks is None else ref.gt_tracks[:t].astype(np.float64)
    for d, r in zip(dirs, runs, strict=True):
        order = _point_order(d, ref.query_xy, r.query_xy, n)
        preds.append(r.pred_tracks[:t, order])
        if gt is not None and r.gt_tracks is not None:
            other = r.gt_tracks[:t, order]
            if other.shape != gt.shape or not np.array_equal(other.astype(np.float64), gt):
                raise RunFolderError(
                    f"{d}/{GT_TRACKS}: differs from the ground truth of {dirs[0]}; the samples "
                    "of one video must share its truth (are they runs of the same clips?)"
                )
    vis = None if ref.gt_visibility is None else ref.gt_visibility[:t]
    try:
        entry = acc.update(np.stack(preds), gt, vis)
    except ValueError as err:
        raise RunFolderError(f"{name}: {err}") from err
    return {"video": name, **entry}, cropped


def score_samples(sample_roots: Sequence[str | Path], **kwargs: Any) -> dict[str, Any]:
    """Score K sample folders of one method: best-of-K errors and diversity, plus the
    single-sample metrics of the first folder.

    Each of `sample_roots` is laid out as `runs_root` of :func:`score_runs` (e.g.
    `runs/sample_000`, `runs/sample_001`, ...); a video is the same relative folder in
    each. With one root this is exactly :func:`score_runs` (no new keys).

    Definitions (pixels; :mod:`trajloom.metrics.forecast`): per point, ADE is the mean
    over its visible future frames (`gt_visibility.npy` of the first folder; all frames
    where absent) of the L2 error, FDE the error at its last visible frame; per sample,
    the mean over points; `min_ade` / `min_fde` of a video are the minima over its K
    samples, and the reported values are means over videos. `diversity` is the mean over
    sample pairs of the mean L2 distance between them over visible points and frames;
    `energy_score` the fair energy score of the K samples (a proper score; one sample: ADE).

    Bad folders follow :func:`score_runs`: a video missing from some sample folder, or
    one whose sample folders cannot be read, disagree on points or truth, is left out of
    the multi-sample metrics, named in `failed` and counted in `num_failed`.

    Args:
        sample_roots: K >= 1 folders, one per sample, all distinct.
        **kwargs: options of :func:`score_runs`, applied to the first folder.

    Returns:
        :func:`score_runs`'s dict for the first folder; with K >= 2 also `min_ade`,
        `min_fde`, `diversity`, `energy_score` (px; None where undefined), `num_samples` (K),
        `num_videos_forecast` (videos scored with all K samples), `sample_roots` and
        `per_video_forecast`.

    Raises:
        ValueError: no root, a root given twice, a root that is no folder or holds no
            run folder.
    """
    roots = [Path(r) for r in sample_roots]
    if not roots:
        raise ValueError("sample_roots is empty: give at least one sample folder")
    if len(roots) == 1:
        return score_runs(roots[0], **kwargs)
    resolved = [r.resolve() for r in roots]
    if len(set(resolved)) != len(resolved):
        twice = sorted(
            {str(r) for r, x in zip(roots, resolved, strict=True) if resolved.count(x) > 1}
        )
        raise ValueError(f"sample folders given more than once: {twice}; give each sample once")
    visibility_name = kwargs.get("visibility_name", GT_VISIBILITY)
    result = score_runs(roots[0], **kwargs)
    already = [f["video"] for f in result["failed"]]
    multi = forecast_metrics(roots, visibility_name=visibility_name, already_failed=already)
    failed: list[dict[str, str]] = result["failed"] + multi.pop("failed")
    result["notes"] += multi.pop("notes")
    result.update(multi, num_failed=len(failed), failed=failed)
    return result


def forecast_metrics(
    sample_roots: Sequence[str | Path],
    *,
    visibility_name: str = GT_VISIBILITY,
    already_failed: Sequence[str] = (),
) -> dict[str, Any]:
    """Best-of-K errors and diversity of K >= 1 sample folders of one method (pixels).

    The multi-sample part of :func:`score_samples` (definitions there and in
    :mod:`trajloom.metrics.forecast`), without the single-sample metrics. With K = 1,
    `min_ade` / `min_fde` are the single future's ADE / FDE and `diversity` is None.
    `already_failed`: videos (relative folder names) whose first sample folder is known to
    be unreadable: they are skipped without a second entry in `failed`.

    Returns:
        `min_ade`, `min_fde`, `diversity`, `energy_score` (None where undefined),
        `num_samples`, `num_videos_forecast`, `sample_roots`, `per_video_forecast`, `notes` and `failed`
        (videos left out, with the reason).

    Raises:
        ValueError: no root, or a root that is no folder or holds no run folder.
    """
    roots = [Path(r) for r in sample_roots]
    if not roots:
        raise ValueError("sample_roots is empty: give at least one sample folder")
    per_root: list[dict[str, Path]] = []
    for root in roots:
        dirs = discover_run_dirs(root, require_gt=False)
        if not dirs:
            raise ValueError(f"sample folder {str(root)!r} holds no run folder with {PRED_TRACKS}")
        per_root.append({(str(d.relative_to(root)) if d != root else "."): d for d in dirs})
    already = set(already_failed)
    failed: list[dict[str, str]] = []
    acc = ForecastAccumulator()
    per_video: list[dict[str, Any]] = []
    cropped = 0
    for name in sorted(set().union(*per_root)):
        missing = [str(r) for r, m in zip(roots, per_root, strict=True) if name not in m]
        if missing:
            failed.append(
                {
                    "video": name,
                    "reason": f"missing from sample folder(s) {', '.join(missing)}: best-of-"
                    f"{len(roots)} needs every sample; left out of minADE/minFDE/diversity",
                }
            )
            continue
        dirs = [m[name] for m in per_root]
        try:
            runs = []
            for i, d in enumerate(dirs):
                try:
                    runs.append(_load_checked(d, visibility_name))
                except RunFolderError:
                    if i == 0 and name in already:
                        raise _AlreadyFailed from None
                    raise
            entry, was_cropped = _forecast_video(name, dirs, runs, acc)
        except _AlreadyFailed:
            continue
        except RunFolderError as err:
            failed.append({"video": name, "reason": str(err)})
            continue
        cropped += was_cropped
        per_video.append(entry)
    r = acc.result()
    notes = [
        f"minADE/minFDE/diversity over {len(per_video)} videos present in all {len(roots)} "
        f"sample folders; the other metrics are of the first sample folder {roots[0]}"
    ]
    if per_video and r.min_ade is None:
        notes.append(f"min_ade, min_fde: no video has {GT_TRACKS} with a visible point")
    if cropped:
        notes.append(f"{cropped} videos had samples of different lengths: cropped (min_ade)")
    return {
        "min_ade": r.min_ade,
        "min_fde": r.min_fde,
        "diversity": r.diversity,
        "energy_score": r.energy_score,
        "num_samples": len(roots),
        "num_videos_forecast": len(per_video),
        "sample_roots": [str(x) for x in roots],
        "per_video_forecast": per_video,
        "notes": notes,
        "failed": failed,
    }


class _AlreadyFailed(Exception):
    """The first sample folder of a video failed and is already named in `failed`."""

"""What a forecast of one clip is written as: run folders, Wan-Move exports, renders.

:func:`write_predictions` writes all of it for one clip (``apps/sample`` and
``apps/demo`` call it with the futures ``trajloom.flow.forecast`` samples), and
:func:`write_predictions_report` the ``index.html`` of the clips written into a folder
(``trajloom.data.report``). The pieces:

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

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from trajloom.data.clip import Clip
from trajloom.data.formats import (
    RunFolder,
    sanitize_predictions,
    write_run_folder,
    write_wanmove,
    write_wanmove_pins,
)
from trajloom.data.names import check_name, safe_child
from trajloom.data.render import RenderConfig, render_overlay, render_summary, tile_videos
from trajloom.data.report import ClipView, Table, write_report
from trajloom.data.video import write_video
from trajloom.encoding import GridSpec, query_points

__all__ = [
    "Futures",
    "OutputOptions",
    "error_curves",
    "render_clip",
    "render_names",
    "wanmove_arrays",
    "write_predictions",
    "write_predictions_report",
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
        folder = safe_child(runs_root / f"sample_{k:03d}", clip_id, kind="clip id")
        folders.append(write_run_folder(folder, run))
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
    check_name("clip id", export_id)
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


@dataclass(frozen=True)
class Futures:
    """K sampled futures of one clip: tracks "k tf n 2" pixels, visibility "k tf n" bool,
    the visibility probability "k tf n" (None when the method has none)."""

    tracks: np.ndarray
    visibility: np.ndarray
    probability: np.ndarray | None = None


@dataclass(frozen=True)
class OutputOptions:
    """What :func:`write_predictions` writes besides the run folders."""

    render: bool = True  # MP4 overlays (history + each future, the truth, the grid)
    gif: bool = True  # also a half-size GIF of sample 0's overlay
    wanmove_frames: int | None = None  # frames of the Wan-Move export (None: tf)
    render_config: RenderConfig = field(default_factory=RenderConfig)


def render_names(clip_id: str, num_samples: int, ground_truth: bool) -> dict[str, str]:
    """File names under ``renders/`` of one clip, by role: ``sample_<k>`` (sample 0 is
    ``<id>.mp4``, the others ``<id>_sample_<k>.mp4``), ``truth`` (``<id>_truth.mp4``),
    ``together`` (``<id>_together.mp4``: every sample in one, the others faint, when
    K > 1), ``grid`` (``<id>_grid.mp4``, when K > 1), ``summary`` (``<id>_summary.png``,
    the still motion summary) and ``gif``."""
    names = {"sample_000": f"{clip_id}.mp4", "gif": f"{clip_id}.gif"}
    for k in range(1, num_samples):
        names[f"sample_{k:03d}"] = f"{clip_id}_sample_{k:03d}.mp4"
    if ground_truth:
        names["truth"] = f"{clip_id}_truth.mp4"
    if num_samples > 1:
        names["together"] = f"{clip_id}_together.mp4"
        names["grid"] = f"{clip_id}_grid.mp4"
    names["summary"] = f"{clip_id}_summary.png"
    return names


@dataclass(frozen=True)
class _Canvas:
    """Where a clip is drawn: the frames and their size, and the map from working pixels
    to theirs (the original video when the clip has one, else the working frames)."""

    frames: np.ndarray | None
    size: tuple[int, int]
    to_render: Callable[[np.ndarray], np.ndarray]

    @classmethod
    def of(cls, clip: Clip, grid: GridSpec) -> _Canvas:
        if clip.view is not None:
            return cls(clip.view.frames, clip.view.size, clip.view.to_render)
        return cls(clip.frames, grid.size, lambda p: np.asarray(p, np.float64))

    def tracks(self, tracks: np.ndarray) -> np.ndarray:
        return self.to_render(tracks).astype(np.float32)

    def rows(self, rows: np.ndarray | None) -> np.ndarray | None:
        """Rows (frame, x, y) with x, y mapped; None stays None."""
        if rows is None or not len(rows):
            return rows
        rows = np.asarray(rows, np.float64).reshape(-1, 3).copy()
        rows[:, 1:] = self.to_render(rows[:, 1:])
        return rows


def _hidden_rows(hidden: np.ndarray | None, tracks: np.ndarray) -> np.ndarray | None:
    """ "Stay hidden" pins "k 2" (point, future frame) -> rows (frame, x, y) at the
    point's position in ``tracks`` "tf n 2" (where the sample put it)."""
    if hidden is None or not len(hidden):
        return None
    rows = np.asarray(hidden, np.int64).reshape(-1, 2)
    return np.column_stack([rows[:, 1], tracks[rows[:, 1], rows[:, 0]]])


def render_clip(
    clip: Clip,
    futures: Futures,
    grid: GridSpec,
    folder: Path,
    options: OutputOptions,
    markers: np.ndarray | None = None,
    hidden: np.ndarray | None = None,
) -> dict[str, Path]:
    """History + future overlays of every sample (and of the truth, when the clip has it),
    the optional GIF of sample 0, with several samples the overlay of all of them (the
    others faint) and the grid, and the still motion summary; paths by role
    (:func:`render_names`). Drawn over the original video at its own size (capped) when
    the clip has it (``Clip.view``), else over the working frames. ``markers`` "k 4"
    (point, future frame, x, y): pin targets; ``hidden`` "k 2" (point, future frame):
    "stay hidden" pins; both drawn on every overlay."""
    canvas = _Canvas.of(clip, grid)
    targets = None if markers is None else canvas.rows(np.asarray(markers)[:, 1:])
    grid_hw = (grid.grid_h, grid.grid_w)
    fps = clip.fps or 16.0
    k = futures.tracks.shape[0]
    names = render_names(clip.id, k, clip.fut_tracks is not None)
    hist = canvas.tracks(clip.hist_tracks)
    drawn = [canvas.tracks(futures.tracks[i]) for i in range(k)]
    shown = [(f"sample_{i:03d}", f"sample {i}", drawn[i], futures.visibility[i]) for i in range(k)]
    if clip.fut_tracks is not None and clip.fut_vis is not None:
        shown.append(("truth", "truth", canvas.tracks(clip.fut_tracks), clip.fut_vis))
    config = options.render_config
    paths: dict[str, Path] = {}
    overlays = []
    for role, title, tracks, vis in shown:
        overlay = render_overlay(
            canvas.frames,
            hist,
            clip.hist_vis,
            tracks,
            vis,
            markers=targets,
            hidden=_hidden_rows(hidden, tracks),
            title=title,
            grid_hw=grid_hw,
            size=canvas.size,
            config=config,
        )
        paths[role] = write_video(folder / names[role], overlay, fps=fps)
        if role == "sample_000" and options.gif:
            # Half size and every other frame keep GIFs small; the MP4 has everything.
            small = overlay[::2, ::2, ::2]
            paths["gif"] = write_video(folder / names["gif"], small, fps=fps / 2)
        if role != "truth":
            overlays.append(overlay)
    if k > 1:
        together = render_overlay(
            canvas.frames,
            hist,
            clip.hist_vis,
            drawn[0],
            futures.visibility[0],
            alternatives=list(zip(drawn[1:], futures.visibility[1:], strict=True)),
            markers=targets,
            title=f"sample 0 (+{k - 1} faint)",
            grid_hw=grid_hw,
            size=canvas.size,
            config=config,
        )
        paths["together"] = write_video(folder / names["together"], together, fps=fps)
        # render_grid's tiles, from the overlays already drawn
        tiles = tile_videos(overlays, labels=[f"sample {i}" for i in range(k)])
        paths["grid"] = write_video(folder / names["grid"], tiles, fps=fps)
    boundary = None if canvas.frames is None else canvas.frames[clip.history - 1]
    still = render_summary(
        boundary,
        hist,
        clip.hist_vis,
        list(zip(drawn, futures.visibility, strict=True)),
        markers=targets,
        grid_hw=grid_hw,
        size=canvas.size,
        config=config,
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths["summary"] = folder / names["summary"]
    cv2.imwrite(str(paths["summary"]), cv2.cvtColor(still, cv2.COLOR_RGB2BGR))
    return paths


def error_curves(
    tracks: np.ndarray,
    truth: np.ndarray,
    truth_vis: np.ndarray,
    baselines: dict[str, np.ndarray] | None = None,
) -> dict[str, list[float | None]]:
    """Error over future time: per future frame, the mean distance (px) between a
    future and the truth over the points visible in the truth there.

    ``tracks`` "k tf n 2" sampled futures (labelled ``sample <k>``), ``truth`` "tf n 2",
    ``truth_vis`` "tf n"; ``baselines`` label -> "tf n 2" futures of reference methods.
    A frame with no visible point is None.
    """
    seen = np.asarray(truth_vis, bool)
    count = seen.sum(-1)
    futures = {f"sample {k}": tracks[k] for k in range(tracks.shape[0])}
    futures.update(baselines or {})
    curves: dict[str, list[float | None]] = {}
    for label, future in futures.items():
        dist = np.linalg.norm(np.asarray(future, np.float64) - truth, axis=-1)
        total = np.where(seen, dist, 0.0).sum(-1)
        curves[label] = [
            round(float(s / c), 3) if c else None for s, c in zip(total, count, strict=True)
        ]
    return curves


def write_predictions(
    clip: Clip,
    futures: Futures,
    grid: GridSpec,
    out: Path,
    *,
    meta: dict[str, Any],
    options: OutputOptions = OutputOptions(),
    progress: Callable[[str], None] | None = None,
    markers: np.ndarray | None = None,
    hidden: np.ndarray | None = None,
    baselines: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write the run folders (``out/runs``), Wan-Move exports (``out/wanmove``) and
    renders (``out/renders``) of one clip's futures; returns the entry of the clip in a
    summary: the paths written and the seconds each part took.

    Every run folder's ``meta.json`` holds the clip's id, source, caption and window,
    the grid stride, the sample index and ``meta`` (the model, the seed).
    ``progress`` is told the name of each part as it starts ("export", "render").
    ``markers`` "k 4" (point, future frame, x, y): pin targets, drawn in the renders and
    written beside each Wan-Move export; ``hidden`` "k 2" (point, future frame): "stay
    hidden" pins, drawn in the renders. With a true future, the entry holds each sample's
    error over future time (:func:`error_curves`), and that of ``baselines`` (label ->
    "tf n 2" futures of reference methods, e.g. the static and constant-velocity ones).
    A clip drawn over its original video (``Clip.view``) also records the geometry: the
    fit, the source, working and render sizes.
    ``clip.id`` names files and folders: it must be a safe name
    (``trajloom.data.names.check_name``; UnsafeNameError otherwise).
    """
    check_name("clip id", clip.id)
    tell = progress or (lambda _part: None)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    tell("export")
    clip_meta = {
        "id": clip.id,
        "source": clip.source,
        "caption": clip.caption,
        "hist_len": clip.history,
        "future_len": int(futures.tracks.shape[1]),
        "grid_stride": grid.stride,
    }
    if clip.view is not None:
        clip_meta["geometry"] = {**clip.view.fit.describe(), "render_size": list(clip.view.size)}
    runs = write_sample_runs(
        out / "runs",
        clip.id,
        grid=grid,
        pred_tracks=futures.tracks,
        pred_visibility=futures.visibility,
        pred_probability=futures.probability,
        gt_tracks=clip.fut_tracks,
        gt_visibility=clip.fut_vis,
        meta={**clip_meta, **meta},
    )
    image = clip.frames[clip.history - 1] if clip.frames is not None else None
    exports = []
    for k in range(futures.tracks.shape[0]):
        exports += write_wanmove_export(
            out / "wanmove" / f"sample_{k:03d}",
            clip.id,
            hist_tracks=clip.hist_tracks,
            hist_vis=clip.hist_vis,
            fut_tracks=futures.tracks[k],
            fut_vis=futures.visibility[k],
            size=grid.size,
            image=image,
            num_frames=options.wanmove_frames,
            markers=markers,
        )
    seconds["export"] = time.perf_counter() - start
    renders: dict[str, Path] = {}
    if options.render:
        start = time.perf_counter()
        tell("render")
        renders = render_clip(clip, futures, grid, out / "renders", options, markers, hidden)
        seconds["render"] = time.perf_counter() - start
    entry = {
        "id": clip.id,
        "source": clip.source,
        "caption": clip.caption,
        "num_samples": int(futures.tracks.shape[0]),
        "has_ground_truth": clip.fut_tracks is not None,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "runs": [str(p) for p in runs],
        "wanmove": [str(p) for p in exports],
        "renders": [str(p) for p in renders.values()],
    }
    if "geometry" in clip_meta:
        entry["geometry"] = clip_meta["geometry"]
    if clip.fut_tracks is not None and clip.fut_vis is not None:
        entry["error_curves"] = error_curves(
            futures.tracks, clip.fut_tracks, clip.fut_vis, baselines
        )
    return entry


_CLIP_METRICS = {
    "min_ade": "minADE (px)",
    "min_fde": "minFDE (px)",
    "diversity": "diversity (px)",
}


def _render_paths(out: Path, entry: dict[str, Any]) -> dict[str, Path]:
    names = render_names(entry["id"], entry["num_samples"], entry["has_ground_truth"])
    return {role: out / "renders" / name for role, name in names.items()}


def _clip_view(entry: dict[str, Any], renders: dict[str, Path]) -> ClipView | None:
    """The report's view of a clip written by :func:`write_predictions`; None unrendered."""
    k = entry["num_samples"]
    samples = [renders[f"sample_{i:03d}"] for i in range(k)]
    if not all(p.is_file() for p in samples):
        return None
    m = entry.get("metrics") or {}
    rows = [{"ADE (px)": m["ade"][i], "FDE (px)": m["fde"][i]} for i in range(k)] if m else []
    links = {"sample grid": renders.get("grid"), "GIF": renders.get("gif")}
    thumbnail = renders.get("summary")
    together = renders.get("together")
    return ClipView(
        id=entry["id"],
        samples=samples,
        truth=renders.get("truth"),
        together=together if together is not None and together.is_file() else None,
        caption=entry.get("caption", ""),
        sample_metrics=rows,
        metrics={label: m.get(key) for key, label in _CLIP_METRICS.items()} if m else {},
        links={label: p for label, p in links.items() if p is not None and p.is_file()},
        curves=entry.get("error_curves") or {},
        thumbnail=thumbnail if thumbnail is not None and thumbnail.is_file() else None,
    )


def write_predictions_report(out: Path, entries: list[dict[str, Any]], title: str) -> Path:
    """``out/index.html`` of the clips ``entries`` (what :func:`write_predictions`
    returned, optionally with ``caption`` and ``metrics`` added: the JSON-ready dict of
    ``trajloom.metrics.forecast_summary``); a table of every clip, then each rendered
    clip's futures, truth and metrics."""
    views = [v for e in entries if (v := _clip_view(e, _render_paths(out, e))) is not None]
    thumbs = {v.id: v.thumbnail for v in views}
    rows = [
        [e["id"], e["num_samples"], *[(e.get("metrics") or {}).get(k) for k in _CLIP_METRICS]]
        for e in entries
    ]
    table = Table(
        "clips",
        ["clip", "samples", *_CLIP_METRICS.values()],
        rows,
        note="Errors against the tracked true future (empty where the clip has none); "
        "click a column to sort, a picture to go to its clip.",
        thumbnails=[thumbs.get(e["id"]) for e in entries] if any(thumbs.values()) else (),
    )
    return write_report(out, title, clips=views, tables=[table])

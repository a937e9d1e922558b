"""Inputs of the sample app: videos, released-layout npz files and shards, as history clips.

Every input becomes one or more :class:`Clip` objects in the pixels of the model's
working resolution (its ``GridSpec``): history tracks "th n 2" and visibility "th n",
the ground-truth future when the input holds one, and the frames when there are any.

* A video file (any container PyAV reads): decoded once at its own resolution, placed
  in the working frame by a :class:`trajloom.data.geometry.Fit` (``fit``: pad, crop or
  stretch) and the grid of the ``GridSpec`` tracked from frame 0 with the chosen
  tracker of ``trajloom.data.tracking``; the original frames (shrunk to
  ``max_render_size`` at most) stay with the clip (``Clip.view``) for the renders. When the video holds at least
  ``history + future`` frames the whole window is tracked and its future part kept as
  ground truth; otherwise only the history window is tracked (no ground truth).
* A released-layout ``<id>.npz`` (``tracks`` "n t 2", ``visibility`` "n t"): its pixels
  are those of ``<id>.mp4`` beside it when there is one (probed), else the working
  resolution; tracks are rescaled to the working resolution.
* A shard ``.tar`` written by ``trajloom.data.shards.write_shards``: every sample in it;
  a bad sample is reported (an :class:`InputError`) and the samples after it still come.

:func:`load_clips` yields clips, :class:`InputError` for what failed, and
:class:`InputDamage` for an input that is damaged but still gave a clip (a truncated
video whose history decodes: its clip comes without ground truth).
"""

from __future__ import annotations

import dataclasses
import glob
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trajloom.data.checks import FormatError
from trajloom.data.clip import Clip
from trajloom.data.geometry import (
    DEFAULT_FIT,
    DEFAULT_MAX_RENDER_SIZE,
    Fit,
    SourceView,
    capped_size,
    fit_frames,
)
from trajloom.data.names import UnsafeNameError, check_name, natural_key, safe_stem
from trajloom.data.released import folder_captions, load_released_npz
from trajloom.data.shards import ShardSample, iter_shard_items
from trajloom.data.stream import caption_with_camera
from trajloom.data.video import (
    VIDEO_SUFFIXES,
    VideoReadError,
    count_frames,
    damage_note,
    probe_video,
    read_video,
    resize_frames,
)
from trajloom.encoding import GridSpec, rescale_tracks

__all__ = [
    "InputDamage",
    "InputError",
    "clip_from_arrays",
    "clips_from_npz",
    "clips_from_shard",
    "clips_from_video",
    "expand_inputs",
    "input_kind",
    "load_clips",
]

NPZ_SUFFIXES = (".npz",)
SHARD_SUFFIXES = (".tar",)


class InputError(ValueError):
    """An input cannot be used; the message names the file and what to do."""


class InputDamage(str):
    """A note that an input is damaged although it gave a clip (the note names the file)."""


# --------------------------------------------------------------------------- discovery


def input_kind(path: Path) -> str:
    """ "video", "npz" or "shard" from the suffix; raises InputError otherwise."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in NPZ_SUFFIXES:
        return "npz"
    if suffix in SHARD_SUFFIXES:
        return "shard"
    raise InputError(
        f"{path}: unknown input type {suffix or '(no suffix)'!r}; give a video "
        f"({', '.join(VIDEO_SUFFIXES)}), a released-layout .npz or a shard .tar"
    )


def expand_inputs(specs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named by ``specs`` (files, folders, globs), and the specs that named nothing.

    A folder contributes its npz files, shards and videos (not recursively); a video
    with an npz of the same stem beside it is left to the npz, which then uses it.
    Returns ``(files, failures)`` where failures are ``(spec, reason)``.
    """
    files: list[Path] = []
    failures: list[tuple[str, str]] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = [
                p
                for p in path.iterdir()
                if p.is_file()
                and p.suffix.lower() in (*VIDEO_SUFFIXES, *NPZ_SUFFIXES, *SHARD_SUFFIXES)
            ]
            stems_with_npz = {p.stem for p in found if p.suffix.lower() in NPZ_SUFFIXES}
            found = [
                p
                for p in found
                if not (p.suffix.lower() in VIDEO_SUFFIXES and p.stem in stems_with_npz)
            ]
            if not found:
                failures.append((spec, "folder holds no video, .npz or .tar input"))
            files.extend(sorted(found, key=lambda p: natural_key(p.name)))
        elif path.exists():
            files.append(path)
        elif glob.has_magic(spec):
            matched = sorted((Path(p) for p in glob.glob(spec)), key=lambda p: natural_key(p.name))
            matched = [p for p in matched if p.is_file()]
            if not matched:
                failures.append((spec, "glob matched no file"))
            files.extend(matched)
        else:
            failures.append((spec, "file does not exist"))
    unique: list[Path] = []
    seen: set[Path] = set()
    for p in files:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique, failures


# --------------------------------------------------------------------------- arrays -> clip


def clip_from_arrays(
    *,
    clip_id: str,
    source: str,
    tracks: np.ndarray,
    visibility: np.ndarray,
    src_size: tuple[int, int],
    grid: GridSpec,
    history: int,
    future: int,
    frames: np.ndarray | None = None,
    caption: str = "",
    fps: float = 16.0,
) -> Clip:
    """Cut a clip's tracks "t n 2" (pixels of ``src_size``) into history and future.

    Tracks are rescaled to the grid's working resolution. The clip needs at least
    ``history`` frames and exactly ``grid.num_points`` tracks; the future is kept when
    ``history + future`` frames are there. ``frames`` "t h w 3" (working resolution, from
    the clip's first frame) are kept when they cover the history, cut to the window: the
    history and future frames, or the history frames of a clip without a future.
    """
    tracks = np.asarray(tracks, dtype=np.float32)
    visibility = np.asarray(visibility).astype(bool)
    t, n = tracks.shape[:2]
    if n != grid.num_points:
        raise InputError(
            f"{source}: holds {n} tracks but the model's grid {grid.width}x{grid.height} at "
            f"stride {grid.stride} has {grid.num_points} points (resolution mismatch); use a "
            "checkpoint trained for this grid or re-track the video on it"
        )
    if t < history:
        raise InputError(
            f"{source}: holds {t} frames, shorter than the model's history window of "
            f"{history} frames; give a longer clip"
        )
    if tuple(src_size) != grid.size:
        tracks = rescale_tracks(tracks, src_size, grid.size).astype(np.float32)
    kept_future = future if t >= history + future else 0
    if frames is not None:
        frames = frames[: history + kept_future] if frames.shape[0] >= history else None
    return Clip.cut(
        clip_id,
        tracks,
        visibility,
        start=0,
        history=history,
        future=kept_future,
        source=source,
        frames=frames,
        caption=caption,
        fps=fps,
    )


# --------------------------------------------------------------------------- videos


def clips_from_video(
    path: Path,
    *,
    grid: GridSpec,
    history: int,
    future: int,
    tracker_factory: Callable[[], Any],
    caption: str = "",
    ground_truth: bool = True,
    fit: str = DEFAULT_FIT,
    max_render_size: int | None = DEFAULT_MAX_RENDER_SIZE,
    max_pixels: int | None = None,
) -> list[Clip | InputDamage]:
    """Track the grid through the first ``history`` (+ ``future``) frames of a video.

    The video is decoded once at its own size; the tracker and the model see it placed
    in the working frame by ``fit`` (:mod:`trajloom.data.geometry`), the renders see it
    at its own size shrunk to ``max_render_size`` at most (``Clip.view``).
    ``tracker_factory()`` gives the tracker; it is called only once the frames are read.
    With ``ground_truth`` the future window is tracked too when the video holds it (its
    frames are then shown under the predicted future as well); without it only the
    history window is read and tracked. A video whose header promises the whole window
    but decodes fewer frames is damaged: an :class:`InputDamage` note comes before its
    clip (the history alone, when that decodes). ``max_pixels``: the largest frame
    (width x height from the header, checked before any frame is decoded).
    """
    try:
        info = probe_video(path)
    except VideoReadError as err:
        raise InputError(str(err)) from err
    if max_pixels is not None and info.width * info.height > max_pixels:
        raise InputError(
            f"{path}: {info.width}x{info.height} frames ({info.width * info.height} pixels) are "
            f"more than the {max_pixels} pixels per frame allowed; scale the video down or "
            "raise the limit (apps/sample --max-pixels)"
        )
    source = None
    notes: list[Clip | InputDamage] = []
    if ground_truth:
        # The header count can be an estimate: decode to be sure.
        try:
            source = read_video(path, num_frames=history + future)
        except VideoReadError:
            source = None  # shorter than history + future: the history alone, below
            if info.num_frames >= history + future:
                note = damage_note(path, info, count_frames(path))
                if note is not None:
                    notes.append(InputDamage(f"{note}; its ground-truth future is left out"))
    if source is None:
        try:
            source = read_video(path, num_frames=history)
        except VideoReadError as err:
            raise InputError(
                f"{path}: cannot read {history} history frames ({err}); the video holds "
                f"{info.num_frames} frames, the model's history window is {history} frames"
            ) from err
    placed = Fit((source.shape[2], source.shape[1]), grid.size, fit)
    frames = fit_frames(source, placed)
    shown = resize_frames(source, capped_size(placed.source, max_render_size))
    del source  # the largest array here: the working and render frames are kept
    result = tracker_factory().track(frames, grid=grid)
    clip = clip_from_arrays(
        clip_id=safe_stem(path.stem),
        source=str(path),
        tracks=result.tracks,
        visibility=result.visibility,
        src_size=grid.size,
        grid=grid,
        history=history,
        future=future,
        frames=frames,
        caption=caption,
        fps=info.fps or 16.0,
    )
    kept = 0 if clip.frames is None else clip.frames.shape[0]
    view = SourceView(shown[:kept], placed) if kept else None
    return [*notes, dataclasses.replace(clip, view=view)]


# --------------------------------------------------------------------------- released npz


def clips_from_npz(
    path: Path, *, grid: GridSpec, history: int, future: int, caption: str = ""
) -> list[Clip]:
    """A released-layout npz (and its mp4 beside it, when present) as one clip."""
    try:
        tracks, vis = load_released_npz(path)
    except FormatError as err:
        raise InputError(str(err)) from err
    video = next(
        (path.with_suffix(s) for s in VIDEO_SUFFIXES if path.with_suffix(s).is_file()), None
    )
    frames = None
    fps = 16.0
    src_size = grid.size
    if video is not None:
        try:
            info = probe_video(video)
            src_size = (info.width, info.height)
            fps = info.fps or fps
            count = min(tracks.shape[0], history + future)
            frames = read_video(video, size=grid.size, num_frames=count)
        except VideoReadError as err:
            raise InputError(f"{path}: its video {video.name} cannot be read ({err})") from err
    return [
        clip_from_arrays(
            clip_id=safe_stem(path.stem),
            source=str(path),
            tracks=tracks,
            visibility=vis,
            src_size=src_size,
            grid=grid,
            history=history,
            future=future,
            frames=frames,
            caption=caption or folder_captions(path.parent).get(path.stem, ""),
            fps=fps,
        )
    ]


# --------------------------------------------------------------------------- shards


def _frames_of(sample: ShardSample, grid: GridSpec, count: int) -> np.ndarray | None:
    if sample.video is None:
        return None
    frames = read_video(sample.video, size=grid.size, name=f"{sample.id}/video.mp4")
    return frames[:count]


def clips_from_shard(
    path: Path, *, grid: GridSpec, history: int, future: int
) -> Iterator[Clip | InputError]:
    """Every sample of a shard as a clip; a bad sample yields its InputError instead and
    the samples after it still come (a truncated shard ends with one InputError)."""
    for sample in iter_shard_items(path):
        if isinstance(sample, FormatError):
            yield InputError(str(sample))
            continue
        where = f"{path}:{sample.id}"
        try:
            check_name("shard sample id", sample.id)
        except UnsafeNameError as err:
            yield InputError(f"{path}: {err}; the sample is skipped")
            continue
        try:
            frames = _frames_of(sample, grid, history + future)
            yield clip_from_arrays(
                clip_id=sample.id,
                source=where,
                tracks=sample.tracks,
                visibility=sample.visibility,
                src_size=sample.size,
                grid=grid,
                history=history,
                future=future,
                frames=frames,
                # as training reads shard captions: with the camera phrase (app. E.2)
                caption=caption_with_camera(
                    str(sample.meta.get("caption", "")), str(sample.meta.get("camera", ""))
                ),
                fps=float(sample.meta.get("fps") or 16.0),
            )
        except (InputError, VideoReadError, FormatError) as err:
            yield err if isinstance(err, InputError) else InputError(f"{where}: {err}")


def load_clips(
    path: Path,
    *,
    grid: GridSpec,
    history: int,
    future: int,
    tracker_factory: Callable[[], Any],
    caption: str = "",
    ground_truth: bool = True,
    fit: str = DEFAULT_FIT,
    max_render_size: int | None = DEFAULT_MAX_RENDER_SIZE,
    max_pixels: int | None = None,
) -> Iterator[Clip | InputError | InputDamage]:
    """Clips of one input file, InputErrors saying why one failed (a shard may yield
    both), and InputDamage notes for damaged inputs that still gave a clip. ``fit`` and
    ``max_render_size``: how a video meets the working frame and how large its renders
    are (:func:`clips_from_video`); npz and shard tracks come in their own geometry."""
    try:
        kind = input_kind(path)
        if kind == "video":
            yield from clips_from_video(
                path,
                grid=grid,
                history=history,
                future=future,
                tracker_factory=tracker_factory,
                caption=caption,
                ground_truth=ground_truth,
                fit=fit,
                max_render_size=max_render_size,
                max_pixels=max_pixels,
            )
        elif kind == "npz":
            yield from clips_from_npz(
                path, grid=grid, history=history, future=future, caption=caption
            )
        else:
            yield from clips_from_shard(path, grid=grid, history=history, future=future)
    except InputError as err:
        yield err
    except (FormatError, VideoReadError) as err:
        yield InputError(str(err))
    except ValueError as err:
        # Trackers and converters raise ValueError on inputs they cannot use.
        yield InputError(f"{path}: {err}")

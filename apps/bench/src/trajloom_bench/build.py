"""Build TrajLoomBench: raw videos, synthetic scenes or released data -> shards per source.

Paper §4.1.4: every source is brought to one resolution (832x480), one window length
(162 frames = 81 history + 81 future) and one track grid (stride 32 -> 390 points).

* Raw videos (``--source NAME=FOLDER``, any resolution, frame rate and length): each
  video gives up to ``windows_per_video`` windows of ``history + future`` frames, the
  first starting at frame 0 (the paper takes the first 162 frames), the next ones
  ``window_stride`` frames later. Frames are resized to the bench resolution (area
  filter when shrinking). With ``fps`` set, frames are resampled in time to that rate
  by nearest-frame selection (output frame k shows the source frame at time k / fps;
  frames are repeated when the source is slower); without it the native rate is kept,
  as in the paper. The grid is tracked through the window from frame 0 with the chosen
  tracker of ``trajloom.data.tracking`` (default: the built-in flow tracker). A video
  too short for one window, or unreadable, is skipped and listed with the reason. Every
  video's windows asked and made are in the manifest (``videos``, with the totals
  ``windows_asked`` / ``windows_made``), and a video that decodes fewer frames than its
  header states is marked damaged (``damaged``). A captions CSV (``videoid, video_path,
  text``) in the folder supplies captions.
* Synthetic (``--source synthetic=COUNT``): COUNT scenes of ``trajloom.data.synthetic``
  with exact tracks, drawn at the bench resolution and window length.
* Released TrajLoomDatasets layout (``--released NAME=FOLDER``): ``<id>.npz`` + ``<id>.mp4``
  + captions CSV, converted unchanged with ``trajloom.data.shards``.

Output: ``OUT/<source>/shard-NNNNNN.tar`` + ``OUT/<source>/manifest.json`` per source and
``OUT/bench.json`` naming the sources in order, with the build settings.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trajloom.data.camera import camera_phrase, estimate_camera_motion
from trajloom.data.names import UniqueNames, natural_key, safe_stem
from trajloom.data.outputs import atomic_write_text
from trajloom.data.released import folder_captions
from trajloom.data.shards import (
    MANIFEST_NAME,
    ShardSample,
    convert_released_to_shards,
    write_shards,
)
from trajloom.data.synthetic import SceneConfig, make_scene, scene_seed
from trajloom.data.video import (
    VIDEO_SUFFIXES,
    VideoInfo,
    VideoReadError,
    damage_note,
    probe_video,
    read_video,
    write_video,
)
from trajloom.encoding import DEFAULT_FUTURE, DEFAULT_GRID, DEFAULT_HISTORY, GridSpec

__all__ = [
    "BENCH_FILE",
    "PAPER_SOURCES",
    "BenchConfig",
    "build_released_source",
    "build_synthetic_source",
    "build_video_source",
    "check_video_folder",
    "read_bench",
    "resample_indices",
    "video_windows",
    "write_bench_index",
]

BENCH_FILE = "bench.json"
#: The paper's source groups, in the order of its tables; other names follow them.
PAPER_SOURCES = ("kinetics", "robotap", "kubric", "magicdata", "synthetic")


@dataclass(frozen=True)
class BenchConfig:
    """Resolution, window and tracking of a TrajLoomBench build (defaults: the paper's)."""

    width: int = DEFAULT_GRID.width
    height: int = DEFAULT_GRID.height
    stride: int = DEFAULT_GRID.stride  # track grid spacing: 26 x 15 = 390 points at 832x480
    history: int = DEFAULT_HISTORY
    future: int = DEFAULT_FUTURE
    fps: float | None = None  # resample every video to this rate; None keeps the native rate
    windows_per_video: int = 1
    window_stride: int | None = None  # frames between window starts; None: one window length
    tracker: str = "flow"
    store_video: bool = True  # keep the window's frames (H.264) in the shard
    maxcount: int = 256  # samples per shard
    seed: int = 0  # synthetic scenes
    dynamics: str = "rigid"  # synthetic scenes' world (trajloom.data.synthetic.DYNAMICS)
    min_objects: int | None = None  # synthetic objects per scene; None: SceneConfig's
    max_objects: int | None = None

    def __post_init__(self) -> None:
        GridSpec(self.width, self.height, self.stride)  # validates the grid
        SceneConfig.preset(self.dynamics)  # validates the world's name
        for name in ("history", "future", "windows_per_video", "maxcount"):
            if getattr(self, name) < 1:
                raise ValueError(f"BenchConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.fps is not None and not 0 < self.fps < math.inf:
            raise ValueError(f"--fps must be a finite number > 0, got {self.fps}")
        if self.window_stride is not None and self.window_stride < 1:
            raise ValueError(f"BenchConfig.window_stride must be >= 1, got {self.window_stride}")

    @property
    def window(self) -> int:
        """Frames per window: history + future (162 for the paper)."""
        return self.history + self.future

    @property
    def grid(self) -> GridSpec:
        return GridSpec(self.width, self.height, self.stride)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- windows


def resample_indices(
    num_out: int, src_fps: float, dst_fps: float | None, start: int = 0
) -> np.ndarray:
    """Source frame of each of ``num_out`` output frames: nearest in time at ``dst_fps``.

    Output frame k sits at time k / dst_fps after the window start; it shows the source
    frame ``start + round(k * src_fps / dst_fps)``. ``dst_fps`` None (or a source
    without a known rate) keeps every frame: ``start + k``.
    """
    k = np.arange(num_out)
    if dst_fps is None or not src_fps or src_fps <= 0:
        return start + k
    return start + np.floor(k * (src_fps / dst_fps) + 0.5).astype(np.int64)


def video_windows(num_frames: int, src_fps: float, cfg: BenchConfig) -> list[np.ndarray]:
    """Source-frame indices of every window a video of ``num_frames`` frames gives."""
    step = cfg.window_stride or cfg.window
    # Window starts are counted in output frames, then mapped to the source.
    ratio = (src_fps / cfg.fps) if (cfg.fps and src_fps and src_fps > 0) else 1.0
    windows = []
    for w in range(cfg.windows_per_video):
        start = math.floor(w * step * ratio + 0.5)
        idx = resample_indices(cfg.window, src_fps, cfg.fps, start)
        if idx[-1] >= num_frames:
            break
        windows.append(idx)
    return windows


# --------------------------------------------------------------------------- sources


def _video_bytes(frames: np.ndarray, fps: float) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "clip.mp4", frames, fps=fps)
        return path.read_bytes()


def _read_needed(
    path: Path, num_frames: int, fps: float, cfg: BenchConfig
) -> tuple[np.ndarray, bool]:
    """Decode only the frames the windows need (the header count may be an estimate);
    returns the frames and whether they are the whole video (decoded to its end)."""
    size = (cfg.width, cfg.height)
    planned = video_windows(num_frames, fps, cfg)
    if planned:
        try:
            return read_video(path, size=size, num_frames=int(planned[-1][-1]) + 1), False
        except VideoReadError:
            pass  # fewer frames than the header said: decode all and count
    return read_video(path, size=size), True


def _list_videos(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(str(p.relative_to(folder))))


def check_video_folder(name: str, folder: Path) -> None:
    """ValueError unless ``folder`` is a folder holding at least one video (searched
    recursively): a source with nothing to build is refused before anything is written."""
    if not folder.is_dir():
        raise ValueError(f"source {name}: {folder} is not a folder of videos")
    if not _list_videos(folder):
        raise ValueError(
            f"source {name}: {folder} holds no video file ({', '.join(VIDEO_SUFFIXES)}), "
            "searched recursively; give a folder of videos"
        )


class _Skip(Exception):
    """A video that gives no window; the message names it and says why. ``info`` and
    ``decoded`` are its header and decoded frame count when it could be read."""

    def __init__(
        self, message: str, info: VideoInfo | None = None, decoded: int | None = None
    ) -> None:
        super().__init__(message)
        self.info = info
        self.decoded = decoded


def _decode_windows(
    path: Path, cfg: BenchConfig
) -> tuple[VideoInfo, np.ndarray, list[np.ndarray], int | None]:
    """A video's probe, decoded frames "t h w 3" (bench resolution), window indices, and
    its decoded frame count when it was decoded to the end (None: only what was needed).

    Raises _Skip when the video cannot be read or is shorter than one window.
    """
    try:
        info = probe_video(path)
        frames, whole = _read_needed(path, info.num_frames, info.fps, cfg)
    except VideoReadError as err:
        raise _Skip(str(err)) from err
    windows = video_windows(frames.shape[0], info.fps, cfg)
    if not windows:
        note = damage_note(path, info, frames.shape[0]) if whole else None
        raise _Skip(
            f"{path}: {frames.shape[0]} frames at {info.fps:.3g} fps are shorter than "
            f"one window of {cfg.window} frames"
            + (f" at {cfg.fps:g} fps" if cfg.fps else "")
            + f" ({cfg.history} history + {cfg.future} future)"
            + (f"; {note.split(': ', 1)[1]}" if note else ""),
            info,
            frames.shape[0],
        )
    return info, frames, windows, (frames.shape[0] if whole else None)


def _meta(cfg: BenchConfig, source: str, fps: float, **fields: Any) -> dict[str, Any]:
    """A shard sample's ``meta.json``: the bench grid, frame rate and source, plus ``fields``."""
    return {
        "width": cfg.width,
        "height": cfg.height,
        "stride": cfg.stride,
        "fps": fps,
        "source": source,
        **fields,
    }


def _video_record(
    path: Path, cfg: BenchConfig, made: int, info: VideoInfo | None, decoded: int | None
) -> dict[str, Any]:
    """A video's line of the manifest: windows asked and made, frames decoded (when it was
    decoded to the end), the header's count, and why it is damaged (or None)."""
    note = damage_note(path, info, decoded) if info is not None and decoded is not None else None
    return {
        "video": str(path),
        "windows_asked": cfg.windows_per_video,
        "windows_made": made,
        "frames_decoded": decoded,
        "frames_in_header": None if info is None else info.num_frames,
        "damaged": note,
    }


def _video_samples(
    folder: Path,
    name: str,
    cfg: BenchConfig,
    tracker: Any,
    skipped: list[str],
    progress: Callable[[str], None],
    videos: list[dict[str, Any]] | None = None,
) -> Iterator[ShardSample]:
    """One tracked sample per window of every video under ``folder`` (skips listed in
    ``skipped``; each video's windows asked and made appended to ``videos``)."""
    captions = folder_captions(folder)
    videos = [] if videos is None else videos
    names = UniqueNames()  # two videos of one stem (a.mp4, a.mkv) get distinct sample ids
    for path in _list_videos(folder):
        try:
            info, frames_all, windows, decoded = _decode_windows(path, cfg)
        except _Skip as skip:
            skipped.append(str(skip))
            videos.append(_video_record(path, cfg, 0, skip.info, skip.decoded))
            progress(f"skip {skip}")
            continue
        videos.append(_video_record(path, cfg, len(windows), info, decoded))
        parts = path.relative_to(folder).with_suffix("").parts
        base = names.claim("__".join(safe_stem(part) for part in parts))
        single = len(windows) == 1 and cfg.windows_per_video == 1
        fps = float(cfg.fps or info.fps or 16.0)
        for k, idx in enumerate(windows):
            frames = frames_all[idx]
            result = tracker.track(frames, grid=cfg.grid)
            motion = estimate_camera_motion(result.tracks, result.visibility, cfg.grid.size)
            sample_id = base if single else names.claim(f"{base}_w{k:02d}")
            meta = _meta(
                cfg,
                name,
                fps,
                caption=captions.get(path.stem, ""),
                camera=camera_phrase(motion),
                source_video=f"{name}/{base}",  # every window of the video: one split
                window=k,
                origin=str(path),
                origin_frames=[int(idx[0]), int(idx[-1])],
                origin_fps=float(info.fps),
                origin_size=[info.width, info.height],
                tracker=cfg.tracker,
            )
            video = _video_bytes(frames, fps) if cfg.store_video else None
            progress(f"{name}: {sample_id} ({frames.shape[0]} frames)")
            yield ShardSample(
                id=sample_id,
                tracks=result.tracks,
                visibility=result.visibility,
                meta=meta,
                video=video,
            )


def _finish(
    out: Path, manifest: dict[str, Any], skipped: list[str], extra: dict[str, Any]
) -> dict[str, Any]:
    manifest["skipped"] = manifest.get("skipped", []) + skipped
    manifest.update(extra)
    atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=2))
    return manifest


def build_video_source(
    name: str,
    folder: Path,
    out: Path,
    cfg: BenchConfig,
    tracker: Any,
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Windows of every video under ``folder`` -> tracks -> ``out`` shards; the manifest."""
    check_video_folder(name, folder)
    skipped: list[str] = []
    videos: list[dict[str, Any]] = []
    manifest = write_shards(
        _video_samples(folder, name, cfg, tracker, skipped, progress, videos),
        out,
        maxcount=cfg.maxcount,
    )
    extra = {
        "source": name,
        "kind": "videos",
        "from": str(folder),
        "windows_asked": sum(v["windows_asked"] for v in videos),
        "windows_made": sum(v["windows_made"] for v in videos),
        "damaged": [v["damaged"] for v in videos if v["damaged"]],
        "videos": videos,
    }
    return _finish(out, manifest, skipped, extra)


def build_synthetic_source(
    name: str,
    count: int,
    out: Path,
    cfg: BenchConfig,
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """``count`` synthetic scenes (exact tracks) at the bench resolution and window length."""
    if count < 1:
        raise ValueError(f"source {name}: the number of synthetic clips must be >= 1, got {count}")
    objects = {
        key: value
        for key, value in (("min_objects", cfg.min_objects), ("max_objects", cfg.max_objects))
        if value is not None
    }
    scene_cfg = SceneConfig.preset(
        cfg.dynamics,
        width=cfg.width,
        height=cfg.height,
        stride=cfg.stride,
        num_frames=cfg.window,
        fps=float(cfg.fps or 16.0),
        render_frames=cfg.store_video,
        **objects,
    )

    def samples() -> Iterator[ShardSample]:
        for i in range(count):
            scene = make_scene(scene_seed(cfg.seed, i), scene_cfg)
            progress(f"{name}: scene {i}")
            meta = _meta(
                cfg,
                name,
                scene_cfg.fps,
                caption=scene.caption,
                camera=scene.camera_phrase,
                source_video=f"{name}/{i:05d}",
                tracker="exact",
            )
            video = (
                _video_bytes(scene.frames, scene_cfg.fps)
                if cfg.store_video and scene.frames is not None
                else None
            )
            yield ShardSample(
                id=f"{name}_{i:05d}",
                tracks=scene.tracks,
                visibility=scene.visibility,
                meta=meta,
                video=video,
            )

    manifest = write_shards(samples(), out, maxcount=cfg.maxcount)
    return _finish(out, manifest, [], {"source": name, "kind": "synthetic", "count": count})


def build_released_source(name: str, folder: Path, out: Path, cfg: BenchConfig) -> dict[str, Any]:
    """A released TrajLoomDatasets folder (npz + mp4 + captions CSV) -> shards, unchanged."""
    manifest = convert_released_to_shards(
        folder,
        out,
        size=(cfg.width, cfg.height),
        stride=cfg.stride,
        source=name,
        include_video=cfg.store_video,
        maxcount=cfg.maxcount,
    )
    return _finish(out, manifest, [], {"source": name, "kind": "released", "from": str(folder)})


# --------------------------------------------------------------------------- bench index


def _order(names: list[str]) -> list[str]:
    paper = [n for n in PAPER_SOURCES if n in names]
    return paper + [n for n in names if n not in PAPER_SOURCES]


def write_bench_index(out: Path, cfg: BenchConfig, manifests: dict[str, dict[str, Any]]) -> Path:
    """Write ``out/bench.json``: sources (paper order first) with folder, count and skips."""
    index_path = out / BENCH_FILE
    previous = read_bench(out)["sources"] if index_path.is_file() else {}
    sources = dict(previous)
    for name, manifest in manifests.items():
        sources[name] = {
            "path": name,
            "kind": manifest.get("kind", ""),
            "num_samples": manifest.get("num_samples", 0),
            "num_skipped": len(manifest.get("skipped", [])),
        }
    index = {
        "config": cfg.to_dict(),
        "sources": {n: sources[n] for n in _order(list(sources))},
    }
    atomic_write_text(index_path, json.dumps(index, indent=2))
    return index_path


def read_bench(root: Path) -> dict[str, Any]:
    """Read ``root/bench.json``; a folder of ``<source>/manifest.json`` folders also works."""
    root = Path(root)
    index = root / BENCH_FILE
    if index.is_file():
        try:
            data = json.loads(index.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ValueError(
                f"{index}: not a readable bench index ({type(err).__name__}: {err}); rebuild "
                "the bench with `bench build`"
            ) from err
        if not isinstance(data, dict) or not isinstance(data.get("sources"), dict):
            raise ValueError(f"{index}: holds no 'sources'; rebuild the bench with `bench build`")
        return data
    if not root.is_dir():
        raise ValueError(f"{root}: bench folder does not exist; build one with `bench build`")
    found = sorted(p.parent.name for p in root.glob("*/manifest.json"))
    if not found:
        raise ValueError(
            f"{root}: neither {BENCH_FILE} nor <source>/manifest.json folders; build one with "
            "`bench build`"
        )
    return {"config": {}, "sources": {n: {"path": n} for n in _order(found)}}

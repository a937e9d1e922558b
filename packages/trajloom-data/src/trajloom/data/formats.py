"""Dataset formats (DESIGN.md, "Formats"): released npz + captions CSV, shards, run folders, Wan-Move.

In memory every track array is time-major, pixels of its clip: tracks "t n 2" float32 and
visibility "t n" bool. The converters below are the only places where the on-disk layouts
("n t 2" in the released npz, uint8 visibility in run folders, a leading batch axis in the
Wan-Move export) appear.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from trajloom.data.camera import camera_phrase, estimate_camera_motion
from trajloom.data.video import VIDEO_SUFFIXES, VideoReadError, probe_video

__all__ = [
    "CAPTION_COLUMNS",
    "PREDICTION_CLIP_EPS",
    "RELEASED_TRACK_KEYS",
    "RELEASED_VIS_KEYS",
    "FormatError",
    "ReleasedItem",
    "RunFolder",
    "ShardSample",
    "canonical_id",
    "convert_released_to_shards",
    "decode_shard_sample",
    "encode_shard_sample",
    "find_released_items",
    "iter_shard_samples",
    "load_released_npz",
    "read_captions_csv",
    "read_manifest",
    "read_run_folder",
    "read_wanmove",
    "sanitize_predictions",
    "save_released_npz",
    "shard_key",
    "write_captions_csv",
    "write_run_folder",
    "write_shards",
    "write_wanmove",
]

#: npz keys tried, in the released loader's order, for tracks "n t 2" and visibility "n t".
RELEASED_TRACK_KEYS = ("trajectory", "trajectories", "tracks")
RELEASED_VIS_KEYS = ("visibility", "visibilities", "vis")
#: Columns of the released captions CSV.
CAPTION_COLUMNS = ("videoid", "video_path", "text")
# Other id / text column names seen in released tables; read, never written.
_ID_FALLBACKS = ("videoid", "vid", "video_id", "id")
_TEXT_FALLBACKS = ("text", "prompt", "caption", "cap", "description", "Prompt", "Caption")

MANIFEST_NAME = "manifest.json"


class FormatError(ValueError):
    """A file does not follow its format; the message names the file and what is wrong.

    `reason` is a short tag for statistics: missing_file, missing_key, missing_member,
    corrupt_member, bad_shape, nan_tracks, bad_meta.
    """

    def __init__(self, message: str, reason: str = "bad_format") -> None:
        super().__init__(message)
        self.reason = reason


def canonical_id(path_or_name: str | os.PathLike) -> str:
    """The video id of a path or name, as the released code derives it: '.../6764402.mp4' -> '6764402'."""
    return Path(str(path_or_name).strip()).stem


def shard_key(video_id: str) -> str:
    """A WebDataset-safe sample key for `video_id`.

    WebDataset splits a member name at the first dot of its base name into key and
    extension, and treats '/' as a folder, so both are replaced; the true id stays in
    `meta.json` ("id").
    """
    key = re.sub(r"[./\\\s]", "_", video_id)
    if not key:
        raise FormatError(f"video id {video_id!r} gives an empty shard key")
    return key


# --------------------------------------------------------------------------- released npz


def _check_pair(tracks: np.ndarray, vis: np.ndarray, where: str, *, allow_nonfinite: bool) -> None:
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise FormatError(f"{where}: tracks must be 't n 2', got shape {tracks.shape}", "bad_shape")
    if tracks.shape[0] < 1 or tracks.shape[1] < 1:
        raise FormatError(f"{where}: tracks are empty (shape {tracks.shape})", "bad_shape")
    if vis.shape != tracks.shape[:2]:
        raise FormatError(
            f"{where}: visibility has shape {vis.shape}, expected {tracks.shape[:2]} (tracks' t n)",
            "bad_shape",
        )
    if not allow_nonfinite and not np.isfinite(tracks).all():
        bad = int((~np.isfinite(tracks)).sum())
        raise FormatError(
            f"{where}: tracks hold {bad} NaN/inf coordinates; fill occluded points with a finite "
            "position and mark them invisible",
            "nan_tracks",
        )


def load_released_npz(
    path: str | Path, *, allow_nonfinite: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read a released `<id>.npz`: returns tracks "t n 2" float32 px and visibility "t n" bool.

    Key fallbacks as the released loader: tracks under `trajectory`, `trajectories` or
    `tracks` ("n t 2"), visibility under `visibility`, `visibilities` or `vis` ("n t").
    Raises FormatError on a missing or unreadable file, missing keys, bad shapes, or NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: file does not exist", "missing_file")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys())
            tkey = next((k for k in RELEASED_TRACK_KEYS if k in keys), None)
            vkey = next((k for k in RELEASED_VIS_KEYS if k in keys), None)
            if tkey is None or vkey is None:
                raise FormatError(
                    f"{path}: needs a tracks key ({'|'.join(RELEASED_TRACK_KEYS)}) and a "
                    f"visibility key ({'|'.join(RELEASED_VIS_KEYS)}); found {sorted(keys)}",
                    "missing_key",
                )
            tracks_nt = np.asarray(data[tkey], dtype=np.float32)
            vis_nt = np.asarray(data[vkey])
    except FormatError:
        raise
    except (OSError, ValueError, EOFError) as err:
        raise FormatError(f"{path}: not a readable npz ({err})", "corrupt_member") from err
    if tracks_nt.ndim != 3 or tracks_nt.shape[-1] != 2:
        raise FormatError(f"{path}: '{tkey}' must be 'n t 2', got shape {tracks_nt.shape}")
    tracks = np.ascontiguousarray(np.swapaxes(tracks_nt, 0, 1))
    vis = np.ascontiguousarray(np.swapaxes(vis_nt, 0, 1)) if vis_nt.ndim == 2 else vis_nt
    _check_pair(tracks, vis, str(path), allow_nonfinite=allow_nonfinite)
    return tracks, vis.astype(bool)


def save_released_npz(path: str | Path, tracks: np.ndarray, visibility: np.ndarray) -> Path:
    """Write tracks "t n 2" and visibility "t n" as a released `<id>.npz` ("n t 2", "n t")."""
    path = Path(path)
    tracks = np.asarray(tracks, dtype=np.float32)
    visibility = np.asarray(visibility).astype(bool)
    _check_pair(tracks, visibility, str(path), allow_nonfinite=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        tracks=np.ascontiguousarray(np.swapaxes(tracks, 0, 1)),
        visibility=np.ascontiguousarray(np.swapaxes(visibility, 0, 1)),
    )
    return path


def read_captions_csv(path: str | Path) -> dict[str, str]:
    """Read a captions CSV (`videoid, video_path, text`) into `{video id: caption}`.

    The id comes from `videoid` (or `vid`, `video_id`, `id`), else from the stem of
    `video_path`; rows with neither are ignored. Ids are canonicalized ('a/b.mp4' -> 'b').
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: captions CSV does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        headers = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = headers
        text_col = next((c for c in _TEXT_FALLBACKS if c in headers), None)
        id_col = next((c for c in _ID_FALLBACKS if c in headers), None)
        if text_col is None or (id_col is None and "video_path" not in headers):
            raise FormatError(
                f"{path}: needs columns {', '.join(CAPTION_COLUMNS)} (or an id and a text "
                f"column); found {headers}"
            )
        captions: dict[str, str] = {}
        for row in reader:
            vid = (row.get(id_col) or "").strip() if id_col else ""
            if not vid:
                vid = (row.get("video_path") or "").strip()
            if vid:
                captions[canonical_id(vid)] = (row.get(text_col) or "").strip()
    return captions


def write_captions_csv(
    path: str | Path, captions: Mapping[str, str], video_paths: Mapping[str, str] | None = None
) -> Path:
    """Write `{video id: caption}` as a captions CSV with columns `videoid, video_path, text`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    video_paths = video_paths or {}
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CAPTION_COLUMNS)
        for vid, text in captions.items():
            writer.writerow([vid, video_paths.get(vid, f"{vid}.mp4"), text])
    return path


@dataclass(frozen=True)
class ReleasedItem:
    """One clip of a released-layout folder: its id, track npz and video (if found)."""

    id: str
    npz: Path
    video: Path | None


def _natural(name: str) -> list[int | str]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def find_released_items(
    tracks_dir: str | Path, video_dir: str | Path | None = None
) -> list[ReleasedItem]:
    """Pair every `<id>.npz` under `tracks_dir` with `<id>.<video suffix>` in `video_dir`.

    `video_dir` defaults to `tracks_dir`. Items come in natural order of their ids.
    """
    tracks_dir = Path(tracks_dir)
    if not tracks_dir.is_dir():
        raise FormatError(f"{tracks_dir}: tracks folder does not exist")
    video_dir = Path(video_dir) if video_dir is not None else tracks_dir
    videos: dict[str, Path] = {}
    if video_dir.is_dir():
        for p in video_dir.iterdir():
            if p.suffix.lower() in VIDEO_SUFFIXES:
                videos.setdefault(p.stem, p)
    items = [
        ReleasedItem(id=p.stem, npz=p, video=videos.get(p.stem)) for p in tracks_dir.glob("*.npz")
    ]
    return sorted(items, key=lambda it: _natural(it.id))


# --------------------------------------------------------------------------- shards


@dataclass
class ShardSample:
    """One clip as stored in our shards.

    `tracks` "t n 2" float32 in pixels of (meta width, meta height); `visibility` "t n"
    bool; `meta` holds at least width, height, stride, fps, source, caption, camera;
    `video` the encoded MP4 bytes; `text` and `video_latent` precomputed embeddings.
    """

    id: str
    tracks: np.ndarray
    visibility: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    video: bytes | None = None
    text: np.ndarray | None = None
    video_latent: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.meta["width"]), int(self.meta["height"])


_META_REQUIRED = ("width", "height")


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _npy_load(data: bytes, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise FormatError(f"{where}: not a readable .npy ({err})", "corrupt_member") from err


def encode_shard_sample(sample: ShardSample) -> dict[str, Any]:
    """A ShardSample as the member dict `wds.TarWriter.write` takes (all values bytes)."""
    tracks = np.asarray(sample.tracks, dtype=np.float32)
    vis = np.asarray(sample.visibility).astype(bool)
    _check_pair(tracks, vis, sample.id, allow_nonfinite=False)
    for k in _META_REQUIRED:
        if k not in sample.meta:
            raise FormatError(f"{sample.id}: meta needs '{k}' (the pixel frame of the tracks)")
    meta = {**sample.meta, "id": sample.id}
    out: dict[str, Any] = {
        "__key__": shard_key(sample.id),
        "tracks.npy": _npy_bytes(tracks),
        "visibility.npy": _npy_bytes(vis),
        "meta.json": json.dumps(meta, sort_keys=True).encode("utf-8"),
    }
    if sample.video is not None:
        out["video.mp4"] = bytes(sample.video)
    if sample.text is not None:
        out["text.npy"] = _npy_bytes(np.asarray(sample.text))
    if sample.video_latent is not None:
        out["video_latent.npy"] = _npy_bytes(np.asarray(sample.video_latent))
    return out


def decode_shard_sample(raw: Mapping[str, Any], *, allow_nonfinite: bool = False) -> ShardSample:
    """A raw WebDataset sample (`__key__`, member name -> bytes) -> ShardSample.

    Raises FormatError, naming the shard and key, on a missing or unreadable member, bad
    shapes or NaN tracks.
    """
    where = f"{raw.get('__url__', '<shard>')}:{raw.get('__key__', '<key>')}"
    for member in ("tracks.npy", "visibility.npy", "meta.json"):
        if member not in raw:
            present = sorted(k for k in raw if not k.startswith("__"))
            raise FormatError(
                f"{where}: member {member} is missing (has {present})", "missing_member"
            )
    tracks = _npy_load(raw["tracks.npy"], f"{where}/tracks.npy")
    vis = _npy_load(raw["visibility.npy"], f"{where}/visibility.npy")
    try:
        meta = json.loads(raw["meta.json"].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FormatError(f"{where}/meta.json: not valid JSON ({err})", "bad_meta") from err
    if not isinstance(meta, dict) or any(k not in meta for k in _META_REQUIRED):
        raise FormatError(f"{where}/meta.json: needs keys {_META_REQUIRED}", "bad_meta")
    for k in _META_REQUIRED:
        value = meta[k]
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral or value < 1:
            raise FormatError(
                f"{where}/meta.json: '{k}' must be a positive int, got {value!r}", "bad_meta"
            )
    if vis.dtype != np.bool_:
        raise FormatError(f"{where}/visibility.npy: must be bool, got {vis.dtype}", "bad_shape")
    _check_pair(tracks, vis, where, allow_nonfinite=allow_nonfinite)
    text = _npy_load(raw["text.npy"], f"{where}/text.npy") if "text.npy" in raw else None
    latent = (
        _npy_load(raw["video_latent.npy"], f"{where}/video_latent.npy")
        if "video_latent.npy" in raw
        else None
    )
    for name, array in (("text.npy", text), ("video_latent.npy", latent), ("tracks.npy", tracks)):
        if array is not None and not (
            np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
        ):
            raise FormatError(
                f"{where}/{name}: must be numeric, got dtype {array.dtype}", "corrupt_member"
            )
    return ShardSample(
        id=str(meta.get("id", raw.get("__key__", ""))),
        tracks=tracks.astype(np.float32, copy=False),
        visibility=vis,
        meta=meta,
        video=raw.get("video.mp4"),
        text=text,
        video_latent=latent,
    )


def _split_member(name: str) -> tuple[str, str]:
    # WebDataset's rule: the key runs up to the first dot of the base name.
    folder, _, base = name.rpartition("/")
    key, _, ext = base.partition(".")
    return (f"{folder}/{key}" if folder else key), ext


def iter_shard_samples(path: str | Path) -> Iterator[ShardSample]:
    """Decode every sample of one local shard ``.tar``, in file order.

    Members are grouped by key (WebDataset's rule: up to the first dot of the base name)
    as they come; no shuffling, no splitting into windows, no decoding of the video (see
    :mod:`trajloom.data.stream` for training). Raises :class:`FormatError` with reason
    ``corrupt_shard`` when the tar cannot be read, and ``decode_shard_sample``'s
    FormatError for a bad sample (which ends the iteration).
    """
    try:
        with tarfile.open(path, mode="r") as tar:
            yield from _samples_of(tar, str(path))
    except (tarfile.TarError, OSError) as err:
        raise FormatError(f"{path}: not a readable shard tar ({err})", "corrupt_shard") from err


def _samples_of(tar: tarfile.TarFile, url: str) -> Iterator[ShardSample]:
    current: dict[str, Any] = {}
    for member in tar:
        if not member.isfile():
            continue
        key, ext = _split_member(member.name)
        if current and current["__key__"] != key:
            yield decode_shard_sample(current)
            current = {}
        if not current:
            current = {"__key__": key, "__url__": url}
        handle = tar.extractfile(member)
        current[ext] = handle.read() if handle is not None else b""
    if current:
        yield decode_shard_sample(current)


def write_shards(
    samples: Iterable[ShardSample],
    out_dir: str | Path,
    *,
    maxcount: int = 256,
    maxsize: float = 1e9,
    prefix: str = "shard",
) -> dict[str, Any]:
    """Write samples into `out_dir/<prefix>-NNNNNN.tar` shards and `manifest.json`; returns the manifest.

    The manifest holds the shard names (relative to `out_dir`) with their counts, the total,
    and summaries of resolution, frames, tracks per clip, sources and members.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if maxcount < 1:
        raise ValueError(f"maxcount must be >= 1, got {maxcount}")
    shards: list[dict[str, Any]] = []
    resolutions: Counter[str] = Counter()
    frames: Counter[int] = Counter()
    points: Counter[int] = Counter()
    sources: Counter[str] = Counter()
    members: Counter[str] = Counter()
    seen: set[str] = set()

    pattern = str(out_dir / f"{prefix}-%06d.tar")
    writer: wds.ShardWriter | None = None
    try:
        for sample in samples:
            encoded = encode_shard_sample(sample)
            if encoded["__key__"] in seen:
                raise FormatError(
                    f"{sample.id}: two samples share the shard key {encoded['__key__']!r}; "
                    "ids must be unique"
                )
            seen.add(encoded["__key__"])
            if writer is None:
                # mtime=0 makes the tar bytes reproducible
                writer = wds.ShardWriter(
                    pattern, maxcount=maxcount, maxsize=maxsize, verbose=0, mtime=0
                )
            writer.write(encoded)
            name = Path(writer.fname).name
            if not shards or shards[-1]["url"] != name:
                shards.append({"url": name, "count": 0})
            shards[-1]["count"] += 1
            w, h = sample.size
            resolutions[f"{w}x{h}"] += 1
            frames[int(sample.tracks.shape[0])] += 1
            points[int(sample.tracks.shape[1])] += 1
            sources[str(sample.meta.get("source", "unknown"))] += 1
            members.update(k for k in encoded if not k.startswith("__"))
    finally:
        if writer is not None:
            writer.close()
    manifest = {
        "shards": shards,
        "num_samples": sum(s["count"] for s in shards),
        "resolutions": dict(sorted(resolutions.items())),
        "frames": {str(k): v for k, v in sorted(frames.items())},
        "num_tracks": {str(k): v for k, v in sorted(points.items())},
        "sources": dict(sorted(sources.items())),
        "members": dict(sorted(members.items())),
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return manifest


def read_manifest(path: str | Path) -> tuple[list[str], dict[str, Any]]:
    """Read a shard folder's manifest (folder or `manifest.json`): returns (shard paths, manifest)."""
    path = Path(path)
    file = path / MANIFEST_NAME if path.is_dir() else path
    if not file.is_file():
        raise FormatError(f"{file}: shard manifest does not exist; write shards with write_shards")
    manifest = json.loads(file.read_text())
    return [str(file.parent / s["url"]) for s in manifest["shards"]], manifest


def _released_samples(
    items: Iterable[ReleasedItem],
    captions: Mapping[str, str],
    *,
    size: tuple[int, int] | None,
    stride: int,
    fps: float | None,
    source: str,
    include_video: bool,
    camera: bool,
    skipped: list[str],
) -> Iterator[ShardSample]:
    for item in items:
        try:
            tracks, vis = load_released_npz(item.npz)
            info = probe_video(item.video) if item.video is not None else None
        except (FormatError, VideoReadError) as err:
            skipped.append(str(err))
            continue
        if info is not None:
            width, height, clip_fps = info.width, info.height, info.fps
        elif size is not None:
            width, height, clip_fps = size[0], size[1], 0.0
        else:
            skipped.append(
                f"{item.npz}: no video beside it and no size given; pass size=(width, height)"
            )
            continue
        phrase = ""
        if camera:
            motion = estimate_camera_motion(tracks, vis, (int(width), int(height)))
            phrase = camera_phrase(motion)
        meta = {
            "width": int(width),
            "height": int(height),
            "stride": int(stride),
            "fps": float(fps if fps is not None else clip_fps),
            "source": source,
            "caption": captions.get(item.id, ""),
            "camera": phrase,
        }
        video = item.video.read_bytes() if include_video and item.video is not None else None
        yield ShardSample(id=item.id, tracks=tracks, visibility=vis, meta=meta, video=video)


def convert_released_to_shards(
    src: str | Path,
    out: str | Path,
    *,
    video_dir: str | Path | None = None,
    captions: str | Path | None = None,
    size: tuple[int, int] | None = None,
    stride: int = 32,
    fps: float | None = None,
    source: str = "released",
    include_video: bool = True,
    camera: bool = True,
    maxcount: int = 256,
) -> dict[str, Any]:
    """Convert a released-layout folder (or any folder of `<id>.npz` + `<id>.mp4`) to shards.

    The tracks' pixel frame is the video's size (probed), else `size`; the video bytes are
    stored unchanged. `captions` is a CSV (`videoid, video_path, text`); when omitted, a
    `*.csv` in `src` is used if there is exactly one. With `camera`, the camera phrase
    estimated from the tracks (`trajloom.data.camera`) goes into meta "camera". Unreadable
    items are skipped and listed in the manifest under "skipped" (with reasons). Returns
    the manifest.
    """
    src = Path(src)
    if captions is None:
        csvs = sorted(src.glob("*.csv"))
        captions = csvs[0] if len(csvs) == 1 else None
    caption_map = read_captions_csv(captions) if captions is not None else {}
    items = find_released_items(src, video_dir)
    if not items:
        raise FormatError(f"{src}: no <id>.npz files to convert")
    skipped: list[str] = []
    manifest = write_shards(
        _released_samples(
            items,
            caption_map,
            size=size,
            stride=stride,
            fps=fps,
            source=source,
            include_video=include_video,
            camera=camera,
            skipped=skipped,
        ),
        out,
        maxcount=maxcount,
    )
    manifest["skipped"] = skipped
    manifest["converted_from"] = str(src)
    (Path(out) / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return manifest


# --------------------------------------------------------------------------- run folders


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
    """Write a RunFolder's arrays (`query_xy.npy`, `pred_tracks.npy`, ... , `meta.json`)."""
    folder = Path(folder)
    pred = np.asarray(run.pred_tracks, dtype=np.float32)
    pvis = np.asarray(run.pred_visibility)
    _check_pair(pred, pvis, f"{folder}/pred_tracks", allow_nonfinite=False)
    query = np.asarray(run.query_xy, dtype=np.float32)
    if query.shape != (pred.shape[1], 2):
        raise FormatError(
            f"{folder}: query_xy must be 'n 2' = {(pred.shape[1], 2)}, got {query.shape}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "query_xy.npy", query)
    np.save(folder / "pred_tracks.npy", pred)
    np.save(folder / "pred_visibility.npy", pvis.astype(bool).astype(np.uint8))
    if run.pred_visibility_prob is not None:
        prob = np.asarray(run.pred_visibility_prob, dtype=np.float32)
        if prob.shape != pvis.shape:
            raise FormatError(f"{folder}: pred_visibility_prob shape {prob.shape} != {pvis.shape}")
        np.save(folder / "pred_visibility_prob.npy", prob)
    if run.gt_tracks is not None:
        gt = np.asarray(run.gt_tracks, dtype=np.float32)
        gvis = np.asarray(
            run.gt_visibility if run.gt_visibility is not None else np.ones(gt.shape[:2], bool)
        )
        _check_pair(gt, gvis, f"{folder}/gt_tracks", allow_nonfinite=True)
        np.save(folder / "gt_tracks.npy", gt)
        np.save(folder / "gt_visibility.npy", gvis.astype(bool).astype(np.uint8))
    (folder / "meta.json").write_text(json.dumps(run.meta, indent=2, sort_keys=True))
    return folder


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


# --------------------------------------------------------------------------- Wan-Move


def write_wanmove(
    out_dir: str | Path,
    video_id: str,
    tracks: np.ndarray,
    visibility: np.ndarray,
    *,
    src_size: tuple[int, int] | None = None,
    image_size: tuple[int, int] | None = None,
) -> tuple[Path, Path]:
    """Write `<id>_tracks.npy` float32 "1 f n 2" and `<id>_visibility.npy` bool "1 f n".

    Wan-Move reads the pixels of its conditioning image: give `src_size` (the tracks' frame)
    and `image_size` (the image's) as (width, height) to rescale; Wan-Move ignores points
    that are invisible or outside the image. Returns the two paths.
    """
    tracks = np.asarray(tracks, dtype=np.float32)
    vis = np.asarray(visibility).astype(bool)
    _check_pair(tracks, vis, video_id, allow_nonfinite=False)
    if (src_size is None) != (image_size is None):
        raise ValueError("give both src_size and image_size to rescale, or neither")
    if src_size is not None and image_size is not None:
        scale = np.array(
            [image_size[0] / src_size[0], image_size[1] / src_size[1]], dtype=np.float32
        )
        tracks = tracks * scale
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tpath, vpath = out_dir / f"{video_id}_tracks.npy", out_dir / f"{video_id}_visibility.npy"
    np.save(tpath, tracks[None])
    np.save(vpath, vis[None])
    return tpath, vpath


def read_wanmove(out_dir: str | Path, video_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a Wan-Move export: tracks "f n 2" float32 and visibility "f n" bool (batch axis dropped)."""
    out_dir = Path(out_dir)
    tpath, vpath = out_dir / f"{video_id}_tracks.npy", out_dir / f"{video_id}_visibility.npy"
    for p in (tpath, vpath):
        if not p.is_file():
            raise FormatError(f"{p}: Wan-Move export file is missing")
    tracks, vis = np.load(tpath), np.load(vpath)
    if tracks.ndim != 4 or tracks.shape[0] != 1 or vis.shape != tracks.shape[:3]:
        raise FormatError(
            f"{tpath}: expected tracks '1 f n 2' and visibility '1 f n', got {tracks.shape}, {vis.shape}"
        )
    return tracks[0].astype(np.float32), vis[0].astype(bool)

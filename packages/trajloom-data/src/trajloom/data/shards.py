"""Our WebDataset shards (DESIGN.md, "Formats"): samples, their encoding, shard sets, manifests.

A sample keyed `<id>` holds `tracks.npy` float32 "t n 2" (pixels of meta width x height),
`visibility.npy` bool "t n", `meta.json` (width, height, stride, fps, source, caption,
camera), and optionally `video.mp4`, `text.npy`, `video_latent.npy`. A shard set is a
folder of `<prefix>-NNNNNN.tar` files with a `manifest.json`. Training streams shards
with `trajloom.data.stream`; this module writes them, reads one shard in order, and
converts a released-layout folder.
"""

from __future__ import annotations

import io
import json
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
from trajloom.data.checks import FormatError, check_tracks
from trajloom.data.outputs import atomic_write_text
from trajloom.data.released import (
    ReleasedItem,
    find_released_items,
    load_released_npz,
    read_captions_csv,
    sole_csv,
)
from trajloom.data.video import VideoReadError, probe_video
from trajloom.encoding import DEFAULT_GRID

__all__ = [
    "MANIFEST_NAME",
    "ShardSample",
    "convert_released_to_shards",
    "decode_shard_sample",
    "encode_shard_sample",
    "iter_shard_items",
    "iter_shard_samples",
    "read_manifest",
    "shard_key",
    "write_shards",
]

MANIFEST_NAME = "manifest.json"


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
    check_tracks(tracks, vis, sample.id, allow_nonfinite=False)
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
    check_tracks(tracks, vis, where, allow_nonfinite=allow_nonfinite)
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
    """Decode every sample of one local shard ``.tar``, in file order; stop at the first fault.

    Members are grouped by key (WebDataset's rule: up to the first dot of the base name)
    as they come; no shuffling, no splitting into windows, no decoding of the video (see
    :mod:`trajloom.data.stream` for training). Raises the first :class:`FormatError` of
    :func:`iter_shard_items`: reason ``corrupt_shard`` when the tar cannot be read,
    ``truncated_shard`` when it breaks off, ``decode_shard_sample``'s for a bad sample.
    Batch commands that must go on past a bad sample use :func:`iter_shard_items`.
    """
    for item in iter_shard_items(path):
        if isinstance(item, FormatError):
            raise item
        yield item


_TAR_BLOCK = 512


def iter_shard_items(path: str | Path) -> Iterator[ShardSample | FormatError]:
    """Every sample of one local shard ``.tar`` in file order, a bad one as its error.

    A sample that does not decode (garbage or missing member, bad JSON, NaN tracks) is
    yielded as its :class:`FormatError` and reading goes on with the next sample. A file
    that is no tar gives one FormatError (``corrupt_shard``); a tar that breaks off (a
    truncated copy: a member's data or the end-of-archive marker missing) gives the
    samples before the break, then one FormatError (``truncated_shard``) saying how many
    samples were read: the rest of the shard is lost and the caller counts it.
    """
    path = Path(path)
    try:
        tar = tarfile.open(path, mode="r")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        yield FormatError(f"{path}: not a readable shard tar ({first})", "corrupt_shard")
        return
    read = 0
    with tar:
        current: dict[str, Any] = {}
        try:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split_member(member.name)
                if current and current["__key__"] != key:
                    item = _decoded(current)
                    read += isinstance(item, ShardSample)
                    yield item
                    current = {}
                if not current:
                    current = {"__key__": key, "__url__": str(path)}
                handle = tar.extractfile(member)
                current[ext] = handle.read() if handle is not None else b""
        except (tarfile.TarError, OSError, EOFError) as err:
            where = f" in sample {current['__key__']}" if current else ""
            yield _truncated(path, read, f"{err}{where}")
            return
        last = _decoded(current) if current else None
        if _ends_cleanly(tar, path):
            if last is not None:
                yield last
            return
        # Cut short: the last sample counts only when it is whole; the cut is one error.
        why = "no end-of-archive marker"
        if isinstance(last, ShardSample):
            read += 1
            yield last
        elif last is not None:
            why += f"; sample {current['__key__']} is incomplete"
        yield _truncated(path, read, why)


def _decoded(raw: Mapping[str, Any]) -> ShardSample | FormatError:
    try:
        return decode_shard_sample(raw)
    except FormatError as err:
        return err


def _truncated(path: Path, read: int, why: str) -> FormatError:
    return FormatError(
        f"{path}: shard breaks off after {read} good sample(s) ({why}); it is truncated or "
        "damaged, the rest of it is lost: copy or rebuild the shard",
        "truncated_shard",
    )


def _ends_cleanly(tar: tarfile.TarFile, path: Path) -> bool:
    """Whether the tar ends with its end-of-archive marker (a zero block where reading
    stopped): ``tarfile`` ends iteration silently at a header cut short."""
    offset = tar.offset
    with path.open("rb") as f:
        f.seek(offset)
        block = f.read(_TAR_BLOCK)
    return len(block) == _TAR_BLOCK and not any(block)


@dataclass
class _Tally:
    """What a manifest summarizes about the samples written so far."""

    shards: list[dict[str, Any]] = field(default_factory=list)
    resolutions: Counter[str] = field(default_factory=Counter)
    frames: Counter[int] = field(default_factory=Counter)
    points: Counter[int] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    members: Counter[str] = field(default_factory=Counter)

    def add(self, sample: ShardSample, encoded: Mapping[str, Any], shard: str) -> None:
        if not self.shards or self.shards[-1]["url"] != shard:
            self.shards.append({"url": shard, "count": 0})
        self.shards[-1]["count"] += 1
        w, h = sample.size
        self.resolutions[f"{w}x{h}"] += 1
        self.frames[int(sample.tracks.shape[0])] += 1
        self.points[int(sample.tracks.shape[1])] += 1
        self.sources[str(sample.meta.get("source", "unknown"))] += 1
        self.members.update(k for k in encoded if not k.startswith("__"))

    def manifest(self) -> dict[str, Any]:
        return {
            "shards": self.shards,
            "num_samples": sum(s["count"] for s in self.shards),
            "resolutions": dict(sorted(self.resolutions.items())),
            "frames": {str(k): v for k, v in sorted(self.frames.items())},
            "num_tracks": {str(k): v for k, v in sorted(self.points.items())},
            "sources": dict(sorted(self.sources.items())),
            "members": dict(sorted(self.members.items())),
        }


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
    tally = _Tally()
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
            tally.add(sample, encoded, Path(writer.fname).name)
    finally:
        if writer is not None:
            writer.close()
    manifest = tally.manifest()
    atomic_write_text(out_dir / MANIFEST_NAME, json.dumps(manifest, indent=2))
    return manifest


def read_manifest(path: str | Path) -> tuple[list[str], dict[str, Any]]:
    """Read a shard folder's manifest (folder or `manifest.json`): returns (shard paths, manifest)."""
    path = Path(path)
    file = path / MANIFEST_NAME if path.is_dir() else path
    if not file.is_file():
        raise FormatError(f"{file}: shard manifest does not exist; write shards with write_shards")
    try:
        manifest = json.loads(file.read_text())
        urls = [str(file.parent / s["url"]) for s in manifest["shards"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise FormatError(
            f"{file}: not a readable shard manifest ({type(err).__name__}: {err}); rebuild the "
            "shards or restore the file",
            "bad_manifest",
        ) from err
    return urls, manifest


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
            "source_video": f"{source}/{item.id}",
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
    stride: int = DEFAULT_GRID.stride,
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
        captions = sole_csv(src)
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
    atomic_write_text(Path(out) / MANIFEST_NAME, json.dumps(manifest, indent=2))
    return manifest

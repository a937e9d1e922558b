"""Streaming training samples from WebDataset shards, split over nodes and DataLoader workers.

Split rule (exactly once per epoch): with R ranks and W workers per rank there are R * W
global workers; global worker `g = rank * W + worker` reads shard positions g, g + R*W,
g + 2*R*W, ... of the epoch's shard order (a permutation drawn from (seed, epoch), the same
on every rank). So over one epoch every shard, hence every sample, is read by exactly one
worker. With `resample`, each worker instead draws shards with replacement forever from
its own (seed, epoch, g) generator (endless training; no exactly-once guarantee).

Bad input never stops a run: a corrupt or truncated tar, a sample with missing or
unreadable members, NaN tracks, a clip shorter than the window, tracks on another grid, or
an undecodable video is skipped with a `SkippedSampleWarning` naming shard, key and reason,
and counted in `ShardStream.stats`. With `strict=True` the first such problem raises
`DataError` instead.

Worker processes count in their own copy of the stream; every yielded sample carries the
counter changes since the worker's previous sample (`stats_delta`), `collate` gathers them,
and `stream.stats.absorb(batch)` in the training loop adds those from other processes.
Skips after a worker's last sample of an epoch are not reported this way.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import warnings
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.gopen import gopen
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext

from trajloom.data.checks import FormatError
from trajloom.data.clip import Clip, ClipBatch, clip_windows, collate
from trajloom.data.shards import ShardSample, decode_shard_sample, read_manifest
from trajloom.data.video import VideoReadError, read_video
from trajloom.encoding import GridSpec, rescale_tracks

__all__ = [
    "DataError",
    "LoaderStats",
    "ShardStream",
    "SkippedSampleWarning",
    "StreamConfig",
    "assign_shards",
    "caption_with_camera",
    "expand_shard_urls",
    "heldout_key",
    "make_loader",
    "node_and_worker",
    "sample_split",
    "source_video",
]


class DataError(ValueError):
    """Bad input met in strict mode; the message names shard, key and reason."""


class SkippedSampleWarning(UserWarning):
    """A sample (or the rest of a shard) was skipped; the message says which and why."""


SPLITS = ("train", "heldout", "dev", "test")
"""Splits of a dataset, by source video: "heldout" is "dev" and "test" together."""


def heldout_key(key: str, fraction: float) -> bool:
    """Whether ``key`` (a source video) is in the held-out ``fraction`` of a dataset.

    The rule depends on the key alone (its SHA-256 read as a number in [0, 1) below
    ``fraction``), so a video is in the same split whatever the shard order, the number
    of processes or the other videos.
    """
    if fraction <= 0.0:
        return False
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


def source_video(meta: Mapping[str, Any], key: str) -> str:
    """The video a sample was cut from: ``meta["source_video"]`` (written by ``apps/bench
    build`` and the converters), else the sample key (one sample per video)."""
    value = meta.get("source_video")
    return str(value) if value not in (None, "") else key


def sample_split(video: str, holdout: float, dev_fraction: float = 0.0) -> str:
    """The split of every window of ``video``: "train", or, for the held-out ``holdout``
    fraction of videos, "dev" (a ``dev_fraction`` of them, for choosing anything) or
    "test" (reported, never used to choose). Windows of one video never straddle splits.
    With ``dev_fraction = 0`` every held-out video is a test video (an evaluation then
    chooses on training videos, which are disjoint from them too).
    """
    if not heldout_key(video, holdout):
        return "train"
    return "dev" if heldout_key(f"dev/{video}", dev_fraction) else "test"


def _raw_video(raw: Mapping[str, Any]) -> str:
    """The source video of a raw shard sample (its meta.json read; the key where that fails:
    the sample is then skipped by the decoder anyway)."""
    try:
        meta = json.loads(raw.get("meta.json", b"{}"))
    except (ValueError, UnicodeDecodeError):
        return str(raw["__key__"])
    return source_video(meta if isinstance(meta, dict) else {}, str(raw["__key__"]))


@dataclass(frozen=True)
class StreamConfig:
    """What `ShardStream` reads and how it cuts, rescales and shuffles it."""

    urls: tuple[str, ...] = ()  # shard paths/URLs (brace patterns allowed) or shard folders
    history: int = 81  # frames of history per window
    future: int = 81  # frames of future per window
    window_stride: int | None = None  # frames between window starts; None: one window at 0
    overlap: bool = False  # future starts on the last history frame (released use_overlap)
    width: int = 832  # working resolution the tracks are rescaled to
    height: int = 480
    stride: int = 32  # grid stride; clips must have the grid's N tracks
    shuffle_shards: bool = True  # permute the shard order per (seed, epoch)
    shuffle_buffer: int = 0  # samples held for shuffling per worker; 0 keeps the order
    resample: bool = False  # endless: draw shards with replacement
    seed: int = 0
    decode_frames: bool = False  # decode and resize the history frames from video.mp4
    frame_size: tuple[int, int] | None = None  # (width, height) of frames; None: working size
    strict: bool = False  # raise DataError on bad input instead of skipping it
    append_camera: bool = True  # end captions with meta "camera" (appendix E.2) if not there
    # Held-out split by source video (`sample_split`): this fraction of the videos is held
    # out, and `dev_fraction` of those is the development part; `split` "train" reads the
    # others, "heldout" all held-out videos, "dev" / "test" one part of them.
    holdout: float = 0.0
    split: str = "train"
    dev_fraction: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.urls, str):
            object.__setattr__(self, "urls", (self.urls,))
        else:
            object.__setattr__(self, "urls", tuple(str(u) for u in self.urls))
        if self.frame_size is not None:
            object.__setattr__(self, "frame_size", tuple(int(v) for v in self.frame_size))
        GridSpec(self.width, self.height, self.stride)
        if self.history < 1 or self.future < 1:
            raise ValueError(
                f"StreamConfig: history and future must be >= 1, got {self.history}, {self.future}"
            )
        if self.window_stride is not None and self.window_stride < 1:
            raise ValueError(
                f"StreamConfig.window_stride must be >= 1 or None, got {self.window_stride}"
            )
        if self.shuffle_buffer < 0:
            raise ValueError(f"StreamConfig.shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"StreamConfig.holdout must be in [0, 1), got {self.holdout}")
        if self.split not in SPLITS:
            raise ValueError(f"StreamConfig.split must be one of {SPLITS}, got {self.split!r}")
        if not 0.0 <= self.dev_fraction <= 1.0:
            raise ValueError(
                f"StreamConfig.dev_fraction must be in [0, 1], got {self.dev_fraction}"
            )

    def reads(self, video: str) -> bool:
        """Whether the windows of source video ``video`` belong to this stream's split."""
        split = sample_split(video, self.holdout, self.dev_fraction)
        return split == self.split or (self.split == "heldout" and split != "train")

    @property
    def spec(self) -> GridSpec:
        return GridSpec(self.width, self.height, self.stride)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["urls"] = list(self.urls)
        d["frame_size"] = list(self.frame_size) if self.frame_size else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamConfig:
        return cls(**d)


@dataclass
class LoaderStats:
    """Counters of a stream: shards, samples read, windows yielded, skips by reason."""

    shards_opened: int = 0
    samples_read: int = 0
    windows_yielded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=50))

    @property
    def samples_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers for a log line."""
        return {
            "shards_opened": self.shards_opened,
            "samples_read": self.samples_read,
            "windows_yielded": self.windows_yielded,
            "samples_skipped": self.samples_skipped,
            "skipped": dict(self.skipped),
        }

    def add(self, delta: dict[str, Any]) -> None:
        self.shards_opened += delta.get("shards_opened", 0)
        self.samples_read += delta.get("samples_read", 0)
        self.windows_yielded += delta.get("windows_yielded", 0)
        self.skipped.update(delta.get("skipped", {}))
        self.recent.extend(delta.get("messages", []))

    def absorb(self, batch: ClipBatch) -> None:
        """Add the counter changes a batch carries from worker processes (not this one's)."""
        for delta in batch.stats_delta.get("deltas", []):
            if delta.get("pid") != os.getpid():
                self.add(delta)


def caption_with_camera(caption: str, camera: str) -> str:
    """`caption` ending with the camera phrase: "A dog runs; the camera pans left slowly."."""
    caption, camera = caption.strip(), camera.strip()
    if not camera or camera in caption:
        return caption
    if not caption:
        return camera[0].upper() + camera[1:] + "."
    return f"{caption.rstrip('.')}; {camera}."


def node_and_worker(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(global worker index, number of global workers) of the calling process.

    `rank`/`world_size` default to torch.distributed's when it is initialized, else 0/1;
    the DataLoader worker comes from `get_worker_info()` (0 of 1 in the main process).
    """
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        else:
            rank = 0 if rank is None else rank
            world_size = 1 if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    info = get_worker_info()
    worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
    return rank * workers + worker, world_size * workers


def expand_shard_urls(urls: Sequence[str] | str) -> list[str]:
    """Expand brace patterns and `::` lists (as webdataset does); a folder gives its shards.

    A folder with a `manifest.json` lists that manifest's shards, else its `*.tar` files in
    sorted order.
    """
    out: list[str] = []
    for url in [urls] if isinstance(urls, str) else urls:
        path = Path(url)
        if path.is_dir():
            if (path / "manifest.json").is_file():
                out.extend(read_manifest(path)[0])
            else:
                out.extend(str(p) for p in sorted(path.glob("*.tar")))
        else:
            out.extend(expand_urls(url))
    return out


def assign_shards(
    num_shards: int, slot: int, slots: int, *, seed: int, epoch: int, shuffle: bool
) -> list[int]:
    """Shard indices global worker `slot` of `slots` reads in `epoch` (see the module docstring)."""
    order = np.arange(num_shards)
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(num_shards)
    return [int(i) for i in order[slot::slots]]


class ShardStream(IterableDataset):
    """Training windows (`trajloom.data.clip.Clip`) from WebDataset shards.

    Use with `make_loader` (or a DataLoader with `collate_fn=collate`). Call
    `set_epoch(e)` before iterating each epoch; with persistent workers the epoch that
    reaches them is the one set before the workers started.
    """

    def __init__(
        self, config: StreamConfig, *, rank: int | None = None, world_size: int | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.urls = expand_shard_urls(config.urls)
        if not self.urls:
            raise ValueError(f"StreamConfig.urls {config.urls!r} name no shards")
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.stats = LoaderStats()
        self._pending: dict[str, Any] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # ---------------------------------------------------------------- bookkeeping

    def _count(self, name: str, n: int = 1) -> None:
        setattr(self.stats, name, getattr(self.stats, name) + n)
        self._pending[name] = self._pending.get(name, 0) + n

    def _skip(self, where: str, reason: str, message: str, err: Exception | None = None) -> None:
        text = f"{where}: skipped ({reason}): {message}"
        if self.config.strict:
            raise DataError(text) from err
        warnings.warn(text, SkippedSampleWarning, stacklevel=3)
        self.stats.skipped[reason] += 1
        self.stats.recent.append(text)
        pending = self._pending.setdefault("skipped", {})
        pending[reason] = pending.get(reason, 0) + 1
        self._pending.setdefault("messages", []).append(text)

    def _take_delta(self) -> dict[str, Any]:
        delta, self._pending = self._pending, {}
        delta["pid"] = os.getpid()
        return delta

    # ---------------------------------------------------------------- reading

    def _raw_samples(self, url: str) -> Iterator[dict[str, Any]]:
        """Group a shard's members by key; a broken tar ends the shard with one skip."""
        current: dict[str, Any] | None = None
        try:
            stream = gopen(url, "rb")
        except (OSError, ValueError) as err:
            self._skip(url, "corrupt_shard", f"cannot open ({err})", err)
            return
        self._count("shards_opened")
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    if not member.isreg():
                        continue
                    key, ext = base_plus_ext(member.name)
                    if key is None:
                        continue
                    if current is not None and current["__key__"] != key:
                        yield current
                        current = None
                    if current is None:
                        current = {"__key__": key, "__url__": url}
                    data = tar.extractfile(member)
                    current[ext.lower()] = data.read() if data is not None else b""
        except (tarfile.TarError, OSError, EOFError, ValueError) as err:
            where = f"{url}:{current['__key__']}" if current else url
            self._skip(
                where, "corrupt_shard", f"tar stream broken, rest of the shard lost ({err})", err
            )
            return
        finally:
            stream.close()
        if current is not None:
            yield current

    def _windows(self, raw: dict[str, Any]) -> Iterator[Clip]:
        cfg = self.config
        where = f"{raw['__url__']}:{raw['__key__']}"
        self._count("samples_read")
        try:
            sample: ShardSample = decode_shard_sample(raw)
        except FormatError as err:
            self._skip(where, err.reason, str(err), err)
            return
        t, n = sample.tracks.shape[:2]
        if n != cfg.spec.num_points:
            self._skip(
                where,
                "grid_mismatch",
                f"{n} tracks but the working grid {cfg.spec.grid_w}x{cfg.spec.grid_h} has "
                f"{cfg.spec.num_points}",
            )
            return
        starts = clip_windows(t, cfg.history, cfg.future, cfg.window_stride, overlap=cfg.overlap)
        if not starts:
            self._skip(where, "too_short", f"{t} frames, a window needs {cfg.history + cfg.future}")
            return
        frames = None
        if cfg.decode_frames:
            if sample.video is None:
                self._skip(where, "missing_video", "decode_frames is on but video.mp4 is absent")
                return
            try:
                frames = read_video(
                    sample.video,
                    size=cfg.frame_size or cfg.spec.size,
                    num_frames=starts[-1] + cfg.history,
                    name=f"{where}/video.mp4",
                )
            except VideoReadError as err:
                self._skip(where, "undecodable_video", str(err), err)
                return
        tracks = rescale_tracks(sample.tracks, sample.size, cfg.spec.size)
        meta = sample.meta
        caption = str(meta.get("caption", ""))
        if cfg.append_camera:
            caption = caption_with_camera(caption, str(meta.get("camera", "")))
        for start in starts:
            yield Clip.cut(
                sample.id,
                tracks,
                sample.visibility,
                start=start,
                history=cfg.history,
                future=cfg.future,
                overlap=cfg.overlap,
                frames=None if frames is None else frames[start : start + cfg.history],
                caption=caption,
                camera=str(meta.get("camera", "")),
                fps=float(meta.get("fps", 16.0)),
                source=where,
                meta=meta,
                text_emb=sample.text,
                video_latent=sample.video_latent,
            )

    def _shard_sequence(self, slot: int, slots: int) -> Iterator[str]:
        cfg = self.config
        if cfg.resample:
            rng = np.random.default_rng([cfg.seed, self.epoch, slot])
            while True:
                yield self.urls[int(rng.integers(len(self.urls)))]
        for i in assign_shards(
            len(self.urls), slot, slots, seed=cfg.seed, epoch=self.epoch, shuffle=cfg.shuffle_shards
        ):
            yield self.urls[i]

    def iter_worker(self, slot: int, slots: int) -> Iterator[Clip]:
        """The samples of global worker `slot` of `slots` in the current epoch."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, self.epoch, slot, 1])
        buffer: list[Clip] = []
        for url in self._shard_sequence(slot, slots):
            for raw in self._raw_samples(url):
                if not cfg.reads(_raw_video(raw)):
                    continue
                for sample in self._windows(raw):
                    if cfg.shuffle_buffer <= 1:
                        yield self._emit(sample)
                        continue
                    buffer.append(sample)
                    if len(buffer) >= cfg.shuffle_buffer:
                        yield self._emit(self._pop(buffer, rng))
        while buffer:
            yield self._emit(self._pop(buffer, rng))

    @staticmethod
    def _pop(buffer: list[Clip], rng: np.random.Generator) -> Clip:
        i = int(rng.integers(len(buffer)))
        buffer[i], buffer[-1] = buffer[-1], buffer[i]
        return buffer.pop()

    def _emit(self, sample: Clip) -> Clip:
        self._count("windows_yielded")
        sample.stats_delta = self._take_delta()
        return sample

    def __iter__(self) -> Iterator[Clip]:
        slot, slots = node_and_worker(self.rank, self.world_size)
        return self.iter_worker(slot, slots)


def make_loader(
    dataset: IterableDataset, *, batch_size: int, num_workers: int = 0, **kwargs: Any
) -> DataLoader:
    """A DataLoader over a ShardStream or SyntheticClips with `collate`."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        **kwargs,
    )

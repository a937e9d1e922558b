"""Clips for training: synthetic scenes drawn by index, or WebDataset shards through trajloom.data.

Both sources answer ``batch(indices)`` with a ``trajloom.data.clip.ClipBatch``.

* Synthetic: sample ``g`` of the training split is scene ``perm_e[g mod P]`` of a pool of
  ``P`` scenes, ``e = g div P`` (a fresh permutation per pass); without a pool, scene ``g``
  itself. Validation, development (anything chosen) and test (reported) splits use other
  seed streams, so no two splits share a scene. Deterministic in ``g``: resuming and data
  parallelism need nothing else.
* Shards: each process reads its share of the shards (``ShardStream`` splits them by
  rank) in the order the stream's seed and epoch fix; a resumed run fast-forwards to the
  sample position of its step. The held-out videos (``data.holdout``, by source video)
  are never trained on: :func:`heldout_clips` reads their dev or test part.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from trajloom.data.clip import Clip, ClipBatch, collate
from trajloom.data.synthetic import SceneConfig, make_scene, scene_seed
from trajloom_train.config import DataConfig
from trajloom_train.distributed import Dist

__all__ = [
    "DEV",
    "EVAL",
    "TEST",
    "TRAIN",
    "VAL",
    "ShardClips",
    "SyntheticSplit",
    "TrainSource",
    "heldout_clips",
    "sample_generator",
    "sample_seed",
]

TRAIN, VAL, DEV, TEST = 0, 1, 2, 3
EVAL = TEST  # the reported split
# Epoch numbers of trajloom.data.synthetic.scene_seed reserved for the held-out splits.
# DEV is the stream the evaluation read before it had a test split: the settings chosen
# then (the lively world, step counts) were chosen on it, so it stays for choosing.
_SPLIT_EPOCH = {VAL: 1_000_001, DEV: 1_000_002, TEST: 1_000_003}


def sample_seed(seed: int, *keys: int) -> int:
    """An independent 63-bit seed for (seed, keys...)."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def sample_generator(seed: int, *keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator for one sample's random draws."""
    return torch.Generator(device=device).manual_seed(sample_seed(seed, *keys))


def scene_config(data: DataConfig, *, render_frames: bool = False) -> SceneConfig:
    return SceneConfig.preset(
        data.dynamics,
        width=data.width,
        height=data.height,
        stride=data.stride,
        num_frames=data.history + data.future,
        min_objects=data.min_objects,
        max_objects=data.max_objects,
        render_frames=render_frames,
    )


class SyntheticSplit:
    """One split of synthetic clips, addressed by index (see the module docstring)."""

    def __init__(self, data: DataConfig, seed: int, split: int = TRAIN) -> None:
        self.data = data
        self.seed = seed
        self.split = split
        self.pool = data.scene_pool if split == TRAIN else 0
        self._config = scene_config(data)
        self._memo: dict[int, Clip] = {}
        self._perms: dict[int, np.ndarray] = {}

    def scene_index(self, g: int) -> int:
        if not self.pool:
            return g
        epoch, pos = divmod(g, self.pool)
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.pool)}
        return int(self._perms[epoch][pos])

    def seed_of(self, g: int) -> int:
        """The trajloom.data scene seed of sample ``g``."""
        if self.split == TRAIN:
            return scene_seed(self.seed, self.scene_index(g))
        return scene_seed(self.seed, g, _SPLIT_EPOCH[self.split])

    def sample(self, g: int, *, frames: bool = False) -> Clip:
        """Clip ``g``; ``frames`` renders the video (history and future frames)."""
        key = self.scene_index(g) if self.split == TRAIN else g
        if self.pool and not frames and key in self._memo:
            return self._memo[key]
        sample = self._scene_clip(self.seed_of(g), frames=frames)
        if self.pool and not frames:
            self._memo[key] = sample
        return sample

    def batch(self, indices: list[int], *, frames: bool = False) -> ClipBatch:
        """Clips ``indices`` stacked; ``frames`` renders their video (the video context)."""
        return collate([self.sample(g, frames=frames) for g in indices])

    def clip_id(self, g: int) -> str:
        """The id of clip ``g`` (without drawing the scene)."""
        return f"synthetic-{self.seed_of(g)}"

    def scene_batch(self, scenes: list[int], *, frames: bool = False) -> ClipBatch:
        """Pool scenes ``scenes`` of the training split (the cache stage's order)."""
        if self.split != TRAIN or not self.pool:
            raise ValueError("scene_batch addresses the training split's scene pool")
        return collate([self._scene_clip(scene_seed(self.seed, k), frames=frames) for k in scenes])

    def _scene_clip(self, s: int, *, frames: bool = False) -> Clip:
        cfg = scene_config(self.data, render_frames=True) if frames else self._config
        scene = make_scene(s, cfg)
        return Clip.cut(
            f"synthetic-{s}",
            scene.tracks,
            scene.visibility,
            start=0,
            history=self.data.history,
            future=self.data.future,
            frames=scene.frames,
            caption=scene.caption,
            camera=scene.camera_phrase,
            meta=scene.meta,
            source="synthetic",
        )

    @property
    def reusable(self) -> bool:
        """True when sample ids repeat (a pool): per-clip caches pay off."""
        return bool(self.pool)


class ShardClips:
    """Training windows from shards, this process's share, epoch after epoch.

    ``shuffle=False`` reads the shards in order without a shuffle buffer (the cache stage's
    single pass); ``frames`` decodes the history frames of ``video.mp4`` (a sample without
    one is skipped and counted). :meth:`over` wraps any stream of the same kind (e.g.
    latent shards).
    """

    def __init__(
        self, data: DataConfig, seed: int, dist: Dist, *, shuffle: bool = True, frames: bool = False
    ) -> None:
        from trajloom.data.stream import ShardStream

        config = stream_config(
            data,
            seed,
            shuffle_shards=shuffle,
            shuffle_buffer=data.shuffle_buffer if shuffle else 0,
            decode_frames=frames,
        )
        self._start(ShardStream(config, rank=dist.rank, world_size=dist.world_size), collate)

    @classmethod
    def over(cls, stream: Any, collate_fn: Callable[[list[Any]], Any]) -> ShardClips:
        """Sequential access to ``stream`` (a ``ShardStream``), batches made by ``collate_fn``."""
        clips = cls.__new__(cls)
        clips._start(stream, collate_fn)
        return clips

    def _start(self, stream: Any, collate_fn: Callable[[list[Any]], Any]) -> None:
        self.stream = stream
        self.collate = collate_fn
        self.position = 0  # samples this process has consumed
        self.epoch = 0
        self._iter: Iterator[Any] | None = None

    def one_pass(self, batch_size: int) -> Iterator[Any]:
        """Epoch 0 of this process's share once, in batches of up to ``batch_size``."""
        self.stream.set_epoch(0)
        pending: list[Any] = []
        for clip in self.stream:
            pending.append(clip)
            if len(pending) == batch_size:
                yield self.collate(pending)
                pending = []
        if pending:
            yield self.collate(pending)

    def data_report(self) -> dict[str, Any]:
        """What this process read: samples, windows, skips by reason."""
        stats = self.stream.stats.as_dict()
        keys = ("samples_read", "windows_yielded", "samples_skipped", "skipped")
        return {k: stats[k] for k in keys}

    def _next(self) -> Any:
        for _ in range(2):
            if self._iter is None:
                self.stream.set_epoch(self.epoch)
                self._iter = iter(self.stream)
            try:
                return next(self._iter)
            except StopIteration:
                self._iter = None
                self.epoch += 1
        raise ValueError(
            f"the shards {list(self.stream.urls)[:3]}... yield no usable clip for this process "
            f"(loader stats: {self.stream.stats.as_dict()}); check the paths, the grid "
            "(data.width/height/stride) and the clip length (data.history + data.future)"
        )

    def check(self) -> None:
        """Fail before training when the shards hold no usable clip."""
        self._next()
        self._iter = None
        self.epoch = 0

    def take(self, start: int, count: int) -> Any:
        """Samples ``start .. start + count - 1`` of this process's sequence."""
        if start < self.position:
            self._iter, self.position, self.epoch = None, 0, 0
        while self.position < start:
            self._next()
            self.position += 1
        samples = [self._next() for _ in range(count)]
        self.position += count
        return self.collate(samples)

    reusable = False


def stream_config(data: DataConfig, seed: int, **overrides: Any) -> Any:
    """The ``trajloom.data.stream.StreamConfig`` of ``data``'s shards (window geometry,
    grid, held-out fraction), with ``overrides``."""
    from trajloom.data.stream import StreamConfig

    fields = {
        "urls": data.shards,
        "history": data.history,
        "future": data.future,
        "window_stride": data.window_stride,
        "width": data.width,
        "height": data.height,
        "stride": data.stride,
        "seed": seed,
        "holdout": data.holdout,
        "dev_fraction": data.dev_fraction,
    }
    return StreamConfig(**{**fields, **overrides})


def heldout_clips(
    data: DataConfig,
    seed: int,
    *,
    limit: int,
    shards: tuple[str, ...] = (),
    frames: bool = False,
    split: str = "test",
) -> list[Clip]:
    """Up to ``limit`` evaluation windows, in shard order: every window of ``shards`` when
    given, else those of the ``split`` ("dev", "test", "heldout" or "train") of
    ``data.shards``' videos. ``frames``: decode the history frames. Raises ValueError when
    there is none."""
    from trajloom.data.stream import ShardStream

    config = stream_config(
        data,
        seed,
        urls=shards or data.shards,
        shuffle_shards=False,
        shuffle_buffer=0,
        decode_frames=frames,
        holdout=0.0 if shards else data.holdout,
        split="train" if shards else split,
    )
    stream = ShardStream(config, rank=0, world_size=1)
    clips = list(itertools.islice(iter(stream), limit))
    if not clips:
        where = (
            f"the shards {list(shards)[:3]}"
            if shards
            else (f"the {split} videos (data.holdout={data.holdout}) of {list(data.shards)[:3]}")
        )
        raise ValueError(
            f"no evaluation clip in {where} (loader stats: {stream.stats.as_dict()}); give "
            "--eval-data SHARDS, or raise data.holdout so that some videos are held out"
        )
    return clips


class TrainSource:
    """The training clips of a stage, addressed by (step, micro-batch, global indices)."""

    def __init__(self, data: DataConfig, seed: int, dist: Dist, micro_batch: int, accum: int):
        self.dist = dist
        self.micro_batch = micro_batch
        self.accum = accum
        if data.source == "shards":
            self.shards: ShardClips | None = ShardClips(data, seed, dist)
            self.shards.check()
            self.synthetic = None
        else:
            self.shards = None
            self.synthetic = SyntheticSplit(data, seed, TRAIN)

    @property
    def reusable(self) -> bool:
        return self.synthetic is not None and self.synthetic.reusable

    def data_report(self) -> dict[str, Any]:
        """What this process read from the shards: samples, windows, skips by reason."""
        return {} if self.shards is None else self.shards.data_report()

    def batch(self, step: int, micro: int, indices: list[int]) -> ClipBatch:
        if self.synthetic is not None:
            return self.synthetic.batch(indices)
        start = (step * self.accum + micro) * self.micro_batch
        return self.shards.take(start, len(indices))

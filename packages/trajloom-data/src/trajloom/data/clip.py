"""One history + future window of a video, and a batch of them.

Every part of TrajLoom passes windows around in these two types: the shard stream and
the synthetic scenes yield :class:`Clip`, :func:`collate` stacks them into a
:class:`ClipBatch` for training, and the sample and bench apps forecast and score
:class:`Clip` objects. Coordinates are ``(x, y)`` pixels of the working resolution;
tracks are time-major (``trajloom.encoding`` conventions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Clip", "ClipBatch", "clip_windows", "collate", "stack_optional"]


def clip_windows(
    num_frames: int, history: int, future: int, stride: int | None, *, overlap: bool = False
) -> list[int]:
    """Start frames of the history/future windows that fit in a clip of `num_frames`.

    A window covers `[s, s + history)` then the future `[s + history, s + history + future)`
    (with `overlap`, the future starts on the last history frame, as the released loader's
    `use_overlap`). `stride=None` gives one window at 0. Empty when the clip is too short.
    """
    span = history + future - (1 if overlap else 0)
    if num_frames < span:
        return []
    if stride is None:
        return [0]
    return list(range(0, num_frames - span + 1, stride))


@dataclass
class Clip:
    """A history window of a video and, when known, its true future.

    Arrays (numpy, host memory; picklable across loader workers):

    - ``hist_tracks`` "th n 2" float32 pixels, ``hist_vis`` "th n" bool;
    - ``fut_tracks`` "tf n 2" and ``fut_vis`` "tf n" (the ground truth), or both None;
    - ``frames`` "t h w 3" uint8 from the first history frame on, ``th <= t <= th + tf``
      (the history frames, or history and future for renders), or None;
    - ``text_emb`` (caption embedding) and ``video_latent`` (video context) as precomputed,
      or None.

    ``start`` is the first history frame in the source video, ``source`` where the clip
    came from (a file, a shard, ``synthetic``), ``camera`` the camera phrase of the caption
    (app. E.2). ``stats_delta`` carries the shard loader's counters changed since the
    previous clip of the same worker (``trajloom.data.stream.LoaderStats.absorb``).
    ``view`` (a :class:`trajloom.data.geometry.SourceView`, or None) holds the original
    video's frames and how they relate to the working pixels: renders draw over it.
    """

    id: str
    hist_tracks: np.ndarray
    hist_vis: np.ndarray
    fut_tracks: np.ndarray | None = None
    fut_vis: np.ndarray | None = None
    frames: np.ndarray | None = None
    caption: str = ""
    camera: str = ""
    fps: float = 16.0
    source: str = ""
    start: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    text_emb: np.ndarray | None = None
    video_latent: np.ndarray | None = None
    stats_delta: dict[str, Any] = field(default_factory=dict)
    view: Any = None  # trajloom.data.geometry.SourceView: the original video, for renders

    def __post_init__(self) -> None:
        th = self.hist_tracks.shape[0] if self.hist_tracks.ndim == 3 else -1
        if self.hist_tracks.ndim != 3 or self.hist_tracks.shape[-1] != 2:
            raise ValueError(
                f"clip {self.id}: hist_tracks must be 'th n 2', got {self.hist_tracks.shape}"
            )
        n = self.hist_tracks.shape[1]
        if self.hist_vis.shape != (th, n):
            raise ValueError(
                f"clip {self.id}: hist_vis must be 'th n' = {(th, n)}, got {self.hist_vis.shape}"
            )
        if (self.fut_tracks is None) != (self.fut_vis is None):
            raise ValueError(f"clip {self.id}: give fut_tracks and fut_vis together, or neither")
        if self.fut_tracks is not None and self.fut_vis is not None:
            tf = self.fut_tracks.shape[0]
            if self.fut_tracks.shape != (tf, n, 2) or self.fut_vis.shape != (tf, n):
                raise ValueError(
                    f"clip {self.id}: the future must be 'tf n 2' and 'tf n' with n = {n}, got "
                    f"{self.fut_tracks.shape} and {self.fut_vis.shape}"
                )
        if self.frames is not None:
            t = self.frames.shape[0]
            if self.frames.ndim != 4 or self.frames.shape[-1] != 3:
                raise ValueError(
                    f"clip {self.id}: frames must be 't h w 3' uint8, got {self.frames.shape}"
                )
            if not th <= t <= th + self.future:
                raise ValueError(
                    f"clip {self.id}: {t} frames for a window of {th} history and "
                    f"{self.future} future frames; give between {th} and {th + self.future}"
                )

    @property
    def history(self) -> int:
        """Th, the number of history frames."""
        return int(self.hist_tracks.shape[0])

    @property
    def future(self) -> int:
        """Tf, the number of ground-truth future frames (0 without a future)."""
        return 0 if self.fut_tracks is None else int(self.fut_tracks.shape[0])

    @property
    def num_points(self) -> int:
        """N, the number of tracked points."""
        return int(self.hist_tracks.shape[1])

    @classmethod
    def cut(
        cls,
        clip_id: str,
        tracks: np.ndarray,
        visibility: np.ndarray,
        *,
        start: int,
        history: int,
        future: int,
        overlap: bool = False,
        **fields: Any,
    ) -> Clip:
        """The window starting at frame ``start`` of whole-video ``tracks "t n 2"``, ``visibility "t n"``.

        History ``[start, start + history)``; the future follows it (with ``overlap`` it
        starts on the last history frame, as the released loader's ``use_overlap``).
        ``future=0`` cuts a history-only clip. ``fields`` are the other :class:`Clip` fields
        (``frames`` already cut to this window).
        """
        hist_end = start + history
        fut_start = hist_end - 1 if overlap and future else hist_end
        fut_end = fut_start + future
        if start < 0 or fut_end > tracks.shape[0]:
            raise ValueError(
                f"{clip_id}: window [{start}, {fut_end}) needs {fut_end} frames, clip has "
                f"{tracks.shape[0]}"
            )
        tracks = np.asarray(tracks)
        visibility = np.asarray(visibility)
        return cls(
            id=clip_id,
            hist_tracks=np.ascontiguousarray(tracks[start:hist_end], np.float32),
            hist_vis=np.ascontiguousarray(visibility[start:hist_end], bool),
            fut_tracks=np.ascontiguousarray(tracks[fut_start:fut_end], np.float32)
            if future
            else None,
            fut_vis=np.ascontiguousarray(visibility[fut_start:fut_end], bool) if future else None,
            start=int(start),
            **fields,
        )


@dataclass
class ClipBatch:
    """Clips stacked for training (torch tensors, CPU until moved).

    ``hist_tracks`` "b th n 2" float32, ``hist_vis`` "b th n" bool, ``fut_tracks``
    "b tf n 2", ``fut_vis`` "b tf n"; ``frames`` "b t h w 3" uint8, ``text_emb`` "b ...",
    ``video_latent`` "b ..." when every clip has them, else None; lists of the per-clip
    strings and dicts; ``stats_delta`` the loader counters of the batch.
    """

    ids: list[str]
    hist_tracks: torch.Tensor
    hist_vis: torch.Tensor
    fut_tracks: torch.Tensor
    fut_vis: torch.Tensor
    captions: list[str]
    cameras: list[str]
    starts: list[int]
    metas: list[dict[str, Any]]
    frames: torch.Tensor | None = None
    text_emb: torch.Tensor | None = None
    video_latent: torch.Tensor | None = None
    stats_delta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def window(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tracks "b t n 2", visibility "b t n")`` of the ``"hist"`` or ``"fut"`` window."""
        if name == "hist":
            return self.hist_tracks, self.hist_vis
        if name == "fut":
            return self.fut_tracks, self.fut_vis
        raise ValueError(f"window must be 'hist' or 'fut', got {name!r}")


def stack_optional(clips: Sequence[Any], name: str) -> torch.Tensor | None:
    """``torch.stack`` of the array ``name`` of every clip (anything with an ``id``), or
    None when no clip has one; a mix, or shapes that differ, raise ValueError."""
    values = [getattr(c, name) for c in clips]
    have = [v is not None for v in values]
    if not any(have):
        return None
    if not all(have):
        missing = [c.id for c, h in zip(clips, have, strict=True) if not h]
        raise ValueError(
            f"collate: '{name}' is present in some clips but missing in {missing}; "
            "precompute it for every clip or for none"
        )
    try:
        return torch.stack([torch.from_numpy(np.asarray(v)) for v in values])
    except RuntimeError as err:
        raise ValueError(f"collate: '{name}' differs in shape across the batch") from err


def collate(clips: Sequence[Clip]) -> ClipBatch:
    """Stack clips with a ground-truth future into a :class:`ClipBatch`.

    Optional arrays (``frames``, ``text_emb``, ``video_latent``) are stacked when every
    clip has them and left out when none has; a mix raises ValueError.
    """
    if not clips:
        raise ValueError("collate got an empty list of clips")
    no_future = [c.id for c in clips if c.fut_tracks is None]
    if no_future:
        raise ValueError(f"collate: clips {no_future} have no future; training needs one")

    def stack(name: str) -> torch.Tensor:
        return torch.stack([torch.from_numpy(np.asarray(getattr(c, name))) for c in clips])

    return ClipBatch(
        ids=[c.id for c in clips],
        hist_tracks=stack("hist_tracks"),
        hist_vis=stack("hist_vis"),
        fut_tracks=stack("fut_tracks"),
        fut_vis=stack("fut_vis"),
        captions=[c.caption for c in clips],
        cameras=[c.camera for c in clips],
        starts=[c.start for c in clips],
        metas=[c.meta for c in clips],
        frames=stack_optional(clips, "frames"),
        text_emb=stack_optional(clips, "text_emb"),
        video_latent=stack_optional(clips, "video_latent"),
        stats_delta={"deltas": [c.stats_delta for c in clips if c.stats_delta]},
    )

"""The training sample both loaders yield (shards and synthetic scenes), windows, and collate.

A sample is a dict:

- `id` str, `window_start` int (first history frame in the clip), `caption` str,
  `camera` str (camera phrase), `meta` dict;
- `hist_tracks` "th n 2" float32 and `hist_vis` "th n" bool, `fut_tracks` "tf n 2" and
  `fut_vis` "tf n", in pixels of the working resolution;
- optional `hist_frames` "th h w 3" uint8, `text_emb`, `video_latent` (tensors);
- `stats_delta` dict: loader counters changed since the previous sample of the same
  worker (see `trajloom.data.stream.LoaderStats.absorb`).

`collate` stacks them into a batch dict with the same keys ("b ..." tensors, lists of the
strings and dicts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["clip_windows", "collate", "make_window_sample"]

_TENSOR_KEYS = ("hist_tracks", "hist_vis", "fut_tracks", "fut_vis")
_OPTIONAL_TENSOR_KEYS = ("hist_frames", "text_emb", "video_latent")
_LIST_KEYS = ("id", "caption", "camera", "meta", "window_start")


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


def make_window_sample(
    video_id: str,
    tracks: np.ndarray,
    visibility: np.ndarray,
    *,
    start: int,
    history: int,
    future: int,
    overlap: bool = False,
    frames: np.ndarray | None = None,
    caption: str = "",
    camera: str = "",
    meta: dict[str, Any] | None = None,
    text_emb: np.ndarray | None = None,
    video_latent: np.ndarray | None = None,
) -> dict[str, Any]:
    """Cut the window starting at `start` out of a clip; tracks "t n 2" px, visibility "t n".

    `frames`, when given, are the history frames already cut ("th h w 3" uint8).
    """
    hist_end = start + history
    fut_start = hist_end - 1 if overlap else hist_end
    fut_end = fut_start + future
    if fut_end > tracks.shape[0]:
        raise ValueError(
            f"{video_id}: window [{start}, {fut_end}) needs {fut_end} frames, clip has "
            f"{tracks.shape[0]}"
        )
    sample: dict[str, Any] = {
        "id": video_id,
        "window_start": int(start),
        "caption": caption,
        "camera": camera,
        "meta": dict(meta or {}),
        "hist_tracks": torch.from_numpy(np.ascontiguousarray(tracks[start:hist_end], np.float32)),
        "hist_vis": torch.from_numpy(np.ascontiguousarray(visibility[start:hist_end], bool)),
        "fut_tracks": torch.from_numpy(np.ascontiguousarray(tracks[fut_start:fut_end], np.float32)),
        "fut_vis": torch.from_numpy(np.ascontiguousarray(visibility[fut_start:fut_end], bool)),
        "stats_delta": {},
    }
    if frames is not None:
        if frames.shape[0] != history:
            raise ValueError(f"{video_id}: got {frames.shape[0]} history frames, need {history}")
        sample["hist_frames"] = torch.from_numpy(np.ascontiguousarray(frames, np.uint8))
    if text_emb is not None:
        sample["text_emb"] = torch.from_numpy(np.asarray(text_emb))
    if video_latent is not None:
        sample["video_latent"] = torch.from_numpy(np.asarray(video_latent))
    return sample


def _merge_deltas(deltas: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate per-sample stats deltas (they carry disjoint events)."""
    return {"deltas": [d for d in deltas if d]}


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch: "b th n 2", "b th n", "b tf n 2", "b tf n", lists, options.

    Optional tensors (`hist_frames`, `text_emb`, `video_latent`) are stacked when every
    sample has them and left out when none has; a mix raises ValueError.
    """
    if not samples:
        raise ValueError("collate got an empty list of samples")
    batch: dict[str, Any] = {k: torch.stack([s[k] for s in samples]) for k in _TENSOR_KEYS}
    for key in _LIST_KEYS:
        batch[key] = [s.get(key) for s in samples]
    for key in _OPTIONAL_TENSOR_KEYS:
        have = [key in s for s in samples]
        if all(have):
            try:
                batch[key] = torch.stack([s[key] for s in samples])
            except RuntimeError as err:
                raise ValueError(f"collate: '{key}' differs in shape across the batch") from err
        elif any(have):
            missing = [s["id"] for s in samples if key not in s]
            raise ValueError(
                f"collate: '{key}' is present in some samples but missing in {missing}; "
                "precompute it for every clip or for none"
            )
    batch["stats_delta"] = _merge_deltas([s.get("stats_delta", {}) for s in samples])
    return batch

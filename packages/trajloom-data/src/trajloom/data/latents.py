"""Latent shards: a frozen VAE's encoding of training windows, cached once for the generator.

The generator, its on-policy fine-tuning and the visibility head train on VAE latents of
history and future windows, never on tracks. Encoding them once (``apps/train cache``)
instead of at every step takes the VAE out of the training loop. A latent shard is a
WebDataset tar whose samples hold, per window:

- ``z_hist.npy`` "th' n c" and ``z_fut.npy`` "tf' n c" float32: posterior means (not
  normalized: the latent statistics are applied when training, so they may be recomputed);
- ``hist_vis.npy`` "th' n" and ``fut_vis.npy`` "tf' n" bool: latent-step visibility
  (any-visible over each block of frames, ``trajloom.flow.model.latent_visibility``);
- ``meta.json``: id, caption (with its camera phrase), camera;
- optional ``text.npy`` (caption embedding), and the video context: ``video_latent.npy``
  (latents of a video encoder on the token grid) or ``video_frames.npy`` "th h w 3" uint8
  (the history frames at a few pixels per token, for an encoder trained with the generator).

Next to the shards, ``latents.json`` records the VAE fingerprint (:func:`fingerprint`)
the latents were made with, and the context they hold; a trainer refuses a cache made by
another VAE or for another context.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from trajloom.data.checks import FormatError
from trajloom.data.clip import stack_optional
from trajloom.data.outputs import atomic_write_json
from trajloom.data.shards import _npy_bytes, _npy_load, shard_key
from trajloom.data.stream import ShardStream

__all__ = [
    "LATENTS_NAME",
    "LatentBatch",
    "LatentClip",
    "LatentStream",
    "collate_latents",
    "decode_latent_clip",
    "encode_latent_clip",
    "fingerprint",
    "read_latent_index",
    "write_latent_shards",
]

LATENTS_NAME = "latents.json"
_ARRAYS = ("z_hist", "z_fut", "hist_vis", "fut_vis")


def fingerprint(path: str | Path) -> str:
    """SHA-256 of a weights file (e.g. the VAE's ``model.safetensors``), hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class LatentClip:
    """One cached window (see the module docstring for shapes); numpy, host memory."""

    id: str
    z_hist: np.ndarray
    z_fut: np.ndarray
    hist_vis: np.ndarray
    fut_vis: np.ndarray
    caption: str = ""
    camera: str = ""
    text_emb: np.ndarray | None = None
    video_latent: np.ndarray | None = None
    video_frames: np.ndarray | None = None
    stats_delta: dict[str, Any] = field(default_factory=dict)  # loader counters (streams)

    def __post_init__(self) -> None:
        n, c = self.z_hist.shape[1:] if self.z_hist.ndim == 3 else (-1, -1)
        expected = {
            "z_hist": (self.z_hist.shape[0], n, c),
            "z_fut": (self.z_fut.shape[0], n, c),
            "hist_vis": (self.z_hist.shape[0], n),
            "fut_vis": (self.z_fut.shape[0], n),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value.shape != shape or min(shape) < 1:
                raise FormatError(
                    f"latent clip {self.id}: {name} must be {shape} (z_hist is 't n c'), got "
                    f"{value.shape}",
                    "bad_shape",
                )
        if not (np.isfinite(self.z_hist).all() and np.isfinite(self.z_fut).all()):
            raise FormatError(f"latent clip {self.id}: latents hold NaN/inf", "nan_latents")
        frames = self.video_frames
        if frames is not None and (
            frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3
        ):
            raise FormatError(
                f"latent clip {self.id}: video_frames must be 't h w 3' uint8, got "
                f"{frames.shape} {frames.dtype}",
                "bad_shape",
            )


def encode_latent_clip(clip: LatentClip) -> dict[str, Any]:
    """A LatentClip as the member dict ``wds.TarWriter.write`` takes (all values bytes)."""
    out: dict[str, Any] = {"__key__": shard_key(clip.id)}
    out["z_hist.npy"] = _npy_bytes(np.asarray(clip.z_hist, np.float32))
    out["z_fut.npy"] = _npy_bytes(np.asarray(clip.z_fut, np.float32))
    out["hist_vis.npy"] = _npy_bytes(np.asarray(clip.hist_vis, bool))
    out["fut_vis.npy"] = _npy_bytes(np.asarray(clip.fut_vis, bool))
    meta = {"id": clip.id, "caption": clip.caption, "camera": clip.camera}
    out["meta.json"] = json.dumps(meta).encode()
    if clip.text_emb is not None:
        out["text.npy"] = _npy_bytes(np.asarray(clip.text_emb, np.float32))
    if clip.video_latent is not None:
        out["video_latent.npy"] = _npy_bytes(np.asarray(clip.video_latent, np.float32))
    if clip.video_frames is not None:
        out["video_frames.npy"] = _npy_bytes(np.asarray(clip.video_frames, np.uint8))
    return out


def decode_latent_clip(raw: Mapping[str, Any]) -> LatentClip:
    """A raw WebDataset sample -> LatentClip; FormatError naming shard and key otherwise."""
    where = f"{raw.get('__url__', '<shard>')}:{raw.get('__key__', '<key>')}"
    missing = [f"{m}.npy" for m in _ARRAYS if f"{m}.npy" not in raw]
    if "meta.json" not in raw:
        missing.append("meta.json")
    if missing:
        present = sorted(k for k in raw if not k.startswith("__"))
        raise FormatError(
            f"{where}: latent members {missing} are missing (has {present}); rebuild the cache "
            "with `apps/train cache`",
            "missing_member",
        )
    try:
        meta = json.loads(raw["meta.json"])
        if not isinstance(meta, dict) or "id" not in meta:
            raise ValueError("no 'id'")
    except (ValueError, UnicodeDecodeError) as err:
        raise FormatError(
            f"{where}: meta.json is not a JSON object with an id ({err})", "bad_meta"
        ) from err

    def array(member: str) -> np.ndarray:
        return _npy_load(raw[member], f"{where}/{member}")

    try:
        return LatentClip(
            id=str(meta["id"]),
            z_hist=array("z_hist.npy"),
            z_fut=array("z_fut.npy"),
            hist_vis=array("hist_vis.npy"),
            fut_vis=array("fut_vis.npy"),
            caption=str(meta.get("caption", "")),
            camera=str(meta.get("camera", "")),
            text_emb=array("text.npy") if "text.npy" in raw else None,
            video_latent=array("video_latent.npy") if "video_latent.npy" in raw else None,
            video_frames=array("video_frames.npy") if "video_frames.npy" in raw else None,
        )
    except FormatError as err:
        raise FormatError(f"{where}: {err}", err.reason) from err


def write_latent_shards(
    clips: Iterable[LatentClip], out_dir: str | Path, *, prefix: str, maxcount: int = 256
) -> list[dict[str, Any]]:
    """Write ``out_dir/<prefix>-NNNNNN.tar``; returns ``[{"url", "count"}]`` per shard written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer: wds.ShardWriter | None = None
    counts: dict[str, int] = {}
    try:
        for clip in clips:
            if writer is None:
                pattern = str(out_dir / f"{prefix}-%06d.tar")
                writer = wds.ShardWriter(pattern, maxcount=maxcount, verbose=0, mtime=0)
            writer.write(encode_latent_clip(clip))
            name = Path(writer.fname).name
            counts[name] = counts.get(name, 0) + 1
    finally:
        if writer is not None:
            writer.close()
    return [{"url": name, "count": count} for name, count in counts.items()]


def read_latent_index(
    folder: str | Path,
    *,
    vae_fingerprint: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> list[str]:
    """The shard paths of a latent cache folder, checked against the run that will use them.

    Raises FormatError naming the folder when ``latents.json`` is missing or unreadable,
    when the cache was made by a VAE with another fingerprint, or (given ``context``) when
    it holds another video/caption context than ``context`` (its ``"context"`` entry).
    """
    index = Path(folder) / LATENTS_NAME
    try:
        data = json.loads(index.read_text())
        urls = [str(Path(folder) / s["url"]) for s in data["shards"]]
        made_by = str(data["vae_fingerprint"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FormatError(
            f"{index}: not a readable latent cache index ({type(err).__name__}: {err}); rerun "
            "`apps/train cache` on this run",
            "bad_manifest",
        ) from err
    if vae_fingerprint is not None and made_by != vae_fingerprint:
        raise FormatError(
            f"{folder}: the latents were made by another VAE (fingerprint {made_by[:12]}..., "
            f"this run's VAE is {vae_fingerprint[:12]}...); delete the folder and rerun "
            "`apps/train cache`",
            "wrong_vae",
        )
    made_for = data.get("context")
    if context is not None and made_for != dict(context):
        raise FormatError(
            f"{folder}: the latents were cached for the context {made_for}, this run trains "
            f"with {dict(context)}; delete the folder and rerun `apps/train cache`",
            "wrong_context",
        )
    return urls


def write_latent_index(
    folder: str | Path, shards: Sequence[dict[str, Any]], *, vae_fingerprint: str, **info: Any
) -> Path:
    """Write ``latents.json``: the shards, their counts and the VAE fingerprint."""
    total = sum(int(s["count"]) for s in shards)
    body = {"vae_fingerprint": vae_fingerprint, "shards": list(shards), "total": total, **info}
    return atomic_write_json(Path(folder) / LATENTS_NAME, body)


class LatentStream(ShardStream):
    """:class:`LatentClip` windows from latent shards, split, shuffled and counted like
    :class:`~trajloom.data.stream.ShardStream` (a bad sample is skipped with a warning and
    counted by reason in ``stats``; ``strict`` raises instead)."""

    def _windows(self, raw: dict[str, Any]) -> Iterator[LatentClip]:  # type: ignore[override]
        where = f"{raw['__url__']}:{raw['__key__']}"
        self._count("samples_read")
        try:
            clip = decode_latent_clip(raw)
        except FormatError as err:
            self._skip(where, err.reason, str(err), err)
            return
        yield clip


@dataclass
class LatentBatch:
    """Latent clips stacked for training (torch, CPU until moved): ``z_hist`` "b th' n c",
    ``z_fut`` "b tf' n c", ``hist_vis`` "b th' n" and ``fut_vis`` "b tf' n" float in {0, 1};
    ``text_emb``, ``video_latent`` float and ``video_frames`` "b th h w 3" uint8 when every
    clip has them, else None."""

    ids: list[str]
    z_hist: torch.Tensor
    z_fut: torch.Tensor
    hist_vis: torch.Tensor
    fut_vis: torch.Tensor
    captions: list[str]
    text_emb: torch.Tensor | None = None
    video_latent: torch.Tensor | None = None
    video_frames: torch.Tensor | None = None
    stats_delta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def window(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, visibility)`` of the ``"hist"`` or ``"fut"`` window."""
        if name == "hist":
            return self.z_hist, self.hist_vis
        if name == "fut":
            return self.z_fut, self.fut_vis
        raise ValueError(f"window must be 'hist' or 'fut', got {name!r}")


def collate_latents(clips: Sequence[LatentClip]) -> LatentBatch:
    """Stack latent clips; optional arrays must be on every clip or on none."""
    if not clips:
        raise ValueError("collate_latents got an empty list of clips")

    def stack(name: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.stack([torch.from_numpy(np.asarray(getattr(c, name))) for c in clips]).to(
            dtype
        )

    def optional(name: str) -> torch.Tensor | None:
        stacked = stack_optional(clips, name)
        return None if stacked is None else stacked.float()

    return LatentBatch(
        ids=[c.id for c in clips],
        z_hist=stack("z_hist", torch.float32),
        z_fut=stack("z_fut", torch.float32),
        hist_vis=stack("hist_vis", torch.float32),
        fut_vis=stack("fut_vis", torch.float32),
        captions=[c.caption for c in clips],
        text_emb=optional("text_emb"),
        video_latent=optional("video_latent"),
        video_frames=stack_optional(clips, "video_frames"),
        stats_delta={"deltas": [c.stats_delta for c in clips if c.stats_delta]},
    )

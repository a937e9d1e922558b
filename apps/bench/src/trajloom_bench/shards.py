"""Reading the shards of a bench source in file order (no shuffling, no decoding of video)."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trajloom.data.formats import FormatError, ShardSample, decode_shard_sample

__all__ = ["iter_shard_samples"]


def _split_member(name: str) -> tuple[str, str]:
    # WebDataset's rule: the key runs up to the first dot of the base name.
    folder, _, base = name.rpartition("/")
    key, _, ext = base.partition(".")
    return (f"{folder}/{key}" if folder else key), ext


def iter_shard_samples(path: Path) -> Iterator[ShardSample]:
    """Decode every sample of a shard ``.tar`` (members grouped by key, in file order)."""
    try:
        with tarfile.open(path, mode="r") as tar:
            yield from _samples_of(tar, path)
    except (tarfile.TarError, OSError) as err:
        raise FormatError(f"{path}: not a readable shard tar ({err})") from err


def _samples_of(tar: tarfile.TarFile, path: Path) -> Iterator[ShardSample]:
    current: dict[str, Any] = {}
    for member in tar:
        if not member.isfile():
            continue
        key, ext = _split_member(member.name)
        if current and current["__key__"] != key:
            yield decode_shard_sample(current)
            current = {}
        if not current:
            current = {"__key__": key, "__url__": str(path)}
        handle = tar.extractfile(member)
        current[ext] = handle.read() if handle is not None else b""
    if current:
        yield decode_shard_sample(current)

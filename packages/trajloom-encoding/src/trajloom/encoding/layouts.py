"""Explicit converters between track layouts and resolutions.

Our in-memory layout is time-major ``"t n 2"`` in pixels with boolean visibility.
The released npz files and TAP-Vid store ``"n t 2"``; TAP-Vid further uses ``[0, 1]``
coordinates and *occluded* flags. Converting through these named functions avoids the
silent axis swaps that plague point-tracking code.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "from_tapvid",
    "nt_to_tn",
    "rescale_tracks",
    "tn_to_nt",
    "to_tapvid",
]

Array = torch.Tensor | np.ndarray
ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


def _swap(x: Array, a: int, b: int) -> Array:
    return x.transpose(a, b) if isinstance(x, torch.Tensor) else np.swapaxes(x, a, b)


def nt_to_tn(tracks: Array, visibility: Array | None = None) -> tuple[Array, Array | None]:
    """``"... n t 2"`` and ``"... n t"`` (released npz, TAP-Vid) -> ``"... t n 2"``, ``"... t n"``."""
    if tracks.ndim < 3 or tracks.shape[-1] != 2:
        raise ValueError(f"tracks must be '... n t 2', got shape {tuple(tracks.shape)}")
    out = _swap(tracks, -3, -2)
    if visibility is None:
        return out, None
    if tuple(visibility.shape) != tuple(tracks.shape[:-1]):
        raise ValueError(
            f"visibility has shape {tuple(visibility.shape)}, expected {tuple(tracks.shape[:-1])}"
        )
    return out, _swap(visibility, -2, -1)


def tn_to_nt(tracks: Array, visibility: Array | None = None) -> tuple[Array, Array | None]:
    """``"... t n 2"``, ``"... t n"`` -> ``"... n t 2"``, ``"... n t"``; inverse of :func:`nt_to_tn`."""
    return nt_to_tn(tracks, visibility)


def from_tapvid(
    points: np.ndarray, occluded: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """TAP-Vid ``points "n t 2"`` in ``[0, 1]`` and ``occluded "n t"`` -> ours.

    Returns pixel tracks ``"t n 2"`` (``x * W``, ``y * H``) and visibility ``"t n"``
    (``not occluded``).
    """
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must be 'n t 2', got shape {points.shape}")
    if occluded.shape != points.shape[:-1]:
        raise ValueError(f"occluded has shape {occluded.shape}, expected {points.shape[:-1]}")
    pixels = points * np.array([width, height], dtype=points.dtype)
    return np.swapaxes(pixels, 0, 1), ~np.swapaxes(occluded.astype(bool), 0, 1)


def to_tapvid(
    tracks: np.ndarray, visibility: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ours (``"t n 2"`` pixels, ``"t n"`` visible) -> TAP-Vid (``"n t 2"`` in ``[0, 1]``, occluded)."""
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise ValueError(f"tracks must be 't n 2', got shape {tracks.shape}")
    if visibility.shape != tracks.shape[:-1]:
        raise ValueError(f"visibility has shape {visibility.shape}, expected {tracks.shape[:-1]}")
    points = np.swapaxes(tracks, 0, 1) / np.array([width, height], dtype=tracks.dtype)
    return points, ~np.swapaxes(visibility.astype(bool), 0, 1)


def rescale_tracks(tracks: ArrayT, src_size: tuple[int, int], dst_size: tuple[int, int]) -> ArrayT:
    """Pixel tracks ``"... 2"`` from a ``(width, height)`` frame to another, e.g. 854x480 -> 832x480.

    Scales x by ``W_dst / W_src`` and y by ``H_dst / H_src`` (the released
    ``translate_trajectories``), so the image's corners map to each other.
    """
    (w0, h0), (w1, h1) = src_size, dst_size
    if min(w0, h0, w1, h1) <= 0:
        raise ValueError(f"sizes must be positive (width, height), got {src_size} -> {dst_size}")
    if tracks.shape[-1] != 2:
        raise ValueError(f"tracks must end in 2 (x, y), got shape {tuple(tracks.shape)}")
    if isinstance(tracks, torch.Tensor):
        return tracks * torch.tensor([w1 / w0, h1 / h0], dtype=tracks.dtype, device=tracks.device)
    return tracks * np.array([w1 / w0, h1 / h0], dtype=tracks.dtype)

"""Input validation shared by the encoding functions.

Every check raises ``ValueError`` naming the argument, what was received and what
was expected, so that a caller several layers up can tell which input was wrong.
"""

from __future__ import annotations

import numpy as np
import torch

from trajloom.encoding.grid import GridSpec

__all__ = ["check_tracks", "check_visibility"]

ArrayLike = torch.Tensor | np.ndarray


def check_tracks(
    tracks: ArrayLike,
    name: str = "tracks",
    *,
    spec: GridSpec | None = None,
    allow_nonfinite: bool = False,
    min_ndim: int = 3,
) -> None:
    """Check a ``"... t n 2"`` track array: last dim 2, T >= 1, N matching the grid, finite."""
    shape = tuple(tracks.shape)
    if len(shape) < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dims ('... t n 2'), got shape {shape}"
        )
    if shape[-1] != 2:
        raise ValueError(f"{name} must end in 2 coordinates (x, y), got shape {shape}")
    if shape[-3] == 0:
        raise ValueError(f"{name} has zero frames (shape {shape}); expected at least one")
    if spec is not None and shape[-2] != spec.num_points:
        raise ValueError(
            f"{name} has N={shape[-2]} tracks (shape {shape}) but the grid "
            f"{spec.grid_h}x{spec.grid_w} at {spec.width}x{spec.height}, stride {spec.stride} "
            f"has N={spec.num_points}; rescale or re-track on this grid"
        )
    if not allow_nonfinite:
        finite = torch.isfinite(tracks) if isinstance(tracks, torch.Tensor) else np.isfinite(tracks)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(
                f"{name} holds {bad} NaN or inf coordinates; fill occluded points with a "
                "finite position (e.g. the last visible one) and mark them invisible"
            )


def check_visibility(
    visibility: ArrayLike, tracks_shape: tuple[int, ...], name: str = "visibility"
) -> None:
    """Check a boolean ``"... t n"`` visibility array that matches ``tracks_shape[:-1]``."""
    dtype_ok = (
        visibility.dtype == torch.bool
        if isinstance(visibility, torch.Tensor)
        else visibility.dtype == np.bool_
    )
    if not dtype_ok:
        raise ValueError(
            f"{name} must be boolean, got dtype {visibility.dtype}; convert with `> 0.5` "
            "(probabilities) or `!= 0` (0/1 flags)"
        )
    if tuple(visibility.shape) != tuple(tracks_shape[:-1]):
        raise ValueError(
            f"{name} has shape {tuple(visibility.shape)}, expected {tuple(tracks_shape[:-1])} "
            "(the tracks' shape without the last axis)"
        )

"""The temporal split and compression conventions.

History frames are ``[0, Th)`` and future frames ``[Th, Th + Tf)`` (default 81 + 81).
Temporal compression by ``factor`` keeps the first frame: ``1 + (T - 1) / factor``
latent steps (81 -> 21 for factor 4).
"""

from __future__ import annotations

__all__ = ["latent_frames"]


def latent_frames(num_frames: int, factor: int = 4) -> int:
    """Number of latent steps for ``num_frames`` frames: ``1 + (T - 1) / factor``."""
    if num_frames < 1 or factor < 1:
        raise ValueError(f"num_frames and factor must be >= 1, got {num_frames}, {factor}")
    if (num_frames - 1) % factor:
        raise ValueError(
            f"num_frames={num_frames} is not 1 + a multiple of factor={factor}; "
            f"use e.g. {1 + factor * ((num_frames - 1) // factor)} or "
            f"{1 + factor * ((num_frames - 1) // factor + 1)} frames"
        )
    return 1 + (num_frames - 1) // factor

"""The temporal split and compression conventions, and the default windows.

History frames are ``[0, Th)`` and future frames ``[Th, Th + Tf)`` (default 81 + 81).
Temporal compression by ``factor`` keeps the first frame: ``1 + (T - 1) / factor``
latent steps (81 -> 21 for factor 4).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_FUTURE",
    "DEFAULT_HISTORY",
    "DEFAULT_TEMPORAL_FACTOR",
    "DEFAULT_WINDOWS",
    "WindowSpec",
    "latent_frames",
]

DEFAULT_HISTORY = 81  # frames of the history window (paper §4.1, the released models)
DEFAULT_FUTURE = 81  # frames of the future window
DEFAULT_TEMPORAL_FACTOR = 4  # frames per latent step, first frame kept (81 -> 21)


def latent_frames(num_frames: int, factor: int = DEFAULT_TEMPORAL_FACTOR) -> int:
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


@dataclass(frozen=True)
class WindowSpec:
    """Frames of the history and future windows and the temporal compression factor.

    Both windows must compress to whole latent steps (``1 + k * temporal_factor`` frames).
    """

    history: int = DEFAULT_HISTORY
    future: int = DEFAULT_FUTURE
    temporal_factor: int = DEFAULT_TEMPORAL_FACTOR

    def __post_init__(self) -> None:
        for name in ("history", "future", "temporal_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"WindowSpec.{name} must be a positive int, got {value!r}")
        for name in ("history", "future"):
            try:
                latent_frames(getattr(self, name), self.temporal_factor)
            except ValueError as err:
                raise ValueError(f"WindowSpec.{name}: {err}") from None

    @property
    def history_latent_frames(self) -> int:
        """Latent steps of the history window (21 for 81 frames)."""
        return latent_frames(self.history, self.temporal_factor)

    @property
    def future_latent_frames(self) -> int:
        """Latent steps of the future window (21 for 81 frames)."""
        return latent_frames(self.future, self.temporal_factor)

    @property
    def total(self) -> int:
        """Frames of a whole clip, history then future."""
        return self.history + self.future


DEFAULT_WINDOWS = WindowSpec()

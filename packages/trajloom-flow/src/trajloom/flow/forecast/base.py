"""What every forecaster returns and answers to, and the one error of this layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from trajloom.encoding import GridSpec

__all__ = ["Forecast", "ForecastError", "Forecaster"]


class ForecastError(ValueError):
    """A method spec, checkpoint or clip a forecaster cannot use.

    The message names the input and says what to give instead; apps show it as it is
    (or re-raise it as their own error type).
    """


@dataclass
class Forecast:
    """Sampled futures of one clip.

    ``tracks`` "s tf n 2" float32 pixels of the forecaster's grid, ``visibility`` "s tf n"
    bool, ``probability`` "s tf n" float32 visibility probabilities or None (only the
    visibility head gives them); ``s`` samples on the leading axis.
    """

    tracks: np.ndarray
    visibility: np.ndarray
    probability: np.ndarray | None = None


class Forecaster(Protocol):
    """Predicts futures of history tracks on its grid.

    ``grid``: the grid of the tracks it reads and writes; ``history``: the history frames
    it reads; ``future``: the future frames it predicts. ``wants_frames``: it uses the
    history video frames (otherwise callers need not decode them). ``needs_future``: it
    reads the true future (VAE reconstruction, the true future itself), which callers then
    pass as ``fut_tracks`` "tf n 2" / ``fut_vis`` "tf n".
    """

    grid: GridSpec
    history: int
    future: int
    wants_frames: bool
    needs_future: bool

    def forecast(
        self,
        hist_tracks: np.ndarray,
        hist_vis: np.ndarray,
        *,
        frames: np.ndarray | None,
        caption: str,
        num_samples: int,
        seed: int,
        fut_tracks: np.ndarray | None = None,
        fut_vis: np.ndarray | None = None,
    ) -> Forecast:
        """Futures of ``hist_tracks`` "th n 2" px and ``hist_vis`` "th n" bool.

        ``frames`` "th h w 3" uint8 history frames or None; ``caption`` may be empty;
        sample k draws its noise from ``seed`` (deterministic forecasters ignore it).
        """
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings of the forecaster (``method`` names its spec)."""
        ...

"""What every forecaster returns and answers to, and the one error of this layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from trajloom.encoding import GridSpec

__all__ = ["Forecast", "ForecastError", "Forecaster", "one_line"]


class ForecastError(ValueError):
    """A method spec, checkpoint or clip a forecaster cannot use.

    The message names the input and says what to give instead; apps show it as it is
    (or re-raise it as their own error type). Messages are one line.
    """


def one_line(err: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` of ``err``, at most ``limit`` characters.

    Loaders (torch's ``weights_only`` unpickler, safetensors) explain a refusal over many
    lines; an error of this layer names the file and keeps only the gist.
    """
    message = str(err)
    if message.startswith("Weights only load failed"):
        # torch's weights-only refusal: keep its reason, never its advice to turn it off
        reason = message.split("\n", 1)[-1].split("Check the documentation")[0]
        reason = " ".join(reason.split("WeightsUnpickler error:")[-1].split())
        message = f"refused by the weights-only loader, nothing was run: {reason}"
    text = next((line.strip() for line in message.splitlines() if line.strip()), "")
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Forecast:
    """Sampled futures of one clip.

    ``tracks`` "s tf n 2" float32 pixels of the forecaster's grid, ``visibility`` "s tf n"
    bool, ``probability`` "s tf n" float32 visibility probabilities or None (only the
    visibility head gives them), ``latents`` "s tf' n c" the generated latents of a
    learned model or None; ``s`` samples on the leading axis.
    """

    tracks: np.ndarray
    visibility: np.ndarray
    probability: np.ndarray | None = None
    latents: np.ndarray | None = None

    def check(self, method: str, clip: str) -> Forecast:
        """This forecast, or :class:`ForecastError` when it holds a non-finite number.

        A model that emits NaN or infinite latents, tracks or visibility probabilities is
        broken (diverged weights, an overflow): its output is refused, never cleaned into
        a plausible future. The message names ``method``, ``clip`` and how many values.
        """
        arrays = (
            ("latents", self.latents),
            ("tracks", self.tracks),
            ("visibility probabilities", self.probability),
        )
        for name, array in arrays:
            if array is None:
                continue
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise ForecastError(
                    f"{method} on clip {clip}: {bad} of {np.size(array)} predicted {name} are "
                    "not finite (NaN or inf); the model is broken (diverged or damaged "
                    "weights): retrain or give another checkpoint"
                )
        return self


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

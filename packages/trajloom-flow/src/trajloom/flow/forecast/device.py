"""The device a forecaster runs on, from a command-line name."""

from __future__ import annotations

import torch

from trajloom.flow.forecast.base import ForecastError

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU when one is present, else the CPU; otherwise a torch device name.

    Raises :class:`ForecastError` for a name torch does not know, or ``cuda`` without a
    CUDA device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ForecastError(
            f"--device {name!r}: not a device ({err}); use auto, cpu or cuda"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ForecastError(f"--device {name}: no CUDA device is available; use auto or cpu")
    return device

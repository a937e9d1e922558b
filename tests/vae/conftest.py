"""Shared fixtures for the trajloom.vae tests: small synthetic grid tracks."""

from __future__ import annotations

import pytest
import torch

from trajloom.encoding import GridSpec, query_points


def smooth_tracks(
    spec: GridSpec, frames: int, batch: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid tracks ``"b t n 2"`` in pixels moving smoothly inside the frame, and visibility
    ``"b t n"`` (~80%)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, frames).view(1, frames, 1, 1)
    q = query_points(spec).view(1, 1, -1, 2)
    phase = torch.rand(batch, 1, 1, 2, generator=g) * 6.28
    amp = 0.05 * min(spec.width, spec.height)
    wave = torch.sin(4 * t + q / 40 + phase) * amp
    shift = torch.randn(batch, 1, 1, 2, generator=g) * amp * t
    # kept inside the frame: decoded tracks are clamped to it, as released
    tracks = torch.minimum((q + wave + shift).clamp_min(0), torch.tensor([spec.width, spec.height]))
    vis = torch.rand(batch, frames, spec.num_points, generator=g) > 0.2
    return tracks, vis


@pytest.fixture
def make_tracks():
    """The :func:`smooth_tracks` factory (tests import nothing from conftest)."""
    return smooth_tracks

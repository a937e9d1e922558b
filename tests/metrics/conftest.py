"""Shared builders of analytic trajectory fields for the metrics tests."""

from __future__ import annotations

import numpy as np
import pytest


def grid_points(hg: int, wg: int, stride: float = 32.0) -> np.ndarray:
    """Row-major grid seeds `[hg * wg, 2]` at `(j * stride, i * stride)`."""
    ys, xs = np.meshgrid(np.arange(hg) * stride, np.arange(wg) * stride, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def rotation_tracks(
    hg: int, wg: int, frames: int, theta: float, stride: float = 32.0
) -> np.ndarray:
    """Rigid rotation by `theta` per frame about the grid centre: `[frames, n, 2]`."""
    p = grid_points(hg, wg, stride)
    c = p.mean(axis=0)
    angles = theta * np.arange(frames)
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    d = p - c
    x = c[0] + cos * d[:, 0] - sin * d[:, 1]
    y = c[1] + sin * d[:, 0] + cos * d[:, 1]
    return np.stack([x, y], axis=-1)


@pytest.fixture(name="grid_points")
def _grid_points_fixture():
    return grid_points


@pytest.fixture(name="rotation_tracks")
def _rotation_tracks_fixture():
    return rotation_tracks


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)

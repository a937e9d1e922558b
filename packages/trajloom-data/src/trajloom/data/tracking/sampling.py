"""Sub-pixel sampling of dense fields at point positions (pure numpy, vectorized)."""

from __future__ import annotations

import numpy as np

__all__ = ["bilinear_sample"]


def bilinear_sample(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``field "h w c"`` at ``points "n 2"`` ``(x, y)`` pixels.

    Pixel ``(row i, column j)`` holds the value at ``(x, y) = (j, i)`` (pixel centres at
    integer coordinates, as in OpenCV). Points outside the image take the value of the
    nearest border pixel. Returns ``"n c"`` float32; exact (no fixed-point weights).
    """
    h, w = field.shape[:2]
    x = np.clip(points[:, 0], 0.0, w - 1.0)
    y = np.clip(points[:, 1], 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.intp), w - 2) if w > 1 else np.zeros_like(x, np.intp)
    y0 = np.minimum(np.floor(y).astype(np.intp), h - 2) if h > 1 else np.zeros_like(y, np.intp)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    ax = (x - x0).astype(np.float32)[:, None]
    ay = (y - y0).astype(np.float32)[:, None]
    top = field[y0, x0] * (1 - ax) + field[y0, x1] * ax
    bottom = field[y1, x0] * (1 - ax) + field[y1, x1] * ax
    return (top * (1 - ay) + bottom * ay).astype(np.float32, copy=False)

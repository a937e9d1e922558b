"""CPU time of one overlay (``trajloom.data.render.render_overlay``) by render size.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/render_trails.py

390 points (the paper's 26 x 15 grid) on random walks, 32 + 32 frames, trail 12, over
random frames, at the sizes the sample app renders a 768x576, a 1280x720 and (capped) a
1920x1080 video; also K = 4 in one overlay (three faint alternatives). Process CPU
seconds (steadier than wall time on a shared machine), best of two.
"""

from __future__ import annotations

import time

import numpy as np

from trajloom.data.render import render_overlay

SIZES = [(768, 576), (1280, 720)]


def _cpu(*args, **kwargs) -> float:
    """Best process CPU seconds of two ``render_overlay(*args, **kwargs)`` calls."""
    best = float("inf")
    for _ in range(2):
        start = time.process_time()
        render_overlay(*args, **kwargs)
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    rng = np.random.default_rng(0)
    th = tf = 32
    for w, h in SIZES:
        start = rng.uniform(0, 1, (1, 390, 2)) * [w, h]
        walk = start + np.cumsum(rng.normal(0, 2, (4, th + tf, 390, 2)), 1)
        vis = np.ones((th + tf, 390), bool)
        frames = rng.integers(0, 255, (th + tf, h, w, 3), dtype=np.uint8)
        kw = {"grid_hw": (15, 26), "size": (w, h)}
        args = (frames, walk[0, :th], vis[:th], walk[0, th:], vis[th:])
        one = _cpu(*args, **kw)
        together = _cpu(*args, alternatives=[(walk[k, th:], vis[th:]) for k in (1, 2, 3)], **kw)
        frames_n = th + tf
        print(
            f"{w}x{h}: one overlay {one:.2f} s CPU ({1000 * one / frames_n:.0f} ms/frame), "
            f"K = 4 in one {together:.2f} s ({1000 * together / frames_n:.0f} ms/frame)"
        )


if __name__ == "__main__":
    main()

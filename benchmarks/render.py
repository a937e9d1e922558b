"""Render time of one clip's futures at paper settings: the overlays the report needs.

    .venv/bin/python benchmarks/render.py            # 832x480, 81 + 81 frames, K = 4
    .venv/bin/python benchmarks/render.py --quick    # 256x160, 16 + 16 frames, K = 2

`trajloom.data.predictions.render_clip` (what apps/sample and apps/demo write since the
HTML report: one MP4 overlay per sample, one of the truth, the GIF of sample 0, the grid
tiled from the overlays already drawn) against what apps/sample rendered before (the
overlay MP4 + GIF of sample 0, and the grid, which drew every sample's overlay again).
Frames: the first frames of a video of ../shared/data/videos when there is one (else
grey), decoded outside the timers; tracks: random walks on the grid. CPU seconds of the
process (user + system) and wall seconds, one run each, alternating.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from trajloom.data.clip import Clip
from trajloom.data.predictions import Futures, OutputOptions, render_clip
from trajloom.data.render import render_grid, render_overlay
from trajloom.data.video import read_video, write_video
from trajloom.encoding import GridSpec, query_points

VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "videos"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _walk(rng: np.random.Generator, grid: GridSpec, frames: int) -> np.ndarray:
    start = query_points(grid).numpy()
    steps = rng.normal(0, 1.5, (frames, *start.shape)).cumsum(axis=0)
    return (start + steps).astype(np.float32)


def _clip(grid: GridSpec, history: int, future: int, k: int) -> tuple[Clip, Futures]:
    rng = np.random.default_rng(0)
    total = history + future
    videos = sorted(VIDEOS.glob("*.mp4"))
    if videos:
        frames = read_video(videos[0], size=grid.size, num_frames=total)
    else:
        frames = np.full((total, grid.height, grid.width, 3), 128, np.uint8)
    tracks = _walk(rng, grid, total)
    vis = np.ones(tracks.shape[:2], bool)
    clip = Clip.cut("bench", tracks, vis, start=0, history=history, future=future, frames=frames)
    fut = np.stack([tracks[history:] + rng.normal(0, 3, tracks[history:].shape) for _ in range(k)])
    return clip, Futures(fut.astype(np.float32), np.ones(fut.shape[:3], bool))


def _before(clip: Clip, futures: Futures, grid: GridSpec, folder: Path) -> None:
    """What apps/sample rendered before the report: sample 0's overlay + GIF, the grid."""
    hw = (grid.grid_h, grid.grid_w)
    overlay = render_overlay(clip.frames, clip.hist_tracks, clip.hist_vis, futures.tracks[0],
                             futures.visibility[0], grid_hw=hw, size=grid.size)  # fmt: skip
    write_video(folder / "a.mp4", overlay, fps=16)
    write_video(folder / "a.gif", overlay[::2, ::2, ::2], fps=8)
    pairs = list(zip(futures.tracks, futures.visibility, strict=True))
    tiles = render_grid(clip.frames, clip.hist_tracks, clip.hist_vis, pairs, grid_hw=hw,
                        size=grid.size)  # fmt: skip
    write_video(folder / "a_grid.mp4", tiles, fps=16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    grid, history, future, k = (
        (GridSpec(256, 160, 32), 16, 16, 2) if args.quick else (GridSpec(), 81, 81, 4)
    )
    clip, futures = _clip(grid, history, future, k)
    print(f"{grid.width}x{grid.height}, {history} + {future} frames, K = {k}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in (
            ("before: sample 0 overlay + GIF + grid", lambda d: _before(clip, futures, grid, d)),
            ("now: render_clip (K overlays + truth + GIF + grid)",
             lambda d: render_clip(clip, futures, grid, d, OutputOptions())),
        ):  # fmt: skip
            folder = Path(tempfile.mkdtemp(dir=tmp))
            wall, cpu = time.perf_counter(), _cpu()
            run(folder)
            wall, cpu = time.perf_counter() - wall, _cpu() - cpu
            size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
            print(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU, {size:.1f} MB written")


if __name__ == "__main__":
    main()

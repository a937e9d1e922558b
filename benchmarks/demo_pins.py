"""Click-to-pin in the live demo: does a pinned demo job meet its pin, and at what cost.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/demo_pins.py

Runs the demo's own request (``trajloom_demo.jobs.run_job``: tracking, sampling, renders,
zip) on a synthetic 128x96 video, once unpinned and once with one pin made as the page
makes it (a source pixel 3 px from a grid point visible at the boundary frame; the target
14.1 px from where the unpinned sample 0 put that point, at future frame 5), for the tiny
trained sets the tests use:

* ``guidance``: the pipeline of ``tests/flow/test_guidance.py`` (its ``trained`` fixture:
  128x96, stride 16, 9 + 9 frames), the set ``tests/apps/test_demo.py`` pins;
* ``shared-2``: ``tests/apps/conftest.py``'s tiny set (128x96, stride 32, 17 + 17
  frames; 2 training steps, as the sample and bench tests use it), pinned at frame 10.

Printed per set and Euler steps: the pin error of each sample (px; the largest distance
of a pinned point from its target, as the page reports it), the distance unpinned, and
the wall seconds of the pinned and unpinned requests. The test modules are loaded by
path (test folders are not packages), as tests/conftest.py does.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from trajloom.data.synthetic import SceneConfig, make_scene
from trajloom.data.video import write_video
from trajloom.data.wanmove import read_wanmove
from trajloom_demo.jobs import Job, ModelCache, pins_from_page, run_job
from trajloom_demo.settings import DemoSettings

ROOT = Path(__file__).resolve().parents[1]


def _module(path: str) -> Any:
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sets(folder: Path) -> dict[str, tuple[Path, int, int]]:
    """name -> (trained set, stride, window frames)."""
    pipe, _, _ = _module("tests/flow/test_guidance.py").trained.__wrapped__()
    guidance = pipe.save_pretrained(folder / "guidance")
    shared = _module("tests/apps/conftest.py").build_tiny_trained_set(folder / "shared-2")
    return {"guidance": (guidance, 16, 9), "shared-2": (shared, 32, 17)}


def _measure(trained: Path, video: Path, steps: int, frame: int, out: Path) -> str:
    settings = DemoSettings(out=out)
    models = ModelCache(settings)
    quiet = lambda f, s: None  # noqa: E731
    models.get(str(trained), steps)  # loading is not timed
    start = time.perf_counter()
    free = run_job(Job(video, str(trained), 2, steps, seed=1), settings, models, quiet)
    free_s = time.perf_counter() - start
    boundary, seen = (a[0] for a in read_wanmove(free.folder / "wanmove" / "sample_000", "walk"))
    point = int(np.argmin(np.where(seen, np.linalg.norm(boundary - [64, 48], axis=-1), np.inf)))
    went = np.load(free.folder / "runs" / "sample_000" / "walk" / "pred_tracks.npy")[frame, point]
    target = np.clip(went + np.array([10.0, -10.0]), 0, [127, 95])
    page = [{"source": (boundary[point] + 3.0).tolist(), "frame": frame, "target": target.tolist()}]
    job = Job(video, str(trained), 2, steps, seed=1, pins=pins_from_page(page))
    start = time.perf_counter()
    pinned = run_job(job, settings, models, quiet)
    pinned_s = time.perf_counter() - start
    errors = ", ".join(f"{e:.2f}" for e in pinned.summary["pins"]["error_px"])
    return (
        f"steps {steps}: pin error {errors} px (unpinned {np.linalg.norm(went - target):.2f} px); "
        f"request {pinned_s:.1f} s pinned, {free_s:.1f} s unpinned"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (trained, stride, window) in _sets(folder).items():
            cfg = SceneConfig(width=128, height=96, stride=stride, num_frames=2 * window)
            video = write_video(folder / name / "walk.mp4", make_scene(4, cfg).frames, fps=8)
            frame = 5 if window == 9 else 10
            for steps in (6, 20):
                print(f"{name}: " + _measure(trained, video, steps, frame, folder / name / "out"))


if __name__ == "__main__":
    main()

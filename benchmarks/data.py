"""Data throughput: synthetic scenes, and the shard loader against a training step's appetite.

    .venv/bin/python benchmarks/data.py            # paper-scale shards: 162-frame 390-track clips
    .venv/bin/python benchmarks/data.py --quick    # fewer clips, same shapes

Figures:

1. synthetic clips/s from `make_scene`, with and without rendered frames, at 256x256 x 32
   frames (stride 16) and at the paper's 832x480 x 162 frames (stride 32, N = 390);
2. `ShardStream` samples/s in steady state (endless resampling stream, one 81 + 81 window
   per clip, batch 4, timed after the first batch) through a DataLoader with 1 and 2 workers, over shards of 162-frame 390-track clips, without frames and with the
   81 history frames decoded from MP4 at 832x480;
3. the ratio of each loader figure to a paper-scale training step's appetite (a few
   samples per second per GPU; 4 is taken here).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

from trajloom.data.shards import write_shards
from trajloom.data.stream import ShardStream, StreamConfig, make_loader
from trajloom.data.synthetic import SceneConfig, make_scene, synthetic_shard_samples

APPETITE = 4.0  # samples/s one GPU consumes at paper scale (a few per second)


def clips_per_second(config: SceneConfig, count: int) -> tuple[float, float]:
    """(clips per wall-clock second, clips per CPU second of this process)."""
    make_scene(0, config)  # warm up caches and imports
    wall, cpu = time.perf_counter(), time.process_time()
    for seed in range(1, count + 1):
        make_scene(seed, config)
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


def cpu_cost(urls: str, *, frames: bool, samples: int) -> float:
    """Samples per CPU-second of the stream in this process (no DataLoader), after one sample.

    On a loaded machine wall-clock rates understate what a free core does; this is the
    per-core figure to multiply by the number of workers a training node can give.
    """
    config = StreamConfig(
        urls=(urls,), history=81, future=81, decode_frames=frames, resample=True, seed=1
    )
    it = iter(ShardStream(config))
    next(it)
    cpu = time.process_time()
    for _ in range(samples):
        next(it)
    return samples / (time.process_time() - cpu)


def loader_rate(urls: str, *, frames: bool, workers: int, batches: int) -> tuple[float, int]:
    """Steady-state samples/s of an endless (resampling) stream, after the first batch."""
    config = StreamConfig(
        urls=(urls,), history=81, future=81, decode_frames=frames, resample=True, seed=0
    )
    loader = make_loader(ShardStream(config), batch_size=4, num_workers=workers)
    it = iter(loader)
    next(it)  # worker start-up and the first shard open are not steady state
    seen = 0
    start = time.perf_counter()
    for _ in range(batches):
        seen += len(next(it))
    return seen / (time.perf_counter() - start), seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer clips and repeats")
    args = parser.parse_args()
    n_small = 20 if args.quick else 100
    n_paper = 3 if args.quick else 10
    n_shard_clips = 8 if args.quick else 24

    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    small = SceneConfig(width=256, height=256, stride=16, num_frames=32)
    paper = SceneConfig(width=832, height=480, stride=32, num_frames=162)
    print("== synthetic scenes (make_scene, one process) ==")
    for name, cfg, count in (
        ("256x256 x 32, stride 16", small, n_small),
        ("832x480 x 162, stride 32", paper, n_paper),
    ):
        rendered, rendered_cpu = clips_per_second(cfg, count)
        tracks_only, tracks_cpu = clips_per_second(
            SceneConfig(**{**cfg.to_dict(), "render_frames": False}), count * 5
        )
        print(
            f"{name}: {rendered:7.2f} clips/s with frames ({rendered_cpu:7.2f} per CPU-s), "
            f"{tracks_only:7.1f} clips/s tracks only ({tracks_cpu:7.1f} per CPU-s)"
        )

    print(f"== shard loader: {n_shard_clips} clips of 162 frames x 390 tracks, 81 + 81 window ==")
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir = Path(tmp) / "shards"
        start = time.perf_counter()
        manifest = write_shards(
            synthetic_shard_samples(n_shard_clips, paper, seed=0), shard_dir, maxcount=4
        )
        took = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in shard_dir.glob("*.tar")) / 1e6
        print(
            f"wrote {manifest['num_samples']} clips in {len(manifest['shards'])} shards "
            f"({size_mb:.1f} MB, with MP4) in {took:.1f} s: {n_shard_clips / took:.2f} clips/s"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no sample may be skipped here
            for frames in (False, True):
                for workers in (1, 2):
                    batches = (3 if args.quick else 10) if frames else (25 if args.quick else 100)
                    rate, seen = loader_rate(
                        str(shard_dir), frames=frames, workers=workers, batches=batches
                    )
                    label = "with frames   " if frames else "without frames"
                    print(
                        f"{label} workers={workers}: {rate:8.1f} samples/s "
                        f"({seen} samples), {rate / APPETITE:6.1f}x a GPU's appetite "
                        f"of {APPETITE:.0f}/s"
                    )
            for frames in (False, True):
                per_cpu = cpu_cost(
                    str(shard_dir),
                    frames=frames,
                    samples=(8 if args.quick else 24) if frames else 200,
                )
                label = "with frames   " if frames else "without frames"
                print(
                    f"{label} in-process: {per_cpu:8.1f} samples per CPU-second "
                    f"({per_cpu / APPETITE:6.2f}x a GPU's appetite per worker core)"
                )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

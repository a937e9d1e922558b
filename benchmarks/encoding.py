"""Dense vs per-cell ("compact") input stage of the VAE: time and peak memory.

The dense path is what the released code does: rasterize the grid tracks to a
``b t 2 h w`` field, subtract the anchors, and patch-embed with a stride-s conv.
The compact path computes the same embedding from the ``b t n 2`` tracks.

    .venv/bin/python benchmarks/encoding.py            # 2 clips x 81 frames, 832x480, d=512
    .venv/bin/python benchmarks/encoding.py --quick    # 1 clip x 17 frames

Each path runs in its own subprocess for a clean peak-RSS reading; times are the
median of the repeats, measured alternately in one process so both see the same load.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from trajloom.encoding import (
    GridSpec,
    encode_offsets,
    normalize,
    patch_embed_cells,
    patch_embed_dense,
    rasterize,
)


def make_inputs(batch: int, frames: int, dim: int, spec: GridSpec):
    g = torch.Generator().manual_seed(0)
    size = torch.tensor([spec.width, spec.height], dtype=torch.float32)
    tracks = torch.rand(batch, frames, spec.num_points, 2, generator=g) * size
    vis = torch.rand(batch, frames, spec.num_points, generator=g) > 0.2
    weight = torch.randn(dim, 2, spec.stride, spec.stride, generator=g) * 0.02
    bias = torch.zeros(dim)
    return tracks, vis, weight, bias


def dense_path(tracks, vis, weight, bias, spec):
    field, _mask = rasterize(tracks, vis, spec)
    offsets = encode_offsets(field, spec)
    return patch_embed_dense(offsets.flatten(0, 1), weight, bias, spec)


def compact_path(tracks, vis, weight, bias, spec):
    return patch_embed_cells(normalize(tracks, spec), weight, bias, spec).flatten(0, 1)


PATHS = {"dense": dense_path, "compact": compact_path}


def _high_water_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss_child(path: str, batch: int, frames: int, dim: int) -> None:
    spec = GridSpec()
    inputs = make_inputs(batch, frames, dim, spec)
    with torch.no_grad():  # warm up lazily-initialized kernels with a tiny call
        PATHS[path](*make_inputs(1, 1, dim, spec), spec)
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark (Linux)
        f.write("5")
    before = _high_water_kib()
    with torch.no_grad():
        PATHS[path](*inputs, spec)
    print(json.dumps({"peak_extra_mib": (_high_water_kib() - before) / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=list(PATHS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    batch = args.batch or (1 if args.quick else 2)
    frames = args.frames or (17 if args.quick else 81)
    if args.child:
        peak_rss_child(args.child, batch, frames, args.dim)
        return

    spec = GridSpec()
    inputs = make_inputs(batch, frames, args.dim, spec)
    times: dict[str, list[float]] = {k: [] for k in PATHS}
    with torch.no_grad():
        ref = dense_path(*inputs, spec)
        err = (compact_path(*inputs, spec) - ref).abs().max().item()
        for _ in range(args.repeats):
            for name, fn in PATHS.items():
                t0 = time.perf_counter()
                fn(*inputs, spec)
                times[name].append(time.perf_counter() - t0)
    mem = {}
    for name in PATHS:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                name,
                "--batch",
                str(batch),
                "--frames",
                str(frames),
                "--dim",
                str(args.dim),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        mem[name] = json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_mib"]

    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"input stage, {batch} clips x {frames} frames, {spec.width}x{spec.height}, "
        f"N={spec.num_points}, d={args.dim}, torch threads={torch.get_num_threads()}"
    )
    for name in PATHS:
        print(f"  {name:8s} {med[name] * 1e3:10.1f} ms   peak extra RSS {mem[name]:8.1f} MiB")
    print(
        f"  ratio dense/compact: time x{med['dense'] / med['compact']:.0f}, "
        f"memory x{mem['dense'] / max(mem['compact'], 1e-3):.0f}; max |diff| {err:.2e}"
    )


if __name__ == "__main__":
    main()

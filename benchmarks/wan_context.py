"""What ``--video-encoder`` (the Wan2.1 VAE as video context) costs the cache stage on CPU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/wan_context.py            # real and paper windows
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/wan_context.py --quick    # the real recipe's only

The Wan2.1 VAE's architecture (``WAN21_VAE_CONFIG``: 96 base channels, z 16) with random
weights, saved to a temporary diffusers folder and loaded by ``WanVideoEncoder`` as real
weights would be: speed does not depend on the values. One history window per call, as the
cache stage encodes it; reported as the wall and CPU time of ``WanVideoEncoder(frames)``,
beside the built-in context's cache work for the same window (``context_frames``: the
history frames reduced to 4 x 4 pixels per token). Needs ``trajloom-flow[wan]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from trajloom.encoding import GridSpec
from trajloom.flow.conditioners import WAN21_VAE_CONFIG, WanVideoEncoder, context_frames

#: (name, grid, history frames): the real recipe's window and the paper's.
SETTINGS = {
    "real": (GridSpec(width=192, height=112, stride=16), 17),
    "paper": (GridSpec(width=832, height=480, stride=32), 81),
}


def _timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the real recipe's window only")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    config = {k: v for k, v in WAN21_VAE_CONFIG.items() if not k.startswith("_")}
    with tempfile.TemporaryDirectory() as tmp:
        AutoencoderKLWan(**config).save_pretrained(Path(tmp) / "vae")
        names = ["real"] if args.quick else ["real", "paper"]
        print(f"threads {torch.get_num_threads()}; Wan2.1 VAE architecture, random weights")
        for name in names:
            grid, frames_count = SETTINGS[name]
            enc = WanVideoEncoder(Path(tmp) / "vae", grid=grid)
            params = sum(p.numel() for p in enc.vae.encoder.parameters())
            frames = torch.randint(0, 256, (1, frames_count, grid.height, grid.width, 3))
            frames = frames.to(torch.uint8)
            size = (grid.grid_h * 4, grid.grid_w * 4)
            repeats = args.repeats if name == "real" else 1
            latents = (1 + (frames_count - 1) // 4, grid.num_points, 16)
            wan = _timed(lambda f=frames, e=enc: e(f), repeats)
            light = _timed(lambda f=frames, s=size: context_frames(f, s), repeats)
            print(
                f"{name}: {frames_count} frames {grid.width}x{grid.height} -> Wan input "
                f"{enc.size[1]}x{enc.size[0]}, latents {latents}; encoder "
                f"{params / 1e6:.1f} M params; Wan {wan[0]:.2f} s wall / {wan[1]:.2f} s CPU; "
                f"built-in context frames {light[0] * 1e3:.1f} ms wall (median of {repeats})"
            )


if __name__ == "__main__":
    main()

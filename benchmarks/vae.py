"""TrajLoom-VAE throughput and input-stage cost.

Figures:
1. Forward and forward+backward tokens/s of the paper architecture (16 + 16 blocks,
   width 512, 832x480 at stride 32 = 390 tokens per frame). On CPU the clip is
   shortened (``--frames``, default 17; 81 is the paper's) so that a few steps fit
   in minutes; tokens/s counts input tokens (frames x 390 x batch) per second.
2. The input stage, per-cell vs dense, side by side: the released path rasterizes the
   tracks into a ``b t 2 480 832`` field, subtracts the anchors and runs the strided
   conv; ours embeds the ``b t 390 2`` per-cell values directly. Time and peak memory
   (each measured in a fresh process: peak RSS on CPU, ``max_memory_allocated`` on CUDA).
3. ``--device cuda``: bf16 (autocast) training-step time, peak memory and MFU for the
   xformers and SDPA attention backends, at the paper's 81 frames.

Commands:
    .venv/bin/python benchmarks/vae.py --quick              # smoke run, seconds
    .venv/bin/python benchmarks/vae.py                      # CPU figures
    .venv/bin/python benchmarks/vae.py --device cuda        # GPU figures (H100)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time

import torch

import trajloom.vae as tv
from trajloom.encoding import (
    encode_offsets,
    normalize,
    patch_embed_cells,
    patch_embed_dense,
    query_points,
    rasterize,
)
from trajloom.vae.model import vae_flops


def _tracks(config: tv.VAEConfig, batch: int, device: str):
    spec = config.grid
    g = torch.Generator().manual_seed(0)
    q = query_points(spec)
    drift = torch.cumsum(torch.randn(batch, config.num_frames, spec.num_points, 2, generator=g), 1)
    tracks = (q + drift).to(device)
    vis = (torch.rand(batch, config.num_frames, spec.num_points, generator=g) > 0.2).to(device)
    return tracks, vis


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(config, batch, steps, device, dtype=None, backend=None):
    """Seconds per forward and per forward+backward(+AdamW step) of the full VAE objective."""
    model = tv.TrajLoomVAE(config).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    tracks, vis = _tracks(config, batch, device)
    x = normalize(tracks, config.grid)
    gen = torch.Generator(device=device).manual_seed(0)
    autocast = torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None)
    ctx = tv.attention_backend(backend) if backend else contextlib.nullcontext()

    def fwd():
        with torch.no_grad(), autocast:
            return model(x, vis, gen).losses.total

    def step():
        with autocast:
            loss = model(x, vis, gen).losses.total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with ctx:
        fwd()  # warm-up (kernel selection, allocator)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            fwd()
        _sync(device)
        t_fwd = (time.perf_counter() - t0) / steps
        step()
        _sync(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        t_step = (time.perf_counter() - t0) / steps
        ran = tv.last_attention_backend()
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {"fwd_s": t_fwd, "step_s": t_step, "peak_gib": mem, "backend_ran": ran}


def input_stage(path: str, preset: str, frames: int, batch: int, device: str, reps: int) -> dict:
    """One input-stage measurement in this process (called in a fresh subprocess)."""
    config = tv.vae_preset(preset, num_frames=frames)
    spec = config.grid
    torch.manual_seed(0)
    weight = torch.randn(config.hidden_size, 2, spec.stride, spec.stride, device=device) * 0.01
    bias = torch.zeros(config.hidden_size, device=device)
    tracks, vis = _tracks(config, batch, device)

    def compact():
        return patch_embed_cells(normalize(tracks, spec), weight, bias, spec, offsets=True)

    def dense():
        field, _ = rasterize(tracks, vis, spec)
        field = encode_offsets(field, spec).flatten(0, 1)
        return patch_embed_dense(field, weight, bias, spec)

    fn = compact if path == "compact" else dense
    # Load the matmul/conv kernels and thread pools before the baseline, so that the
    # peak below is the stage's own memory, not the libraries' one-time pages.
    with torch.no_grad():
        small = tv.vae_preset("tiny", num_frames=5).grid
        warm_w = torch.randn(8, 2, small.stride, small.stride, device=device)
        patch_embed_dense(
            torch.zeros(1, 2, small.height, small.width, device=device), warm_w, None, small
        )
        patch_embed_cells(torch.zeros(1, small.num_points, 2, device=device), warm_w, None, small)
    _sync(device)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    with torch.no_grad():
        fn()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        _sync(device)
    seconds = (time.perf_counter() - t0) / reps
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return {"path": path, "ms": seconds * 1e3, "peak_mib": peak}


def _input_stage_subprocess(path, preset, frames, batch, device, reps) -> dict:
    cmd = [sys.executable, __file__, "--_input-stage", path, "--preset", preset]
    cmd += ["--frames", str(frames), "--batch", str(batch), "--device", device, "--reps", str(reps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="tiny preset, one step: a smoke run")
    ap.add_argument("--preset", default=None, help="default: paper (tiny with --quick)")
    ap.add_argument("--frames", type=int, default=None, help="CPU default 17, CUDA default 81")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--reps", type=int, default=3, help="input-stage repetitions")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--_input-stage", dest="input_stage", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    preset = args.preset or ("tiny" if args.quick else "paper")
    frames = args.frames or (tv.vae_preset(preset).num_frames if (cuda or args.quick) else 17)

    if args.input_stage:
        res = input_stage(args.input_stage, preset, frames, args.batch, args.device, args.reps)
        print(json.dumps(res))
        return

    config = tv.vae_preset(preset, num_frames=frames)
    steps = args.steps or (1 if args.quick else (10 if cuda else 2))
    tokens = args.batch * frames * config.num_tokens
    print(f"# TrajLoom-VAE benchmark: preset={preset} frames={frames} batch={args.batch} "
          f"tokens/clip-batch={tokens} device={args.device} torch={torch.__version__} "
          f"threads={torch.get_num_threads()}")  # fmt: skip
    flops = vae_flops(config, args.batch)
    print(f"forward FLOPs (analytic) {flops / 1e12:.3f} TFLOP")

    print("\n## input stage (time per call, peak memory above baseline)")
    stage_frames = tv.vae_preset(preset).num_frames  # always the full clip here
    for path in ("compact", "dense"):
        r = _input_stage_subprocess(path, preset, stage_frames, args.batch, args.device, args.reps)
        print(f"{path:8s} frames={stage_frames}  {r['ms']:9.2f} ms  peak {r['peak_mib']:8.1f} MiB")

    if not cuda:
        print("\n## fp32 throughput")
        r = throughput(config, args.batch, steps, args.device)
        print(f"forward          {r['fwd_s']:8.3f} s  {tokens / r['fwd_s']:10.0f} tokens/s  "
              f"({flops / r['fwd_s'] / 1e9:.1f} GFLOP/s)")  # fmt: skip
        print(f"forward+backward {r['step_s']:8.3f} s  {tokens / r['step_s']:10.0f} tokens/s  "
              f"({3 * flops / r['step_s'] / 1e9:.1f} GFLOP/s, attention: {r['backend_ran']})")  # fmt: skip
        return

    print("\n## bf16 autocast training step (full objective, AdamW)")
    for backend in ("xformers", "sdpa"):
        for ckpt in (False, True):
            cfg = config.replace(gradient_checkpointing=ckpt)
            try:
                r = throughput(cfg, args.batch, steps, args.device, torch.bfloat16, backend)
            except torch.OutOfMemoryError:
                print(f"{backend:8s} ckpt={ckpt!s:5s}  out of memory")
                torch.cuda.empty_cache()
                continue
            step_flops = (4 if ckpt else 3) * flops
            model_flops = 3 * flops  # MFU counts the model's work, not recomputation
            print(f"{backend:8s} (ran {r['backend_ran']}) ckpt={ckpt!s:5s} step {r['step_s'] * 1e3:8.1f} ms  "
                  f"fwd {r['fwd_s'] * 1e3:7.1f} ms  {tokens / r['step_s']:9.0f} tokens/s  "
                  f"peak {r['peak_gib']:6.2f} GiB  MFU {model_flops / r['step_s'] / (args.peak_tflops * 1e12):.3f}  "
                  f"(HFU {step_flops / r['step_s'] / (args.peak_tflops * 1e12):.3f})")  # fmt: skip


if __name__ == "__main__":
    main()

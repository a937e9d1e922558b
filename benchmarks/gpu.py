"""GPU performance of TrajLoom at the paper presets: one command, unattended, < 10 minutes.

    python benchmarks/gpu.py --out results/            # everything
    python benchmarks/gpu.py --sections ceilings,sampling --quick

Sections (each prints a table and adds to ``<out>/gpu.json``):

* ``ceilings``: a large bf16 matmul and a device-to-device copy (the two roofs).
* ``attention``: the VAE's and the generator's attention shapes on every backend that
  runs here (xformers when its kernels load, SDPA's flash, cuDNN, memory-efficient).
* ``vae`` / ``generator``: one training step (forward, backward, fused AdamW) at the
  paper preset and the paper's per-GPU batch (VAE 4, generator 32), bf16 autocast over
  fp32 weights, with and without activation checkpointing, per attention backend, and
  with ``torch.compile`` for the default backend. MFU = 3 x forward FLOPs (counted from
  the shapes; recomputation not counted) / step time / 989 TFLOP/s (H100 SXM dense bf16).
* ``sampling``: Euler-10 and DOPRI5 from noise to the future latents plus the VAE
  decode, batch 1 and 16, bf16 weights: eager, CUDA graph of the velocity call, and
  ``torch.compile``.
* ``data``: synthetic clips/s on the host CPUs against the training step's appetite.

Random weights: DOPRI5's number of evaluations depends on the velocity field, so the
generator's zero-initialised output head is given small random weights first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from trajloom.encoding import GridSpec
from trajloom.flow.config import generator_preset
from trajloom.flow.model import FlowCondition, TrajLoomGenerator, generator_flops
from trajloom.flow.samplers import sample_dopri5, sample_euler, uniform_time_grid
from trajloom.vae import TrajLoomVAE, vae_preset
from trajloom.vae.attention import attention, set_attention_backend, xformers_status
from trajloom.vae.model import vae_flops

H100_BF16_DENSE = 989e12  # FLOP/s, datasheet (SXM); MFU is quoted against this
RESULTS: dict[str, object] = {}

# SDPA sub-kernels, forced with torch.nn.attention.sdpa_kernel
SDPA_KERNELS = {
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
}


def backend_context(name: str) -> contextlib.AbstractContextManager:
    """Route every trajloom attention call to one kernel."""
    stack = contextlib.ExitStack()
    if name == "xformers":
        stack.enter_context(set_attention_backend("xformers"))
    else:
        stack.enter_context(set_attention_backend("sdpa"))
        stack.enter_context(sdpa_kernel([SDPA_KERNELS[name]]))
    return stack


def backends() -> list[str]:
    names = list(SDPA_KERNELS)
    if xformers_status("cuda") is None:
        names.insert(0, "xformers")
    return names


def cuda_time(fn: Callable[[], object], iters: int, warmup: int = 2) -> float:
    """Median seconds per call, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end) / 1e3)
    return statistics.median(out)


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")


# ----------------------------------------------------------------------------- ceilings
def run_ceilings(quick: bool) -> None:
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    t = cuda_time(lambda: a @ b, 5 if quick else 20)
    tflops = 2 * n**3 / t / 1e12
    x = torch.randn(2**28, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    tc = cuda_time(lambda: y.copy_(x), 5 if quick else 20)
    gbs = 2 * x.numel() * 4 / tc / 1e9
    RESULTS["ceilings"] = {"bf16_matmul_tflops": tflops, "copy_gbs_read_plus_write": gbs}
    table(
        "Ceilings",
        ["what", "figure"],
        [[f"bf16 matmul {n}^3", f"{tflops:.0f} TFLOP/s"], ["D2D copy 1 GiB", f"{gbs:.0f} GB/s"]],
    )


# ----------------------------------------------------------------------------- attention
def run_attention(quick: bool) -> None:
    g, v = generator_preset("paper"), vae_preset("paper")
    n, tf = g.num_tokens, g.fut_latent_frames
    shapes = {
        "gen spatial (b*t=32*21, s=390, 12x64)": (32 * tf, n, g.num_heads, g.head_dim),
        "gen temporal (b*n=32*390, s=21, 12x64)": (32 * n, tf, g.num_heads, g.head_dim),
        "vae spatial (b*t=4*81, s=390, 8x64)": (4 * 81, n, v.num_heads, 64),
        "vae temporal (b*n=4*390, s=81, 8x64)": (4 * n, 81, v.num_heads, 64),
    }
    rows, res = [], {}
    for label, shape in shapes.items():
        q, k, vv = (
            torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            for _ in range(3)
        )
        ref = attention(q.float(), k.float(), vv.float(), backend="math")
        for name in backends():
            with backend_context(name):
                try:
                    out = attention(q, k, vv)
                    err = ((out.float() - ref).norm() / ref.norm()).item()
                    grad = torch.randn_like(out)
                    qkv = (q, k, vv)
                    t_f = cuda_time(lambda qkv=qkv: attention(*qkv), 5 if quick else 20)
                    t_fb = cuda_time(
                        lambda qkv=qkv, g=grad: torch.autograd.grad(attention(*qkv), qkv, g),
                        5 if quick else 20,
                    )
                    rows.append(
                        [label, name, f"{t_f * 1e3:.3f}", f"{t_fb * 1e3:.3f}", f"{err:.1e}"]
                    )
                    res[f"{label}|{name}"] = {"fwd_s": t_f, "fwd_bwd_s": t_fb, "rel_err": err}
                except RuntimeError as e:
                    rows.append([label, name, "n/a", "n/a", str(e).splitlines()[0][:60]])
    RESULTS["attention"] = res
    table(
        "Attention kernels (bf16)",
        ["shape", "backend", "fwd ms", "fwd+bwd ms", "rel err vs fp32"],
        rows,
    )


# ----------------------------------------------------------------------------- models
def make_vae_step(model, batch: int):
    cfg = model.config
    spec = cfg.grid
    values = torch.rand(batch, cfg.num_frames, spec.num_points, 2, device="cuda") * 2 - 1
    vis = torch.rand(batch, cfg.num_frames, spec.num_points, device="cuda") > 0.2
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)
    gen = torch.Generator(device="cuda").manual_seed(0)

    def step(fwd=model):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fwd(values, vis, gen)
        out.losses.total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def make_generator_inputs(cfg, batch: int, dtype=torch.float32):
    b, tf, th, n, c = (
        batch,
        cfg.fut_latent_frames,
        cfg.hist_latent_frames,
        cfg.num_tokens,
        cfg.latent_channels,
    )
    x = torch.randn(b, tf, n, c, device="cuda", dtype=dtype)
    cond = FlowCondition(
        z_hist=torch.randn(b, th, n, c, device="cuda", dtype=dtype),
        hist_vis=(torch.rand(b, th, n, device="cuda") > 0.2).to(dtype),
        video=torch.randn(b, th, n, cfg.video_latent_channels, device="cuda", dtype=dtype),
        text=torch.randn(b, cfg.text_embed_dim, device="cuda", dtype=dtype),
    )
    return x, cond


def make_generator_step(model, batch: int):
    x, cond = make_generator_inputs(model.config, batch)
    t = torch.rand(batch, device="cuda")
    target = torch.randn_like(x)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-5, fused=True)

    def step(fwd=model):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            v = fwd(x, t, cond)
            loss = (v.float() - target).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def run_model(kind: str, quick: bool, compile_too: bool) -> None:
    batch = 4 if kind == "vae" else 32
    iters = 3 if quick else 6
    rows, res = [], {}
    variants = [(be, ck, False) for be in backends() for ck in (False, True)]
    if compile_too:
        variants += [(backends()[0], ck, True) for ck in (False, True)]
    for be, ckpt, compiled in variants:
        torch.manual_seed(0)
        if kind == "vae":
            cfg = vae_preset("paper", gradient_checkpointing=ckpt)
            model = TrajLoomVAE(cfg).cuda()
            flops = float(vae_flops(cfg, batch))
            step = make_vae_step(model, batch)
        else:
            cfg = generator_preset("paper")
            model = TrajLoomGenerator(cfg).cuda().set_activation_checkpointing(ckpt)
            flops = float(generator_flops(cfg, batch))
            step = make_generator_step(model, batch)
        label = f"{be}{' +compile' if compiled else ''}"
        torch.cuda.reset_peak_memory_stats()
        try:
            with backend_context(be):
                if compiled:
                    fwd = torch.compile(model)
                    t0 = time.perf_counter()
                    step(fwd)
                    torch.cuda.synchronize()
                    compile_s = time.perf_counter() - t0
                    t = cuda_time(lambda fwd=fwd, step=step: step(fwd), iters)
                else:
                    compile_s = 0.0
                    t = cuda_time(step, iters)
            mem = torch.cuda.max_memory_allocated() / 2**30
            mfu = 3 * flops / t / H100_BF16_DENSE
            rows.append(
                [
                    label,
                    "on" if ckpt else "off",
                    f"{t * 1e3:.0f}",
                    f"{mem:.1f}",
                    f"{3 * flops / t / 1e12:.0f}",
                    f"{mfu:.1%}",
                    f"{compile_s:.0f}" if compiled else "-",
                ]
            )
            res[f"{label}|ckpt={ckpt}"] = {
                "step_s": t,
                "peak_gib": mem,
                "mfu": mfu,
                "train_flops": 3 * flops,
                "compile_s": compile_s,
            }
        except torch.OutOfMemoryError:
            rows.append([label, "on" if ckpt else "off", "OOM", "-", "-", "-", "-"])
        model = step = None
        torch.cuda.empty_cache()
    RESULTS[kind] = res
    name = (
        "TrajLoom-VAE (paper, batch 4)"
        if kind == "vae"
        else "TrajLoom-Flow generator (paper, batch 32)"
    )
    table(
        f"Training step: {name}, bf16 autocast + fused AdamW",
        ["attention", "act. ckpt", "step ms", "peak GiB", "TFLOP/s", "MFU", "compile s"],
        rows,
    )


# ----------------------------------------------------------------------------- sampling
def run_sampling(quick: bool) -> None:
    cfg = generator_preset("paper")
    torch.manual_seed(0)
    model = TrajLoomGenerator(cfg).cuda()
    with torch.no_grad():  # a non-trivial velocity field for DOPRI5 (see module doc)
        for p in model.out_proj.parameters():
            p.normal_(0, 0.02)
    model = model.to(torch.bfloat16).eval()
    vae = TrajLoomVAE(vae_preset("paper")).cuda().to(torch.bfloat16).eval()
    rows, res = [], {}
    for batch in (1, 16):
        x0, cond = make_generator_inputs(cfg, batch, torch.bfloat16)

        def velocity(x, t, fn=model, cond=cond):
            return fn(x, t.clamp(1e-5, 1 - 1e-5), cond)

        graph_fn = cuda_graph_velocity(model, x0, cond)
        compiled = torch.compile(model, mode="max-autotune-no-cudagraphs")
        variants = {
            "eager": velocity,
            "cuda graph": graph_fn,
            "compile": lambda x, t, c=compiled: velocity(x, t, fn=c),
        }
        for vname, fn in variants.items():
            with torch.no_grad():
                for solver in ("euler10", "dopri5"):
                    if solver == "dopri5" and vname == "compile":
                        continue
                    nfe = [10]

                    def run(fn=fn, solver=solver, nfe=nfe, x0=x0):
                        if solver == "euler10":
                            z = sample_euler(fn, x0, uniform_time_grid(10))
                        else:
                            z, stats = sample_dopri5(fn, x0)
                            nfe[0] = stats.nfe
                        return vae.decode_tracks(z)

                    t = cuda_time(run, 2 if quick else 5, warmup=2 if vname == "compile" else 1)
                    rows.append(
                        [batch, vname, solver, nfe[0], f"{t * 1e3:.0f}", f"{t / batch * 1e3:.1f}"]
                    )
                    res[f"b{batch}|{vname}|{solver}"] = {
                        "s": t,
                        "per_clip_s": t / batch,
                        "nfe": nfe[0],
                    }
        compiled = graph_fn = None
        torch.cuda.empty_cache()
    RESULTS["sampling"] = res
    table(
        "Sampling (generator ODE + VAE decode to tracks), bf16 weights",
        ["batch", "velocity call", "solver", "NFE", "ms total", "ms per clip"],
        rows,
    )


def cuda_graph_velocity(model, x_like, cond):
    """The velocity call captured once as a CUDA graph; replays copy inputs into place."""
    static_x = x_like.clone()
    static_t = torch.full((x_like.shape[0],), 0.5, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(2):
            model(static_x, static_t, cond)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_out = model(static_x, static_t, cond)

    def fn(x, t):
        static_x.copy_(x)
        static_t.copy_(t.clamp(1e-5, 1 - 1e-5))
        graph.replay()
        return static_out.clone()

    return fn


# ----------------------------------------------------------------------------- data
def run_data(quick: bool) -> None:
    from trajloom.data.synthetic import SceneConfig, make_scene

    spec = GridSpec()
    rows, res = [], {}
    for frames in (False, True):
        cfg = SceneConfig(
            width=spec.width,
            height=spec.height,
            stride=spec.stride,
            num_frames=162,
            render_frames=frames,
        )
        count = 3 if quick else 8
        t0 = time.perf_counter()
        for seed in range(count):
            make_scene(seed, cfg)
        rate = count / (time.perf_counter() - t0)
        label = "synthetic 162f 832x480" + (" + frames" if frames else "")
        rows.append([label, f"{rate:.2f}", f"{rate * (os.cpu_count() or 1):.1f}"])
        res[label] = {"clips_per_s_one_core": rate}
    gen = RESULTS.get("generator", {})
    steps = [v["step_s"] for v in gen.values() if isinstance(v, dict) and "step_s" in v]
    appetite = 32 / min(steps) if steps else float("nan")
    rows.append(["generator step appetite (batch 32 / fastest step)", f"{appetite:.1f}", ""])
    RESULTS["data"] = res | {"generator_appetite_samples_per_s": appetite}
    table(
        "Data rate vs the step's appetite",
        ["source", "clips/s (1 process)", f"x {os.cpu_count()} cores"],
        rows,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="ceilings,attention,vae,generator,sampling,data")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out")))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device; nothing to measure here")
    torch.backends.cuda.matmul.allow_tf32 = True
    print(
        f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}; xformers: {xformers_status('cuda') or 'kernels run'}"
    )
    RESULTS["device"] = torch.cuda.get_device_name()
    RESULTS["torch"] = torch.__version__
    RESULTS["xformers"] = xformers_status("cuda") or "ok"
    sections = args.sections.split(",")
    runners = {
        "ceilings": lambda: run_ceilings(args.quick),
        "attention": lambda: run_attention(args.quick),
        "vae": lambda: run_model("vae", args.quick, not args.no_compile),
        "generator": lambda: run_model("generator", args.quick, not args.no_compile),
        "sampling": lambda: run_sampling(args.quick),
        "data": lambda: run_data(args.quick),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name in sections:
        t0 = time.perf_counter()
        runners[name]()
        print(f"({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
        (args.out / "gpu.json").write_text(json.dumps(RESULTS, indent=2, default=str))


if __name__ == "__main__":
    main()

"""GPU performance of TrajLoom at the paper presets: one command, unattended, < 10 minutes.

    python benchmarks/gpu.py --out results/ --budget-s 330   # everything, within a lease
    python benchmarks/gpu.py --sections ceilings,sampling --quick
    python benchmarks/gpu.py --device cpu --preset tiny --quick  # dry run on a laptop

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
* ``genopt``: where the generator's step goes (a torch.profiler kernel table at batch 8)
  and regional compilation (``compile_blocks``) against eager, at batch 8 and 32.
* ``onpolicy``: the on-policy K-step loss + backward, K generator calls vs one batched call.
* ``data``: synthetic clips/s on the host CPUs against the training step's appetite.

Every section survives a failure of another (its traceback is printed, the rest run), and
``--budget-s`` skips what is left once the time is spent, so one lease call returns
everything it reached. Results of 2026-11-30 (H200): BENCHMARKS.md, section GPU.

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
import traceback
from collections.abc import Callable
from functools import partial
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
DEVICE = "cuda"  # --device cpu with --preset tiny: a dry run of every section on a laptop
PRESET = "paper"
DEADLINE = float("inf")  # perf_counter() after which sections skip what is left


def over_budget(what: str) -> bool:
    """True (and say so) once the run's --budget-s is spent: the rest is skipped."""
    if time.perf_counter() < DEADLINE:
        return False
    print(f"(budget spent: skipping {what})", flush=True)
    return True


def sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE.startswith("cuda") else 0.0


def reset_peak() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.empty_cache()


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
        if name in SDPA_KERNELS:  # plain "sdpa": torch picks the kernel
            stack.enter_context(sdpa_kernel([SDPA_KERNELS[name]]))
    return stack


def backends() -> list[str]:
    if not DEVICE.startswith("cuda"):
        return ["sdpa"]  # the dry run: SDPA picks its CPU kernel
    names = list(SDPA_KERNELS)
    if xformers_status("cuda") is None:
        names.insert(0, "xformers")
    return names


def cuda_time(fn: Callable[[], object], iters: int, warmup: int = 2) -> float:
    """Median seconds per call, timed with CUDA events (a host clock on the CPU dry run)."""
    for _ in range(warmup):
        fn()
    sync()
    out = []
    if not DEVICE.startswith("cuda"):
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return statistics.median(out)
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
    n = 8192 if DEVICE.startswith("cuda") else 512
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    t = cuda_time(lambda: a @ b, 5 if quick else 20)
    tflops = 2 * n**3 / t / 1e12
    x = torch.randn(2**28 if DEVICE.startswith("cuda") else 2**20, device=DEVICE)  # 1 GiB
    y = torch.empty_like(x)
    tc = cuda_time(lambda: y.copy_(x), 5 if quick else 20)
    gbs = 2 * x.numel() * 4 / tc / 1e9
    RESULTS["ceilings"] = {"bf16_matmul_tflops": tflops, "copy_gbs_read_plus_write": gbs}
    table(
        "Ceilings",
        ["what", "figure"],
        [
            [f"bf16 matmul {n}^3", f"{tflops:.0f} TFLOP/s"],
            [f"D2D copy {x.numel() * 4 / 2**30:g} GiB", f"{gbs:.0f} GB/s"],
        ],
    )


# ----------------------------------------------------------------------------- attention
def run_attention(quick: bool) -> None:
    g, v = generator_preset(PRESET), vae_preset(PRESET)
    n, tf = g.num_tokens, g.fut_latent_frames
    shapes = {
        f"gen spatial (b*t=32*{tf}, s={n})": (32 * tf, n, g.num_heads, g.head_dim),
        f"gen temporal (b*n=32*{n}, s={tf})": (32 * n, tf, g.num_heads, g.head_dim),
        f"vae spatial (b*t=4*{v.num_frames}, s={n})": (
            4 * v.num_frames,
            n,
            v.num_heads,
            v.hidden_size // v.num_heads,
        ),
        f"vae temporal (b*n=4*{n}, s={v.num_frames})": (
            4 * n,
            v.num_frames,
            v.num_heads,
            v.hidden_size // v.num_heads,
        ),
    }
    rows, res = [], {}
    for label, shape in shapes.items():
        q, k, vv = (
            torch.randn(shape, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
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
    values = torch.rand(batch, cfg.num_frames, spec.num_points, 2, device=DEVICE) * 2 - 1
    vis = torch.rand(batch, cfg.num_frames, spec.num_points, device=DEVICE) > 0.2
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def step(fwd=model):
        with torch.autocast(DEVICE.split(":")[0], dtype=torch.bfloat16):
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
    x = torch.randn(b, tf, n, c, device=DEVICE, dtype=dtype)
    cond = FlowCondition(
        z_hist=torch.randn(b, th, n, c, device=DEVICE, dtype=dtype),
        hist_vis=(torch.rand(b, th, n, device=DEVICE) > 0.2).to(dtype),
        video=torch.randn(b, th, n, cfg.video_latent_channels, device=DEVICE, dtype=dtype),
        text=torch.randn(b, cfg.text_embed_dim, device=DEVICE, dtype=dtype),
    )
    return x, cond


def make_generator_step(model, batch: int):
    x, cond = make_generator_inputs(model.config, batch)
    t = torch.rand(batch, device=DEVICE)
    target = torch.randn_like(x)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-5, fused=True)

    def step(fwd=model):
        with torch.autocast(DEVICE.split(":")[0], dtype=torch.bfloat16):
            v = fwd(x, t, cond)
            loss = (v.float() - target).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def build_model_step(kind: str, ckpt: bool, batch: int):
    """(model, step, forward FLOPs) at the --preset, on the device, fresh weights."""
    torch.manual_seed(0)
    if kind == "vae":
        cfg = vae_preset(PRESET, gradient_checkpointing=ckpt)
        model = TrajLoomVAE(cfg).to(DEVICE)
        return model, make_vae_step(model, batch), float(vae_flops(cfg, batch))
    gcfg = generator_preset(PRESET)
    gen = TrajLoomGenerator(gcfg).to(DEVICE).set_activation_checkpointing(ckpt)
    return gen, make_generator_step(gen, batch), float(generator_flops(gcfg, batch))


def run_model(kind: str, quick: bool, compile_too: bool) -> None:
    """Training step per attention backend x activation checkpointing (+ compile)."""
    batch = 4 if kind == "vae" else 32
    iters = 3 if quick else 6
    rows, res = [], {}
    variants = [(be, ck, False) for ck in (False, True) for be in backends()]
    if compile_too:  # one compiled variant (no checkpointing), first backend
        variants.append((backends()[0], False, True))
    for be, ckpt, compiled in variants:
        label = f"{be}{' +compile' if compiled else ''}"
        if over_budget(f"{kind} {label} ckpt={ckpt}"):
            break
        reset_peak()
        model, step, flops = build_model_step(kind, ckpt, batch)
        try:
            with backend_context(be):
                compile_s = 0.0
                if compiled:
                    fwd = torch.compile(model)
                    t0 = time.perf_counter()
                    step(fwd)
                    sync()
                    compile_s = time.perf_counter() - t0
                    t = cuda_time(lambda fwd=fwd, step=step: step(fwd), iters)
                else:
                    t = cuda_time(step, iters)
            mem = peak_gib()
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
        except Exception as err:  # a kernel that does not run here: say so, go on
            rows.append(
                [label, "on" if ckpt else "off", f"error: {str(err).splitlines()[0][:60]}"]
                + ["-"] * 4
            )
        model = step = None
        reset_peak()
    RESULTS[kind] = res
    name = (
        f"TrajLoom-VAE ({PRESET}, batch {batch})"
        if kind == "vae"
        else f"TrajLoom-Flow generator ({PRESET}, batch {batch})"
    )
    table(
        f"Training step: {name}, bf16 autocast + fused AdamW",
        ["attention", "act. ckpt", "step ms", "peak GiB", "TFLOP/s", "MFU", "compile s"],
        rows,
    )


# ----------------------------------------------------------------------------- generator gap
def run_genopt(quick: bool) -> None:
    """Where the generator's training step goes: a kernel profile, then regional compile.

    Regional compilation (each block compiled in place, ``block.compile()``) fuses the
    elementwise work around the matmuls (adaLN modulation, norms, gates, residuals,
    layout copies) and compiles one block's code once instead of the whole graph.
    """
    rows, res = [], {}
    for batch, ckpt in ((8, False), (32, True)):
        for compiled in (False, True):
            label = f"b={batch} ckpt={'on' if ckpt else 'off'} {'regional compile' if compiled else 'eager'}"
            if over_budget(f"generator {label}"):
                break
            reset_peak()
            model, step, flops = build_model_step("generator", ckpt, batch)
            compile_s = 0.0
            try:
                with backend_context(
                    backends()[0] if not DEVICE.startswith("cuda") else "sdpa-cudnn"
                ):
                    if compiled:
                        for blk in model.blocks:
                            blk.compile()
                        t0 = time.perf_counter()
                        step()
                        sync()
                        compile_s = time.perf_counter() - t0
                    elif batch == 8 and DEVICE.startswith("cuda"):
                        profile_step(step)
                    t = cuda_time(step, 3 if quick else 6)
                mfu = 3 * flops / t / H100_BF16_DENSE
                rows.append(
                    [label, f"{t * 1e3:.0f}", f"{peak_gib():.1f}", f"{mfu:.1%}", f"{compile_s:.0f}"]
                )
                res[label] = {
                    "step_s": t,
                    "peak_gib": peak_gib(),
                    "mfu": mfu,
                    "compile_s": compile_s,
                }
            except Exception as err:
                rows.append([label, f"error: {str(err).splitlines()[0][:60]}", "-", "-", "-"])
            model = step = None
            reset_peak()
    RESULTS["genopt"] = res
    table(
        f"Generator training step ({PRESET}), cuDNN attention, bf16 autocast",
        ["variant", "step ms", "peak GiB", "MFU", "compile s"],
        rows,
    )


def profile_step(step: Callable[[], None]) -> None:
    """Print the step's 15 costliest CUDA kernels (self time) and the matmul share."""
    from torch.profiler import ProfilerActivity, profile

    step()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        sync()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    total = sum(e.self_device_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    gemm = sum(
        e.self_device_time_total
        for e in events
        if any(k in e.key.lower() for k in ("gemm", "sm90", "cutlass", "nvjet", "xmma"))
    )
    RESULTS["generator_profile"] = {
        "cuda_total_ms": total / 1e3,
        "matmul_share": gemm / total,
        "top": [[e.key[:90], e.self_device_time_total / 1e3, e.count] for e in events[:15]],
    }
    table(
        f"Generator step profile (batch 8, eager): CUDA {total / 1e3:.0f} ms, matmuls {gemm / total:.0%}",
        ["kernel", "ms", "calls", "share"],
        [
            [
                e.key[:80].replace("|", "/"),
                f"{e.self_device_time_total / 1e3:.1f}",
                e.count,
                f"{e.self_device_time_total / total:.0%}",
            ]
            for e in events[:15]
        ],
    )


# ----------------------------------------------------------------------------- on-policy
def run_onpolicy(quick: bool) -> None:
    """On-policy K-step loss + backward: K generator calls vs one batched call (issue 15)."""
    from trajloom.flow.onpolicy import OnPolicyConfig, onpolicy_loss

    cfg = generator_preset(PRESET)
    torch.manual_seed(0)
    gen = TrajLoomGenerator(cfg).to(DEVICE)
    with torch.no_grad():  # a non-zero velocity head, so the rollout moves
        for p in gen.out_proj.parameters():
            p.normal_(0, 0.02)
    op = OnPolicyConfig()
    rows, res = [], {}
    for batch in (8,) if quick else (8, 32):
        if over_budget(f"on-policy batch {batch}"):
            break
        x1, cond = make_generator_inputs(cfg, batch)
        x0 = torch.randn_like(x1)
        vis = (torch.rand(x1.shape[:3], device=DEVICE) > 0.2).float()
        kw = {"x0": x0, "token_vis": vis, "config": op}

        def step(batched: bool, x1=x1, cond=cond, kw=kw) -> None:
            gen.zero_grad(set_to_none=True)
            with torch.autocast(DEVICE.split(":")[0], dtype=torch.bfloat16):
                if batched:
                    out = onpolicy_loss(gen, x1, cond.z_hist, cond=cond, **kw)
                else:
                    out = onpolicy_loss(lambda x, t: gen(x, t, cond), x1, cond.z_hist, **kw)
            out.loss.backward()

        row: list[object] = [batch, op.steps]
        for batched in (False, True):
            reset_peak()
            try:
                secs = cuda_time(lambda b=batched: step(b), 2 if quick else 4, warmup=1)
                row += [f"{secs * 1e3:.0f}", f"{peak_gib():.1f}"]
                res[f"b{batch}|{'batched' if batched else 'per_step'}"] = {
                    "s": secs,
                    "peak_gib": peak_gib(),
                }
            except torch.OutOfMemoryError:
                row += ["OOM", "-"]
        rows.append(row)
    RESULTS["onpolicy"] = res
    table(
        f"On-policy loss + backward ({PRESET} generator, bf16 autocast)",
        ["batch", "K", "K calls ms", "K calls GiB", "batched ms", "batched GiB"],
        rows,
    )


# ----------------------------------------------------------------------------- sampling
def run_sampling(quick: bool) -> None:
    """Euler-10 / DOPRI5 latency per clip: eager, CUDA graph, compile, compile + graphs."""
    cfg = generator_preset(PRESET)
    torch.manual_seed(0)
    model = TrajLoomGenerator(cfg).to(DEVICE)
    with torch.no_grad():  # a non-trivial velocity field for DOPRI5 (see module doc)
        for p in model.out_proj.parameters():
            p.normal_(0, 0.02)
    model = model.to(torch.bfloat16).eval()
    vae = TrajLoomVAE(vae_preset(PRESET)).to(DEVICE).to(torch.bfloat16).eval()
    cuda = DEVICE.startswith("cuda")
    rows, res = [], {}
    for batch in (1, 16):
        x0, cond = make_generator_inputs(cfg, batch, torch.bfloat16)

        def velocity(x, t, fn=model, cond=cond):
            return fn(x, t.clamp(1e-5, 1 - 1e-5), cond)

        variants: dict[str, Callable] = {"eager": velocity}
        if cuda:
            variants["cuda graph"] = cuda_graph_velocity(model, x0, cond)
        variants["compile"] = partial(velocity, fn=torch.compile(model))
        if cuda:
            variants["compile+graphs"] = partial(
                velocity, fn=torch.compile(model, mode="reduce-overhead")
            )
        for vname, fn in variants.items():
            for solver in ("euler10", "dopri5"):
                if over_budget(f"sampling b={batch} {vname} {solver}"):
                    break
                nfe, split = [10], {}

                @torch.no_grad()
                def run(fn=fn, solver=solver, nfe=nfe, x0=x0, split=split):
                    t0 = time.perf_counter()
                    if solver == "euler10":
                        z = sample_euler(fn, x0, uniform_time_grid(10))
                    else:
                        z, stats = sample_dopri5(fn, x0)
                        nfe[0] = stats.nfe
                    sync()
                    t1 = time.perf_counter()
                    out = vae.decode_tracks(z)
                    sync()
                    split["solve"], split["decode"] = t1 - t0, time.perf_counter() - t1
                    return out

                try:
                    t = cuda_time(run, 2 if quick else 5, warmup=3 if "compile" in vname else 1)
                except Exception as err:  # e.g. a compile failure: report, go on
                    rows.append(
                        [
                            batch,
                            vname,
                            solver,
                            "-",
                            f"error: {str(err).splitlines()[0][:60]}",
                            "-",
                            "-",
                        ]
                    )
                    continue
                rows.append(
                    [
                        batch,
                        vname,
                        solver,
                        nfe[0],
                        f"{t * 1e3:.1f}",
                        f"{t / batch * 1e3:.1f}",
                        f"{split['solve'] * 1e3:.1f} / {split['decode'] * 1e3:.1f}",
                    ]
                )
                res[f"b{batch}|{vname}|{solver}"] = {
                    "s": t,
                    "per_clip_s": t / batch,
                    "nfe": nfe[0],
                    "last_solve_s": split["solve"],
                    "last_decode_s": split["decode"],
                }
        variants = {}
        reset_peak()
    RESULTS["sampling"] = res
    table(
        f"Sampling ({PRESET} generator ODE + VAE decode to tracks), bf16 weights",
        ["batch", "velocity call", "solver", "NFE", "ms total", "ms per clip", "solve / decode ms"],
        rows,
    )


def cuda_graph_velocity(model, x_like, cond):
    """The velocity call captured once as a CUDA graph; replays copy inputs into place."""
    static_x = x_like.clone()
    static_t = torch.full((x_like.shape[0],), 0.5, device=DEVICE)
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
    global DEVICE, PRESET, DEADLINE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="ceilings,attention,generator,sampling,vae,onpolicy,data")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--budget-s", type=float, default=float("inf"), help="skip what is left after")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run (--preset tiny)")
    ap.add_argument("--preset", default="paper", help="model presets (paper; tiny for dry runs)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/out")))
    args = ap.parse_args()
    DEVICE, PRESET = args.device, args.preset
    DEADLINE = time.perf_counter() + args.budget_s
    cuda = DEVICE.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device (or --device cpu --preset tiny)")
    torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name() if cuda else "cpu (dry run)"
    xf = xformers_status(DEVICE) or "kernels run"
    print(f"device {name}, torch {torch.__version__}, CUDA {torch.version.cuda}; xformers: {xf}")
    RESULTS.update(device=name, torch=torch.__version__, xformers=xf, preset=PRESET)
    runners = {
        "ceilings": lambda: run_ceilings(args.quick),
        "attention": lambda: run_attention(args.quick),
        "vae": lambda: run_model("vae", args.quick, not args.no_compile),
        "generator": lambda: run_model("generator", args.quick, not args.no_compile),
        "sampling": lambda: run_sampling(args.quick),
        "onpolicy": lambda: run_onpolicy(args.quick),
        "genopt": lambda: run_genopt(args.quick),
        "data": lambda: run_data(args.quick),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.sections.split(","):
        t0 = time.perf_counter()
        try:
            runners[name]()
        except Exception:  # one broken section must not cost the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
        (args.out / "gpu.json").write_text(json.dumps(RESULTS, indent=2, default=str))
    if failed:
        raise SystemExit(f"sections that failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()

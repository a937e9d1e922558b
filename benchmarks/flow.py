"""Sampling latency of TrajLoomPipeline at the paper preset: Euler-10 and DOPRI5.

    .venv/bin/python benchmarks/flow.py                  # CPU: batch 1 and 4, one run each
    .venv/bin/python benchmarks/flow.py --quick          # tiny preset, seconds (smoke run)
    .venv/bin/python benchmarks/flow.py --device cuda    # GPU: bf16 generator, xformers vs
                                                         # SDPA, eager / torch.compile /
                                                         # CUDA graphs, warm-up + median of 3
    .venv/bin/python benchmarks/flow.py --forward-only   # one generator evaluation (1 NFE)
    .venv/bin/python benchmarks/flow.py --onpolicy       # on-policy loss + backward: K model
                                                         # calls vs one batched call (tiny,
                                                         # small; --quick: tiny only)

Each row times one full pipeline call (history encode -> source -> ODE solve -> VAE decode
-> visibility head) and splits it into its stages; ``nfe`` is the number of generator
evaluations, ``ms/nfe`` the solve time per evaluation. Weights are random (nothing is
downloaded): the zero-initialized adaLN gates and output head get small random values so
that every block runs and the field is not trivially smooth — DOPRI5's NFE on trained
weights will differ. No video or caption encoder (their cost is not the generator's).

``--onpolicy`` times one on-policy K-step loss (``trajloom.flow.onpolicy``, default
config: K = 4) plus its backward on a sub-batch, evaluated both ways: one generator call
with gradient per visited state, and the no-grad rollout followed by one batched call over
the K states; the two give the same loss. Median of ``--repeats`` runs after a warm-up.

``--json PATH`` also writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from trajloom.encoding import query_points
from trajloom.flow.config import generator_preset
from trajloom.flow.model import FlowCondition, TrajLoomGenerator
from trajloom.flow.onpolicy import OnPolicyConfig, onpolicy_loss
from trajloom.flow.pipeline import PipelineConfig, TrajLoomPipeline
from trajloom.flow.samplers import sample_dopri5, sample_euler, uniform_time_grid
from trajloom.flow.visibility import VisibilityConfig, VisibilityPredictor
from trajloom.vae import LatentStats, TrajLoomVAE, vae_preset
from trajloom.vae.attention import available_attention_backends, set_attention_backend


def _activate(generator: TrajLoomGenerator, seed: int = 0) -> None:
    """Give the zero-initialized gates and head small random weights (see the docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in generator.named_parameters():
            if "adaLN" in name or name.startswith("out_proj"):
                p.add_(0.02 * torch.randn(p.shape, generator=g).to(p.device, p.dtype))


def build(preset: str, device: str, gen_dtype: torch.dtype) -> TrajLoomPipeline:
    torch.manual_seed(0)
    if preset == "paper":
        vae_cfg, gen_cfg = vae_preset("paper"), generator_preset("paper")
    else:
        vae_cfg, gen_cfg = vae_preset("tiny"), generator_preset("tiny")
    vae = TrajLoomVAE(vae_cfg)
    gen = TrajLoomGenerator(gen_cfg)
    _activate(gen)
    stats = LatentStats(torch.zeros(vae_cfg.latent_channels), torch.ones(vae_cfg.latent_channels))
    vis = VisibilityPredictor(VisibilityConfig(latent_channels=vae_cfg.latent_channels))
    dtype_name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[gen_dtype]
    pipe = TrajLoomPipeline(
        vae, gen, stats, visibility=vis, config=PipelineConfig(dtype=dtype_name)
    )
    pipe.to(device)
    gen.to(dtype=gen_dtype)
    return pipe


def history(pipe: TrajLoomPipeline, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    grid = pipe.grid
    g = torch.Generator().manual_seed(1)
    q = query_points(grid)
    drift = torch.cumsum(
        0.5 * torch.randn(batch, pipe.num_frames, grid.num_points, 2, generator=g), 1
    )
    hi = torch.tensor([grid.width - 1, grid.height - 1], dtype=torch.float32)
    tracks = torch.minimum((q + drift).clamp_min(0), hi)
    return tracks, torch.ones(tracks.shape[:-1], dtype=torch.bool)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextlib.contextmanager
def timed(device: str, out: dict, key: str) -> Iterator[None]:
    _sync(device)
    start = time.perf_counter()
    yield
    _sync(device)
    out[key] = out.get(key, 0.0) + (time.perf_counter() - start) * 1e3


@torch.no_grad()
def one_call(pipe, tracks, vis, solver: str, steps: int, device: str, velocity_wrap=None) -> dict:
    """One pipeline call split into stages; returns milliseconds per stage and nfe."""
    t: dict = {}
    with timed(device, t, "total_ms"):
        with timed(device, t, "encode_ms"):
            cond, anchor = pipe.condition(tracks, vis)
        x0 = pipe._source(anchor, 1, 0, None)
        velocity = pipe.velocity_fn(cond)
        if velocity_wrap is not None:
            velocity = velocity_wrap(velocity)
        with timed(device, t, "solve_ms"):
            if solver == "euler":
                z1 = sample_euler(velocity, x0, uniform_time_grid(steps, device=device))
                nfe = steps
            else:
                z1, stats = sample_dopri5(velocity, x0)
                nfe = stats.nfe
        with timed(device, t, "decode_ms"):
            pipe.decode(z1, tracks.shape[0], 1, nfe, z_hist=cond.z_hist)
    t["nfe"] = nfe
    t["ms_per_nfe"] = t["solve_ms"] / nfe
    return t


def compiled_generator(pipe: TrajLoomPipeline, mode: str | None):
    """Swap the pipeline's generator for a ``torch.compile``d one (same weights)."""
    return torch.compile(pipe.generator, mode=mode, dynamic=False)


@torch.no_grad()
def forward_only(args: argparse.Namespace) -> list[dict]:
    """Time single generator evaluations (the unit of every sampler's cost)."""
    device = args.device
    pipe = build("tiny" if args.quick else "paper", device, torch.float32)
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        tracks, vis = history(pipe, batch)
        cond, anchor = pipe.condition(tracks, vis)
        x0 = pipe._source(anchor, 1, 0, None)
        velocity = pipe.velocity_fn(cond)
        t: dict = {}
        with timed(device, t, "forward_ms"):
            velocity(x0, torch.full((batch,), 0.5, device=device))
        rows.append({"batch": batch, **t})
        print(f"generator forward b={batch}: {t['forward_ms']:.0f} ms", flush=True)
    return rows


def _onpolicy_inputs(cfg, batch: int, device: str) -> tuple:
    g = torch.Generator().manual_seed(2)
    th, tf, n, c = (
        cfg.hist_latent_frames,
        cfg.fut_latent_frames,
        cfg.num_tokens,
        cfg.latent_channels,
    )
    cond = FlowCondition(
        z_hist=torch.randn(batch, th, n, c, generator=g),
        hist_vis=(torch.rand(batch, th, n, generator=g) > 0.2).float(),
    ).to(device)
    x0, x1 = (torch.randn(batch, tf, n, c, generator=g).to(device) for _ in range(2))
    vis = (torch.rand(batch, tf, n, generator=g) > 0.2).float().to(device)
    return cond, x0, x1, vis


def _onpolicy_step(gen, inputs: tuple, op: OnPolicyConfig, batched: bool) -> float:
    """One on-policy loss + backward; returns the loss."""
    cond, x0, x1, vis = inputs
    gen.zero_grad(set_to_none=True)
    kwargs = {"x0": x0, "token_vis": vis, "config": op}
    if batched:
        out = onpolicy_loss(gen, x1, cond.z_hist, cond=cond, **kwargs)
    else:
        out = onpolicy_loss(lambda x, t: gen(x, t, cond), x1, cond.z_hist, **kwargs)
    out.loss.backward()
    return float(out.loss.detach())


def onpolicy(args: argparse.Namespace) -> list[dict]:
    """One on-policy loss + backward: K generator calls vs one batched call (same loss)."""
    device = args.device
    op = OnPolicyConfig()
    rows = []
    for preset in ("tiny",) if args.quick else ("tiny", "small"):
        torch.manual_seed(0)
        cfg = generator_preset(preset)
        gen = TrajLoomGenerator(cfg).to(device)
        _activate(gen)
        for batch in (int(b) for b in args.batches.split(",")):
            inputs = _onpolicy_inputs(cfg, batch, device)
            row: dict = {"preset": preset, "batch": batch, "steps": op.steps}
            modes = (("per_step", False), ("batched", True))
            times: dict[str, list[float]] = {mode: [] for mode, _ in modes}
            for batched in (False, True):  # warm-up
                _onpolicy_step(gen, inputs, op, batched)
            # interleaved, so that a busy shared machine slows both alike
            for _ in range(args.repeats):
                for mode, batched in modes:
                    clock: dict = {}
                    with timed(device, clock, "ms"):
                        row[f"{mode}_loss"] = _onpolicy_step(gen, inputs, op, batched)
                    times[mode].append(clock["ms"])
            for mode, _ in modes:
                row[f"{mode}_ms"] = statistics.median(times[mode])
            row["speedup"] = row["per_step_ms"] / row["batched_ms"]
            rows.append(row)
            print(
                f"onpolicy {preset:>5} b={batch:<2} K={op.steps}: {op.steps} calls "
                f"{row['per_step_ms']:7.0f} ms, batched {row['batched_ms']:7.0f} ms "
                f"({row['speedup']:.2f}x; loss {row['per_step_loss']:.6g} vs "
                f"{row['batched_loss']:.6g})",
                flush=True,
            )
    return rows


def run(args: argparse.Namespace) -> list[dict]:
    device = args.device
    cuda = device.startswith("cuda")
    preset = "tiny" if args.quick else "paper"
    gen_dtype = torch.bfloat16 if cuda and not args.fp32 else torch.float32
    pipe = build(preset, device, gen_dtype)
    batches = [int(b) for b in args.batches.split(",")]
    solvers = [s for s in (("euler", 10), ("dopri5", 0)) if s[0] in args.solvers.split(",")]
    repeats = 1 if not cuda else args.repeats
    backends = ["auto"]
    variants = ["eager"]
    if cuda:
        backends = [b for b in ("xformers", "sdpa") if b in available_attention_backends(device)]
        variants = ["eager", "compile", "cudagraphs"]
    rows = []
    eager = pipe.generator
    for backend in backends:
        for variant in variants:
            if variant == "eager":
                pipe.generator = eager
            elif variant == "compile":
                pipe.generator = compiled_generator(pipe, None)
            else:  # CUDA graphs through torch.compile's cudagraph trees
                pipe.generator = compiled_generator(pipe, "reduce-overhead")
            for batch in batches:
                tracks, vis = history(pipe, batch)
                for solver, steps in solvers:
                    with set_attention_backend(backend):
                        if cuda:  # warm-up: kernels, autotuning, graph capture
                            one_call(pipe, tracks, vis, solver, steps or 10, device)
                        runs = [
                            one_call(pipe, tracks, vis, solver, steps, device)
                            for _ in range(repeats)
                        ]
                    row = {
                        key: statistics.median(r[key] for r in runs)
                        for key in runs[0]
                        if key != "nfe"
                    }
                    row.update(
                        solver=f"euler-{steps}" if solver == "euler" else "dopri5",
                        batch=batch,
                        nfe=runs[0]["nfe"],
                        attention=backend,
                        variant=variant,
                        dtype=str(gen_dtype).replace("torch.", ""),
                        runs=repeats,
                    )
                    rows.append(row)
                    if args.json:  # after every row, so that a long CPU run keeps what it has
                        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
                    print(
                        f"{row['variant']:>10} {backend:>8} {row['dtype']:>8} b={batch:<3} "
                        f"{row['solver']:>8} nfe={row['nfe']:<4} total {row['total_ms']:9.0f} ms "
                        f"(encode {row['encode_ms']:.0f}, solve {row['solve_ms']:.0f}, "
                        f"decode {row['decode_ms']:.0f}; {row['ms_per_nfe']:.0f} ms/nfe)",
                        flush=True,
                    )
    pipe.generator = eager
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    parser.add_argument("--solvers", default="euler,dopri5", help="euler, dopri5 or both")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per row on GPU (and --onpolicy)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny preset (smoke run)")
    parser.add_argument(
        "--forward-only", action="store_true", help="time one generator evaluation per batch"
    )
    parser.add_argument(
        "--onpolicy", action="store_true", help="on-policy loss + backward, K calls vs batched"
    )
    parser.add_argument("--fp32", action="store_true", help="keep the generator in float32 on GPU")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = (
        torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    if args.onpolicy:
        presets = "tiny" if args.quick else "tiny, small"
    else:
        presets = "tiny" if args.quick else "paper"
    print(f"torch {torch.__version__}, {machine}, preset {presets}")
    if args.onpolicy:
        rows = onpolicy(args)
    else:
        rows = forward_only(args) if args.forward_only else run(args)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

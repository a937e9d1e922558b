"""Time and peak memory of trajloom.metrics on 1000 clips of 81 frames x 390 tracks.

    .venv/bin/python benchmarks/metrics.py            # full run (1000 clips)
    .venv/bin/python benchmarks/metrics.py --quick    # smoke run (40 clips)
    .venv/bin/python benchmarks/metrics.py --score-cli [--folders 60] [--baseline-src SRC]
    .venv/bin/python benchmarks/metrics.py --frechet    # trace-sqrt and covariance routes

`--score-cli` times the `trajloom-metrics score` command instead: it writes `--folders`
run folders (81 frames x 390 tracks, released layout) to a temporary folder, runs the
command as a user would (FVMD clip 24 stride 1 with GT-visibility gating, FlowTV and
DivCurlE with visibility, VEPE), times the process start-up alone (the command on a
folder without runs), each the minimum of `--repeats` runs, and then
profiles `score_runs` in-process (cProfile on CPU time, top functions by own time). It
reports CPU seconds (user + sys) beside wall seconds: on a shared machine the load
stretches wall time far more than CPU time. `--bytecode cached` (default) times starts
with Python's bytecode cached, as after `pip install`; `--bytecode none` makes every
start compile numpy's, typer's and the package's sources, as a `uv sync`ed venv does
under PYTHONDONTWRITEBYTECODE=1 (0.6 s more start-up on the 2-core dev box).
`--baseline-src SRC` runs the same command from another source tree of the package,
interleaved with this one, e.g. the code before a change, and fails unless FVMD agrees
to 1e-12 relative and FlowTV, DivCurlE and VEPE bit for bit:

    git archive COMMIT packages/trajloom-metrics/src | tar -x -C /tmp/old
    .venv/bin/python benchmarks/metrics.py --score-cli --baseline-src \
        /tmp/old/packages/trajloom-metrics/src

Figures, loads and commands: BENCHMARKS.md, "trajloom-metrics" (the last subsection:
1.65-1.72 s for 60 folders with bytecode cached at load 2.5-4.4, 2.27-2.39 s without).

Synthetic random-walk tracks on the TrajLoom grid (15 x 26 at 832 x 480, stride 32),
predictions = ground truth + noise, 90 % visible. Data are generated in chunks
outside the timers; every metric streams over the chunks, so memory does not grow
with the number of clips. Peak memory is the tracemalloc peak of numpy/Python
allocations during each metric (data chunk excluded), plus the process max RSS.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

# BLAS threads must be fixed before numpy loads; on a shared 2-core machine a
# multi-threaded OpenBLAS eigh can run 10x slower than a single thread.
_THREADS = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402

from trajloom.metrics import (  # noqa: E402
    FVMDAccumulator,
    FVMDConfig,
    VEPEAccumulator,
    div_curl_energy,
    flow_tv,
    gaussian_stats,
    score_runs,
    video_mean,
)

GRID_HW = (15, 26)
FRAMES = 81
STRIDE = 32.0
# --baseline-src: FVMD may be rounded differently by a faster exact route (its
# covariances are exact integers rounded once); the rest must stay bit-identical.
FVMD_KEYS = ("fvmd", "fvmd_velocity", "fvmd_acceleration")
FVMD_RTOL = 1e-12


def chunks(num_clips: int, chunk: int, seed: int = 0) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield `(gt [b, 81, 390, 2], pred, vis [b, 81, 390])` float32 / bool chunks."""
    rng = np.random.default_rng(seed)
    ys, xs = np.meshgrid(
        np.arange(GRID_HW[0]) * STRIDE, np.arange(GRID_HW[1]) * STRIDE, indexing="ij"
    )
    seeds = np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float32)
    done = 0
    while done < num_clips:
        b = min(chunk, num_clips - done)
        steps = rng.normal(size=(b, FRAMES, seeds.shape[0], 2)).astype(np.float32) * 2.0
        gt = seeds + np.cumsum(steps, axis=1)
        pred = gt + rng.normal(size=gt.shape).astype(np.float32) * 1.5
        vis = rng.random((b, FRAMES, seeds.shape[0])) > 0.1
        done += b
        yield gt, pred, vis


def measure(name: str, num_clips: int, chunk: int, step: Callable, finish: Callable) -> dict:
    """Run `step(gt, pred, vis)` over all chunks and `finish()`; time and trace only those."""
    seconds = 0.0
    peak = 0
    tracemalloc.start()
    for gt, pred, vis in chunks(num_clips, chunk):
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        step(gt, pred, vis)
        seconds += time.perf_counter() - t0
        peak = max(peak, tracemalloc.get_traced_memory()[1] - base)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    value = finish()
    seconds += time.perf_counter() - t0
    peak = max(peak, tracemalloc.get_traced_memory()[1] - base)
    tracemalloc.stop()
    print(f"{name:<28} {seconds:8.2f} s  peak {peak / 2**20:8.1f} MiB  value {value}", flush=True)
    return {"name": name, "seconds": seconds, "peak_mib": peak / 2**20, "value": value}


def write_run_folders(root: Path, folders: int) -> None:
    """`folders` run folders `root/video_XXX/` of 81 x 390 tracks in the released layout."""
    ys, xs = np.meshgrid(
        np.arange(GRID_HW[0]) * STRIDE, np.arange(GRID_HW[1]) * STRIDE, indexing="ij"
    )
    query = np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float32)
    i = 0
    for gt, pred, vis in chunks(folders, 20):
        for b in range(gt.shape[0]):
            d = root / f"video_{i:03d}"
            d.mkdir(parents=True)
            np.save(d / "query_xy.npy", query)
            np.save(d / "gt_tracks.npy", gt[b])
            np.save(d / "pred_tracks.npy", pred[b])
            np.save(d / "gt_visibility.npy", vis[b].astype(np.uint8))
            np.save(d / "pred_visibility.npy", vis[b].astype(np.uint8))
            i += 1


def _children_cpu() -> float:
    """CPU seconds (user + sys) of the finished child processes so far: on a shared
    machine a loaded core stretches wall time, much less a process's own CPU time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, dict]:
    """Wall and CPU seconds of one run of `cmd` (which writes JSON to its `--json`)."""
    t0, c0 = time.perf_counter(), _children_cpu()
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if res.returncode != 0:
        raise SystemExit(f"score failed (exit {res.returncode}):\n{res.stdout}{res.stderr}")
    return wall, cpu, json.loads(Path(cmd[cmd.index("--json") + 1]).read_text())


def child_env(tmp: Path, bytecode: str) -> dict[str, str]:
    """Environment of the timed commands.

    "cached": Python's bytecode cache in a private folder, filled by an untimed first run
    of each command: a start as after `pip install` (which compiles bytecode) or any
    second run. "none": every start compiles the sources of numpy, typer and the package
    (an empty cache folder, writing disabled): a `uv sync`ed venv (uv writes no bytecode)
    with PYTHONDONTWRITEBYTECODE=1, as on the shared dev box.
    """
    env = dict(os.environ)
    if bytecode == "cached":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "empty-pycache")
    return env


def compare_sources(
    root: Path, cmd_opts: list[str], baseline_src: Path, repeats: int, env: dict[str, str]
) -> None:
    """This tree's `score` against the same command run from another source tree of
    trajloom-metrics (e.g. `git archive OLD packages/trajloom-metrics/src`), interleaved
    run by run so both see the same load; minimum wall and CPU seconds, and the values."""
    out = root.parent / "compare.json"
    cmd = [sys.executable, "-m", "trajloom.metrics.cli", "score", str(root), *cmd_opts]
    cmd += ["--json", str(out)]
    base_env = {**env, "PYTHONPATH": str(baseline_src)}
    for e in (base_env, env):  # untimed: fills the bytecode cache where there is one
        _timed(cmd, e)
    times: dict[str, list[tuple[float, float]]] = {"this tree": [], "baseline": []}
    values = {}
    for _ in range(repeats):
        for name, e in (("baseline", base_env), ("this tree", env)):
            wall, cpu, result = _timed(cmd, e)
            times[name].append((wall, cpu))
            values[name] = {
                k: result[k] for k in (*FVMD_KEYS, "flow_tv", "div_curl_energy", "vepe")
            }
    print(f"\nside by side with {baseline_src} (interleaved, min of {repeats}):")
    for name, runs in times.items():
        wall, cpu = min(w for w, _ in runs), min(c for _, c in runs)
        print(f"  {name:<10} wall {wall:6.2f} s   CPU {cpu:6.2f} s   {values[name]}")
    check_equal(values["baseline"], values["this tree"])


def check_equal(before: dict, after: dict) -> None:
    """Fail unless `after` equals `before`: FVMD to FVMD_RTOL relative, the rest exactly."""
    for key, old in before.items():
        new = after[key]
        if key in FVMD_KEYS:
            rel = abs(new - old) / abs(old)
            ok = rel <= FVMD_RTOL
            print(f"  {key}: {old!r} -> {new!r} (relative difference {rel:.1e})")
        else:
            ok = new == old
            print(f"  {key}: {old!r} -> {new!r} ({'bit-identical' if ok else 'DIFFERENT'})")
        if not ok:
            raise SystemExit(f"{key} changed beyond the allowed difference: {old!r} -> {new!r}")


def score_cli(
    folders: int, top: int, repeats: int, baseline_src: Path | None, bytecode: str
) -> None:
    """Time `trajloom-metrics score` on `folders` run folders; profile where time goes."""
    exe = Path(sys.executable).with_name("trajloom-metrics")
    cmd_opts = ["--clip-len", "24", "--clip-stride", "1", "--use-gt-visibility"]
    cmd_opts += ["--use-visibility"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        t0 = time.perf_counter()
        write_run_folders(root, folders)
        print(f"wrote {folders} run folders in {time.perf_counter() - t0:.1f} s (not timed)")
        empty = Path(tmp) / "empty"
        empty.mkdir()
        startups, walls, cpus = [], [], []
        out = Path(tmp) / "result.json"
        cmd = [str(exe), "score", str(root), *cmd_opts, "--json", str(out)]
        env = child_env(Path(tmp), bytecode)
        print("$ trajloom-metrics score RUNS " + " ".join(cmd_opts) + " --json OUT")
        print(f"bytecode: {bytecode}; BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}")
        _timed(cmd, env)  # untimed: fills the bytecode cache where there is one
        for _ in range(repeats):
            # start-up: the same command on a folder without runs (imports, then exit 2)
            t0, c0 = time.perf_counter(), _children_cpu()
            subprocess.run(
                [str(exe), "score", str(empty)], check=False, capture_output=True, env=env
            )
            startups.append((time.perf_counter() - t0, _children_cpu() - c0))
            t0, c0 = time.perf_counter(), _children_cpu()
            res = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
            walls.append(time.perf_counter() - t0)
            cpus.append(_children_cpu() - c0)
            if res.returncode != 0:
                raise SystemExit(f"score failed (exit {res.returncode}):\n{res.stdout}{res.stderr}")
        result = json.loads(out.read_text())
        print(
            f"process start-up (score of an empty folder), min of {repeats}: "
            f"{min(w for w, _ in startups):6.2f} s wall, {min(c for _, c in startups):6.2f} s CPU"
        )
        print(f"score, whole command, min of {repeats}:                        {min(walls):6.2f} s")
        print(
            f"score, whole command, CPU time (user + sys), min of {repeats}:   {min(cpus):6.2f} s"
        )
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        keys = ("fvmd", "flow_tv", "div_curl_energy", "vepe", "num_windows")
        print("values: " + ", ".join(f"{k} {result[k]}" for k in keys))
        if baseline_src is not None:
            compare_sources(root, cmd_opts, baseline_src, repeats, env)
        # CPU-time profile of the calling thread (the second thread's half of FVMD and the
        # flow metrics is not in it)
        prof = cProfile.Profile(time.process_time)
        t0, c0 = time.perf_counter(), time.process_time()
        prof.enable()
        score_runs(
            root,
            fvmd_config=FVMDConfig(clip_len=24, clip_stride=1),
            use_gt_visibility=True,
            use_visibility=True,
        )
        prof.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"score_runs in-process (profiled): {wall:6.2f} s wall, {cpu:6.2f} s CPU")
        pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def frechet_routes(repeats: int) -> None:
    """CPU seconds of `Tr sqrt(S1 S2)`: the released formula (eigh of S1, eigvalsh of
    sqrt(S1) S2 sqrt(S1)) against this package's (Cholesky of S1, eigvalsh of L^T S2 L),
    on covariances of sparse histogram-like features of FVMD's sizes; min of `repeats`."""
    from trajloom.metrics.frechet import (
        _add_to_diagonal,
        _trace_sqrt_product_eigh,
        _trace_sqrt_product_released,
    )

    rng = np.random.default_rng(0)
    for d in (720, 1440):
        feats = [rng.gamma(0.3, size=(3 * d, d)) * (rng.random((3 * d, d)) < 0.3) for _ in "ab"]
        s1, s2 = (_add_to_diagonal(np.cov(f, rowvar=False), 1e-5) for f in feats)
        row = []
        for name, fn in (
            ("released", _trace_sqrt_product_released),
            ("cholesky", _trace_sqrt_product_eigh),
        ):
            times = []
            for _ in range(repeats):
                t0 = time.process_time()
                value = fn(s1, s2)
                times.append(time.process_time() - t0)
            row.append(f"{name} {min(times):.3f} s ({value:.10g})")
        print(f"d = {d}: " + ", ".join(row))
    covariance_routes(rng, repeats)


def covariance_routes(rng: np.random.Generator, repeats: int) -> None:
    """CPU seconds of the covariance of 3480 x 1440 FVMD-like levels (60 videos x 58
    clips): the released two-pass float64 route against the exact integer one."""
    from trajloom.metrics.frechet import IntegerGaussianAccumulator

    levels = rng.integers(0, 60, size=(3480, 1440)) * (rng.random((3480, 1440)) < 0.5)

    def exact() -> np.ndarray:
        acc = IntegerGaussianAccumulator(scale=8.0)
        acc.update(levels)
        cov = acc.stats().cov
        assert cov is not None
        return cov

    routes = {"released two-pass": lambda: gaussian_stats(levels / 8.0).cov, "exact": exact}
    covs, row = [], []
    for name, fn in routes.items():
        times = []
        for _ in range(repeats):
            t0 = time.process_time()
            cov = fn()
            times.append(time.process_time() - t0)
        covs.append(cov)
        row.append(f"{name} {min(times):.3f} s")
    rel = float(np.max(np.abs(covs[0] - covs[1])) / np.max(np.abs(covs[1])))
    print(f"covariance 3480 x 1440: {', '.join(row)} (largest difference {rel:.1e} relative)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 clips instead of 1000")
    parser.add_argument("--clips", type=int, default=None, help="number of clips (default 1000)")
    parser.add_argument("--chunk", type=int, default=50, help="clips per streamed chunk")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--skip-long", action="store_true", help="skip FVMD-Long (4800-dim eigh)")
    parser.add_argument(
        "--score-cli", action="store_true", help="time the `trajloom-metrics score` command"
    )
    parser.add_argument("--folders", type=int, default=60, help="run folders for --score-cli")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the command (min)")
    parser.add_argument("--top", type=int, default=15, help="profile rows for --score-cli")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="--score-cli: also time the command from this trajloom-metrics source tree",
    )
    parser.add_argument(
        "--bytecode",
        choices=("cached", "none"),
        default="cached",
        help="--score-cli: start as after pip install (cached, the default) or compile "
        "every start (none: a uv-synced venv with PYTHONDONTWRITEBYTECODE=1)",
    )
    parser.add_argument(
        "--frechet", action="store_true", help="time the two Tr sqrt(S1 S2) routes (CPU s)"
    )
    args = parser.parse_args()
    if args.frechet:
        frechet_routes(args.repeats)
        return
    if args.score_cli:
        score_cli(args.folders, args.top, args.repeats, args.baseline_src, args.bytecode)
        return
    n = args.clips or (40 if args.quick else 1000)
    print(f"{n} clips x {FRAMES} frames x {GRID_HW[0] * GRID_HW[1]} tracks, chunks of {args.chunk}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}, numpy {np.__version__}, "
        f"BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}"
    )

    acc = FVMDAccumulator(FVMDConfig(clip_len=24, clip_stride=1), GRID_HW)
    measure(
        "FVMD (clip 24, stride 1)",
        n,
        args.chunk,
        lambda gt, pred, vis: acc.update(gt, pred, vis),
        lambda: f"{acc.result().combined:.3f} ({acc.num_windows} clips)",
    )
    if not args.skip_long:
        long_acc = FVMDAccumulator(FVMDConfig(clip_len=None), GRID_HW)
        measure(
            "FVMD-Long (one 81-frame clip)",
            n,
            args.chunk,
            lambda gt, pred, vis: long_acc.update(gt, pred, vis),
            lambda: f"{long_acc.result().combined:.3f} ({long_acc.num_windows} clips)",
        )
    tv: list[float] = []
    measure(
        "FlowTV (visibility)",
        n,
        args.chunk,
        lambda gt, pred, vis: tv.extend(flow_tv(pred, vis, grid_hw=GRID_HW, grid_stride=STRIDE)),
        lambda: f"{video_mean(tv):.5f}",
    )
    dc: list[float] = []
    measure(
        "DivCurlE (visibility)",
        n,
        args.chunk,
        lambda gt, pred, vis: dc.extend(
            div_curl_energy(pred, vis, grid_hw=GRID_HW, grid_stride=STRIDE)
        ),
        lambda: f"{video_mean(dc):.5f}",
    )
    ve = VEPEAccumulator()

    def vepe_step(gt: np.ndarray, pred: np.ndarray, vis: np.ndarray) -> None:
        for i in range(gt.shape[0]):
            ve.update(pred[i], gt[i], vis[i])

    measure("VEPE (pooled)", n, args.chunk, vepe_step, lambda: f"{ve.compute():.5f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process max RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()

"""`uv run apps/bench build|eval|ablate`: build TrajLoomBench, score methods, run ablations.

    uv run apps/bench build BENCH --source kinetics=/data/kinetics --source synthetic=64
    uv run apps/bench eval BENCH --method static=baseline:static --method ours=runs/exp1 --out results
    uv run apps/bench ablate --out ablations --source real=../shared/data/videos --steps-scale 0.25

See `build.py` and `evaluate.py` for what is built and how it is scored, `ablate.py` for
the variants of the ablation study.

Exit codes (every command): 0 done; 1 some items failed (eval: a clip or run folder that
could not be forecast, read or scored, each named on stderr and in results.json's
``failures``; ablate: a variant that could not be trained or evaluated, or such clips); 2 nothing could start or finish: bad options, an unloadable method, an
output folder that is not writable or is in use by another process (``OutputLock``), a
result file that could not be written. ``build`` skips videos that give no window and
reports them, the windows asked and made and damaged videos per source: a video too
short for a window is a selection, not a failure; an unreadable or damaged video (it
decodes fewer frames than its header states) is a failed item (exit 1).
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from trajloom.data.formats import FormatError
from trajloom.data.names import UnsafeNameError, check_name
from trajloom.data.outputs import OutputError, OutputLock, atomic_write_text
from trajloom.data.tracking import make_tracker
from trajloom.encoding import DEFAULT_FUTURE, DEFAULT_GRID, DEFAULT_HISTORY, GridSpec
from trajloom.flow.forecast import (
    ForecastError,
    MethodSpec,
    load_method,
    parse_method,
    resolve_device,
)
from trajloom.metrics import RESULT_FILES, format_paper_table, result_texts
from trajloom_bench.ablate import VARIANTS, BenchSpec, Study, StudyError, run_study
from trajloom_bench.build import (
    BenchConfig,
    build_released_source,
    build_synthetic_source,
    build_video_source,
    check_video_folder,
    read_bench,
    write_bench_index,
)
from trajloom_bench.evaluate import EvalConfig, bench_sources, evaluate_method, tuned_baselines
from trajloom_bench.report import write_bench_report

#: Futures per clip in eval: each is a full sampling run held in memory at once.
MAX_SAMPLES = 64
#: Seeds: clip i draws seed + i (and + k per sample); torch takes seeds below 2**63.
MAX_SEED = 2**62

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="TrajLoomBench: build the benchmark from sources, score methods on it.",
)


#: Windows (history frames) the tuned baselines are chosen among, on the dev videos.
WINDOW_CANDIDATES = {"constvel": (1, 2, 4, 8, 16, 32), "linear": (2, 4, 8, 16, 32)}


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _options(values: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> a dict; values read as JSON when they parse (numbers, true)."""
    options: dict[str, Any] = {}
    for key, raw in _pairs(values, "--tracker-option"):
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def _pairs(values: list[str], option: str, *, names: bool = False) -> list[tuple[str, str]]:
    """``NAME=VALUE`` pairs; with ``names`` each NAME must be a safe name (it becomes a
    folder: ``trajloom.data.names.check_name``)."""
    pairs = []
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            raise _fail(f"{option} {value!r}: expected NAME=VALUE")
        if names:
            _check_name(f"{option} name", name)
        pairs.append((name, target))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise _fail(f"{option}: source names must be unique, got {names}")
    return pairs


def _check_name(kind: str, name: str) -> str:
    try:
        return check_name(kind, name)
    except UnsafeNameError as err:
        raise _fail(str(err)) from None


def _method(text: str) -> tuple[str, MethodSpec]:
    """``NAME=SPEC`` (or a bare SPEC, named after its baseline or folder) -> name, spec."""
    name, sep, spec_text = text.partition("=")
    if not sep:
        name, spec_text = "", text
    try:
        spec = parse_method(spec_text)
    except ForecastError as err:
        raise _fail(f"method {name}: {err}" if name else str(err)) from None
    if not name:
        name = spec.target.replace(":", "_") if spec.kind == "baseline" else Path(spec.target).name
        try:
            check_name("method name", name)
        except UnsafeNameError as err:
            raise _fail(f"{err}; give the method a name: --method NAME={text}") from None
    return _check_name("--method name", name), spec


@app.command()
def build(
    out: Annotated[Path, typer.Argument(help="Bench folder to write (one subfolder per source).")],
    source: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=FOLDER of raw videos, or synthetic=COUNT; repeatable. Paper groups: "
            "kinetics, robotap, kubric, magicdata."
        ),
    ] = None,
    released: Annotated[
        list[str] | None, typer.Option(help="NAME=FOLDER in the released TrajLoomDatasets layout.")
    ] = None,
    width: int = DEFAULT_GRID.width,
    height: int = DEFAULT_GRID.height,
    stride: Annotated[
        int, typer.Option(help="Track grid stride (390 points at 832x480).")
    ] = DEFAULT_GRID.stride,
    history: int = DEFAULT_HISTORY,
    future: int = DEFAULT_FUTURE,
    fps: Annotated[
        float | None, typer.Option(help="Resample videos to this frame rate (default: keep).")
    ] = None,
    windows_per_video: int = 1,
    window_stride: Annotated[
        int | None, typer.Option(help="Frames between windows (default: one window).")
    ] = None,
    tracker: Annotated[str, typer.Option(help="flow (built in), alltracker, cotracker3.")] = "flow",
    tracker_option: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE setting of the tracker's config, repeatable (learned trackers: "
            "repo_path=..., weights_path=...)."
        ),
    ] = None,
    store_video: Annotated[
        bool, typer.Option(help="Keep the window's frames in the shard.")
    ] = True,
    maxcount: int = 256,
    seed: int = 0,
    dynamics: Annotated[
        str, typer.Option(help="World of the synthetic scenes: rigid or lively.")
    ] = "rigid",
    quiet: bool = False,
) -> None:
    """Build TrajLoomBench sources into shards + manifests, and OUT/bench.json."""
    if tracker_option is None:
        tracker_option = []
    if released is None:
        released = []
    if source is None:
        source = []
    if not source and not released:
        raise _fail("give at least one --source NAME=FOLDER, synthetic=COUNT or --released")
    if not 0 <= seed <= MAX_SEED:
        raise _fail(f"--seed must be 0 to 2**62, got {seed}")
    try:
        cfg = BenchConfig(
            width=width,
            height=height,
            stride=stride,
            history=history,
            future=future,
            fps=fps,
            windows_per_video=windows_per_video,
            window_stride=window_stride,
            tracker=tracker,
            store_video=store_video,
            maxcount=maxcount,
            seed=seed,
            dynamics=dynamics,
        )
    except ValueError as err:
        raise _fail(str(err)) from None
    sources = _pairs(source, "--source", names=True)
    releases = _pairs(released, "--released", names=True)
    clash = {n for n, _ in sources} & {n for n, _ in releases}
    if clash:
        raise _fail(f"source names used twice: {sorted(clash)}")
    progress = (lambda _: None) if quiet else (lambda msg: typer.echo(msg))
    try:
        with OutputLock(out, what="bench folder"):
            manifests = _build_sources(out, cfg, sources, releases, tracker_option, progress)
            index = write_bench_index(out, cfg, manifests)
    except OutputError as err:
        raise _fail(str(err)) from None
    failed = sum(_report_source(name, manifest) for name, manifest in manifests.items())
    typer.echo(f"wrote {index}")
    if failed:
        typer.echo(f"{failed} unreadable or damaged videos (listed above)", err=True)
        raise typer.Exit(code=1)


def _report_source(name: str, manifest: dict[str, Any]) -> int:
    """Stdout lines of one built source: clips, skips, windows asked/made, damage.

    Returns the number of failed videos: unreadable (no header) or damaged.
    """
    skipped = manifest.get("skipped", [])
    line = f"{name}: {manifest['num_samples']} clips, {len(skipped)} skipped"
    if "windows_asked" in manifest:
        line += (
            f", windows asked {manifest['windows_asked']}, made {manifest['windows_made']}, "
            f"{len(manifest.get('damaged', []))} damaged videos"
        )
    typer.echo(line)
    for reason in skipped:
        typer.echo(f"  skipped: {reason}")
    for video in manifest.get("videos", []):
        if video["windows_made"] and video["windows_made"] < video["windows_asked"]:
            typer.echo(
                f"  short: {video['video']}: {video['windows_made']} of "
                f"{video['windows_asked']} windows"
            )
    for note in manifest.get("damaged", []):
        typer.echo(f"  damaged: {note}")
    videos = manifest.get("videos", [])
    return sum(1 for v in videos if v["damaged"] or v["frames_in_header"] is None)


def _build_sources(
    out: Path,
    cfg: BenchConfig,
    sources: list[tuple[str, str]],
    releases: list[tuple[str, str]],
    tracker_option: list[str],
    progress: Any,
) -> dict[str, dict[str, Any]]:
    """Build every source into ``out/<name>``; returns the manifests by name.

    Every source is checked before any folder is replaced, and a source whose build
    fails leaves no partial folder (exit 2)."""
    builds: list[tuple[str, Callable[[Path], dict[str, Any]]]] = []
    tracker: list[Any] = []  # built once, on the first video source

    def video_build(name: str, folder: Path) -> Callable[[Path], dict[str, Any]]:
        def run(dest: Path) -> dict[str, Any]:
            if not tracker:
                try:
                    tracker.append(make_tracker(cfg.tracker, **_options(tracker_option)))
                except TypeError as err:
                    raise ValueError(f"--tracker {cfg.tracker}: {err}") from err
            return build_video_source(name, folder, dest, cfg, tracker[0], progress=progress)

        return run

    try:
        for name, target in sources:
            if name == "synthetic" or target.isdigit():
                if not target.isdigit():
                    raise ValueError(f"--source synthetic={target}: give the number of clips")
                count = int(target)
                builds.append((name, lambda d, n=name, c=count: build_synthetic_source(
                    n, c, d, cfg, progress=progress)))  # fmt: skip
            else:
                check_video_folder(name, Path(target))
                builds.append((name, video_build(name, Path(target))))
        for name, target in releases:
            builds.append((name, lambda d, n=name, t=target: build_released_source(
                n, Path(t), d, cfg)))  # fmt: skip
        manifests = {}
        for name, run in builds:
            dest = out / name
            if dest.exists():
                shutil.rmtree(dest)
            try:
                manifests[name] = run(dest)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)  # never a partial source
                raise
    except (ValueError, FormatError) as err:
        raise _fail(str(err)) from None
    return manifests


@app.command("eval")
def evaluate(
    bench: Annotated[Path, typer.Argument(help="Bench folder written by `bench build`.")],
    method: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=SPEC, repeatable. SPEC: baseline:static|constvel[:W]|linear[:L], a "
            "trained-set folder (or apps/train run folder), released:DIR, vae:DIR, runs:DIR "
            "(run folders <source>/<video>/ made elsewhere)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where run folders and tables go.")] = Path(
        "bench-results"
    ),
    source: Annotated[list[str] | None, typer.Option(help="Only these sources.")] = None,
    clip_len: Annotated[int, typer.Option(help="FVMD clip length (released README: 24).")] = 24,
    clip_stride: int = 1,
    seed: int = 0,
    samples: Annotated[
        int,
        typer.Option(
            help="K futures per clip; K > 1 adds minADE_K, minFDE_K and diversity (run "
            "folders <source>/sample_<k>/; baselines give K copies)."
        ),
    ] = 1,
    limit: Annotated[int | None, typer.Option(help="At most this many clips per source.")] = None,
    device: Annotated[
        str, typer.Option(help="auto (GPU when present), cpu, cuda, cuda:1.")
    ] = "auto",
    solver: str = "euler",
    steps: int = 100,
    baselines: Annotated[
        bool,
        typer.Option(
            help="Add static, constant velocity over 1 frame and at the dev-chosen window, "
            "and the least-squares line at its dev-chosen window."
        ),
    ] = True,
    dev_fraction: Annotated[
        float,
        typer.Option(
            help="Fraction of each source's videos kept for choosing (baseline windows), "
            "never scored; every window of a video is on one side."
        ),
    ] = 0.25,
    captions: Annotated[
        str,
        typer.Option(
            help="Caption given to methods: history (camera phrase of the history window), "
            "clip (the whole clip's: an oracle) or none."
        ),
    ] = "history",
    quiet: bool = False,
) -> None:
    """Score methods per source: FVMD, FVMD-Long, FlowTV, DivCurlE, VEPE (and best-of-K)."""
    if source is None:
        source = []
    if not 1 <= samples <= MAX_SAMPLES:
        raise _fail(f"--samples must be 1 to {MAX_SAMPLES}, got {samples}")
    if steps < 1:
        raise _fail(f"--steps must be >= 1, got {steps}")
    if solver not in ("euler", "dopri5"):
        raise _fail(f"--solver must be euler or dopri5, got {solver!r}")
    if not 0 <= seed <= MAX_SEED:
        raise _fail(f"--seed must be 0 to 2**62, got {seed}")
    try:
        cfg = EvalConfig(
            clip_len=clip_len,
            clip_stride=clip_stride,
            seed=seed,
            limit=limit,
            samples=samples,
            dev_fraction=dev_fraction,
            captions=captions,
        )
        names, sources = bench_sources(bench, source or None)
        bench_cfg = read_bench(bench).get("config", {})
    except ValueError as err:
        raise _fail(str(err)) from None
    methods = [_method(m) for m in method or []]
    if not methods and not baselines:
        raise _fail("nothing to score: give --method NAME=SPEC, or keep --baselines")
    if len({n for n, _ in methods}) != len(methods):
        raise _fail(f"method names must be unique, got {[n for n, _ in methods]}")
    progress = (lambda _: None) if quiet else (lambda msg: typer.echo(msg))
    try:
        torch_device = resolve_device(device)
    except ForecastError as err:
        raise _fail(str(err)) from None
    # The bench's window: what baselines forecast, and where every forecast starts.
    grid = GridSpec(
        int(bench_cfg.get("width", DEFAULT_GRID.width)),
        int(bench_cfg.get("height", DEFAULT_GRID.height)),
        int(bench_cfg.get("stride", DEFAULT_GRID.stride)),
    )
    history = int(bench_cfg.get("history", DEFAULT_HISTORY))
    future = int(bench_cfg.get("future", DEFAULT_FUTURE))
    stride = float(grid.stride)
    window = {"grid": grid, "history": history, "future": future}
    chosen: dict[str, Any] = {}
    if baselines:
        rows, chosen = tuned_baselines(bench, names, sources, cfg, window, WINDOW_CANDIDATES)
        given = {n for n, _ in methods}
        methods = methods + [r for r in rows if r[0] not in given]
    baseline_names = [n for n, spec in methods if spec.kind == "baseline"]
    try:
        with OutputLock(out, what="--out folder"):
            results, failures = _evaluate_methods(
                bench, names, sources, methods, out, cfg, window,
                device=torch_device, solver=solver, steps=steps, progress=progress,
            )  # fmt: skip
            settings = {
                "bench": str(bench),
                "clip_len": clip_len,
                "clip_stride": clip_stride,
                "fvmd_long": "one clip over the whole future",
                "use_gt_visibility": True,
                "flow_use_visibility": True,
                "grid_stride": stride,
                "seed": seed,
                "samples": samples,
                "solver": solver,
                "steps": steps,
                "methods": {name: str(spec) for name, spec in methods},
                "dev_fraction": dev_fraction,
                "captions": captions,
                "chosen_on_dev": chosen,
                "baselines": baseline_names,
            }
            texts = result_texts(results, names, settings, failures)
            paths = [atomic_write_text(out / RESULT_FILES[k], t) for k, t in texts.items()]
            paths.append(write_bench_report(out, texts, settings, failures))
    except OutputError as err:
        raise _fail(str(err)) from None
    typer.echo(format_paper_table(results, names, baselines=baseline_names))
    for failure in failures:
        typer.echo(f"failed: {failure}", err=True)
    typer.echo(f"{len(failures)} failed (clips, run folders or sources); see results.json")
    typer.echo(f"wrote {', '.join(str(p) for p in paths)}")
    if failures:
        raise typer.Exit(code=1)


def _evaluate_methods(
    bench: Path,
    names: list[str],
    sources: dict[str, Any],
    methods: list[tuple[str, MethodSpec]],
    out: Path,
    cfg: EvalConfig,
    window: dict[str, Any],
    *,
    device: Any,
    solver: str,
    steps: int,
    progress: Any,
) -> tuple[dict[str, dict[str, dict]], list[str]]:
    """Forecast (or read) and score every method on every source.

    Returns the results (method -> source -> metrics) and the failures, each naming
    method, source and clip or run folder. A method that cannot be loaded ends it (exit 2).
    """
    results: dict[str, dict[str, dict]] = {}
    failures: list[str] = []
    for name, spec in methods:
        try:
            forecaster = load_method(spec, device, solver=solver, steps=steps, **window)
        except (ValueError, FileNotFoundError) as err:
            raise _fail(f"method {name}: {err}") from None
        results[name], failed = evaluate_method(
            bench, names, sources, name, str(spec), forecaster, out, cfg, window, progress
        )
        failures += failed
    return results, failures


@app.command()
def ablate(
    out: Annotated[Path, typer.Option(help="Study folder: run folders, bench, tables.")] = Path(
        "ablations"
    ),
    recipe: Annotated[str, typer.Option(help="apps/train recipe: quick, paper, ci.")] = "quick",
    steps_scale: Annotated[
        float | None, typer.Option(help="Every stage's steps times this (apps/train's).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE override of every variant (apps/train's --set)."),
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="Only these variants (and the run they start from): "
            + ", ".join(v.name for v in VARIANTS)
            + "."
        ),
    ] = None,
    early_fraction: Annotated[
        float, typer.Option(help="Early flow checkpoint, fraction of the flow steps (paper 0.2).")
    ] = 0.2,
    bench: Annotated[
        Path | None, typer.Option(help="An existing bench at the recipe's geometry.")
    ] = None,
    synthetic: Annotated[int, typer.Option(help="Held-out synthetic scenes to build.")] = 32,
    source: Annotated[
        list[str] | None, typer.Option(help="NAME=FOLDER of real videos to track (repeatable).")
    ] = None,
    windows_per_video: int = 4,
    window_stride: Annotated[
        int | None, typer.Option(help="Frames between windows (default: one window).")
    ] = None,
    bench_seed: Annotated[
        int, typer.Option(help="Seed of the synthetic scenes (not the recipe's).")
    ] = 1,
    limit: Annotated[int | None, typer.Option(help="At most this many clips per source.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    jobs: Annotated[
        int, typer.Option(help="Variants trained at once (each after the run it starts from).")
    ] = 1,
    train_command: Annotated[
        str | None,
        typer.Option(help="How to run apps/train (default: the trajloom-train script)."),
    ] = None,
    quiet: bool = False,
) -> None:
    """The paper's ablation study: Tables 3, 4 and 5 (trains each variant, resumable)."""
    if bench is not None and not bench.is_dir():
        raise _fail(f"--bench {bench}: no such folder; build a bench with `bench build` or "
                    "leave --bench out")  # fmt: skip
    try:
        spec = BenchSpec(
            folder=bench,
            synthetic=synthetic,
            videos=tuple(_pairs(source or [], "--source", names=True)),
            windows_per_video=windows_per_video,
            window_stride=window_stride,
            seed=bench_seed,
            limit=limit,
        )
        study = Study(
            out=out,
            recipe=recipe,
            steps_scale=steps_scale,
            sets=tuple(set_ or ()),
            variants=tuple(variant or (v.name for v in VARIANTS)),
            early_fraction=early_fraction,
            device=device,
            jobs=jobs,
            train_command=tuple(shlex.split(train_command)) if train_command else (),
            bench=spec,
        )
        code = run_study(study, (lambda _: None) if quiet else typer.echo)
    except StudyError as err:
        raise _fail(str(err)) from None
    raise typer.Exit(code=code)


def main() -> None:
    app()

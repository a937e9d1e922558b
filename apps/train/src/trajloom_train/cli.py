"""Command line of the train app: ``uv run apps/train [STAGE] [OPTIONS]``.

With no arguments: every stage of the ``quick`` recipe on synthetic scenes, then the
export, the evaluation and a preview, in ``runs/quick/``. Single process::

    uv run apps/train                                   # quick recipe, all stages
    uv run apps/train all --recipe paper --data 'shards/train-{000000..000099}.tar'
    uv run apps/train flow --name quick --set flow.steps=2000

On a CPU the command launches one process per core itself (``--procs auto``, DDP with
gloo; ``--procs 1`` for one process). Many GPUs (DDP with NCCL)::

    torchrun --nproc_per_node 8 apps/train/__main__.py all --recipe paper --data ...
    # two nodes, run on each:
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 --rdzv-id trajloom apps/train/__main__.py all --recipe paper ...
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import torch.distributed
import typer

from trajloom.data.outputs import OutputError, OutputLock, atomic_write_text
from trajloom_train.config import (
    Recipe,
    apply_overrides,
    config_diff,
    recipe_from_dict,
    recipe_to_dict,
    scale_steps,
)
from trajloom_train.distributed import (
    DEFAULT_COLLECTIVE_TIMEOUT_S,
    TIMEOUT_ENV,
    Dist,
    barrier,
    collective_timeout,
    init_distributed,
    shutdown,
    stop_signal_received,
    where,
)
from trajloom_train.interrupt import Interrupted, Signalled, signal_name, signals_raise
from trajloom_train.launch import auto_procs, check_split, launch, parse_procs, under_launcher
from trajloom_train.recipes import RECIPES, get_recipe
from trajloom_train.stages import STAGES, RunContext, run_stage
from trajloom_train.trainer import DivergedError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="Train TrajLoom: VAE -> latent statistics -> generator -> on-policy -> visibility head.",
)

CONFIG_NAME = "config.json"

RecipeOpt = Annotated[
    str | None,
    typer.Option(
        "--recipe",
        "-r",
        help=f"Recipe: {', '.join(RECIPES)}. Default: the run folder's saved config, else quick.",
    ),
]
NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name", "-n", help="Run name: the folder runs/<name> (default: the recipe's name)."
    ),
]
RunsOpt = Annotated[Path, typer.Option("--runs-dir", help="Parent folder of run folders.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override, key=value with a dotted key, e.g. flow.optim.lr=3e-4 (repeatable).",
    ),
]
DataOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data", help="Shard paths/URLs/folders (repeatable); default: synthetic scenes."
    ),
]
EvalDataOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--eval-data",
        help="Evaluation shards (repeatable); default: the held-out split of --data "
        "(data.holdout), else held-out synthetic scenes.",
    ),
]
ScaleOpt = Annotated[
    float | None, typer.Option("--steps-scale", help="Multiply every stage's steps (e.g. 0.1).")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
StopOpt = Annotated[
    int | None,
    typer.Option(
        "--stop-after", hidden=True, help="Stop after this many steps (simulated interruption)."
    ),
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
TimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--collective-timeout",
        envvar=TIMEOUT_ENV,
        show_default=False,
        help="Seconds a process waits for the others in one collective before the run ends "
        f"with an error naming stage, step and rank (default {DEFAULT_COLLECTIVE_TIMEOUT_S:g}).",
    ),
]
ProcsOpt = Annotated[
    str,
    typer.Option(
        "--procs",
        envvar="TRAJLOOM_TRAIN_PROCS",
        help="Local processes (DDP): auto (CPU: one per core, as many as divide every "
        "stage's batch; GPU: 1, use torchrun for many GPUs) or a number.",
    ),
]
VideoEncoderOpt = Annotated[
    Path | None,
    typer.Option(
        "--video-encoder",
        help="Local Wan2.1 VAE weights (diffusers vae/ folder or Wan2.1_VAE.pth): cache Wan "
        "latents as video context instead of training the built-in video encoder. Needs "
        "trajloom-flow[wan]; nothing is downloaded.",
    ),
]
TextEncoderOpt = Annotated[
    Path | None,
    typer.Option(
        "--text-encoder",
        help="Local umT5 encoder weights (text_encoder/ folder; the tokenizer is read from "
        "the sibling tokenizer/ folder when there is one): cache pooled umT5 caption "
        "embeddings instead of training the built-in caption encoder. Needs "
        "trajloom-flow[wan]; nothing is downloaded.",
    ),
]


@dataclass(frozen=True)
class RunOptions:
    """Which run a command works on and how its recipe is resolved (the shared options)."""

    recipe: str | None = None  # a recipe name; None: the run folder's saved config, else quick
    name: str | None = None  # run folder runs_dir/<name>; None: the recipe's name
    runs_dir: Path = Path("runs")
    overrides: tuple[str, ...] = ()  # --set key=value
    data: tuple[str, ...] = ()  # shard paths; empty: synthetic scenes
    steps_scale: float | None = None
    video_encoder: Path | None = None  # local Wan2.1 VAE weights: cached Wan video context
    text_encoder: Path | None = None  # local umT5 weights: cached umT5 caption embeddings
    eval_data: tuple[str, ...] = ()  # evaluation shards; empty: the held-out split

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / (self.name or self.recipe or "quick")


@dataclass(frozen=True)
class ProcessOptions:
    """How this process trains: device, a simulated interruption, progress bars."""

    device: str = "auto"
    stop_after: int | None = None
    progress: bool = True
    procs: str = "auto"  # --procs: local processes to launch ("auto" or a number)
    collective_timeout: str | None = None  # --collective-timeout: seconds (None: the default)


def resolve_run(options: RunOptions) -> tuple[Recipe, Path]:
    """The recipe and run folder of a command; raises ValueError on any bad input.

    An existing run folder keeps its saved config: a different recipe or overrides that
    change a number the training computes are refused (logging cadence may change).
    """
    run_dir = options.run_dir
    saved_path = run_dir / CONFIG_NAME
    saved = json.loads(saved_path.read_text()) if saved_path.is_file() else None
    if options.recipe is not None:
        base = get_recipe(options.recipe)
    elif saved is not None:
        base = recipe_from_dict(saved)
    else:
        base = get_recipe("quick")
    if options.data:
        base = replace(base, data=replace(base.data, source="shards", shards=options.data))
    if options.eval_data:
        base = replace(base, eval=replace(base.eval, shards=options.eval_data))
    if options.steps_scale is not None:
        base = scale_steps(base, options.steps_scale)
    base = _released_context(base, options)
    resolved = apply_overrides(base, list(options.overrides))
    if saved is not None:
        diff = config_diff(saved, recipe_to_dict(resolved))
        if diff:
            shown = "\n  ".join(diff[:12])
            raise ValueError(
                f"run folder {run_dir} was started with another config; resuming it with this "
                f"one would not continue the same training. Differences:\n  {shown}\n"
                "Use another --name for a new run, or repeat the original settings."
            )
    return resolved, run_dir


def _released_context(recipe: Recipe, options: RunOptions) -> Recipe:
    """The recipe with the released conditioners asked for by --video-encoder/--text-encoder."""
    changes: dict[str, str] = {}
    for flag, path, kind, key in (
        ("--video-encoder", options.video_encoder, "wan", "video"),
        ("--text-encoder", options.text_encoder, "umt5", "text"),
    ):
        if path is None:
            continue
        if not path.exists():
            raise ValueError(
                f"{flag} {path}: not found; give the local folder or file of the weights "
                "(nothing is downloaded), or leave the option out to train the built-in encoder"
            )
        module = "diffusers" if kind == "wan" else "transformers"
        if importlib.util.find_spec(module) is None:
            raise ValueError(
                f"{flag} {path}: loading these weights needs {module!r}, which is not "
                "installed; install the optional extra `pip install 'trajloom-flow[wan]'` "
                "(in the workspace `uv sync` installs it with the dev group), or leave the "
                "option out to train the built-in encoder"
            )
        changes[key] = kind
        # absolute: the trained set's pipeline.json names it for sample/bench, run anywhere
        changes[f"{key}_path"] = str(path.resolve())
    if not changes:
        return recipe
    return replace(recipe, conditioning=replace(recipe.conditioning, **changes))


@contextmanager
def _running(options: RunOptions, process: ProcessOptions) -> Iterator[RunContext]:
    """The run's context, with the run folder locked by the main process while it works."""
    resolved, run_dir = resolve_run(options)
    dist = init_distributed(process.device, collective_timeout(process.collective_timeout))
    if resolved.data.source == "shards":  # refuse unusable shards before touching the run
        from trajloom_train.data import ShardClips

        ShardClips(resolved.data, resolved.seed, dist).check()
    with OutputLock(run_dir, what="run folder") if dist.is_main else nullcontext():
        yield _prepare(resolved, run_dir, dist, process)


def _prepare(resolved: Recipe, run_dir: Path, dist: Dist, process: ProcessOptions) -> RunContext:
    """Save the resolved recipe in the run folder and build the stages' context."""
    if dist.is_main:
        atomic_write_text(
            run_dir / CONFIG_NAME, json.dumps(recipe_to_dict(resolved), indent=2) + "\n"
        )
        typer.echo(
            f"run folder: {run_dir} (recipe {resolved.name}, {dist.world_size} process(es), {dist.device})"
        )
    barrier("the barrier after rank 0 saved the run's config")
    return RunContext(
        resolved, run_dir, dist, stop_after=process.stop_after, progress=process.progress
    )


def _finish(ctx: RunContext) -> None:
    """Export the trained set, evaluate it, render the preview (rank 0)."""
    from trajloom_train.evaluate import evaluate, export_trained_set, render_preview

    if ctx.dist.is_main:
        folder = export_trained_set(ctx.run_dir, ctx.recipe)
        typer.echo(f"trained set: {folder}")
        evaluate(ctx.recipe, ctx.run_dir, device=ctx.device)
        typer.echo((ctx.run_dir / "eval" / "table.md").read_text().rstrip())
        typer.echo(f"evaluation: {ctx.run_dir / 'eval' / 'metrics.json'}")
        from trajloom.flow.pipeline import TrajLoomPipeline

        pipe = TrajLoomPipeline.from_pretrained(folder, device=ctx.device)
        preview = render_preview(
            pipe, ctx.recipe, ctx.run_dir / "preview.mp4", clips=ctx.recipe.eval.preview_clips
        )
        if preview is not None:
            typer.echo(f"preview: {preview}")
    # rank 0's evaluation takes as long as the evaluation set: no collective timeout here
    barrier(patient=True)


def _run_options(
    recipe: str | None,
    name: str | None,
    runs_dir: Path,
    overrides: list[str] | None,
    data: list[str] | None = None,
    steps_scale: float | None = None,
    video_encoder: Path | None = None,
    text_encoder: Path | None = None,
    eval_data: list[str] | None = None,
) -> RunOptions:
    return RunOptions(
        recipe,
        name,
        runs_dir,
        tuple(overrides or ()),
        tuple(data or ()),
        steps_scale,
        video_encoder,
        text_encoder,
        tuple(eval_data or ()),
    )


def _train_all(options: RunOptions, process: ProcessOptions) -> None:
    """Every stage in order (finished ones are skipped), then export, evaluation and preview."""
    with _running(options, process) as ctx:
        for stage in STAGES:
            summary = run_stage(ctx, stage)
            if not summary.get("finished", True):
                typer.echo(f"[{stage}] stopped at step {summary['step']}; rerun to resume")
                return
        _finish(ctx)


def _train_one(stage: str) -> Callable[[RunOptions, ProcessOptions], None]:
    def train(options: RunOptions, process: ProcessOptions) -> None:
        with _running(options, process) as ctx:
            run_stage(ctx, stage)

    train.__doc__ = f"Run (or resume) the '{stage}' stage of a run."
    return train


def _launch_or_train(
    train: Callable[[RunOptions, ProcessOptions], None],
    options: RunOptions,
    process: ProcessOptions,
) -> None:
    """Train in this process, or launch ``--procs`` local DDP processes that do.

    The recipe is resolved here first, so that bad options fail once, before any launch.
    """
    if not under_launcher():
        collective_timeout(process.collective_timeout)  # a bad value fails before any launch
        resolved, _ = resolve_run(options)
        wanted = parse_procs(process.procs)
        procs = auto_procs(resolved, process.device) if wanted is None else wanted
        if procs > 1:
            check_split(resolved, procs)
            sys.exit(launch(procs, sys.argv[1:]))
    train(options, process)


def _training_command(train: Callable[[RunOptions, ProcessOptions], None]) -> Callable[..., None]:
    """A typer command with the training options, calling ``train(run, process)``."""

    def command(
        recipe: RecipeOpt = None,
        name: NameOpt = None,
        runs_dir: RunsOpt = Path("runs"),
        overrides: SetOpt = None,
        data: DataOpt = None,
        eval_data: EvalDataOpt = None,
        steps_scale: ScaleOpt = None,
        video_encoder: VideoEncoderOpt = None,
        text_encoder: TextEncoderOpt = None,
        device: DeviceOpt = "auto",
        stop_after: StopOpt = None,
        progress: ProgressOpt = True,
        procs: ProcsOpt = "auto",
        timeout: TimeoutOpt = None,
    ) -> None:
        options = _run_options(
            recipe,
            name,
            runs_dir,
            overrides,
            data,
            steps_scale,
            video_encoder,
            text_encoder,
            eval_data,
        )
        process = ProcessOptions(device, stop_after, progress, procs, timeout)
        _launch_or_train(train, options, process)

    command.__doc__ = train.__doc__
    return command


for _stage in STAGES:
    app.command(name=_stage)(_training_command(_train_one(_stage)))
app.command(name="all")(_training_command(_train_all))


@app.command(name="eval")
def eval_command(
    recipe: RecipeOpt = None,
    name: NameOpt = None,
    runs_dir: RunsOpt = Path("runs"),
    overrides: SetOpt = None,
    eval_data: EvalDataOpt = None,
    device: DeviceOpt = "auto",
    timeout: TimeoutOpt = None,
) -> None:
    """Export the trained set of a finished run, evaluate it and render the preview."""
    options = _run_options(recipe, name, runs_dir, overrides, eval_data=eval_data)
    with _running(options, ProcessOptions(device, collective_timeout=timeout)) as ctx:
        _finish(ctx)


@app.command(name="config")
def show_config(
    recipe: RecipeOpt = None,
    name: NameOpt = None,
    runs_dir: RunsOpt = Path("runs"),
    overrides: SetOpt = None,
    data: DataOpt = None,
    steps_scale: ScaleOpt = None,
) -> None:
    """Print the resolved recipe as JSON (every key --set accepts)."""
    resolved, _ = resolve_run(_run_options(recipe, name, runs_dir, overrides, data, steps_scale))
    typer.echo(json.dumps(recipe_to_dict(resolved), indent=2))


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        procs = os.environ.get("TRAJLOOM_TRAIN_PROCS", "auto")
        _launch_or_train(_train_all, RunOptions(), ProcessOptions(procs=procs))


def main() -> None:
    """Entry point: a one-line error and exit status 2 for bad input or an unusable run
    folder (locked, not writable), 1 for a stage that diverged (its last checkpoint is kept)
    or a process that lost the others (one died), 3 for a collective that timed out (the
    watchdog's line, ``trajloom_train.distributed``), 143 / 130 after SIGTERM / SIGINT (the
    progress saved; rank 0 says where).
    """
    try:
        with signals_raise():
            app()
    except (ValueError, FileNotFoundError, KeyError, OutputError) as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except DivergedError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
    except Interrupted as err:
        if os.environ.get("RANK", "0") == "0":
            typer.echo(str(err), err=True)
        sys.exit(err.exit_code)
    except Signalled as err:
        signum = err.signum
        if os.environ.get("RANK", "0") == "0":
            typer.echo(
                f"interrupted by {signal_name(signum)} in {where()}; rerun the same command "
                "to resume",
                err=True,
            )
        sys.exit(128 + signum)
    except torch.distributed.DistError as err:
        signum = stop_signal_received()
        if signum is not None:  # told to stop (another process failed): no second report
            sys.exit(128 + signum)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        typer.echo(
            f"error: rank {os.environ.get('RANK', '0')} lost the other processes in {where()} "
            f"({first}); another process failed or was stopped; rerun the same command to "
            "resume from the last checkpoint",
            err=True,
        )
        sys.exit(1)
    finally:
        shutdown()

"""`uv run apps/sample INPUT... --checkpoint CKPT --out OUT`: futures for videos, npz or shards.

For every clip: sample ``--num-samples`` futures and write

* ``OUT/runs/sample_<k>/<id>/`` — released-layout run folders (``trajloom-metrics score
  OUT/runs/sample_000`` and the released benchmark scripts read them);
* ``OUT/wanmove/sample_<k>/<id>_tracks.npy`` / ``_visibility.npy`` / ``_image.jpg`` — the
  Wan-Move export (``trajloom.data.predictions`` says which frames);
* ``OUT/renders/<id>.mp4`` (+ ``.gif``) — history and sample 0 over the video,
  ``<id>_sample_<k>.mp4`` the other samples, ``<id>_truth.mp4`` the true future when the
  clip has one, and ``<id>_grid.mp4`` — every sample side by side;
* ``OUT/index.html`` — the report: every clip's futures (one at a time or all), the truth,
  the per-clip metrics; it opens from the file system, no server;
* ``OUT/summary.json`` — what this run did: the clips done, failed (and why) and damaged,
  the totals, and the run folders of earlier runs in OUT that this run did not rewrite.

One policy for bad items: a bad input or clip (unreadable file, bad shard sample, a model
that emits non-finite numbers) is skipped, named and counted, on stdout and in
``summary.json``, and the others go on; the exit code is 1 when any failed. Exit 2 when
nothing could start: bad options, an unloadable checkpoint, an output folder that is not
writable or is in use by another run (``OutputLock``). Every run folder is replaced whole
(``write_run_folder``), so a second run into the same OUT never leaves a mixed folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from trajloom.data.clip import Clip
from trajloom.data.geometry import DEFAULT_FIT, DEFAULT_MAX_RENDER_SIZE, FIT_MODES
from trajloom.data.inputs import InputDamage, InputError, expand_inputs, load_clips
from trajloom.data.names import UniqueNames
from trajloom.data.outputs import OutputError, OutputLock, atomic_write_json
from trajloom.data.predictions import (
    Futures,
    OutputOptions,
    write_predictions,
    write_predictions_report,
)
from trajloom.data.render import RenderConfig
from trajloom.data.tracking import TRACKERS, make_tracker
from trajloom.data.video import VIDEO_SUFFIXES
from trajloom.encoding import DEFAULT_FUTURE, DEFAULT_GRID, DEFAULT_HISTORY, GridSpec
from trajloom.flow.forecast import (
    Forecaster,
    RunFolders,
    forecast_clip,
    load_method,
    parse_method,
    resolve_device,
    with_pins,
)
from trajloom.flow.pins import MAX_PINS, Pin, PinError, parse_pin, pin_markers, pins_from_json
from trajloom.metrics import forecast_summary

app = typer.Typer(add_completion=False, no_args_is_help=True)

#: Futures per clip: each is a full sampling run held in memory at once.
MAX_SAMPLES = 64
#: Seeds: sample k of clip i draws seed + k; torch takes seeds below 2**63.
MAX_SEED = 2**62
#: Decoded pixels per source frame (8K): a small file can hold huge frames.
MAX_PIXELS = 7680 * 4320
#: Frames decoded per input: the paper's 81 + 81 window fits many times over.
MAX_FRAMES = 2048


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def parse_options(values: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> a dict; values read as JSON when they parse (numbers, true)."""
    options: dict[str, Any] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key:
            raise ValueError(f"{value!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def process_clip(
    clip: Clip,
    forecaster: Forecaster,
    out: Path,
    *,
    num_samples: int,
    seed: int,
    options: OutputOptions,
    markers: np.ndarray | None = None,
    hidden: np.ndarray | None = None,
) -> dict[str, Any]:
    """Forecast one clip and write its run folders, Wan-Move export and renders.

    ``markers`` "k 4" (point, future frame, x, y): the pins' targets, drawn in the renders
    and written beside the Wan-Move export; ``hidden`` "k 2" (point, future frame): the
    "stay hidden" pins, drawn in the renders."""
    start = time.perf_counter()
    # Non-finite model output is refused here (ForecastError naming method and clip).
    forecast = forecast_clip(forecaster, clip, num_samples=num_samples, seed=seed)
    seconds = time.perf_counter() - start
    entry = write_predictions(
        clip,
        Futures(forecast.tracks, forecast.visibility, forecast.probability),
        forecaster.grid,
        out,
        meta={"noise_seed": seed, **forecaster.describe()},
        options=options,
        markers=markers,
        hidden=hidden,
        baselines=reference_futures(clip, forecaster) if clip.fut_tracks is not None else None,
    )
    entry["seconds"] = {"forecast": round(seconds, 3), **entry["seconds"]}
    if clip.fut_tracks is not None:
        entry["metrics"] = forecast_summary(forecast.tracks, clip.fut_tracks, clip.fut_vis)
    return entry


#: The reference methods whose error over time the report plots beside the samples.
REFERENCES = {"static": "baseline:static", "constant velocity": "baseline:constvel"}


def reference_futures(clip: Clip, forecaster: Forecaster) -> dict[str, np.ndarray]:
    """The future "tf n 2" of each of ``REFERENCES`` for ``clip`` (in its window)."""
    futures = {}
    for label, name in REFERENCES.items():
        method = load_method(
            parse_method(name),
            resolve_device("cpu"),
            grid=forecaster.grid,
            history=forecaster.history,
            future=forecaster.future,
        )
        assert not isinstance(method, RunFolders)
        futures[label] = forecast_clip(method, clip, num_samples=1, seed=0).tracks[0]
    return futures


def hidden_pins(pins: list[Pin]) -> np.ndarray | None:
    """The "stay hidden" pins named by a grid point as rows (point, future frame)."""
    rows = [
        (p.point, f) for p in pins if p.kind == "hidden" and p.point is not None for f in p.frames
    ]
    return np.asarray(rows, np.int64).reshape(-1, 2) if rows else None


def _check_options(
    num_samples: int, solver: str, steps: int, tracker: str, tracker_option: list[str]
) -> dict[str, Any]:
    """Refuse bad numeric and tracker options (exit 2); returns the tracker's settings."""
    if not 1 <= num_samples <= MAX_SAMPLES:
        raise _fail(f"--num-samples must be 1 to {MAX_SAMPLES}, got {num_samples}")
    if solver not in ("euler", "dopri5"):
        raise _fail(f"--solver must be euler or dopri5, got {solver!r}")
    if steps < 1:
        raise _fail(f"--steps must be >= 1, got {steps}")
    if tracker not in TRACKERS:
        raise _fail(f"--tracker {tracker!r}: choose one of {sorted(TRACKERS)}")
    try:
        return parse_options(tracker_option)
    except ValueError as err:
        raise _fail(f"--tracker-option: {err}") from None


def _check_limits(seed: int, wanmove_frames: int | None, max_pixels: int, max_pins: int) -> None:
    """Refuse out-of-range seeds, export lengths and limits before any work (exit 2)."""
    if not 0 <= seed <= MAX_SEED:
        raise _fail(f"--seed must be 0 to 2**62, got {seed}")
    if wanmove_frames is not None and wanmove_frames < 2:
        raise _fail(
            f"--wanmove-frames must be >= 2 (the image and a future frame), got {wanmove_frames}"
        )
    if max_pixels < 1 or max_pins < 1:
        raise _fail(f"--max-pixels and --max-pins must be >= 1, got {max_pixels}, {max_pins}")


def _read_pins(pin: list[str], pins_file: Path | None, max_pins: int) -> list[Pin]:
    """The pins of ``--pin`` and ``--pins`` (exit 2 on a bad one, or more than ``max_pins``)."""
    try:
        constraints = [parse_pin(text) for text in pin]
        if pins_file is not None:
            constraints += pins_from_json(pins_file, max_pins=max_pins)
    except PinError as err:
        raise _fail(str(err)) from None
    if len(constraints) > max_pins:
        raise _fail(f"{len(constraints)} pins, more than --max-pins {max_pins}")
    return constraints


def _report(tally: _Tally, summary_path: Path) -> None:
    """The closing lines; exit 1 when any input failed or was damaged, or nothing was done."""
    typer.echo(
        f"\n{len(tally.done)} clips done, {len(tally.failed)} failed, {len(tally.damaged)} "
        f"damaged; summary in {summary_path}"
    )
    for f in tally.damaged:
        typer.echo(f"  DAMAGED {f['input']}: {f['reason']}")
    for f in tally.failed:
        typer.echo(f"  FAILED {f['input']}: {f['reason']}")
    if tally.failed or tally.damaged or not tally.done:
        raise typer.Exit(code=1)  # damaged inputs count as bad items, as in bench build


@app.command()
def sample(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Videos, released-layout .npz files, shard .tar files, folders or globs."
        ),
    ],
    checkpoint: Annotated[
        str,
        typer.Option(
            help="A trained-set folder, an apps/train run folder holding one, released:DIR "
            "(the authors' checkpoints and configs), baseline:static|constvel, or vae:DIR "
            "(VAE reconstruction of the true future)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("samples"),
    num_samples: Annotated[int, typer.Option(help="Futures per clip.")] = 4,
    solver: Annotated[str, typer.Option(help="euler or dopri5.")] = "euler",
    steps: Annotated[int, typer.Option(help="Euler steps (released: 100).")] = 100,
    seed: int = 0,
    device: Annotated[str, typer.Option(help="auto (GPU when present), cpu, cuda.")] = "auto",
    tracker: Annotated[
        str, typer.Option(help="Tracker for videos: flow, alltracker, cotracker3.")
    ] = "flow",
    tracker_option: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE setting of the tracker's config, repeatable (learned trackers: "
            "repo_path=..., weights_path=...)."
        ),
    ] = None,
    caption: Annotated[str, typer.Option(help="Caption for inputs that have none.")] = "",
    ground_truth: Annotated[
        bool,
        typer.Option(
            help="Videos: also track the true future when the video is long enough (run "
            "folders then hold gt_tracks for scoring); off tracks the history only."
        ),
    ] = True,
    render: Annotated[bool, typer.Option(help="Write MP4 overlays and the sample grid.")] = True,
    gif: Annotated[bool, typer.Option(help="Also write a GIF of the overlay.")] = True,
    wanmove_frames: Annotated[
        int | None, typer.Option(help="Frames of the Wan-Move export (default: the future length).")
    ] = None,
    trail: Annotated[int, typer.Option(help="Trail length of the renders, frames.")] = 12,
    fit: Annotated[
        str,
        typer.Option(
            help="How a video of another aspect meets the model's working frame: pad "
            "(default: scaled whole into it, black bars; motion keeps its aspect and no part "
            "of the video is lost), crop (scaled to cover it, edges cut; aspect kept, edges "
            "untracked) or stretch (x and y scaled apart: motion distorted by the ratio of "
            "the aspects). Renders are drawn over the original frames either way."
        ),
    ] = DEFAULT_FIT,
    max_render_size: Annotated[
        int,
        typer.Option(
            help="Longest side of the renders in pixels: a larger video is drawn shrunk "
            "(aspect kept), a smaller one at its own size; 0: always its own size."
        ),
    ] = DEFAULT_MAX_RENDER_SIZE,
    render_stride: Annotated[
        int,
        typer.Option(
            help="Draw every N-th grid row and column in the renders (1: every point), to "
            "thin a dense grid for viewing; the run folders keep every point."
        ),
    ] = 1,
    width: Annotated[int, typer.Option(help="Baselines only: working width.")] = DEFAULT_GRID.width,
    height: Annotated[
        int, typer.Option(help="Baselines only: working height.")
    ] = DEFAULT_GRID.height,
    stride: Annotated[int, typer.Option(help="Baselines only: grid stride.")] = DEFAULT_GRID.stride,
    history: Annotated[
        int, typer.Option(help="Baselines and vae:DIR: history frames.")
    ] = DEFAULT_HISTORY,
    future: Annotated[int, typer.Option(help="Baselines only: future frames.")] = DEFAULT_FUTURE,
    video_encoder: Annotated[
        Path | None, typer.Option(help="Released checkpoints: local Wan2.1 video VAE path.")
    ] = None,
    text_encoder: Annotated[
        Path | None, typer.Option(help="Released checkpoints: local umT5 text encoder path.")
    ] = None,
    pin: Annotated[
        list[str] | None,
        typer.Option(
            help="N,FRAME,X,Y: grid point N (row-major) at X,Y working-resolution pixels at "
            "future frame FRAME (0 = first predicted; pred_tracks[FRAME, N]); repeatable. "
            "N,FRAME,hidden: point N occluded at FRAME (invisible, still in the image; needs "
            "a set with a visibility head); N,FRAME,outside: it has left the image. "
            "Sampling is then guided to meet the pins."
        ),
    ] = None,
    pins: Annotated[
        Path | None,
        typer.Option(
            help="A JSON file of pins (paths, source pixels, 'outside', 'hidden'; see README)."
        ),
    ] = None,
    max_pixels: Annotated[
        int, typer.Option(help="Largest video frame, pixels (width x height, from its header).")
    ] = MAX_PIXELS,
    max_pins: Annotated[int, typer.Option(help="Most pins per clip.")] = MAX_PINS,
    max_frames: Annotated[
        int, typer.Option(help="Most frames decoded per input (the checkpoint's history + future).")
    ] = MAX_FRAMES,
) -> None:
    """Predict futures of every input and write run folders, Wan-Move exports and renders."""
    tracker_kwargs = _check_options(num_samples, solver, steps, tracker, tracker_option or [])
    _check_limits(seed, wanmove_frames, max_pixels, max_pins)
    constraints = _read_pins(pin or [], pins, max_pins)
    if fit not in FIT_MODES:
        raise _fail(f"--fit must be one of {', '.join(FIT_MODES)}, got {fit!r}")
    if max_render_size < 0 or max_render_size == 1:
        raise _fail(f"--max-render-size must be 0 (no cap) or >= 2 pixels, got {max_render_size}")
    if max_frames < 2:
        raise _fail(f"--max-frames must be >= 2, got {max_frames}")
    try:
        options = OutputOptions(
            render=render,
            gif=gif,
            wanmove_frames=wanmove_frames,
            render_config=RenderConfig(trail=trail, stride=render_stride),
        )
        spec = parse_method(checkpoint)
    except ValueError as err:
        raise _fail(str(err)) from None
    try:
        with OutputLock(out, what="--out folder"):
            forecaster = _load(
                spec,
                checkpoint,
                device,
                solver,
                steps,
                history,
                future,
                GridSpec(width, height, stride),
                video_encoder,
                text_encoder,
            )
            try:
                forecaster = with_pins(forecaster, constraints)
            except ValueError as err:  # ForecastError, PinError
                raise _fail(str(err)) from None
            window = forecaster.history + forecaster.future
            if window > max_frames:
                raise _fail(
                    f"the checkpoint reads {forecaster.history} + {forecaster.future} = {window} "
                    f"frames per input, more than --max-frames {max_frames}; raise the limit "
                    "or use a shorter window (--history/--future of baselines)"
                )
            if wanmove_frames is not None and wanmove_frames > forecaster.future + 1:
                raise _fail(
                    f"--wanmove-frames must be 2 to {forecaster.future + 1} for this "
                    f"checkpoint's {forecaster.future}-frame future, got {wanmove_frames}"
                )
            tally = _Tally()
            files, missing = expand_inputs(inputs)
            tally.failed += [{"input": spec_, "reason": reason} for spec_, reason in missing]
            tracker_factory = _tracker_factory(files, tracker, tracker_kwargs)
            for path in files:
                typer.echo(f"{path}")
                clips = load_clips(
                    path,
                    grid=forecaster.grid,
                    history=forecaster.history,
                    future=forecaster.future,
                    tracker_factory=tracker_factory,
                    caption=caption,
                    ground_truth=ground_truth,
                    fit=fit,
                    max_render_size=max_render_size or None,
                    max_pixels=max_pixels,
                )
                _sample_clips(
                    path,
                    clips,
                    forecaster,
                    out,
                    tally,
                    num_samples=num_samples,
                    seed=seed,
                    options=options,
                    markers=pin_markers(constraints) if constraints else None,
                    hidden=hidden_pins(constraints),
                )
            render_options = {
                "fit": fit,
                "max_render_size": max_render_size or None,
                "render_stride": render_stride,
            }
            summary_path = _write_summary(
                out, tally, inputs, checkpoint, forecaster, num_samples, seed, render_options
            )
            title = f"TrajLoom futures: {checkpoint}"
            report = write_predictions_report(out, tally.done, title)
    except OutputError as err:
        raise _fail(str(err)) from None
    typer.echo(f"report: {report}")
    _report(tally, summary_path)


@dataclass
class _Tally:
    """What one run did: clip entries done, inputs failed and damaged (with reasons)."""

    done: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    damaged: list[dict[str, str]] = field(default_factory=list)
    names: UniqueNames = field(default_factory=UniqueNames)  # same-named clips: clip, clip-2


def _load(
    spec: Any,
    checkpoint: str,
    device: str,
    solver: str,
    steps: int,
    history: int,
    future: int,
    grid: GridSpec,
    video_encoder: Path | None,
    text_encoder: Path | None,
) -> Forecaster:
    """The forecaster of ``--checkpoint``; any load problem is one line and exit 2."""
    try:
        forecaster = load_method(
            spec,
            resolve_device(device),
            solver=solver,
            steps=steps,
            grid=grid,
            history=history,
            future=future,
            video_encoder=video_encoder,
            text_encoder=text_encoder,
        )
    except (ValueError, FileNotFoundError) as err:
        raise _fail(str(err)) from None
    if isinstance(forecaster, RunFolders):
        raise _fail(
            f"--checkpoint {checkpoint}: holds run folders (futures made elsewhere), not a "
            "checkpoint; score them with trajloom-metrics score, or give a checkpoint"
        )
    return forecaster


def _tracker_factory(files: list[Path], tracker: str, kwargs: dict[str, Any]) -> Any:
    """A function giving the one tracker every video shares (built before any input:
    learned trackers load weights), or None when no input is a video."""
    video_tracker = None
    if any(p.suffix.lower() in VIDEO_SUFFIXES for p in files):
        try:
            video_tracker = make_tracker(tracker, **kwargs)
        except (TypeError, ValueError, FileNotFoundError) as err:
            raise _fail(f"--tracker {tracker} with {kwargs}: {err}") from None
    return lambda: video_tracker


def _sample_clips(
    path: Path, clips: Any, forecaster: Forecaster, out: Path, tally: _Tally, **options: Any
) -> None:
    """Forecast and write every clip ``load_clips`` gives for ``path``; bad ones counted."""
    while True:
        # Reading, decoding and tracking happen while the next clip is produced.
        start = time.perf_counter()
        item = next(clips, None)
        read_seconds = time.perf_counter() - start
        if item is None:
            return
        if isinstance(item, InputDamage):
            tally.damaged.append({"input": str(path), "reason": str(item)})
            typer.echo(f"  damaged: {item}", err=True)
            continue
        if isinstance(item, InputError):
            tally.failed.append({"input": str(path), "reason": str(item)})
            typer.echo(f"  failed: {item}", err=True)
            continue
        item.id = tally.names.claim(item.id)  # never two clips into one folder
        try:
            entry = process_clip(item, forecaster, out, **options)
        except OutputError:
            raise  # the output folder itself failed (a full disk): no later clip can be written
        except (ValueError, RuntimeError, OSError) as err:
            reason = f"{type(err).__name__}: {err}"
            tally.failed.append({"input": item.source, "id": item.id, "reason": reason})
            typer.echo(f"  failed: {item.source}: {err}", err=True)
            continue
        entry["seconds"] = {"read_and_track": round(read_seconds, 3), **entry["seconds"]}
        tally.done.append(entry)
        timing = ", ".join(f"{k} {v:.1f} s" for k, v in entry["seconds"].items())
        typer.echo(f"  {item.id}: {entry['num_samples']} samples ({timing})")


def _other_clips(out: Path, done: list[dict[str, Any]]) -> list[str]:
    """Run folders under ``out/runs`` this run did not write (left by earlier runs)."""
    ours = {Path(p).resolve() for entry in done for p in entry["runs"]}
    runs = out / "runs"
    found = sorted(d for d in runs.glob("sample_*/*") if d.is_dir() and not d.name.startswith("."))
    return [str(d.relative_to(runs)) for d in found if d.resolve() not in ours]


def _write_summary(
    out: Path,
    tally: _Tally,
    inputs: list[str],
    checkpoint: str,
    forecaster: Forecaster,
    num_samples: int,
    seed: int,
    render_options: dict[str, Any],
) -> Path:
    """``out/summary.json`` (atomic): this run's clips, failures, damage and totals, and
    how videos met the working frame and were drawn (``render_options``; each clip's
    ``geometry`` holds its own sizes, scale and offset)."""
    others = _other_clips(out, tally.done)
    summary = {
        "covers": "this run only: the clips in 'done', the inputs in 'failed' and "
        "'damaged'; run folders in OUT that earlier runs wrote and this run did not "
        "rewrite are listed in 'other_run_folders'",
        "inputs": inputs,
        "checkpoint": checkpoint,
        "model": forecaster.describe(),
        "num_samples": num_samples,
        "seed": seed,
        **render_options,
        "totals": {
            "done": len(tally.done),
            "failed": len(tally.failed),
            "damaged": len(tally.damaged),
        },
        "done": tally.done,
        "failed": tally.failed,
        "damaged": tally.damaged,
        "other_run_folders": others,
    }
    return atomic_write_json(
        out / "summary.json", json.loads(json.dumps(summary, default=_json_default))
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def main() -> None:
    app()

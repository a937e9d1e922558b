"""The demo's page (Gradio): pick or upload a video, choose a checkpoint, press Predict.

Pins: once a video is chosen, its last history frame (the boundary frame) is shown; clicks
on it place pins (:class:`trajloom_demo.pinning.PinBoard`, one per session), listed in a
table with Remove last and Clear, and passed to the next Predict as ``Job.pins``.

Requests go through Gradio's queue, ``settings.concurrency`` at a time; each writes its
own folder (:func:`trajloom_demo.jobs.run_job`). The forecasting code is imported by a
background thread once the server is up, so the page comes up without waiting for torch
and the models; the first Predict waits for that import if it is still running.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from trajloom_demo.pinning import KINDS, PIN_COLUMNS, PinBoard
from trajloom_demo.settings import DemoSettings, checkpoint_choices, example_videos

__all__ = ["build_ui", "warm_up"]

log = logging.getLogger("trajloom_demo")

_INTRO = """# TrajLoom: see the futures of a video
Upload a video (or pick an example), choose a checkpoint, press **Predict**. The demo
tracks a grid of points through the video's first frames (the history), samples several
possible futures of their motion, and draws them over the video: one colour per point,
the history washed out, the predicted future in full colour with fading trails; points that
stay put are small dots, so what moves stands out. When the video is long enough, its true future
is tracked too and the futures are scored against it. To steer the futures, click a point
on the video's last history frame, then where it should be at a chosen future frame.
"""


class _Jobs:
    """The forecasting module and the shared model cache, imported on first need."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self.module: Any = None
        self.models: Any = None

    def load(self) -> Any:
        with self._lock:
            if self.module is None:
                from trajloom_demo import jobs  # torch, the models: seconds

                self.models = jobs.ModelCache(self.settings)
                self.module = jobs
            return self.module


def warm_up(jobs: _Jobs) -> threading.Thread:
    """Import the forecasting code in the background (the page is already served)."""
    thread = threading.Thread(target=jobs.load, name="trajloom-demo-warm-up", daemon=True)
    thread.start()
    return thread


def _predict(jobs: _Jobs, video: str | None, checkpoint: str, samples: float, steps: float,
             seed: float, board: PinBoard, progress: gr.Progress) -> tuple[Any, ...]:  # fmt: skip
    """The Predict button: run one job; any problem is a message in the page."""
    progress(0.0, desc="starting")
    module = jobs.load()
    try:
        job = module.Job(
            video=Path(video) if video else None,
            checkpoint=checkpoint,
            num_samples=int(samples),
            steps=int(steps),
            seed=int(seed),
            pins=module.pins_from_page(board.pins),
        )
        result = module.run_job(
            job, jobs.settings, jobs.models, lambda f, stage: progress(f, desc=stage)
        )
    except module.DemoError as err:
        raise gr.Error(str(err), print_exception=False) from None
    except Exception as err:  # the page gets one line; the log keeps the traceback
        log.exception("request failed")
        raise gr.Error(f"the prediction failed ({type(err).__name__}: {err})") from None
    return (
        str(result.overlay),
        str(result.grid) if result.grid else None,
        str(result.truth) if result.truth else None,
        str(result.archive),
        _summary_text(result),
    )


def _show_board(board: PinBoard) -> tuple[Any, ...]:
    """The outputs drawn from a board: state, picture, table, note."""
    return board, board.picture(), board.rows(), board.note()


def _new_board(jobs: _Jobs, video: str | None, checkpoint: str, steps: float) -> tuple[Any, ...]:
    """A video or checkpoint was chosen: its boundary frame, no pins (a problem: a note)."""
    if not video:
        return (*_show_board(PinBoard()), gr.Slider(maximum=1, value=0))
    module = jobs.load()
    try:
        found = module.boundary_of(Path(video), checkpoint, int(steps), jobs.settings, jobs.models)
    except module.DemoError as err:
        board = PinBoard()
        return board, None, [], f"No boundary frame to pin on: {err}", gr.Slider(value=0)
    board = PinBoard(found.frame, found.future, found.steerable, fit=found.fit)
    return (*_show_board(board), gr.Slider(maximum=found.future - 1, value=0))


def _click(board: PinBoard, kind: str, frame: float, evt: gr.SelectData) -> tuple[Any, ...]:
    """A click on the boundary frame: pick a point, or set the picked point's target."""
    if board.frame is None or evt.index is None:
        return _show_board(board)
    try:
        board = board.click((int(evt.index[0]), int(evt.index[1])), int(frame), kind)
    except ValueError as err:
        raise gr.Error(str(err), print_exception=False) from None
    return _show_board(board)


def _summary_text(result: Any) -> str:
    entry = result.summary
    lines = [f"**{entry['num_samples']} futures of `{entry['id']}`** (output: `{result.folder}`)"]
    metrics = entry.get("metrics")
    if metrics:
        lines.append(_min_ade_line(metrics.get("min_ade")))
    else:
        lines.append("No ground truth: the video is too short to track its true future.")
    pins = entry.get("pins")
    if pins:
        lines.append(
            f"{len(pins['pins'])} pin(s); pin error: the largest distance of a pinned point "
            "from its target (px; pins that leave the image are made invisible there)."
        )
    if metrics or pins:
        lines.append(_sample_table(entry["num_samples"], metrics, pins))
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in entry["seconds"].items())
    lines.append(
        f"Times: {seconds}. The zip holds run folders, Wan-Move export, renders, index.html."
    )
    return "\n\n".join(lines)


def _min_ade_line(value: float | None) -> str:
    """The summary's minADE; "n/a" where no point is visible in the true future (never 0)."""
    if value is None:
        return "minADE n/a (no point is visible in the true future)"
    return f"minADE {value:.2f} px"


def _number(values: list[float | None] | None, k: int) -> str:
    value = None if values is None else values[k]
    return "n/a" if value is None else f"{value:.2f}"


def _sample_table(num_samples: int, metrics: Any, pins: Any) -> str:
    """Per sample: ADE against the tracked truth, and the pin error (markdown table)."""
    head, rule = "| sample |", "|---|"
    if metrics:
        head, rule = head + " ADE (px) |", rule + "---|"
    if pins:
        head, rule = head + " pin error (px) |", rule + "---|"
    rows = [head, rule]
    for k in range(num_samples):
        row = f"| {k} |"
        if metrics:
            row += f" {_number(metrics['ade'], k)} |"
        if pins:
            row += f" {_number(pins['error_px'], k)} |"
        rows.append(row)
    return "\n".join(rows)


@dataclass
class _PinControls:
    board: gr.State  # the session's PinBoard
    image: gr.Image  # the boundary frame with the pins drawn
    note: gr.Markdown
    frame: gr.Slider  # future frame of the next pin
    kind: gr.Radio
    table: gr.Dataframe
    undo: gr.Button
    clear: gr.Button


def _pin_controls() -> _PinControls:
    """The boundary frame to click, the next pin's frame and kind, the pins' table."""
    with gr.Group():
        image = gr.Image(
            label="pins: click a point on the last history frame, then its target",
            type="numpy",
            format="png",
            interactive=False,
            elem_id="boundary",
        )
        note = gr.Markdown(PinBoard().note(), elem_id="pin-note")
        with gr.Row():
            frame = gr.Slider(
                0, 1, value=0, step=1, label="future frame (0 = first predicted)",
                elem_id="pin-frame",
            )  # fmt: skip
            kind = gr.Radio(list(KINDS.items()), value="at", label="pin kind", elem_id="pin-kind")
        table = gr.Dataframe(
            headers=PIN_COLUMNS, value=[], interactive=False, label="pins", elem_id="pins"
        )
        with gr.Row():
            undo = gr.Button("Remove last", size="sm", elem_id="pin-undo")
            clear = gr.Button("Clear", size="sm", elem_id="pin-clear")
    return _PinControls(gr.State(PinBoard()), image, note, frame, kind, table, undo, clear)


def _wire_pins(jobs: _Jobs, pins: _PinControls, video: Any, checkpoint: Any, steps: Any) -> None:
    """A new video or checkpoint shows a fresh board; clicks and buttons edit it."""
    shown = [pins.board, pins.image, pins.table, pins.note]

    def new_board(video, checkpoint, steps):
        return _new_board(jobs, video, checkpoint, steps)

    for source in (video.change, checkpoint.change):
        source(new_board, inputs=[video, checkpoint, steps], outputs=[*shown, pins.frame])
    pins.image.select(_click, inputs=[pins.board, pins.kind, pins.frame], outputs=shown)
    pins.undo.click(lambda b: _show_board(b.undo()), inputs=[pins.board], outputs=shown)
    pins.clear.click(lambda b: _show_board(b.clear()), inputs=[pins.board], outputs=shown)


def build_ui(settings: DemoSettings) -> tuple[gr.Blocks, _Jobs]:
    """The page and the jobs holder (hand it to :func:`warm_up` after launching)."""
    jobs = _Jobs(settings)
    choices = checkpoint_choices(settings)
    examples = [[str(p)] for p in example_videos(settings)]
    with gr.Blocks(title="TrajLoom demo") as page:
        gr.Markdown(_INTRO)
        with gr.Row():
            with gr.Column():
                video = gr.Video(
                    label="video", sources=["upload"], elem_id="input-video", height=360
                )
                if examples:
                    gr.Examples(examples=examples, inputs=[video], label="example videos")
                checkpoint = gr.Dropdown(
                    choices, value=choices[0], label="checkpoint", elem_id="checkpoint"
                )
                with gr.Row():
                    samples = gr.Slider(1, settings.max_samples, value=4, step=1, label="samples")
                    steps = gr.Slider(1, settings.max_steps, value=20, step=1, label="steps")
                    seed = gr.Number(value=0, precision=0, label="seed")
                pins = _pin_controls()
                button = gr.Button("Predict", variant="primary", elem_id="predict")
            with gr.Column():
                overlay = gr.Video(
                    label="history + sample 0", elem_id="overlay", loop=True, height=360
                )
                grid = gr.Video(label="every sample", elem_id="grid", loop=True, height=360)
                truth = gr.Video(label="ground truth", elem_id="truth", loop=True, height=360)
                archive = gr.File(label="download: run folders, Wan-Move export, renders")
                summary = gr.Markdown(elem_id="summary")

        def predict(video, checkpoint, samples, steps, seed, board, progress=gr.Progress()):
            return _predict(jobs, video, checkpoint, samples, steps, seed, board, progress)

        _wire_pins(jobs, pins, video, checkpoint, steps)
        button.click(
            predict,
            inputs=[video, checkpoint, samples, steps, seed, pins.board],
            outputs=[overlay, grid, truth, archive, summary],
            concurrency_limit=settings.concurrency,
        )
    page.queue(default_concurrency_limit=settings.concurrency)
    return page, jobs

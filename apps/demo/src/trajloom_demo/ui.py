"""The demo's page (Gradio): pick or upload a video, choose a checkpoint, press Predict.

Requests go through Gradio's queue, ``settings.concurrency`` at a time; each writes its
own folder (:func:`trajloom_demo.jobs.run_job`). The forecasting code is imported by a
background thread once the server is up, so the page comes up without waiting for torch
and the models; the first Predict waits for that import if it is still running.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from trajloom_demo.settings import DemoSettings, checkpoint_choices, example_videos

__all__ = ["build_ui", "warm_up"]

log = logging.getLogger("trajloom_demo")

_INTRO = """# TrajLoom: see the futures of a video
Upload a video (or pick an example), choose a checkpoint, press **Predict**. The demo
tracks a grid of points through the video's first frames (the history), samples several
possible futures of their motion, and draws them over the video: history trails in cool
colours, predicted trails in warm colours. When the video is long enough, its true future
is tracked too and the futures are scored against it.
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
             seed: float, progress: gr.Progress) -> tuple[Any, ...]:  # fmt: skip
    """The Predict button: run one job; any problem is a message in the page."""
    progress(0.0, desc="starting")
    module = jobs.load()
    job = module.Job(
        video=Path(video) if video else None,
        checkpoint=checkpoint,
        num_samples=int(samples),
        steps=int(steps),
        seed=int(seed),
    )
    try:
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


def _summary_text(result: Any) -> str:
    entry = result.summary
    lines = [f"**{entry['num_samples']} futures of `{entry['id']}`** (output: `{result.folder}`)"]
    metrics = entry.get("metrics")
    if metrics:
        ade = ", ".join("-" if a is None else f"{a:.2f}" for a in metrics["ade"])
        lines.append(f"ADE per sample (px): {ade}; minADE {metrics['min_ade'] or 0:.2f} px")
    else:
        lines.append("No ground truth: the video is too short to track its true future.")
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in entry["seconds"].items())
    lines.append(
        f"Times: {seconds}. The zip holds run folders, Wan-Move export, renders, index.html."
    )
    return "\n\n".join(lines)


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
                # HOOK (issue 17, steerable futures): a gr.Image of the boundary frame whose
                # .select events collect (start, target) click pairs into a gr.State, shown
                # as a list with a Clear button, passed as Job.pins.
                button = gr.Button("Predict", variant="primary", elem_id="predict")
            with gr.Column():
                overlay = gr.Video(
                    label="history + sample 0", elem_id="overlay", loop=True, height=360
                )
                grid = gr.Video(label="every sample", elem_id="grid", loop=True, height=360)
                truth = gr.Video(label="ground truth", elem_id="truth", loop=True, height=360)
                archive = gr.File(label="download: run folders, Wan-Move export, renders")
                summary = gr.Markdown(elem_id="summary")

        def predict(video, checkpoint, samples, steps, seed, progress=gr.Progress()):
            return _predict(jobs, video, checkpoint, samples, steps, seed, progress)

        button.click(
            predict,
            inputs=[video, checkpoint, samples, steps, seed],
            outputs=[overlay, grid, truth, archive, summary],
            concurrency_limit=settings.concurrency,
        )
    page.queue(default_concurrency_limit=settings.concurrency)
    return page, jobs

"""What the demo serves: its options, the checkpoints and example videos it offers.

Nothing here imports torch or the models, so the page is up in seconds; the forecasting
code (:mod:`trajloom_demo.jobs`) is imported in the background once the server runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from trajloom.data.video import VIDEO_SUFFIXES

__all__ = ["BASELINES", "DemoSettings", "checkpoint_choices", "example_videos"]

BASELINES = ("baseline:constvel", "baseline:static")
"""Checkpoints that need no weights (``trajloom.flow.forecast``'s baselines)."""


@dataclass(frozen=True)
class DemoSettings:
    """The demo's options (``uv run apps/demo --help`` says each)."""

    out: Path = Path("demo-outputs")  # one folder per request under it
    runs: Path = Path("runs")  # trained sets of apps/train are offered from here
    examples: Path = Path("../shared/data")  # example videos, searched recursively
    checkpoints: tuple[str, ...] = ()  # more choices: released:DIR, a trained-set folder
    device: str = "auto"
    # The baselines' window (trained sets carry their own); None: trajloom.encoding's
    # defaults (832x480, stride 32, 81 + 81 frames), filled in by the jobs module.
    width: int | None = None
    height: int | None = None
    stride: int | None = None
    history: int | None = None
    future: int | None = None
    max_upload_mb: float = 200.0  # larger uploads are refused with a message
    # Decoded pixels per frame of an upload (its header, read before any frame is decoded):
    # 4K (3840x2160 = 8.3 M); a small file can hold huge frames.
    max_upload_pixels: int = 3840 * 2160
    max_samples: int = 8
    max_steps: int = 200
    max_models: int = 2  # checkpoints held in memory at once (least recently used leaves)
    concurrency: int = 2  # requests run at once (Gradio's queue); the others wait

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_upload_mb) and self.max_upload_mb > 0):
            raise ValueError(
                f"--max-upload-mb must be a finite number > 0, got {self.max_upload_mb}"
            )
        if self.max_upload_mb * 2**20 >= 2**63:
            raise ValueError(f"--max-upload-mb is too large: {self.max_upload_mb}")
        if self.max_upload_pixels < 1 or self.max_models < 1:
            raise ValueError(
                f"--max-upload-pixels and --max-models must be >= 1, got "
                f"{self.max_upload_pixels}, {self.max_models}"
            )
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.max_samples < 1 or self.max_steps < 1:
            raise ValueError(
                f"--max-samples and --max-steps must be >= 1, got {self.max_samples}, "
                f"{self.max_steps}"
            )


def checkpoint_choices(settings: DemoSettings) -> list[str]:
    """Trained sets found under ``settings.runs`` (a folder holding ``pipeline.json`` up to
    three levels down: ``load_method`` picks the set inside), the ``--checkpoint`` ones,
    then the baselines."""
    found = []
    if settings.runs.is_dir():
        for run in sorted(p for p in settings.runs.iterdir() if p.is_dir()):
            if any(any(run.glob(d + "pipeline.json")) for d in ("", "*/", "*/*/", "*/*/*/")):
                found.append(str(run))
    return [*found, *settings.checkpoints, *BASELINES]


def example_videos(settings: DemoSettings, limit: int = 12) -> list[Path]:
    """Videos under ``settings.examples`` (recursively, sorted), at most ``limit``."""
    if not settings.examples.is_dir():
        return []
    videos = sorted(p for p in settings.examples.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    return videos[:limit]

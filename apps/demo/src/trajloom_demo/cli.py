"""`uv run apps/demo [--port 7860] [--checkpoint released:DIR]`: the live demo.

Serves the page on ``--host``/``--port`` (127.0.0.1:7860: this machine only; give
``--host 0.0.0.0`` to serve a network) and prints its address and the seconds it took to
come up. Checkpoints offered: the trained sets under ``--runs``, each ``--checkpoint``
(``released:DIR``, a trained-set folder), and the baselines. Models load on first use.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from trajloom.data.outputs import OutputError, check_writable
from trajloom_demo.settings import DemoSettings

STARTED = time.perf_counter()

app = typer.Typer(add_completion=False)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 7860,
    out: Annotated[Path, typer.Option(help="One folder per request under it.")] = Path(
        "demo-outputs"
    ),
    runs: Annotated[Path, typer.Option(help="Trained sets are offered from here.")] = Path("runs"),
    examples: Annotated[Path, typer.Option(help="Example videos (searched recursively).")] = Path(
        "../shared/data"
    ),
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(help="More checkpoints to offer: released:DIR, a trained-set folder."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto (GPU when present), cpu, cuda.")] = "auto",
    width: Annotated[int | None, typer.Option(help="Baselines: working width.")] = None,
    height: Annotated[int | None, typer.Option(help="Baselines: working height.")] = None,
    stride: Annotated[int | None, typer.Option(help="Baselines: grid stride.")] = None,
    history: Annotated[int | None, typer.Option(help="Baselines: history frames.")] = None,
    future: Annotated[int | None, typer.Option(help="Baselines: future frames.")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload, MB.")] = 200.0,
    max_upload_pixels: Annotated[
        int, typer.Option(help="Largest upload frame, pixels (width x height, from its header).")
    ] = DemoSettings.max_upload_pixels,
    max_models: Annotated[
        int, typer.Option(help="Checkpoints kept loaded at once (least recently used leave).")
    ] = DemoSettings.max_models,
    concurrency: Annotated[int, typer.Option(help="Requests run at once.")] = 2,
) -> None:
    """Serve the demo until interrupted."""
    try:
        settings = DemoSettings(
            out=out, runs=runs, examples=examples, checkpoints=tuple(checkpoint or ()),
            device=device, width=width, height=height, stride=stride, history=history,
            future=future, max_upload_mb=max_upload_mb, max_upload_pixels=max_upload_pixels,
            max_models=max_models, concurrency=concurrency,
        )  # fmt: skip
        check_writable(settings.out, "--out folder")
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    except OutputError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    from trajloom_demo.ui import build_ui, warm_up

    page, jobs = build_ui(settings)
    _, url, _ = page.launch(
        server_name=host,
        server_port=port or None,
        prevent_thread_lock=True,
        allowed_paths=[str(settings.out.resolve())],
        max_file_size=int(max_upload_mb * 2**20),
        quiet=True,
    )
    typer.echo(f"TrajLoom demo at {url} (up in {time.perf_counter() - STARTED:.1f} s)")
    warm_up(jobs)
    try:
        page.block_thread()
    finally:
        page.close()


def main() -> None:
    app()

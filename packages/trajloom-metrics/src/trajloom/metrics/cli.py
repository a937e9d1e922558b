"""`trajloom-metrics score RUNS_ROOT`: every metric of a runs root, as a table and JSON.

Needs the `cli` extra (`pip install trajloom-metrics[cli]`) for typer; the library
itself needs only numpy and scipy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

try:
    import typer
except ModuleNotFoundError as err:
    raise ModuleNotFoundError(
        "the trajloom-metrics command needs typer: pip install 'trajloom-metrics[cli]'"
    ) from err

from trajloom.metrics.flowfield import DEFAULT_GRID_STRIDE
from trajloom.metrics.fvmd import FVMDConfig
from trajloom.metrics.report import json_ready
from trajloom.metrics.runs import GT_VISIBILITY, score_runs

app = typer.Typer(
    add_completion=False, help="Motion metrics of TrajLoom (FVMD, FlowTV, DivCurlE, VEPE)."
)

TABLE_ROWS = (
    ("fvmd", "FVMD (velocity + acceleration)"),
    ("fvmd_velocity", "FVMD velocity"),
    ("fvmd_acceleration", "FVMD acceleration"),
    ("flow_tv", "FlowSmoothTV"),
    ("div_curl_energy", "DivCurlEnergy"),
    ("vepe", "VEPE (px)"),
    ("num_videos", "videos"),
    ("num_windows", "FVMD clips"),
)


@app.callback()
def _root() -> None:
    """Motion metrics of TrajLoom."""


def format_table(result: dict[str, Any]) -> str:
    """Two-column text table of the summary values (`-` where a metric is null)."""
    lines = []
    width = max(len(label) for _, label in TABLE_ROWS)
    for key, label in TABLE_ROWS:
        value = result.get(key)
        text = (
            "-" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
        )
        lines.append(f"{label:<{width}}  {text}")
    lines.extend(f"note: {note}" for note in result.get("notes", []))
    return "\n".join(lines)


@app.command()
def score(
    runs_root: Annotated[Path, typer.Argument(help="A run folder or a folder of run folders.")],
    clip_len: Annotated[
        int, typer.Option(help="FVMD clip length; <= 0 or >= T: one clip (FVMD-Long).")
    ] = 24,
    clip_stride: Annotated[int, typer.Option(help="Frames between FVMD clip starts.")] = 1,
    use_gt_visibility: Annotated[
        bool, typer.Option("--use-gt-visibility", help="Gate FVMD motion vectors by visibility.")
    ] = False,
    use_visibility: Annotated[
        bool, typer.Option("--use-visibility", help="Mask FlowTV / DivCurlE by visibility.")
    ] = False,
    visibility_name: Annotated[
        str, typer.Option(help="Visibility file in each run folder.")
    ] = GT_VISIBILITY,
    grid_stride: Annotated[
        float, typer.Option(help="Grid spacing in pixels (FlowTV, DivCurlE).")
    ] = DEFAULT_GRID_STRIDE,
    exclude_t0: Annotated[
        bool, typer.Option("--exclude-t0", help="Leave frame 0 out of VEPE.")
    ] = False,
    ignore_gt_visibility: Annotated[
        bool, typer.Option("--ignore-gt-visibility", help="Do not mask VEPE.")
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full result here.")
    ] = None,
) -> None:
    """Score every run folder under RUNS_ROOT and print a table."""
    try:
        result = score_runs(
            runs_root,
            fvmd_config=FVMDConfig(clip_len=clip_len, clip_stride=clip_stride),
            use_gt_visibility=use_gt_visibility,
            use_visibility=use_visibility,
            visibility_name=visibility_name,
            grid_stride=grid_stride,
            vepe_use_visibility=not ignore_gt_visibility,
            exclude_first_frame=exclude_t0,
        )
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(format_table(result))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(json_ready(result), indent=2, allow_nan=False))
        typer.echo(f"wrote {json_out}")


def main() -> None:
    """Console entry point `trajloom-metrics`."""
    app()


if __name__ == "__main__":
    main()

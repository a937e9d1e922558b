"""`trajloom-metrics score RUNS_ROOT...`: every metric of a runs root, as a table and JSON.

Several roots are K sample folders of one method (`runs/sample_000 runs/sample_001 ...`,
or a shell glob `runs/sample_*`): best-of-K minADE / minFDE, the energy score and the sample diversity are
added, the other metrics are of the first folder. One root scores exactly as before.

Needs the `cli` extra (`pip install trajloom-metrics[cli]`) for typer; the library
itself needs only numpy and scipy.

Exit codes: 0 every run folder was scored; 1 some run folders could not be scored (each
is named on stdout and in the JSON under `failed`, counted in `num_failed`; the others
are scored); 2 nothing could be scored or written (no runs root, no run folder in it,
bad options, an unwritable `--json` folder).
"""

from __future__ import annotations

import contextlib
import json
import os
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
from trajloom.metrics.runs import GT_VISIBILITY, score_samples

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
FORECAST_ROWS = (
    ("min_ade", "minADE_{k} (px)"),
    ("min_fde", "minFDE_{k} (px)"),
    ("energy_score", "energy score (px)"),
    ("diversity", "diversity (px)"),
    ("num_videos_forecast", "videos in all {k} samples"),
)


@app.callback()
def _root() -> None:
    """Motion metrics of TrajLoom."""


def format_table(result: dict[str, Any]) -> str:
    """Two-column text table of the summary values (`-` where a metric is null)."""
    lines = []
    rows = list(TABLE_ROWS)
    if "num_samples" in result:  # several sample folders: best-of-K rows too
        k = result["num_samples"]
        rows += [(key, label.format(k=k)) for key, label in FORECAST_ROWS]
    width = max(len(label) for _, label in rows)
    for key, label in rows:
        value = result.get(key)
        text = (
            "-" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
        )
        lines.append(f"{label:<{width}}  {text}")
    lines.extend(f"note: {note}" for note in result.get("notes", []))
    lines.extend(f"FAILED {f['video']}: {f['reason']}" for f in result.get("failed", []))
    lines.append(
        f"{result.get('num_videos', 0)} run folders scored, {result.get('num_failed', 0)} failed"
    )
    return "\n".join(lines)


def _write_json_atomic(path: Path, text: str) -> None:
    """Write ``text`` through a synced temporary file and a rename (the previous file stays
    whole on a full disk). The same rule as ``trajloom.data.outputs.atomic_write_text``,
    written here because this package stands alone (numpy and scipy only)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _check_json_folder(json_out: Path) -> None:
    """Prove ``json_out``'s folder can be written before scoring (one line, exit 2)."""
    folder = json_out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        typer.echo(
            f"error: --json {json_out}: folder {folder} is not writable "
            f"({err.strerror or err}); choose another path",
            err=True,
        )
        raise typer.Exit(code=2) from None


@app.command()
def score(
    runs_roots: Annotated[
        list[Path],
        typer.Argument(
            help="A run folder or a folder of run folders; several: one per sample "
            "(e.g. runs/sample_*), adding minADE_K, minFDE_K, the energy score and diversity.",
            metavar="RUNS_ROOT",
        ),
    ],
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
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Threads: 2 computes FVMD's two halves side by side (same numbers), for "
            "a machine with an idle core.",
        ),
    ] = 1,
) -> None:
    """Score every run folder under RUNS_ROOT and print a table.

    With several RUNS_ROOTs (K sample folders of one method), also minADE_K, minFDE_K
    (best of K, px), the energy score (px) and the mean pairwise distance of the samples
    (diversity, px); a video
    missing from any sample folder is named and counted as failed.

    A run folder that cannot be scored (unreadable or empty file, NaN prediction, files
    that disagree on the points) is skipped, named and counted; exit 1 when any was.
    """
    if json_out is not None:
        _check_json_folder(json_out)
    try:
        result = score_samples(
            runs_roots,
            fvmd_config=FVMDConfig(clip_len=clip_len, clip_stride=clip_stride),
            use_gt_visibility=use_gt_visibility,
            use_visibility=use_visibility,
            visibility_name=visibility_name,
            grid_stride=grid_stride,
            vepe_use_visibility=not ignore_gt_visibility,
            exclude_first_frame=exclude_t0,
            workers=workers,
        )
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(format_table(result))
    if json_out is not None:
        try:
            _write_json_atomic(json_out, json.dumps(json_ready(result), indent=2, allow_nan=False))
        except OSError as err:
            typer.echo(
                f"error: could not write {json_out}: {err.strerror or err}; free space or "
                "choose another path",
                err=True,
            )
            raise typer.Exit(code=2) from None
        typer.echo(f"wrote {json_out}")
    if result.get("num_failed"):
        raise typer.Exit(code=1)


def main() -> None:
    """Console entry point `trajloom-metrics`."""
    app()


if __name__ == "__main__":
    main()

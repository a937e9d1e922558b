"""Command line of the train app."""

import typer

app = typer.Typer(add_completion=False, no_args_is_help=False)


@app.callback(invoke_without_command=True)
def _root() -> None:
    """Not built yet: see the project's issues."""
    typer.echo("trajloom-train: not built yet")
    raise typer.Exit(code=2)


def main() -> None:
    app()

"""Command line of the sample app."""

import typer

app = typer.Typer(add_completion=False, no_args_is_help=False)


@app.callback(invoke_without_command=True)
def _root() -> None:
    """Not built yet: see the project's issues."""
    typer.echo("trajloom-sample: not built yet")
    raise typer.Exit(code=2)


def main() -> None:
    app()

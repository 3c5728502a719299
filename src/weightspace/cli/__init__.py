"""The `weightspace` command: one group, each command parses options, builds a config and calls one function."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from weightspace.runtime.errors import WeightspaceError

app = typer.Typer(
    name="weightspace",
    help="Treat the weights of a 3D shape generator as data: interpolate, learn subspaces, "
    "sample, invert, and measure topology and geometry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """weightspace: the weights of a 3D shape generator, treated as data."""


@app.command()
def version() -> None:
    """Print the weightspace version.

    Example: weightspace version
    """
    from weightspace import __version__

    typer.echo(__version__)


def _register() -> None:
    # Explicit list of command modules; each exposes `register(app)`.
    from weightspace.cli import analyze, data, demo, evaluate, experiment, generate, train, weights

    for module in (data, analyze, train, generate, evaluate, weights, experiment, demo):
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app and turns weightspace errors into one line on stderr, exit 2."""
    _register()
    try:
        app(args=argv)
    except WeightspaceError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)

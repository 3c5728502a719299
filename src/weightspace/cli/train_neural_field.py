"""CLI command: weightspace train (neural_field) (filled in by the issue that owns it)."""

import typer


def register(app: typer.Typer) -> None:
    pass

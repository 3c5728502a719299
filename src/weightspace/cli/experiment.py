"""CLI group `weightspace experiment` (filled in by the studies issue)."""

import typer


def register(app: typer.Typer) -> None:
    pass

"""CLI command: weightspace train (latent_diffusion) (filled in by the issue that owns it)."""

import typer


def register(app: typer.Typer) -> None:
    pass

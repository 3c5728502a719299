"""CLI group `weightspace train`: one command per generator architecture."""

import os
import sys
from typing import Callable

import typer

# one --fresh for both trainers: the same name, help and behaviour (runtime.train_folder.clear_run)
FRESH_HELP = ("Start over even if --out holds a run or a checkpoint: the earlier run's checkpoint, resume state, loss log "
              "and training record there are deleted once the data and every setting have passed their checks (a refused "
              "run deletes nothing; other files stay).")


def pipe_safe_echo() -> Callable[[str], None]:
    """typer.echo for a long training run whose stdout may be closed by its reader (`... | head`): the run
    goes on silently to its checkpoint instead of dying on BrokenPipeError mid-step."""
    closed = False

    def echo(message: str) -> None:
        nonlocal closed
        if closed:
            return
        try:
            typer.echo(message)
        except BrokenPipeError:
            closed = True
            # stdout stays closed: point it at devnull so the interpreter's own flush at exit does not fail
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    return echo


def register(app: typer.Typer) -> None:
    from weightspace.cli import train_latent_diffusion, train_neural_field

    train_app = typer.Typer(help="Train a shape generator on a data folder.", no_args_is_help=True)
    train_latent_diffusion.register(train_app)
    train_neural_field.register(train_app)
    app.add_typer(train_app, name="train")

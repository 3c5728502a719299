"""CLI group `weightspace evaluate`: `evaluate generator CKPT --data DIR` for any generator kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import typer

from weightspace.runtime.errors import InputError


def _latent_diffusion_evaluator() -> Callable:
    from weightspace.generators.latent_diffusion.evaluate import evaluate_generator

    return evaluate_generator


def _neural_field_evaluator() -> Callable:
    from weightspace.generators.neural_field.evaluate import evaluate_generator

    return evaluate_generator


# An explicit kind-to-evaluator table; each entry imports its module only when used.
EVALUATORS: dict[str, Callable[[], Callable]] = {
    "latent-diffusion": _latent_diffusion_evaluator,
    "neural-field": _neural_field_evaluator,
}


def evaluate_checkpoint(checkpoint: str, data: Path, *, max_shapes: int, seed: int, device: str = "cpu") -> dict:
    """Load a generator (a folder or a shipped name) on `device` and return its figures on `data`."""
    from weightspace.generators import load_generator
    from weightspace.runtime.device import pick_device

    gen = load_generator(checkpoint, pick_device(device))
    kind = gen.config.get("kind")
    if kind not in EVALUATORS:
        raise InputError(f"no evaluator for generator kind {kind!r}; known kinds: {sorted(EVALUATORS)}")
    return EVALUATORS[kind]()(gen, data, max_shapes=max_shapes, seed=seed)


def register(app: typer.Typer) -> None:
    evaluate_app = typer.Typer(help="Measure generators against held-out data.", no_args_is_help=True)

    @evaluate_app.command("generator")
    def generator(
        checkpoint: str = typer.Argument(..., help="Checkpoint folder, or a shipped name: default, default-field, default-64, default-points."),
        data: Path = typer.Option(..., "--data", help="Data folder (its test split is held out)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
        max_shapes: int = typer.Option(64, "--max-shapes", help="Evaluate at most this many held-out shapes."),
        seed: int = typer.Option(0, "--seed", help="Seed of every observation and sample."),
        threads: int = typer.Option(0, "--threads", help="torch threads (0 = torch's default)."),
        device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | cuda | cuda:N."),
    ) -> None:
        """Evaluate a generator: autoencoder / point-cloud / family figures and MMD, COV, 1-NNA.

        Example: weightspace evaluate generator default --data runs/data32 --json
        """
        import torch

        if max_shapes < 1:
            raise InputError(f"--max-shapes must be >= 1, got {max_shapes}")
        if threads < 0:
            raise InputError(f"--threads must be >= 0, got {threads}")
        if threads:
            torch.set_num_threads(threads)
        figures = evaluate_checkpoint(checkpoint, data, max_shapes=max_shapes, seed=seed, device=device)
        if as_json:
            typer.echo(json.dumps(figures, sort_keys=False))
        else:
            for key, value in figures.items():
                typer.echo(f"{key:22s} {value:.4f}" if isinstance(value, float) else f"{key:22s} {value}")

    app.add_typer(evaluate_app, name="evaluate")

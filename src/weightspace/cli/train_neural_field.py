"""CLI command `weightspace train neural-field`: parse options, build the configs, call the trainer."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from weightspace.cli.train import FRESH_HELP
from weightspace.runtime.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command("neural-field")
    def neural_field(
        data: Path = typer.Option(..., "--data", help="Data folder made by `weightspace data make` (uses its train split)."),
        out: Path = typer.Option(..., "--out", help="Checkpoint folder; training resumes from it when it holds one."),
        config: Optional[Path] = typer.Option(None, "--config", help='JSON file: {"model": {...}, "train": {...}} overriding defaults.'),
        minutes: Optional[float] = typer.Option(None, "--minutes", help="Wall-time budget in minutes (overrides train.minutes)."),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)."),
        fresh: bool = typer.Option(False, "--fresh", help=FRESH_HELP),
        device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | cuda | cuda:N."),
    ) -> None:
        """Train the DeepSDF-style neural-field auto-decoder (network and one code per shape), resumable.

        Example: weightspace train neural-field --data runs/data32 --out runs/nf32 --minutes 45 --threads 1

        Ctrl-C or SIGTERM stop a run after the step in flight, saved; the same command resumes it, and with --fresh starts over.
        """
        import torch

        from weightspace.generators.neural_field.config import FieldConfig, TrainConfig
        from weightspace.generators.neural_field.train import train_neural_field
        from weightspace.runtime.config import config_from_dict, json_section
        from weightspace.runtime.io import read_json

        raw = read_json(config) if config is not None else {}
        where = str(config) if config is not None else "config"
        if not isinstance(raw, dict):
            raise InputError(f"{where}: expected a JSON object with optional keys 'model' and 'train'")
        unknown = sorted(set(raw) - {"model", "train"})
        if unknown:
            raise InputError(f"{where}: unknown top-level field(s) {unknown}; valid: ['model', 'train']")
        model_raw = json_section(raw, "model", where)
        for derived in ("n_codes", "families"):
            if derived in model_raw:
                raise InputError(f"{where}: model.{derived} is set from the data folder; remove it")
        # no model section: the defaults for a new run, the run's own network for a resume
        model_cfg = config_from_dict(FieldConfig, model_raw, where=f"{where}: model") if model_raw else None
        train_raw = json_section(raw, "train", where)
        if minutes is not None:
            if not minutes > 0:
                raise InputError(f"--minutes must be > 0, got {minutes}")
            train_raw["minutes"] = float(minutes)
        train_cfg = config_from_dict(TrainConfig, train_raw, where=f"{where}: train")
        if threads is not None:
            if threads < 1:
                raise InputError(f"--threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        command = "weightspace " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        from weightspace.cli.train import pipe_safe_echo
        from weightspace.runtime.distributed import finish_ranks

        try:
            train_neural_field(data, out, model_cfg=model_cfg, train_cfg=train_cfg, command=command, resume=not fresh,
                               device=device, log=pipe_safe_echo())
        finally:
            finish_ranks()

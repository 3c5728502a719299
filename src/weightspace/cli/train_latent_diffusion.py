"""CLI command `weightspace train latent-diffusion`: parse options, build the configs, call the trainer."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional, get_args

import typer

from weightspace.cli.train import FRESH_HELP
from weightspace.runtime.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command("latent-diffusion")
    def latent_diffusion(
        data: Path = typer.Option(..., "--data", help="Data folder made by `weightspace data make` (uses its train split)."),
        out: Path = typer.Option(..., "--out", help="Checkpoint folder; training resumes from it when it holds one."),
        config: Optional[Path] = typer.Option(None, "--config", help='JSON file: {"model": {...}, "train": {...}} overriding defaults.'),
        stage: str = typer.Option("all", "--stage", help="ae | diffusion | all (autoencoder, then diffusion)."),
        minutes: Optional[float] = typer.Option(None, "--minutes", help="Wall-time budget in minutes for the stages run now (overrides train.minutes)."),
        autoencoder_from: Optional[str] = typer.Option(
            None, "--autoencoder-from", help="Start a new run from this checkpoint's trained autoencoder (a folder or `default`); "
            "its autoencoder steps and time count towards this run."),
        continue_from: Optional[str] = typer.Option(
            None, "--continue-from", help="Continue a finished checkpoint's diffusion stage in a new --out (a later piece: "
            "its weights, counters, loss log and record come along; the optimiser starts afresh). Needs --stage diffusion. "
            "The learning rate goes on at the run's position in its cosine decay (a small fraction of train.diffusion_lr late "
            "in a run) unless the config sets train.lr_schedule to \"piece\": its own warm-up and cosine."),
        fresh: bool = typer.Option(False, "--fresh", help=FRESH_HELP),
        device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | cuda | cuda:N."),
    ) -> None:
        """Train the WaLa-style latent diffusion generator (autoencoder, then diffusion), resumable.

        Example: weightspace train latent-diffusion --data runs/data32 --out runs/ld32 --minutes 55

        A new denoiser on an autoencoder already trained:
        weightspace train latent-diffusion --data runs/data32 --out runs/ld32b --autoencoder-from runs/ld32 --minutes 30

        Another piece of a finished run (e.g. the shipped default, in a later session):
        weightspace train latent-diffusion --data runs/data32a --out runs/ld32c --continue-from default --stage diffusion --minutes 30

        Ctrl-C or SIGTERM stop a run after the step in flight, saved and recorded; the same command without --autoencoder-from / --continue-from resumes it (--minutes then counts on top of what is done), and with --fresh starts over.
        """
        from weightspace.generators.latent_diffusion.config import ModelConfig, Stage, TrainConfig
        from weightspace.generators.latent_diffusion.train import train_latent_diffusion
        from weightspace.runtime.config import config_from_dict, json_section
        from weightspace.runtime.io import read_json

        if stage not in get_args(Stage):
            raise InputError(f"--stage must be one of {', '.join(get_args(Stage))}, got {stage!r}")

        raw = read_json(config) if config is not None else {}
        if not isinstance(raw, dict):
            raise InputError(f"{config}: expected a JSON object with optional keys 'model' and 'train'")
        unknown = sorted(set(raw) - {"model", "train"})
        if unknown:
            raise InputError(f"{config}: unknown top-level field(s) {unknown}; valid: ['model', 'train']")
        # no model section: the defaults for a new run, the run's own model for a resume
        model_cfg = (config_from_dict(ModelConfig, raw["model"], where=f"{config}: model") if raw.get("model") is not None
                     else None)
        train_raw = json_section(raw, "train", str(config))
        if minutes is not None:
            if not minutes > 0:
                raise InputError(f"--minutes must be > 0, got {minutes}")
            train_raw["minutes"] = float(minutes)
        train_cfg = config_from_dict(TrainConfig, train_raw, where=f"{config}: train" if config else "train")
        command = "weightspace " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        from weightspace.cli.train import pipe_safe_echo
        from weightspace.runtime.distributed import finish_ranks

        try:
            train_latent_diffusion(data, out, model=model_cfg, train=train_cfg, stage=stage, command=command,
                                   autoencoder_from=autoencoder_from, continue_from=continue_from, resume=not fresh, device=device,
                                   echo=pipe_safe_echo())
        finally:
            finish_ranks()

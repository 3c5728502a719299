"""CLI command group `weightspace convert`: import another project's released checkpoint as a weightspace checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

convert_app = typer.Typer(help="Import released checkpoints of other projects (read once, safely; written as safetensors).",
                          no_args_is_help=True)


@convert_app.command("wala")
def wala_cmd(
    folder: Path = typer.Argument(..., help="A WaLa folder: args.json + checkpoint.ckpt or model.safetensors (checkpoint.ckpt "
                                  "is read when both are there), e.g. a download of ADSKAILab/WaLa-PC-1B."),
    out: Path = typer.Option(..., "--out", help="Checkpoint folder to write: model.safetensors + config.json (kind wala)."),
    dtype: str = typer.Option("keep", "--dtype", help="keep (as stored) | float32 | float16 | bfloat16."),
    ema: bool = typer.Option(False, "--ema", help="Use the EMA weights (state_dict_ema) instead of state_dict."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Default sampling steps, 2..diffusion_step of args.json (WaLa: PC 8, "
                                        "VX 5, UN 1000); default args.json's diffusion_rescale_timestep."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a checkpoint already in --out."),
) -> None:
    """Convert a WaLa folder; no code from the checkpoint runs, unknown objects in it are reported and left inert.

    Example: weightspace convert wala ~/models/WaLa-PC-1B --out runs/wala-pc
    """
    from weightspace.generators.wala.convert import convert_wala

    report = convert_wala(folder, out, dtype=dtype, ema=ema, steps=steps, overwrite=overwrite)  # type: ignore[arg-type]
    typer.echo(f"wrote {report['out']}: WaLa {report['kind']}, {report['parameters']:,} weights ({', '.join(report['dtypes'])})")
    if report["placeholders"]:
        typer.echo(f"left inert (never called): {', '.join(report['placeholders'])}")
    if report["unused_keys"]:
        typer.echo(f"not used by inference: {len(report['unused_keys'])} key(s), e.g. {report['unused_keys'][0]}")


def register(app: typer.Typer) -> None:
    app.add_typer(convert_app, name="convert")

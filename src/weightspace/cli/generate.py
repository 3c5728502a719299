"""CLI command `weightspace generate`: shapes from any generator, conditioned on a family, a point cloud or voxels."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate(
        out: Path = typer.Option(..., "--out", help="Output folder: grids/*.npy, meshes/*, generate.json."),
        checkpoint: str = typer.Option("default", "--checkpoint", help="Checkpoint folder, or a shipped name: default, default-field, default-64, default-points."),
        family: Optional[str] = typer.Option(None, "--family", help="Condition on a shape family name."),
        points: Optional[Path] = typer.Option(None, "--points", help="Condition on a point cloud: .npy (P,3), .npz (points), or .ply/.obj/.xyz."),
        voxels: Optional[Path] = typer.Option(None, "--voxels", help="Condition on an occupancy grid .npy (V,V,V)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the first shape; shape i uses seed + i."),
        count: int = typer.Option(1, "--count", help="Number of shapes."),
        fmt: str = typer.Option("ply", "--format", help="Mesh format: ply | obj | glb."),
        resolution: Optional[int] = typer.Option(None, "--resolution", help="Output grid resolution (default: the generator's)."),
        device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | cuda | cuda:N."),
    ) -> None:
        """Generate shapes from a checkpoint and write their SDF grids and meshes.

        Example: weightspace generate --checkpoint default --family torus --seed 0 --count 4 --out runs/gen
        """
        from weightspace.experiments.generate import generate_shapes

        rows = generate_shapes(checkpoint, out, family=family, points=points, voxels=voxels, seed=seed,
                               count=count, fmt=fmt, resolution=resolution, device=device)
        for r in rows:
            typer.echo(f"{r['mesh']}  betti {tuple(r['betti'])}  {r['faces']} faces")
        typer.echo(f"wrote {len(rows)} shapes to {out}")

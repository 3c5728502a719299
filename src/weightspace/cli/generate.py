"""CLI command `weightspace generate`: shapes from any generator, conditioned on a family, a point cloud or voxels."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from weightspace.runtime.errors import InputError

CONDITION_POINTS = "condition_points.npy"  # the normalised points the generator was conditioned on
TRANSFORM = "transform.json"


def _normalised_condition(scan: Path, out: Path, *, seed: int, margin: float):
    """Read a scan, normalise it as `data import` does and save the points the generator will see."""
    import numpy as np

    from weightspace.data.normalise import normalise_scan, read_scan
    from weightspace.runtime.io import atomic_path

    points, mesh = read_scan(scan, seed=seed)
    normalised, norm = normalise_scan(points, mesh, margin=margin)  # (P, 3) float32
    with atomic_path(out / CONDITION_POINTS) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, normalised, allow_pickle=False)
    return out / CONDITION_POINTS, norm


def _record_frame(out: Path, rows: list[dict], scan: Path, norm, *, margin: float, original_frame: bool, fmt: str) -> None:
    """Write transform.json, map the meshes to the scan's frame if asked, and say both in generate.json."""
    import numpy as np

    from weightspace.data.normalise import to_original, transform_record
    from weightspace.decode.mesh import grid_to_mesh
    from weightspace.runtime.io import atomic_path, atomic_write_json, read_json

    atomic_write_json(out / TRANSFORM, transform_record(norm, margin, scan))
    if original_frame:
        for r in rows:  # the mesh generate_shapes wrote, remade from its grid and moved to the scan's frame
            mesh = grid_to_mesh(np.load(out / r["grid"], allow_pickle=False))
            mesh.vertices = to_original(mesh.vertices, norm)  # (V, 3) scan units
            with atomic_path(out / r["mesh"]) as tmp:
                mesh.export(str(tmp), file_type=fmt)
    summary = read_json(out / "generate.json")
    summary["condition"] = {"points": str(scan), "condition_points": CONDITION_POINTS, "transform": TRANSFORM}
    summary["mesh_frame"] = "original" if original_frame else "normalised"
    atomic_write_json(out / "generate.json", summary)


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate(
        out: Path = typer.Option(..., "--out", help="Output folder: grids/*.npy, meshes/*, generate.json."),
        checkpoint: str = typer.Option("default", "--checkpoint", help="Checkpoint folder, or a shipped name: default, default-field, default-64, default-points."),
        family: Optional[str] = typer.Option(None, "--family", help="Condition on a shape family name."),
        points: Optional[Path] = typer.Option(None, "--points", help="Condition on a scan at any scale and pose: a mesh (.obj/.ply/.stl/.off/.glb) or a point cloud (.npy (P,3), .npz, .ply, .xyz); normalised as `data import` normalises meshes, the transform in transform.json."),
        voxels: Optional[Path] = typer.Option(None, "--voxels", help="Condition on an occupancy grid: .npy (V,V,V), nonzero = solid, or .binvox."),
        seed: int = typer.Option(0, "--seed", help="Seed of the first shape; shape i uses seed + i."),
        count: int = typer.Option(1, "--count", help="Number of shapes."),
        fmt: str = typer.Option("ply", "--format", help="Mesh format: ply | obj | glb."),
        resolution: Optional[int] = typer.Option(None, "--resolution", help="Output grid resolution (default: the generator's)."),
        original_frame: bool = typer.Option(False, "--original-frame", help="With --points: write the meshes in the scan's frame (its position and scale) instead of the normalised one; grids stay normalised."),
        margin: Optional[float] = typer.Option(None, "--margin", help="With --points: the margin of the normalised box, as in `data import --margin` (default 0.1)."),
        steps: Optional[int] = typer.Option(None, "--steps", help="Latent diffusion: DDIM steps (default: the checkpoint's sample_steps)."),
        guidance: Optional[float] = typer.Option(None, "--guidance", help="Latent diffusion: classifier-free guidance (default: the checkpoint's)."),
        device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | cuda | cuda:N."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace the shapes an earlier generate wrote to --out (its files go once the new ones are written)."),
    ) -> None:
        """Generate shapes from a checkpoint and write their SDF grids and meshes.

        Each line gives a mesh and the Betti numbers of its SDF grid (generate.json: `betti`, and `betti_of`
        says so); the mesh's own can differ, `weightspace analyze topology` on the mesh file measures them.

        Example: weightspace generate --checkpoint default --family torus --seed 0 --count 4 --out runs/gen
        Example: weightspace generate --points scan.ply --original-frame --out runs/scan
        """
        from weightspace.data.grid import check_resolution
        from weightspace.experiments.generate import earlier_output, generate_shapes

        if resolution is not None:
            check_resolution(resolution)  # the floor data make and data import keep too
        earlier = earlier_output(out, overwrite=overwrite)  # refused before anything is written
        if points is None and original_frame:
            raise InputError("--original-frame maps meshes back to a scan's frame: give the scan with --points")
        if points is None and margin is not None:
            raise InputError("--margin sizes the box a scan is normalised into: give the scan with --points")
        margin = 0.1 if margin is None else margin
        norm = None
        if points is not None and family is None and voxels is None:
            condition, norm = _normalised_condition(points, out, seed=seed, margin=margin)
        else:
            condition = points  # generate_shapes refuses the combination by name
        rows = generate_shapes(checkpoint, out, family=family, points=condition, voxels=voxels, seed=seed,
                               count=count, fmt=fmt, resolution=resolution, device=device, steps=steps, guidance=guidance,
                               earlier=earlier)
        if norm is not None:
            _record_frame(out, rows, points, norm, margin=margin, original_frame=original_frame, fmt=fmt)
        for r in rows:  # the grid's Betti numbers, not the mesh's (they can differ): said on the line itself
            typer.echo(f"{r['mesh']}  {r['faces']} faces  grid betti {tuple(r['betti'])}")
        typer.echo(f"wrote {len(rows)} shapes to {out} (grid betti: of grids/NAME.npy; a mesh's own: weightspace analyze topology MESH)")

"""CLI command `weightspace generate`: shapes from any generator, conditioned on a family, a point cloud or voxels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from weightspace.runtime.errors import InputError

MESH_FORMATS = ("ply", "obj", "glb")


def read_points_file(path: Path) -> np.ndarray:
    """A point cloud from .npy (P, 3), .npz (key `points`), or a mesh / cloud file trimesh reads (its vertices)."""
    if not path.is_file():
        raise InputError(f"{path}: points file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            pts = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "points" not in z:
                    raise InputError(f"{path}: .npz has no array named 'points' (found {sorted(z.files)})")
                pts = z["points"]
        else:
            import trimesh

            pts = np.asarray(trimesh.load(path, process=False).vertices)
    except InputError:
        raise
    except Exception as e:  # numpy / trimesh raise many types for a bad file; report it by name
        raise InputError(f"{path}: cannot read a point cloud ({type(e).__name__}: {e})") from None
    pts = np.asarray(pts, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise InputError(f"{path}: expected points of shape (P, 3) with P >= 1, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise InputError(f"{path}: points contain NaN or infinite values")
    return pts  # (P, 3)


def read_voxels_file(path: Path) -> np.ndarray:
    """An occupancy grid from .npy (V, V, V), nonzero = solid (bool or numbers)."""
    if not path.is_file():
        raise InputError(f"{path}: voxels file not found")
    try:
        vox = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read a .npy occupancy grid ({e})") from None
    if vox.ndim != 3 or len(set(vox.shape)) != 1:
        raise InputError(f"{path}: expected a cubic occupancy grid (V, V, V), got shape {vox.shape}")
    return (np.asarray(vox) != 0).astype(np.float32)  # (V, V, V)


def generate_shapes(
    checkpoint: str, out: Path, *, family: str | None, points: Path | None, voxels: Path | None,
    seed: int, count: int, fmt: str, resolution: int | None, device: str = "cpu",
) -> list[dict]:
    """Generate `count` shapes (seeds seed..seed+count-1) and write grids, meshes and generate.json."""
    import torch

    from weightspace.analysis import topology
    from weightspace.decode.mesh import grid_to_mesh
    from weightspace.generators import load_generator
    from weightspace.runtime.device import pick_device
    from weightspace.runtime.io import atomic_path, atomic_write_json

    given = [n for n, v in (("--family", family), ("--points", points), ("--voxels", voxels)) if v is not None]
    if len(given) != 1:
        raise InputError(f"give exactly one of --family, --points, --voxels (got {', '.join(given) or 'none'})")
    if count < 1:
        raise InputError(f"--count must be >= 1, got {count}")
    if fmt not in MESH_FORMATS:
        raise InputError(f"--format must be one of {', '.join(MESH_FORMATS)}, got {fmt!r}")
    gen = load_generator(checkpoint, pick_device(device))
    # One seed per item, for the condition (a neural field draws its family code from it) and the decode.
    seeds = [seed + i for i in range(count)]
    with torch.no_grad():
        if family is not None:
            cond = gen.condition(family=[family] * count, seeds=seeds)
        elif points is not None:
            pts = torch.from_numpy(read_points_file(points)).unsqueeze(0).expand(count, -1, -1)
            cond = gen.condition(points=pts, seeds=seeds)
        else:
            vox = torch.from_numpy(read_voxels_file(voxels)).unsqueeze(0).expand(count, -1, -1, -1)
            cond = gen.condition(voxels=vox, seeds=seeds)
        grids = gen.sdf_grid(cond, seeds, resolution=resolution).cpu().numpy()  # (count, R, R, R)
    rows = []
    for i, (s, grid) in enumerate(zip(seeds, grids)):
        name = f"{i:03d}-seed{s}"
        with atomic_path(out / "grids" / f"{name}.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, grid.astype(np.float32), allow_pickle=False)
        mesh = grid_to_mesh(grid)
        with atomic_path(out / "meshes" / f"{name}.{fmt}") as tmp:
            mesh.export(str(tmp), file_type=fmt)
        t = topology(grid)
        rows.append(dict(name=name, seed=s, grid=f"grids/{name}.npy", mesh=f"meshes/{name}.{fmt}",
                         betti=list(t.betti), vertices=int(len(mesh.vertices)), faces=int(len(mesh.faces))))
    condition = {"family": family} if family else {"points": str(points)} if points else {"voxels": str(voxels)}
    atomic_write_json(out / "generate.json", {"checkpoint": str(checkpoint), "kind": gen.config.get("kind"),
                                              "condition": condition, "shapes": rows})
    return rows


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
        rows = generate_shapes(checkpoint, out, family=family, points=points, voxels=voxels, seed=seed,
                               count=count, fmt=fmt, resolution=resolution, device=device)
        for r in rows:
            typer.echo(f"{r['mesh']}  betti {tuple(r['betti'])}  {r['faces']} faces")
        typer.echo(f"wrote {len(rows)} shapes to {out}")

"""Shapes from any generator into a folder: SDF grids, meshes and their Betti numbers, conditioned on a
family, a point cloud or voxels (what `weightspace generate` runs).

It lives with the studies because it needs every stage before them: a generator, decoding to meshes
and topology from analysis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal, get_args

import numpy as np
import torch

from weightspace.analysis import topology
from weightspace.data.condition_files import read_points_file, read_voxels_file
from weightspace.decode.mesh import grid_to_mesh
from weightspace.generators import load_generator
from weightspace.runtime.device import pick_device
from weightspace.runtime.errors import InputError
from weightspace.runtime.folders import WHAT, finish_replacing, folder_kind, named_files, start_replacing
from weightspace.runtime.io import atomic_path, atomic_write_json

MeshFormat = Literal["ply", "obj", "glb"]
RECORD = "generate.json"
# what each shape's `betti` is of: the mesh's own can differ (marching cubes joins or splits voxels that
# touch at an edge or a corner differently from the grid's 26-connected solid), and measuring it on every
# mesh is not cheap (seconds for a 64^3 decode of hundreds of parts)
BETTI_OF = ("the SDF grid (grids/NAME.npy: solid where < 0, 26-connected voxels, as `analyze topology` counts a grid); "
            "the mesh's own Betti numbers may differ: `weightspace analyze topology meshes/NAME`")


SHAPE_FILES = {"grid": "grids", "mesh": "meshes"}  # a shape row's files, and the subfolders they live in


def shape_files(seeds: list[int], fmt: str) -> list[dict[str, str]]:
    """Each shape's name and the files `generate_shapes` writes for it, in order."""
    names = [f"{i:03d}-seed{s}" for i, s in enumerate(seeds)]
    return [{"name": n, "grid": f"grids/{n}.npy", "mesh": f"meshes/{n}.{fmt}"} for n in names]


def earlier_output(out: Path, *, overwrite: bool) -> set[str]:
    """The grids and meshes an earlier `generate` listed in `out`'s generate.json (empty when there is
    none). A folder holding one is refused unless `overwrite`: its shapes would sit beside the new
    ones, half of them under the same names. Nothing is removed here: the caller puts them on record
    (`runtime.folders.start_replacing`) and removes those the new run does not rewrite once it is done."""
    from weightspace.runtime.io import read_json

    kind = folder_kind(out)
    if kind is not None:  # a checkpoint, a population, a dataset...: as check_out_folder refuses it for other commands
        raise InputError(f"--out: {out} holds {WHAT[kind]}; grids/, meshes/ and {RECORD} written there would sit among "
                         f"its files. Choose a new or empty folder")
    record = out / RECORD
    if not record.exists():
        return set()
    if not overwrite:
        raise InputError(f"{out}: already holds generated shapes ({RECORD}); pass --overwrite to replace them, "
                         f"or choose another --out")
    earlier = read_json(record)
    shapes = earlier.get("shapes", []) if isinstance(earlier, dict) else []
    return named_files(shapes if isinstance(shapes, list) else [], SHAPE_FILES)


def generate_shapes(
    checkpoint: str, out: Path, *, family: str | None, points: Path | None, voxels: Path | None,
    seed: int, count: int, fmt: MeshFormat, resolution: int | None, device: str = "cpu",
    steps: int | None = None, guidance: float | None = None, earlier: Iterable[str] = (),
) -> list[dict]:
    """Generate `count` shapes (seeds seed..seed+count-1) and write grids, meshes and generate.json.

    Exactly one of family (a name), points (a points file) or voxels (an occupancy grid file)
    conditions every shape; an unconditional generator (`gen.unconditional`) takes none. `steps` and
    `guidance` (latent diffusion only) override the checkpoint's sampler settings; generate.json
    records the ones used. `earlier`: the files an earlier generate in `out` listed (`earlier_output`),
    removed once generate.json is new unless this run rewrote them; they stay on record across a kill
    (`runtime.folders.start_replacing`) with those this run writes. Returns one row per shape: name, seed, grid
    and mesh paths, betti (of the grid, not the mesh: generate.json's `betti_of` says so), sizes.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} is a file; give a folder")
    given = [n for n, v in (("--family", family), ("--points", points), ("--voxels", voxels)) if v is not None]
    if len(given) > 1:
        raise InputError(f"give exactly one of --family, --points, --voxels (got {', '.join(given)})")
    if count < 1:
        raise InputError(f"--count must be >= 1, got {count}")
    if fmt not in get_args(MeshFormat):
        raise InputError(f"--format must be one of {', '.join(get_args(MeshFormat))}, got {fmt!r}")
    gen = load_generator(checkpoint, pick_device(device))
    if not given and not gen.unconditional:
        raise InputError(f"give exactly one of --family, --points, --voxels: {checkpoint} is a conditional {gen.kind} model")
    sampler: dict = {}
    if gen.kind == "latent-diffusion":
        sampler = gen.sampler_settings(steps, guidance)
    elif steps is not None or guidance is not None:
        raise InputError(f"--steps and --guidance set a latent diffusion sampler; {checkpoint} is a {gen.kind} checkpoint")
    # One seed per item, for the condition (a neural field draws its family code from it) and the decode.
    seeds = [seed + i for i in range(count)]
    with torch.no_grad():
        if not given:  # an unconditional model ignores its condition
            cond = torch.zeros((count, *gen.condition_shape), device=gen.device)
        elif family is not None:
            cond = gen.condition(family=[family] * count, seeds=seeds)
        elif points is not None:
            pts = torch.from_numpy(read_points_file(points)).unsqueeze(0).expand(count, -1, -1)  # (count, P, 3)
            cond = gen.condition(points=pts, seeds=seeds)
        else:
            vox = torch.from_numpy(read_voxels_file(voxels)).unsqueeze(0).expand(count, -1, -1, -1)  # (count, V, V, V)
            cond = gen.condition(voxels=vox, seeds=seeds)
        grids = gen.grids(cond, seeds, resolution=resolution, **sampler).cpu().numpy()  # (count, R, R, R)
    out.mkdir(parents=True, exist_ok=True)
    files_of = shape_files(seeds, fmt)
    recorded = start_replacing(out, set(earlier) | named_files(files_of, SHAPE_FILES), SHAPE_FILES)
    rows = []
    for s, grid, files in zip(seeds, grids, files_of):
        with atomic_path(out / files["grid"]) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, grid.astype(np.float32), allow_pickle=False)
        mesh = grid_to_mesh(grid)
        with atomic_path(out / files["mesh"]) as tmp:
            mesh.export(str(tmp), file_type=fmt)
        t = topology(grid)
        rows.append(dict(name=files["name"], seed=s, grid=files["grid"], mesh=files["mesh"], betti=list(t.betti),
                         vertices=int(len(mesh.vertices)), faces=int(len(mesh.faces))))
    condition = ({"family": family} if family else {"points": str(points)} if points else {"voxels": str(voxels)} if voxels
                 else {"unconditional": True})
    atomic_write_json(out / RECORD, {"checkpoint": str(checkpoint), "kind": gen.kind, "condition": condition,
                                     **({"sampler": sampler} if sampler else {}), "betti_of": BETTI_OF, "shapes": rows})
    finish_replacing(out, recorded, rows, SHAPE_FILES)
    return rows

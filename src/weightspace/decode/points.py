"""Decoding weight-space points: point -> SDF grid (weights swapped in, never copied) -> mesh files.

A batch of points decodes in one call when the generator has the `BatchedDecode` capability
(`sdf_grid_batched(conditions, seeds, params_batch, *, resolution)`: per-item weights, e.g. through
`torch.vmap` over `functional_call`), and item by item through `sdf_grid(..., params=...)` otherwise. Condition
points need no per-item weights, so they always decode as one batch; `decode_conditions` decodes
conditions directly (one sampler seed for all, optionally under one set of swapped-in weights).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from weightspace.decode.mesh import grid_to_mesh
from weightspace.generators.protocol import BatchedDecode, Generator
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_path, atomic_write_text
from weightspace.runtime.seeding import point_seeds  # noqa: F401 (moved to runtime.seeding; still importable here)
from weightspace.space.parameterisation import Parameterisation


def decode_points(gen: Generator, param: Parameterisation, points: torch.Tensor, seeds: Sequence[int], *,
                  resolution: int | None = None, batch_size: int = 8) -> torch.Tensor:
    """SDF grids (B, R, R, R) float32 of points (B, D), one seed per point."""
    if points.ndim != 2:
        raise InputError(f"points must be (B, D), got shape {tuple(points.shape)}")
    if len(seeds) != points.shape[0]:
        raise InputError(f"need one seed per point: {points.shape[0]} points, {len(seeds)} seeds")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    batched = gen.sdf_grid_batched if isinstance(gen, BatchedDecode) else None
    out = []
    with torch.no_grad():
        for i in range(0, points.shape[0], batch_size):
            chunk = param.check_point(points[i : i + batch_size])
            s = [int(v) for v in seeds[i : i + batch_size]]
            conds = param.conditions(chunk)
            pb = param.params_batch(chunk)
            if pb is None:
                out.append(gen.grids(conds, s, resolution=resolution))
            elif batched is not None:
                out.append(gen.check_grids(batched(conds, s, pb, resolution=resolution), s, resolution=resolution,
                                           method="sdf_grid_batched"))
            else:
                for j in range(chunk.shape[0]):
                    out.append(gen.grids(conds[j : j + 1], s[j : j + 1], params={k: v[j] for k, v in pb.items()}, resolution=resolution))
    return torch.cat(out).cpu()  # (B, R, R, R) float32, each part checked against the protocol


def decode_conditions(gen: Generator, conditions: torch.Tensor, seed: int, *, params: dict[str, torch.Tensor] | None = None,
                      batch: int = 8) -> np.ndarray:
    """Grids (B, R, R, R) float32 of conditions, every item under the same sampler seed (noise fixed)."""
    out = []
    with torch.no_grad():
        for i in range(0, conditions.shape[0], batch):
            c = conditions[i : i + batch].to(gen.device, torch.float32)
            out.append(gen.grids(c, [seed] * c.shape[0], params=params).cpu().numpy())
    return np.concatenate(out)


def decoded_rows(ids: Sequence[str]) -> list[dict[str, str]]:
    """The files `write_decoded` writes for each item: its grid and its mesh."""
    return [{"grid": f"grids/{item}.npy", "mesh": f"meshes/{item}.ply"} for item in ids]


def write_decoded(out: str | Path, grids: torch.Tensor | np.ndarray, ids: Sequence[str], seeds: Sequence[int], *,
                  extra: Sequence[dict[str, Any]] | None = None, meshes: bool = True) -> list[dict[str, Any]]:
    """Write grids/<id>.npy, meshes/<id>.ply and manifest.jsonl (one row per item) into `out`."""
    out = Path(out)
    grids = grids.numpy() if isinstance(grids, torch.Tensor) else np.asarray(grids)
    rows = []
    for i, (item, seed, files) in enumerate(zip(ids, seeds, decoded_rows(ids))):
        grid = grids[i].astype(np.float32)  # (R, R, R)
        with atomic_path(out / files["grid"]) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, grid)
        row = {"id": item, "seed": int(seed), "grid": files["grid"], "resolution": int(grid.shape[0]),
               "inside_fraction": float((grid < 0).mean())}
        if meshes:
            mesh = grid_to_mesh(grid)
            with atomic_path(out / files["mesh"]) as tmp:
                mesh.export(str(tmp), file_type="ply")
            row.update(mesh=files["mesh"], vertices=int(len(mesh.vertices)), faces=int(len(mesh.faces)))
        if extra is not None:
            row.update(extra[i])
        rows.append(row)
    atomic_write_text(out / "manifest.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return rows

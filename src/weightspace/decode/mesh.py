"""SDF grid to triangle mesh by marching cubes, in world units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from skimage.measure import marching_cubes

from weightspace.data.grid import BOX, voxel_size
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_path


def grid_to_mesh(grid: np.ndarray, level: float = 0.0) -> trimesh.Trimesh:
    """Extract the surface `sdf == level` of a grid (R, R, R) as a mesh in world units.

    Solid is where sdf < level. The grid is padded with one layer of outside values so that
    shapes touching the box still give closed surfaces. A grid with nothing solid gives an empty
    mesh (no vertices), not an error; a grid solid everywhere gives the box's boundary, up to half a
    voxel beyond the outer samples, as `analysis.topology` counts it: one solid, (1, 0, 0).

    Returns
    -------
    mesh : trimesh.Trimesh with vertices (V, 3) float64 in [-1, 1]^3 and outward normals.
    """
    grid = np.asarray(grid)
    if grid.ndim != 3 or len(set(grid.shape)) != 1:
        raise InputError(f"grid must be a cube (R, R, R), got shape {grid.shape}")
    if not np.isfinite(grid).all():
        raise InputError("grid contains NaN or infinite values")
    inside = grid < level
    if not inside.any():
        return trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=np.int64), process=False)
    if inside.all():  # nothing above the level: mirror the deepest value, so the box crosses it at most half a voxel out
        outside_value = max(2 * level - float(grid.min()), level + 1e-3)
    else:
        outside_value = max(float(grid.max()), level + 1e-3)
    padded = np.pad(grid.astype(np.float32), 1, mode="constant", constant_values=outside_value)  # (R+2,)^3
    h = voxel_size(grid.shape[0])
    verts, faces, normals, _ = marching_cubes(padded, level=level, spacing=(h, h, h))
    verts = verts - h - BOX  # undo the padding, move the origin to the box corner
    # skimage's default winding (gradient_direction="descent") already faces outward for a
    # field that is low inside, as an SDF is: the mesh of a ball has positive volume.
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=True)
    return mesh


def write_mesh(grid: np.ndarray, path: str | Path) -> trimesh.Trimesh:
    """Write the marching-cubes mesh of a grid as PLY, atomically, and return it; an empty grid writes a well-formed
    empty mesh file (what `analyze` reads as the empty shape), so every item of a folder has its file."""
    mesh = grid_to_mesh(grid)
    with atomic_path(path) as tmp:
        mesh.export(str(tmp), file_type="ply")
    return mesh


def save_mesh(grid: np.ndarray, path: str | Path) -> None:
    """Marching-cubes mesh of a grid as PLY (an empty grid writes nothing)."""
    mesh = grid_to_mesh(grid)
    if len(mesh.faces):
        with atomic_path(path) as tmp:
            mesh.export(str(tmp), file_type="ply")

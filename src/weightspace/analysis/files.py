"""Analysis of files on disk: load grids (.npy) and meshes, then measure topology or compare two shapes (what `weightspace analyze` calls).

Accepted inputs:
- ``.npy`` grids (X, Y, Z): bool = occupancy, numeric = SDF (solid where value < level). The
  project's dataset grids (``grids/<id>.npy``, (R, R, R) float32 truncated SDF) are such files.
  A numeric grid holding nothing but 0 and 1 is an occupancy grid saved as numbers (what voxelisers
  and ``np.save(grid.astype(np.uint8))`` write), read as bool (nonzero = solid): as a distance it would be
  empty, with nothing below level 0. Integer grids of 0 and one positive value (masks saved as 0 and 255)
  or of one value alone count too; a float grid needs both 0 and 1, as a truncated SDF of an empty shape
  is all one value (`data.voxels.saved_occupancy`).
- ``.binvox`` occupancy grids (ShapeNet's voxelisations; `data.voxels`), in x, y, z order; `compare_files`
  places their surface in the file's own frame (its translate and scale), as it takes a mesh file's.
- meshes that trimesh reads: ``.obj .ply .stl .off .glb .gltf``; topology comes from the mesh
  (`mesh_topology`), which requires it to be watertight, with no two surfaces crossing, for b0, b1, b2. A well-formed mesh file
  that declares no vertices and no faces (what `weightspace generate` writes when nothing decoded
  solid) is the empty shape, as a grid with nothing solid is: (0, 0, 0), ``empty`` true.
- folders, for `analyze_files`: the grid and mesh files under them, sorted, less the point arrays
  weightspace writes beside shapes (`NOT_SHAPES`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import trimesh

from weightspace.analysis.geometry import DEFAULT_TAU, compare, iou
from weightspace.analysis.mesh_topology import mesh_topology
from weightspace.analysis.topology import solid_mask, topology
from weightspace.data.voxels import VOXEL_FORMATS, occupancy_surface, read_binvox, saved_occupancy
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import read_npy

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
GRID_SUFFIXES = (".npy",) + VOXEL_FORMATS
# .npy files weightspace writes into its folders that hold points, not a grid: observations (N, n, 3)
# of `data observe`, the condition points (P, 3) of `generate --points`, and a dataset's stacked
# caches in .cache/ (data.dataset.CACHE). A folder scan skips them (observations measured as a grid).
NOT_SHAPES = ("observations.npy", "condition_points.npy")
CACHE_FOLDER = ".cache"


def load_grid(path: str | os.PathLike) -> np.ndarray:
    """Read a (X, Y, Z) bool or real-valued grid from a .npy file (no pickles), or a .binvox file's
    occupancy; numbers that are all 0 or 1 come back as bool occupancy. Errors name the file.

    `runtime.io.read_npy` refuses pickled objects and headers that claim more data than the file
    holds; then the grid must be 3-D, non-empty, bool or real numbers (not complex or text), no NaN.
    """
    path = Path(path)
    if path.suffix.lower() in VOXEL_FORMATS:
        return read_binvox(path)[0]
    grid = read_npy(path, what="array of numbers or bools")
    if grid.ndim != 3:
        raise InputError(f"{path}: grid must be 3D (X, Y, Z), got shape {grid.shape}")
    if min(grid.shape) < 1:
        raise InputError(f"{path}: grid is empty, shape {grid.shape}; it needs at least one sample along each axis")
    real = np.issubdtype(grid.dtype, np.integer) or np.issubdtype(grid.dtype, np.floating)
    if grid.dtype != bool and not real:
        raise InputError(f"{path}: grid must be bool (occupancy) or real numbers (SDF), got dtype {grid.dtype}")
    if grid.dtype != bool and np.isnan(grid).any():
        raise InputError(f"{path}: grid contains NaN values")
    if grid.dtype != bool and saved_occupancy(grid):
        return grid != 0
    return grid


def load_mesh(path: str | os.PathLike) -> trimesh.Trimesh:
    """Read a triangle mesh (scenes are concatenated into one mesh). Errors name the file.

    The data stage's validating reader: an empty (0-byte) or unparsable file, NaN or infinite
    vertices, faces indexing past the vertex list, vertices without faces or zero extent are refused
    with the reason (they used to measure as an empty solid, b = (0, 0, 0), which hid the broken
    file). A well-formed file declaring no vertices and no faces is the empty surface: a Trimesh
    with (0, 3) vertices and faces.
    """
    from weightspace.data.importer import load_mesh as validated_mesh

    return validated_mesh(path, allow_empty=True)


def _kind(path: Path) -> str:
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a grid (.npy) or mesh file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in GRID_SUFFIXES:
        return "grid"
    if suffix in MESH_SUFFIXES:
        return "mesh"
    raise InputError(f"{path}: unsupported file type {suffix!r}; expected one of {list(GRID_SUFFIXES + MESH_SUFFIXES)}")


def analyze_file(path: str | os.PathLike, level: float = 0.0) -> dict:
    """Topology of one grid or mesh file.

    Returns
    -------
    dict with ``path``, ``kind`` ("grid" or "mesh"), ``b0``, ``b1``, ``b2``, ``euler`` (of the
    solid), ``genus``, ``empty`` (nothing solid: a grid with no voxel below `level`, a mesh file
    with no vertices and no faces; then (0, 0, 0)); grids add ``component_volumes``; meshes add
    ``watertight``, ``surfaces`` and ``crossing`` (pairs of surfaces that cross: overlapping
    parts); b0..b2 are None for a mesh that is not watertight or whose surfaces cross, genus for one
    with an edge of three or more faces.
    """
    path = Path(path)
    kind = _kind(path)
    if kind == "grid":
        grid = load_grid(path)
        t = topology(grid, level=level)
        cube = len(set(grid.shape)) == 1 and grid.shape[0] >= 2  # `topology`: a cube samples [-1, 1]^3, others count voxels
        return {
            "path": str(path), "kind": kind, "b0": t.b0, "b1": t.b1, "b2": t.b2, "euler": t.euler,
            "genus": t.genus, "empty": t.b0 == 0, "component_volumes": [float(v) for v in t.component_volumes],
            "volume_units": "world ([-1, 1]^3 box)" if cube else "voxels",
        }  # fmt: skip
    mesh = load_mesh(path)
    m = mesh_topology(mesh)
    return {
        "path": str(path), "kind": kind, "b0": m.b0, "b1": m.b1, "b2": m.b2, "euler": m.solid_euler,
        "genus": m.genus, "empty": len(mesh.faces) == 0, "watertight": m.watertight, "surfaces": m.components,
        "crossing": m.crossing,
    }  # fmt: skip


def _failed(path: str | os.PathLike, error: InputError) -> dict:
    """The row of a file that could not be measured: the figures None, ``error`` the reason."""
    return {"path": str(path), "kind": None, "b0": None, "b1": None, "b2": None, "euler": None, "genus": None, "error": str(error)}


def analyze_files(paths: list[str | os.PathLike], level: float = 0.0) -> list[dict]:
    """`analyze_file` for each path, in order; a folder stands for the grid and mesh files under it
    (sorted), less the point arrays of `NOT_SHAPES` and a dataset's caches.

    A file that cannot be measured (missing, empty, unreadable, not a shape; a folder holding no
    shape file) does not stop the others: its row holds ``path``, ``error`` (the reason, naming the
    file) and None for every figure.
    """
    from weightspace.data.importer import expand_paths

    rows = []
    for given in map(Path, paths):
        if given.is_dir():
            found = [
                f for f in expand_paths([given], suffixes=GRID_SUFFIXES + MESH_SUFFIXES)
                if f.name not in NOT_SHAPES and CACHE_FOLDER not in f.relative_to(given).parts
            ]  # fmt: skip
            if not found:
                why = f"{given}: a directory holding no grid (.npy) or mesh ({' '.join(MESH_SUFFIXES)}) files"
                rows.append(_failed(given, InputError(why)))
        else:
            found = [given]
        for path in found:
            try:
                rows.append(analyze_file(path, level=level))
            except InputError as e:
                rows.append(_failed(path, e))
    return rows


def _as_mesh(path: Path, level: float) -> tuple[trimesh.Trimesh, np.ndarray | None]:
    from weightspace.decode.mesh import grid_to_mesh

    if _kind(path) == "mesh":
        return load_mesh(path), None
    if path.suffix.lower() in VOXEL_FORMATS:
        # a binvox file says where its voxels sit: its surface in that frame, as data import reads it and a
        # mesh file is compared (not the [-1, 1]^3 box of a .npy grid, which says nothing)
        occupancy, transform = read_binvox(path)
        empty = trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=np.int64), process=False)
        return (occupancy_surface(occupancy, transform) if occupancy.any() else empty), occupancy
    grid = load_grid(path)
    sdf = np.where(grid, -1.0, 1.0).astype(np.float32) if grid.dtype == bool else grid.astype(np.float32)
    if len(set(sdf.shape)) != 1 or sdf.shape[0] < 2:
        raise InputError(f"{path}: grid must be a cube (R, R, R) with R >= 2 to be meshed, got shape {sdf.shape}")
    if not np.isfinite(sdf).all():
        raise InputError(f"{path}: grid holds infinite values; meshing it needs finite SDF values (topology reads only their sign)")
    return grid_to_mesh(sdf, level=level if grid.dtype != bool else 0.0), grid


def compare_files(
    a: str | os.PathLike, b: str | os.PathLike, n: int = 10_000, seed: int = 0, tau: float = DEFAULT_TAU,
    level: float = 0.0,
) -> dict:  # fmt: skip
    """Geometry metrics between two shapes given as mesh or grid files (grids are meshed by
    marching cubes at `level`). Adds ``iou`` when both are grids of the same shape.

    Nothing is rescaled: a mesh or .binvox file is compared in its own frame and units, a .npy grid in
    the [-1, 1]^3 box it samples, so distances and `tau` are in those units.

    A grid solid everywhere at `level` is the solid box, its surface the box's boundary (as
    `analyze topology` counts it, (1, 0, 0)). A grid with nothing solid has no surface and never
    scores as a match: against a shape with a surface the distances are inf and the scores
    (fscore, precision, recall, normal_consistency, iou) 0; two such grids give NaN distances and
    scores 0, but iou 1 (`geometry.iou`'s convention: the same empty solid, voxel for voxel, as member
    fidelity and the evaluations count it). ``no_surface`` lists the paths of the inputs without a surface and
    ``solid_everywhere`` those of the grids that are the whole box (e.g. a level above every value).

    Returns the keys of `geometry.compare` plus ``a``, ``b`` (paths), ``no_surface``,
    ``solid_everywhere`` and possibly ``iou``.
    """
    pa, pb = Path(a), Path(b)
    mesh_a, grid_a = _as_mesh(pa, level)
    mesh_b, grid_b = _as_mesh(pb, level)
    no_surface = [str(p) for p, m in ((pa, mesh_a), (pb, mesh_b)) if len(m.faces) == 0]
    full = [str(p) for p, g in ((pa, grid_a), (pb, grid_b)) if g is not None and solid_mask(g, level).all()]
    out: dict = {"a": str(pa), "b": str(pb), **compare(mesh_a, mesh_b, n=n, seed=seed, tau=tau), "no_surface": no_surface, "solid_everywhere": full}
    if grid_a is not None and grid_b is not None and grid_a.shape == grid_b.shape:
        out["iou"] = iou(grid_a, grid_b, level=level)
    return out

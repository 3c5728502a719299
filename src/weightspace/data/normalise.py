"""A user's scan as a condition: read a mesh or point cloud at any scale, normalise it as `data import`
normalises training meshes, and map generated meshes back to the scan's frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from weightspace.data.condition_files import read_points_file
from weightspace.data.importer import Normalisation, box_normalisation
from weightspace.runtime.errors import InputError
from weightspace.runtime.seeding import derive_seed

SCAN_POINTS = 2048  # surface points drawn from a scan that is a mesh (the evaluation's observation size)
MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")


def read_scan(path: str | Path, *, n_points: int = SCAN_POINTS, seed: int = 0) -> tuple[np.ndarray, trimesh.Trimesh | None]:
    """The points of a scan in its own frame: points : (P, 3) float64, and the mesh when the file has faces.

    A mesh gives `n_points` surface points drawn with a seed derived from `seed` (its vertices
    alone would weight a CAD part's few corners); a point cloud (.npy, .npz, a .ply of vertices,
    .xyz) gives its points as they are.
    """
    path = Path(path)
    if n_points < 1:
        raise InputError(f"n_points must be >= 1, got {n_points}")
    if path.suffix.lower() in MESH_SUFFIXES and path.is_file():
        from weightspace.data.importer import MeshImportError, load_mesh

        try:
            mesh = load_mesh(path)  # validated: finite, indices in range, non-zero extent
        except MeshImportError as e:
            if e.code not in ("no-faces", "unreadable"):
                raise
            mesh = None  # a cloud in a mesh format (vertices only): read as points below
        if mesh is not None:
            points, _ = trimesh.sample.sample_surface(mesh, n_points, seed=derive_seed(seed, "scan", path.name) % 2**32)
            return np.asarray(points, dtype=np.float64), mesh  # (n_points, 3)
    points = read_points_file(path).astype(np.float64)  # (P, 3)
    if not np.ptp(points, axis=0).max() > 0:
        raise InputError(f"{path}: all points coincide (zero extent); nothing to normalise")
    return points, None


def normalise_scan(points: np.ndarray, mesh: trimesh.Trimesh | None = None, *, margin: float = 0.1) -> tuple[np.ndarray, Normalisation]:
    """Centre and scale a scan as `importer.normalise` does a training mesh (the bounding box of the
    mesh when given, else of the points, centred and its longest side 2 (1 - margin)).

    Returns (normalised points (P, 3) float32, the Normalisation: normalised = (v - center) * scale).
    """
    if not 0 <= margin < 1:
        raise InputError(f"--margin must be in [0, 1), got {margin}")
    lo, hi = mesh.bounds if mesh is not None else (points.min(axis=0), points.max(axis=0))  # (3,), (3,)
    norm = box_normalisation(lo, hi, margin)
    return to_normalised(points, norm).astype(np.float32), norm


def to_normalised(v: np.ndarray, norm: Normalisation) -> np.ndarray:
    """Points (n, 3) of the scan's frame -> the normalised frame: (v - center) * scale."""
    return (np.asarray(v, dtype=np.float64) - np.asarray(norm.center)) * norm.scale  # (n, 3)


def to_original(v: np.ndarray, norm: Normalisation) -> np.ndarray:
    """Points (n, 3) of the normalised frame -> the scan's frame: v / scale + center."""
    return np.asarray(v, dtype=np.float64) / norm.scale + np.asarray(norm.center)  # (n, 3)


def transform_record(norm: Normalisation, margin: float, source: str | Path) -> dict:
    """The transform as written beside generated shapes, with both directions spelled out."""
    return {"source": str(source), "center": list(norm.center), "scale": norm.scale, "margin": margin,
            "normalised": "(v - center) * scale", "original": "v / scale + center"}

"""Condition inputs from a user's files: point clouds (.npy, .npz, mesh or cloud files) and occupancy grids (.npy, .binvox)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from weightspace.runtime.errors import InputError
from weightspace.runtime.io import read_npy, read_npz


def read_points_file(path: Path) -> np.ndarray:
    """A point cloud from .npy (P, 3), .npz (key `points`), or a mesh / cloud file trimesh reads (its vertices).

    Returns points : (P, 3) float32, finite, P >= 1. A missing or bad file is an InputError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: points file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":  # the safe readers: no pickles, and headers checked against the file's size
            pts = read_npy(path, what="point cloud")
        elif suffix == ".npz":
            pts = read_npz(path, ("points",), what="point cloud")["points"]
        else:
            pts = _vertices(path)
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


def _vertices(path: Path) -> np.ndarray:
    """The vertices of whatever trimesh reads from `path`: a mesh, a point cloud, or every geometry of a
    scene (transforms applied). A file with none (text that is not a mesh, an empty scene) is an InputError."""
    import trimesh

    loaded = trimesh.load(path, process=False)
    parts = list(loaded.dump()) if isinstance(loaded, trimesh.Scene) else [loaded]
    vertices = [np.asarray(g.vertices).reshape(-1, 3) for g in parts if len(getattr(g, "vertices", ()))]
    if not vertices:
        raise InputError(f"{path}: no points in the file (no vertices: neither a mesh nor a point cloud)")
    return np.concatenate(vertices)  # (P, 3)


def read_voxels_file(path: Path) -> np.ndarray:
    """An occupancy grid from .npy (V, V, V), nonzero = solid (bool or numbers), or a .binvox file.

    Returns voxels : (V, V, V) float32 of 0 and 1. A missing or bad file is an InputError naming it.
    """
    from weightspace.data.voxels import VOXEL_FORMATS, read_binvox

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: voxels file not found")
    vox = read_binvox(path)[0] if path.suffix.lower() in VOXEL_FORMATS else read_npy(path, what="voxels")
    if vox.ndim != 3 or len(set(vox.shape)) != 1:
        raise InputError(f"{path}: expected a cubic occupancy grid (V, V, V), got shape {vox.shape}")
    return (np.asarray(vox) != 0).astype(np.float32)  # (V, V, V)

"""Geometry between two shapes: surface sampling, Chamfer, Hausdorff, F-score, normal consistency, volumetric IoU.

Conventions (all distances in world units of the shared [-1, 1]^3 box, side 2):

- Directed distances d(a -> b)_i = min_j |a_i - b_j| (Euclidean), by a SciPy KD-tree.
- ``chamfer_l1`` = (mean_i d(a->b)_i + mean_j d(b->a)_j) / 2 — the mean of the two directed means
  of the (unsquared) Euclidean distances, as in Occupancy Networks' "Chamfer-L1".
- ``chamfer_l2`` = (mean_i d(a->b)_i^2 + mean_j d(b->a)_j^2) / 2 — the same with squared distances
  (half of PointFlow's sum-of-means CD).
- ``hausdorff`` = max(max_i d(a->b)_i, max_j d(b->a)_j).
- ``fscore`` at tau: precision = fraction of a within tau of b, recall = fraction of b within tau
  of a, F = 2 P R / (P + R). Default tau = 0.02 world units = 1% of the box side (the usual "1%
  of the unit cube" threshold scaled to our side-2 box); at 32^3 one voxel is 0.065.
- ``normal_consistency`` = (mean_i |n_a_i . n_b_nn(i)| + mean_j |n_b_j . n_a_nn(j)|) / 2, with
  the absolute value so that the face orientation of either mesh does not matter.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from weightspace.analysis.topology import solid_mask
from weightspace.runtime.errors import InputError
from weightspace.runtime.seeding import derive_seed

DEFAULT_TAU = 0.02


def _points(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise InputError(f"{name} must be a point array (n, 3), got shape {x.shape}")
    if x.shape[0] == 0:
        raise InputError(f"{name} has no points")
    if not np.isfinite(x).all():
        raise InputError(f"{name} contains NaN or infinite coordinates")
    return x


def sample_surface(mesh: trimesh.Trimesh, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Uniform (area-weighted) random points on a mesh surface, with the normals of their faces.

    Parameters
    ----------
    mesh : trimesh.Trimesh with at least one face of positive area
    n : int, number of points
    seed : int; the same (mesh, n, seed) gives the same points

    Returns
    -------
    points : (n, 3) float64
    normals : (n, 3) float64 unit face normals (orientation as stored in the mesh)
    """
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    if len(mesh.faces) == 0 or not mesh.area > 0:
        raise InputError("mesh has no surface to sample (no faces or zero area)")
    points, face_index = trimesh.sample.sample_surface(mesh, int(n), seed=derive_seed(seed, "sample_surface"))
    return np.asarray(points, dtype=np.float64), np.asarray(mesh.face_normals[face_index], dtype=np.float64)


def directed_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour distances a -> b (n,) and b -> a (m,), plus nothing else: the building block
    of every metric here. a : (n, 3), b : (m, 3)."""
    a, b = _points(a, "a"), _points(b, "b")
    d_ab, _ = cKDTree(b).query(a, k=1)  # (n,)
    d_ba, _ = cKDTree(a).query(b, k=1)  # (m,)
    return d_ab, d_ba


def chamfer(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Chamfer distances between point sets a (n, 3) and b (m, 3).

    Returns
    -------
    dict with ``chamfer_l1`` (mean of the two directed mean Euclidean distances) and
    ``chamfer_l2`` (mean of the two directed mean squared distances), world units (squared for l2).
    """
    d_ab, d_ba = directed_distances(a, b)
    return {
        "chamfer_l1": float((d_ab.mean() + d_ba.mean()) / 2),
        "chamfer_l2": float(((d_ab**2).mean() + (d_ba**2).mean()) / 2),
    }


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance: the max of the two directed maxima. a (n, 3), b (m, 3)."""
    d_ab, d_ba = directed_distances(a, b)
    return float(max(d_ab.max(), d_ba.max()))


def fscore(a: np.ndarray, b: np.ndarray, tau: float = DEFAULT_TAU) -> float:
    """F-score at distance tau (world units; default 0.02 = 1% of the box side) of a against b.

    precision = fraction of a within tau of b, recall = fraction of b within tau of a.
    Returns 0.0 when both are 0.
    """
    if not tau > 0:
        raise InputError(f"tau must be > 0, got {tau}")
    d_ab, d_ba = directed_distances(a, b)
    precision, recall = float((d_ab <= tau).mean()), float((d_ba <= tau).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def normal_consistency(a: np.ndarray, na: np.ndarray, b: np.ndarray, nb: np.ndarray) -> float:
    """Mean absolute cosine between each point's normal and its nearest neighbour's normal, both ways.

    a, na : (n, 3) points and unit normals; b, nb : (m, 3). In [0, 1], 1 = identical orientation.
    """
    a, b = _points(a, "a"), _points(b, "b")
    na, nb = np.asarray(na, dtype=np.float64), np.asarray(nb, dtype=np.float64)
    if na.shape != a.shape or nb.shape != b.shape:
        raise InputError(f"normals must match their points: {na.shape} vs {a.shape}, {nb.shape} vs {b.shape}")
    _, i_ab = cKDTree(b).query(a, k=1)  # (n,)
    _, i_ba = cKDTree(a).query(b, k=1)  # (m,)
    c_ab = np.abs(np.einsum("ij,ij->i", na, nb[i_ab]))
    c_ba = np.abs(np.einsum("ij,ij->i", nb, na[i_ba]))
    return float((c_ab.mean() + c_ba.mean()) / 2)


def iou(grid_a: np.ndarray, grid_b: np.ndarray, level: float = 0.0) -> float:
    """Volumetric IoU of two solids on the same grid (SDF: solid where < level; bool: occupancy).

    grid_a, grid_b : (X, Y, Z). Two empty solids have IoU 1.0: the same (empty) set of voxels. This is
    the one convention of the project: member fidelity, the generators' evaluations and `analyze compare`
    all report it (compare's surface metrics, which need a surface to sample, are NaN and 0 there).
    """
    sa, sb = solid_mask(grid_a, level), solid_mask(grid_b, level)
    if sa.shape != sb.shape:
        raise InputError(f"grids must have the same shape to compare volumes, got {sa.shape} and {sb.shape}")
    union = np.count_nonzero(sa | sb)
    return 1.0 if union == 0 else float(np.count_nonzero(sa & sb) / union)


def compare_points(
    a: np.ndarray, b: np.ndarray, na: np.ndarray | None = None, nb: np.ndarray | None = None, tau: float = DEFAULT_TAU
) -> dict[str, float]:
    """All point metrics in one pass: chamfer_l1, chamfer_l2, hausdorff, fscore (at tau), precision,
    recall, and normal_consistency when both normal arrays are given."""
    if not tau > 0:
        raise InputError(f"tau must be > 0, got {tau}")
    a, b = _points(a, "a"), _points(b, "b")
    tree_a, tree_b = cKDTree(a), cKDTree(b)
    d_ab, i_ab = tree_b.query(a, k=1)  # (n,)
    d_ba, i_ba = tree_a.query(b, k=1)  # (m,)
    precision, recall = float((d_ab <= tau).mean()), float((d_ba <= tau).mean())
    out = {
        "chamfer_l1": float((d_ab.mean() + d_ba.mean()) / 2),
        "chamfer_l2": float(((d_ab**2).mean() + (d_ba**2).mean()) / 2),
        "hausdorff": float(max(d_ab.max(), d_ba.max())),
        "fscore": 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall),
        "precision": precision,
        "recall": recall,
        "tau": float(tau),
    }
    if na is not None and nb is not None:
        c_ab = np.abs(np.einsum("ij,ij->i", np.asarray(na, dtype=np.float64), np.asarray(nb, dtype=np.float64)[i_ab]))
        c_ba = np.abs(np.einsum("ij,ij->i", np.asarray(nb, dtype=np.float64), np.asarray(na, dtype=np.float64)[i_ba]))
        out["normal_consistency"] = float((c_ab.mean() + c_ba.mean()) / 2)
    return out


def compare(
    mesh_a: trimesh.Trimesh, mesh_b: trimesh.Trimesh, n: int = 10_000, seed: int = 0, tau: float = DEFAULT_TAU
) -> dict[str, float]:
    """Geometry metrics between two meshes from n seeded surface samples each.

    Returns the keys of `compare_points` (with normal_consistency). An empty mesh (no faces) never
    scores as a match: against a non-empty one the distances are inf, against another empty one
    they are NaN (no points to measure), and the scores are 0 either way.
    """
    empty_a, empty_b = len(mesh_a.faces) == 0, len(mesh_b.faces) == 0
    if empty_a or empty_b:
        d, s = (float("nan") if empty_a and empty_b else float("inf")), 0.0
        keys_d = ("chamfer_l1", "chamfer_l2", "hausdorff")
        keys_s = ("fscore", "precision", "recall", "normal_consistency")
        return {**{k: d for k in keys_d}, **{k: s for k in keys_s}, "tau": float(tau)}
    pa, na = sample_surface(mesh_a, n, seed=derive_seed(seed, "a"))
    pb, nb = sample_surface(mesh_b, n, seed=derive_seed(seed, "b"))
    return compare_points(pa, pb, na, nb, tau=tau)

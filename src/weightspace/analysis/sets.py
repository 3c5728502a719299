"""Distribution metrics between a generated set and a reference set of shapes: MMD, COV, 1-NNA, and a novelty audit.

Protocol (PointFlow, Yang et al. 2019, Sec. 5; used again by HyperDiffusion): every shape is a
point cloud (n, 3) sampled from its surface; the distance between two shapes is a Chamfer
distance (`geometry.chamfer`; default ``chamfer_l2``, the mean of the two directed mean squared
distances). With D the |G| x |R| matrix of generated-to-reference distances:

- MMD = mean over reference shapes r of min over generated g of D[g, r] (lower is better).
- COV = fraction of reference shapes that are the nearest reference of at least one generated
  shape (higher is better).
- 1-NNA = accuracy of the leave-one-out 1-nearest-neighbour classifier that labels each shape of
  G u R as generated or reference (50% is ideal; 100% means the sets are told apart perfectly).

Normalisation. The shapes are compared in the world units of the project's shared [-1, 1]^3 box
with no per-shape rescaling (``normalize="none"``, the default), since every stage already works
in that box and a rescale would hide scale errors. ``normalize="unit_sphere"`` instead centres
each cloud at its mean and scales it to max radius 1, as PointFlow does for ShapeNet.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from scipy.spatial import cKDTree

from weightspace.runtime.errors import InputError

Metric = Literal["chamfer_l2", "chamfer_l1"]
Normalize = Literal["none", "unit_sphere"]


def _check_cloud(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape[0] == 0:
        raise InputError(f"{name} must be a non-empty point cloud (n, 3), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError(f"{name} contains NaN or infinite coordinates")
    return x


def prepare_clouds(clouds: list[np.ndarray], name: str, normalize: Normalize) -> list[np.ndarray]:
    """The clouds checked ((n, 3), finite; `name`[i] in the error) as float64, normalised as asked."""
    if normalize not in get_args(Normalize):
        raise InputError(f"normalize must be one of {list(get_args(Normalize))}, got {normalize!r}")
    if len(clouds) == 0:
        raise InputError(f"{name} is empty: need at least one point cloud")
    out = []
    for i, c in enumerate(clouds):
        c = _check_cloud(c, f"{name}[{i}]")
        if normalize == "unit_sphere":
            c = c - c.mean(axis=0)
            c = c / max(float(np.linalg.norm(c, axis=1).max()), 1e-12)
        out.append(c)
    return out


def _pair_distance(x: np.ndarray, y: np.ndarray, tree_x: cKDTree, tree_y: cKDTree, power: int) -> float:
    d_xy, _ = tree_y.query(x, k=1)  # (n,)
    d_yx, _ = tree_x.query(y, k=1)  # (m,)
    return float(((d_xy**power).mean() + (d_yx**power).mean()) / 2)


def _power(metric: Metric) -> int:
    if metric not in get_args(Metric):
        raise InputError(f"metric must be one of {list(get_args(Metric))}, got {metric!r}")
    return 2 if metric == "chamfer_l2" else 1


def distance_matrix(a: list[np.ndarray], b: list[np.ndarray], metric: Metric = "chamfer_l2") -> np.ndarray:
    """Chamfer distances between every cloud of a and every cloud of b: (len(a), len(b)) float64.

    One KD-tree per cloud is built once and reused for all pairs.
    """
    power = _power(metric)
    trees_a = [cKDTree(x) for x in a]
    trees_b = [cKDTree(y) for y in b]
    d = np.empty((len(a), len(b)))  # (|a|, |b|)
    for i, x in enumerate(a):  # loop over shapes (tens to hundreds), not points
        for j, y in enumerate(b):
            d[i, j] = _pair_distance(x, y, trees_a[i], trees_b[j], power)
    return d


def self_distances(clouds: list[np.ndarray], metric: Metric) -> np.ndarray:
    """Symmetric (k, k) matrix of Chamfer distances within one set, zero diagonal; each pair once."""
    power = _power(metric)
    trees = [cKDTree(x) for x in clouds]
    d = np.zeros((len(clouds), len(clouds)))  # (k, k)
    for i in range(len(clouds)):
        for j in range(i + 1, len(clouds)):
            d[i, j] = d[j, i] = _pair_distance(clouds[i], clouds[j], trees[i], trees[j], power)
    return d


def nna_hits(d_gg: np.ndarray, d_gr: np.ndarray, d_rr: np.ndarray) -> np.ndarray:
    """1-NNA's leave-one-out test, cloud by cloud: (G + R,) bool, generated clouds first, True where a
    cloud's nearest other cloud is from its own set. Its mean is 1-NNA.

    d_gg (G, G), d_gr (G, R), d_rr (R, R): distances within and between the sets (diagonals ignored)."""
    full = np.block([[d_gg, d_gr], [d_gr.T, d_rr]])  # (G+R, G+R)
    np.fill_diagonal(full, np.inf)
    labels = np.r_[np.zeros(len(d_gg), dtype=bool), np.ones(len(d_rr), dtype=bool)]  # True = reference
    return labels[full.argmin(axis=1)] == labels


SET_MIN_SHAPES = 8  # below this many shapes on either side, MMD, COV and 1-NNA say little


def set_caveat(n_generated: int, n_reference: int) -> str | None:
    """A warning to print beside MMD, COV and 1-NNA of sets this small (fewer than SET_MIN_SHAPES shapes on
    either side), else None. With one shape each, 1-NNA is 0 and COV 1 whatever the shapes are."""
    if min(n_generated, n_reference) >= SET_MIN_SHAPES:
        return None
    return (f"{n_generated} generated and {n_reference} reference shapes: MMD, COV and 1-NNA of fewer than "
            f"{SET_MIN_SHAPES} shapes a side say little (with 1 each, 1-NNA is 0 and COV 1 for any shapes)")


def set_metrics(
    generated: list[np.ndarray],
    reference: list[np.ndarray],
    metric: Metric = "chamfer_l2",
    normalize: Normalize = "none",
) -> dict[str, float]:
    """MMD, COV and 1-NNA of a generated set against a reference set (see the module docstring).

    Parameters
    ----------
    generated : list of (n_i, 3) float point clouds
    reference : list of (m_j, 3) float point clouds
    metric : "chamfer_l2" (default) or "chamfer_l1"
    normalize : "none" (default, world units) or "unit_sphere"

    Returns
    -------
    dict with ``mmd`` (world units, squared for chamfer_l2), ``cov`` in [0, 1], ``nna`` in [0, 1],
    plus ``n_generated``, ``n_reference`` and the ``metric`` name.
    """
    g = prepare_clouds(generated, "generated", normalize)
    r = prepare_clouds(reference, "reference", normalize)
    d_gr = distance_matrix(g, r, metric)  # (G, R)
    mmd = float(d_gr.min(axis=0).mean())
    cov = float(len(np.unique(d_gr.argmin(axis=1))) / len(r))
    nna = float(nna_hits(self_distances(g, metric), d_gr, self_distances(r, metric)).mean())
    return {"mmd": mmd, "cov": cov, "nna": nna, "n_generated": len(g), "n_reference": len(r), "metric": metric}


def novelty(
    generated: list[np.ndarray],
    reference: list[np.ndarray],
    metric: Metric = "chamfer_l2",
    normalize: Normalize = "none",
) -> dict[str, object]:
    """Novelty audit: each generated shape's nearest reference shape and the distance to it.

    Returns
    -------
    dict with
    ``nearest`` : (G,) int64 index into reference,
    ``distance`` : (G,) float64 Chamfer distance to that nearest reference,
    ``reference_nn`` : (R,) float64 each reference shape's distance to its nearest *other*
    reference (a scale: a generated shape much closer to a reference than references are to each
    other is a near copy), nan when there is only one reference,
    ``ratio`` : (G,) float64 distance / median(reference_nn).
    """
    g = prepare_clouds(generated, "generated", normalize)
    r = prepare_clouds(reference, "reference", normalize)
    d_gr = distance_matrix(g, r, metric)  # (G, R)
    nearest = d_gr.argmin(axis=1)
    distance = d_gr[np.arange(len(g)), nearest]
    if len(r) > 1:
        d_rr = self_distances(r, metric)
        np.fill_diagonal(d_rr, np.inf)
        reference_nn = d_rr.min(axis=1)
    else:
        reference_nn = np.array([np.nan])
    scale = float(np.median(reference_nn))
    ratio = distance / scale if np.isfinite(scale) and scale > 0 else np.full(len(g), np.nan)
    return {"nearest": nearest.astype(np.int64), "distance": distance, "reference_nn": reference_nn, "ratio": ratio}

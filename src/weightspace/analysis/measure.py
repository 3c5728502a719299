"""Measurements of one decoded SDF grid, and the geometry between two of them, as the studies compare them.

A *measurement* (`Shape`) is exact and robust Betti numbers, volume, components above a volume
threshold, validity flags, an SDF eikonal residual and seeded surface samples (for Chamfer and
F-score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from weightspace.analysis.geometry import compare_points, sample_surface
from weightspace.analysis.persistence import robust_betti
from weightspace.analysis.topology import topology
from weightspace.decode.mesh import grid_to_mesh

DEFAULT_VOLUME_THRESHOLD = 0.002  # world units^3 (about 7 voxels at R = 32): smaller parts are floaters
SURFACE_POINTS = 2048  # surface samples per decoded shape for Chamfer / F-score


@dataclass
class Shape:
    """One decoded grid, measured (see the module docstring)."""

    betti: tuple[int, int, int]
    robust: tuple[int, int, int]
    volume: float
    components_above: int
    inside_fraction: float
    touches_box: bool
    eikonal: float
    points: np.ndarray | None  # (n, 3) surface samples (a full grid's on the box's boundary), None for an empty grid

    @property
    def empty(self) -> bool:
        return self.points is None

    @property
    def valid(self) -> bool:
        """Non-empty, not filling the box, and not cut by the box (no solid on its faces)."""
        return not self.empty and not self.touches_box

    def row(self, prefix: str = "") -> dict[str, Any]:
        b, r = self.betti, self.robust
        return {f"{prefix}b0": b[0], f"{prefix}b1": b[1], f"{prefix}b2": b[2], f"{prefix}rb0": r[0], f"{prefix}rb1": r[1],
                f"{prefix}rb2": r[2], f"{prefix}components_above": self.components_above, f"{prefix}volume": self.volume,
                f"{prefix}valid": int(self.valid), f"{prefix}eikonal": self.eikonal}


def eikonal_residual(grid: np.ndarray, band: float | None = None) -> float:
    """Mean | |grad sdf| - 1 | over voxels near the surface (|sdf| < band), by central differences.

    A signed distance has unit gradient; a decoded field far from it (flat, noisy, exploded) is a
    cheap sign of a failed decode. Voxels whose stencil reads a truncated value are skipped.
    Returns inf when no voxel is near the surface.
    """
    R = grid.shape[0]
    h = 2.0 / (R - 1)
    band = 2.5 * h if band is None else band
    g = np.gradient(grid.astype(np.float64), h)  # 3 x (R, R, R)
    norm = np.sqrt(sum(c**2 for c in g))  # (R, R, R)
    a = np.abs(grid)
    # skip stencils that read a truncated value: the clamp flattens the field there, not the decode
    clamped = ndimage.maximum_filter(a, footprint=ndimage.generate_binary_structure(3, 1)) >= 0.98 * a.max()
    near = (a < band) & ~clamped
    near[[0, -1], :, :] = near[:, [0, -1], :] = near[:, :, [0, -1]] = False
    if not near.any():
        return float("inf")
    return float(np.abs(norm[near] - 1.0).mean())


def measure(grid: np.ndarray, *, seed: int = 0, volume_threshold: float = DEFAULT_VOLUME_THRESHOLD,
            n_points: int = SURFACE_POINTS) -> Shape:
    """Measure one SDF grid (R, R, R) (solid where < 0)."""
    grid = np.asarray(grid, dtype=np.float32)
    t = topology(grid)
    solid = grid < 0
    touches = bool(solid[[0, -1]].any() or solid[:, [0, -1]].any() or solid[:, :, [0, -1]].any())
    frac = float(solid.mean())
    pts = None
    if frac > 0.0:  # a full grid is the solid box (as `analyze compare` takes it), not a shape without a surface
        mesh = grid_to_mesh(grid)
        if len(mesh.faces) and mesh.area > 0:
            pts, _ = sample_surface(mesh, n_points, seed=seed)
    return Shape(betti=t.betti, robust=tuple(int(v) for v in robust_betti(grid)), volume=float(t.component_volumes.sum()),
                 components_above=t.components_above(volume_threshold), inside_fraction=frac, touches_box=touches,
                 eikonal=eikonal_residual(grid), points=pts)


def geometry(a: np.ndarray | None, b: np.ndarray | None) -> dict[str, float]:
    """Chamfer-L1 / L2 and F-score between two point sets; inf / 0 when exactly one is missing."""
    if a is None or b is None:
        same = a is None and b is None
        return {"chamfer_l1": 0.0 if same else float("inf"), "chamfer_l2": 0.0 if same else float("inf"),
                "fscore": 1.0 if same else 0.0}
    m = compare_points(a, b)
    return {"chamfer_l1": m["chamfer_l1"], "chamfer_l2": m["chamfer_l2"], "fscore": m["fscore"]}


def chamfer(a: np.ndarray | None, b: np.ndarray | None) -> float:
    return geometry(a, b)["chamfer_l1"]


def finite_mean(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def failed_count(values: Sequence[float | None]) -> int:
    """How many values are missing or not finite (a Chamfer-L1 of a decode with no surface is inf; results.json writes null)."""
    return sum(1 for x in values if x is None or not math.isfinite(x))


def median_counting_failures(values: Sequence[float | None]) -> float:
    """The median with each missing or non-finite value counted as +inf: a failure raises it instead of leaving
    the figure, as `finite_mean` would. inf when half or more of the values failed; NaN when there are none."""
    v = np.asarray([np.inf if x is None or not math.isfinite(x) else x for x in values], dtype=np.float64)  # (n,)
    return float(np.median(v)) if v.size else float("nan")


def finite_median(values: Sequence[float]) -> float:
    """The median of the finite values (NaN when there are none, without numpy's all-NaN warning)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")

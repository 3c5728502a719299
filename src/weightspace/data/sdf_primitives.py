"""Vectorised signed distance primitives and combinators over point arrays (world units, negative inside).

Every primitive takes `p : (N, 3) float` and returns `(N,) float`. Primitives are exact
distances; unions are exact outside and bounds inside; differences are bounds. These are
short closed forms, written here rather than taken from a library because no maintained
Python package offers vectorised analytic SDFs over NumPy arrays.
"""

from __future__ import annotations

import numpy as np


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(v * v, axis=-1))


def rotation_matrix(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation Rz(yaw) @ Ry(pitch) @ Rx(roll): (3, 3) float64."""
    cz, sz = np.cos(yaw), np.sin(yaw)
    cy, sy = np.cos(pitch), np.sin(pitch)
    cx, sx = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    return rz @ ry @ rx


def to_local(p: np.ndarray, rotation: np.ndarray, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """World points to a shape's local frame (inverse of x_world = R @ x_local + center): (N, 3)."""
    return (p - np.asarray(center)) @ rotation  # row-vector form of R^T (p - c)


def sphere(p: np.ndarray, center, radius: float) -> np.ndarray:
    return _norm(p - np.asarray(center)) - radius


def box(p: np.ndarray, center, half) -> np.ndarray:
    """Axis-aligned box with half extents `half` (3,)."""
    q = np.abs(p - np.asarray(center)) - np.asarray(half)  # (N, 3)
    outside = _norm(np.maximum(q, 0.0))
    inside = np.minimum(q.max(axis=-1), 0.0)
    return outside + inside


def rounded_box(p: np.ndarray, center, half, radius: float) -> np.ndarray:
    """Box with half extents `half` whose edges are rounded by `radius` (outer size stays `half`)."""
    return box(p, center, np.asarray(half) - radius) - radius


def capsule(p: np.ndarray, a, b, radius: float) -> np.ndarray:
    """Segment a-b swept by a ball of `radius`."""
    a = np.asarray(a, dtype=float)
    ab = np.asarray(b, dtype=float) - a
    ap = p - a  # (N, 3)
    t = np.clip(ap @ ab / float(ab @ ab), 0.0, 1.0)  # (N,)
    return _norm(ap - t[:, None] * ab) - radius


_AXES = {"x": (1, 2, 0), "y": (2, 0, 1), "z": (0, 1, 2)}


def _axis_split(p: np.ndarray, center, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """(radial distance from the axis line through center, coordinate along the axis)."""
    i, j, k = _AXES[axis]
    q = p - np.asarray(center)
    return np.hypot(q[:, i], q[:, j]), q[:, k]


def torus(p: np.ndarray, center, major: float, minor: float, axis: str = "z") -> np.ndarray:
    """Ring of centre-line radius `major` and tube radius `minor` around `axis` through `center`."""
    rho, h = _axis_split(p, center, axis)
    return np.hypot(rho - major, h) - minor


def cylinder(p: np.ndarray, center, radius: float, half_height: float, axis: str = "z") -> np.ndarray:
    """Capped solid cylinder around `axis`, centred at `center`."""
    rho, h = _axis_split(p, center, axis)
    dr = rho - radius
    dh = np.abs(h) - half_height
    outside = np.hypot(np.maximum(dr, 0.0), np.maximum(dh, 0.0))
    return outside + np.minimum(np.maximum(dr, dh), 0.0)


def union(*ds: np.ndarray) -> np.ndarray:
    out = ds[0]
    for d in ds[1:]:
        out = np.minimum(out, d)
    return out


def intersection(*ds: np.ndarray) -> np.ndarray:
    out = ds[0]
    for d in ds[1:]:
        out = np.maximum(out, d)
    return out


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum with blend width `k` (world units); k = 0 is the hard union."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1.0 - h) + a * h - k * h * (1.0 - h)


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solid a with solid b removed."""
    return np.maximum(a, -b)


def shell(d: np.ndarray, thickness: float) -> np.ndarray:
    """A wall of total `thickness` centred on the surface of d."""
    return np.abs(d) - 0.5 * thickness

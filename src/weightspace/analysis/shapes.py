"""Reference solids for checking the analysis instruments: analytic SDFs with known Betti numbers and random CSG solids.

These are the analysis stage's own calibration shapes (the procedural training families live in
`weightspace.data.families`). All SDFs take points (N, 3) in world units and return (N,) signed
distances (negative inside); they are exact or conservative bounds, which is all a voxel test needs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from weightspace.data.grid import grid_points

Sdf = Callable[[np.ndarray], np.ndarray]


def ball(center=(0.0, 0.0, 0.0), radius: float = 0.6) -> Sdf:
    """Solid ball: Betti (1, 0, 0)."""
    c = np.asarray(center, dtype=np.float64)
    return lambda p: np.linalg.norm(p - c, axis=-1) - radius


def box(center=(0.0, 0.0, 0.0), half=(0.5, 0.5, 0.5)) -> Sdf:
    """Axis-aligned solid box: Betti (1, 0, 0)."""
    c, h = np.asarray(center, dtype=np.float64), np.asarray(half, dtype=np.float64)

    def f(p: np.ndarray) -> np.ndarray:
        q = np.abs(p - c) - h  # (N, 3)
        return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)

    return f


def torus(center=(0.0, 0.0, 0.0), major: float = 0.5, minor: float = 0.2, axis: int = 2) -> Sdf:
    """Solid torus around the given axis (0, 1, 2): Betti (1, 1, 0)."""
    c = np.asarray(center, dtype=np.float64)
    plane = [i for i in range(3) if i != axis]

    def f(p: np.ndarray) -> np.ndarray:
        q = p - c  # (N, 3)
        ring = np.linalg.norm(q[:, plane], axis=-1) - major  # (N,)
        return np.sqrt(ring**2 + q[:, axis] ** 2) - minor

    return f


def union(*fs: Sdf) -> Sdf:
    """Union of solids (min of SDFs)."""
    return lambda p: np.min(np.stack([f(p) for f in fs]), axis=0)


def difference(a: Sdf, b: Sdf) -> Sdf:
    """a minus b (max(a, -b))."""
    return lambda p: np.maximum(a(p), -b(p))


def shell(center=(0.0, 0.0, 0.0), radius: float = 0.6, thickness: float = 0.2) -> Sdf:
    """Hollow spherical shell with one enclosed cavity: Betti (1, 0, 1)."""
    outer = ball(center, radius)
    return lambda p: np.abs(outer(p) + thickness / 2) - thickness / 2


def rotated(f: Sdf, rotation: np.ndarray) -> Sdf:
    """The solid f turned by the (3, 3) rotation matrix: sdf(R^T p)."""
    rot = np.asarray(rotation, dtype=np.float64)
    return lambda p: f(p @ rot)  # row vectors: (R^T p)^T = p^T R


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (3, 3) float64 (QR of a Gaussian matrix, sign fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def known_shapes() -> dict[str, tuple[Sdf, tuple[int, int, int]]]:
    """Named analytic solids with their Betti numbers (b0, b1, b2), sized for grids >= 32^3."""
    return {
        "ball": (ball(radius=0.6), (1, 0, 0)),
        "torus": (torus(major=0.5, minor=0.2), (1, 1, 0)),
        "shell": (shell(radius=0.7, thickness=0.25), (1, 0, 1)),
        "two_balls": (union(ball((-0.45, 0, 0), 0.3), ball((0.45, 0, 0), 0.3)), (2, 0, 0)),
        "double_torus": (
            union(torus((-0.42, 0, 0), 0.38, 0.16), torus((0.42, 0, 0), 0.38, 0.16)),
            (1, 2, 0),
        ),
        "linked_rings": (
            union(torus((-0.25, 0, 0), 0.45, 0.13, axis=2), torus((0.25, 0, 0), 0.45, 0.13, axis=1)),
            (2, 2, 0),
        ),
    }


def sdf_grid(f: Sdf, resolution: int) -> np.ndarray:
    """Sample an SDF on the project's grid convention: (R, R, R) float32."""
    pts = grid_points(resolution).reshape(-1, 3).astype(np.float64)  # (R^3, 3)
    return f(pts).reshape(resolution, resolution, resolution).astype(np.float32)


def _random_primitive(rng: np.random.Generator) -> Sdf:
    kind = rng.integers(4)
    center = rng.uniform(-0.6, 0.6, size=3)
    if kind == 0:
        return ball(center, rng.uniform(0.1, 0.45))
    if kind == 1:
        return box(center, rng.uniform(0.05, 0.4, size=3))
    if kind == 2:
        minor = rng.uniform(0.06, 0.15)
        return torus(center, rng.uniform(minor + 0.1, 0.5), minor, axis=int(rng.integers(3)))
    # a hollow shell: a guaranteed cavity
    return shell(center, rng.uniform(0.25, 0.5), rng.uniform(0.08, 0.15))


def random_solid(rng: np.random.Generator, resolution: int) -> np.ndarray:
    """A random CSG solid as an SDF grid (R, R, R) float32: unions and differences of 1-6 balls,
    boxes, tori (handles) and hollow shells (cavities), randomly rotated."""
    f = _random_primitive(rng)
    for _ in range(int(rng.integers(0, 6))):
        g = _random_primitive(rng)
        f = union(f, g) if rng.random() < 0.7 else difference(f, g)
    return sdf_grid(rotated(f, random_rotation(rng)), resolution)

"""The grid convention every stage shares: where grid values sit in the world box [-1, 1]^3."""

from __future__ import annotations

import numpy as np

from weightspace.runtime.errors import InputError

BOX = 1.0  # grids sample the cube [-BOX, BOX]^3
MIN_RESOLUTION = 16  # the coarsest grid a shape is made at (data make, data import, generate)


def grid_coords(resolution: int) -> np.ndarray:
    """Coordinates of the R samples along one axis: (R,) float64, from -1 to 1 inclusive."""
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    return np.linspace(-BOX, BOX, resolution)


def grid_points(resolution: int) -> np.ndarray:
    """All sample positions of an R^3 grid, indexed [x, y, z]: (R, R, R, 3) float32."""
    c = grid_coords(resolution)
    return np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1).astype(np.float32)


def voxel_size(resolution: int) -> float:
    """Spacing between neighbouring samples in world units."""
    return 2.0 * BOX / (resolution - 1)


def check_resolution(resolution: int, option: str = "--resolution") -> None:
    """Refuse a grid resolution below MIN_RESOLUTION, naming the option (one message for every command)."""
    if resolution < MIN_RESOLUTION:
        raise InputError(f"{option} must be at least {MIN_RESOLUTION} (thin parts are two voxels thick at 32), got {resolution}")

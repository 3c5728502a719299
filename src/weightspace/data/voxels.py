"""Occupancy grids in the binvox format, the voxelisations ShapeNet ships and 3D-R2N2 or IM-NET train on.

trimesh decodes them; before it does, the header and the run-length payload are checked against each
other here, because trimesh allocates whatever dense grid the header's `dim` claims and a truncated
or hand-edited file then fails deep inside numpy (or asks for terabytes) instead of naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from weightspace.runtime.errors import InputError

if TYPE_CHECKING:
    import trimesh  # imported by the functions that use it: the dataset reader imports this module

VOXEL_FORMATS = (".binvox",)
MAX_SIDE = 1024  # voxels along one axis; ShapeNet's binvox files are 128^3, the largest in use 512^3


def read_binvox(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A binvox file's occupancy and where its voxels sit.

    Returns
    -------
    occupancy : (X, Y, Z) bool, in x, y, z order (the file stores x, z, y; trimesh reorders it)
    transform : (4, 4) float64, voxel index (i, j, k, 1) to the file's world frame (its
        `translate` and `scale` lines)
    """
    from trimesh.exchange import binvox

    path = Path(path)
    try:
        with open(path, "rb") as f:
            box = binvox.parse_binvox(f)
    except Exception as e:  # trimesh's header parser raises ValueError, IndexError, UnicodeDecodeError...
        raise InputError(f"{path}: not a readable binvox file ({type(e).__name__}: {e})"[:300]) from None
    shape = tuple(int(s) for s in np.ravel(box.shape))
    # one `scale` spans every side, so binvox grids are cubes (trimesh asserts on others); a side of one
    # voxel makes trimesh's voxel size scale / (side - 1) infinite, and the import's mesh NaN
    if len(shape) != 3 or len(set(shape)) != 1 or not 2 <= shape[0] <= MAX_SIDE:
        raise InputError(f"{path}: binvox header `dim` must be three equal sides of 2 to {MAX_SIDE} voxels, got {list(shape)}")
    translate, scale = np.asarray(box.translate, dtype=np.float64), float(box.scale)
    if translate.shape != (3,) or not np.isfinite(translate).all() or not (np.isfinite(scale) and scale > 0):
        raise InputError(f"{path}: binvox header needs three finite `translate` values and a positive `scale`, "
                         f"got translate {translate.tolist()} and scale {scale}")
    rle = box.rle_data  # (2n,) uint8: value, run length, value, run length, ...
    voxels = int(np.prod(shape))
    covered = int(rle[1::2].sum(dtype=np.int64))  # the voxels the (value, run length) pairs cover
    if covered < voxels:
        raise InputError(f"{path}: binvox data holds runs covering {covered} voxels, but its header's dim {list(shape)} "
                         f"needs {voxels}: the file is truncated")
    if covered > voxels or len(rle) % 2:  # more runs, or a byte left over: data that does not belong to this header
        raise InputError(f"{path}: binvox data runs past its header's dim {list(shape)} ({voxels} voxels; {len(rle)} bytes "
                         f"covering {covered}): data past the grid's end, or a header that does not belong to it")
    grid = binvox.voxel_from_binvox(rle, shape, translate, scale)
    # binvox's convention (its format page): voxel i's centre is at translate + scale (i + 0.5) / dim, so the grid
    # spans [translate, translate + scale]; trimesh's own transform puts the first and last centres at its ends
    side = shape[0]
    transform = np.diag([scale / side] * 3 + [1.0])
    transform[:3, 3] = translate + 0.5 * scale / side
    return np.asarray(grid.matrix, dtype=bool), transform


def occupancy_surface(occupancy: np.ndarray, transform: np.ndarray) -> trimesh.Trimesh:
    """The closed surface of an occupancy grid at level 0.5 (scikit-image's marching cubes, as trimesh
    runs it, on the grid padded by a free voxel so solids touching its side are closed), in the world
    frame of `transform` (4, 4)."""
    from trimesh.voxel import ops

    mesh = ops.matrix_to_marching_cubes(matrix=occupancy)  # voxel index frame
    mesh.apply_transform(transform)
    return mesh


def saved_occupancy(grid: np.ndarray) -> bool:
    """The numeric grid is occupancy saved as numbers, not distances: it holds nothing but 0 and 1, or (integers)
    0 and one positive value, as masks saved as images are (0 and 255). Integers of one value count (all 0 is
    empty, all 1 full); a float grid needs both 0 and 1, as the truncated SDF of an empty shape is all one value.
    Read as a distance, such a grid is empty: nothing lies below level 0."""
    if np.issubdtype(grid.dtype, np.integer):
        top = grid.max()
        return bool(top >= 0 and ((grid == 0) | (grid == top)).all())
    ones = grid == 1
    return bool((ones | (grid == 0)).all() and ones.any() and not ones.all())

"""Coarse-to-fine grid decoding of the neural field: exact near the surface, the clamp value far from it.

A truncated SDF grid is +-clamp everywhere farther than `clamp` from the surface, so most of a
fine grid need not be evaluated. We evaluate f on every other vertex (plus the last), mark a coarse
cell *active* when one of its 8 corners is within `tau` of the surface (|f| < tau) or its corners
disagree in sign, evaluate f exactly at every fine vertex of the active cells, and give the others
sign(corners) * clamp. With tau = max(clamp, cell diagonal) and a field that is 1-Lipschitz like a
true SDF, a fine vertex of an inactive cell is at least `clamp` from the surface, so the result
equals the dense decode; a learnt field is only near-Lipschitz, so `tests/test_neural_field_model.py`
and the benchmark compare the two. This is the multiresolution idea of Occupancy Networks' MISE
applied to a truncated SDF. Used only for decodes without gradients.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from weightspace.data.grid import grid_coords

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (1, P, 3), (1, d_z) -> (1, P)


def coarse_indices(resolution: int, stride: int = 2) -> np.ndarray:
    """Fine-grid indices of the coarse vertices: every `stride`-th and the last, (C,) int64."""
    return np.unique(np.r_[np.arange(0, resolution, stride), resolution - 1]).astype(np.int64)


@torch.no_grad()
def adaptive_grid(field: Field, condition: torch.Tensor, resolution: int, *, clamp: float, chunk: int) -> torch.Tensor:
    """Decode conditions (B, d_z) to truncated SDF grids (B, R, R, R) float32, coarse to fine."""
    R, B, dev = resolution, condition.shape[0], condition.device
    coords = torch.from_numpy(grid_coords(R).astype(np.float32)).to(dev)  # (R,)
    idx = torch.from_numpy(coarse_indices(R)).to(dev)  # (C,)
    C = idx.shape[0]
    cc = coords[idx]
    coarse_pts = torch.stack(torch.meshgrid(cc, cc, cc, indexing="ij"), dim=-1).reshape(1, -1, 3)  # (1, C^3, 3)
    spacing = float((cc[1:] - cc[:-1]).max())
    tau = max(clamp, spacing * 3**0.5)
    # the coarse cell of every fine index along an axis
    cell = (torch.searchsorted(idx, torch.arange(R, device=dev), right=True) - 1).clamp(0, C - 2)  # (R,)
    out = torch.empty(B, R, R, R, device=dev)
    for b in range(B):
        z = condition[b : b + 1]  # (1, d_z)
        f = torch.cat([field(c, z) for c in coarse_pts.split(chunk, dim=1)], dim=1).reshape(C, C, C)
        # the 8 corners of every coarse cell: (C-1, C-1, C-1, 8)
        corners = torch.stack([f[i : C - 1 + i, j : C - 1 + j, k : C - 1 + k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], -1)
        active_cell = (corners.abs().amin(-1) < tau) | ((corners.amax(-1) > 0) & (corners.amin(-1) < 0))
        sign_cell = torch.where(corners.mean(-1) < 0, -clamp, clamp)  # (C-1,)^3
        active = active_cell[cell[:, None, None], cell[None, :, None], cell[None, None, :]]  # (R, R, R)
        grid = sign_cell[cell[:, None, None], cell[None, :, None], cell[None, None, :]].clone()  # (R, R, R)
        where = torch.nonzero(active)  # (n, 3) fine indices to evaluate exactly
        if where.shape[0]:
            pts = coords[where].unsqueeze(0)  # (1, n, 3)
            vals = torch.cat([field(c, z) for c in pts.split(chunk, dim=1)], dim=1)[0]  # (n,)
            grid[where[:, 0], where[:, 1], where[:, 2]] = vals
        out[b] = grid.clamp(-clamp, clamp)
    return out

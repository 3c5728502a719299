"""Losses of the neural field: DeepSDF's clamped L1, the code prior, and trilinear reads of target grids."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clamped_l1(pred: torch.Tensor, target: torch.Tensor, clamp: float, dim: int | None = None) -> torch.Tensor:
    """DeepSDF's clamped L1 (eq. 4) with a one-sided clamp on the prediction: the mean (scalar), or the
    mean over `dim` (per item).

    DeepSDF uses |clamp(f) - clamp(s)|, whose gradient is zero wherever |f| > delta, so a
    network whose outputs overshoot delta (as a LayerNorm MLP's do at initialisation) can stall
    with zero gradient; we saw training stop at a constant output that way. Here f is clamped
    only on the side of a target that is itself clamped: f beyond +delta costs nothing where
    s >= delta (the same as DeepSDF) and costs |f - clamp(s)| with its gradient everywhere
    else. Where both are inside [-delta, delta] the two losses are equal.
    """
    t = target.clamp(-clamp, clamp)
    p = torch.where(target >= clamp, pred.clamp(max=clamp), torch.where(target <= -clamp, pred.clamp(min=-clamp), pred))
    return (p - t).abs().mean() if dim is None else (p - t).abs().mean(dim)


def code_prior(z: torch.Tensor) -> torch.Tensor:
    """DeepSDF's code regulariser: mean over codes of ||z||^2 (a zero-mean Gaussian prior), scalar."""
    return z.pow(2).sum(-1).mean()


def mahalanobis(z: torch.Tensor, mean: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance per code under N(mean, L L^T), divided by d_z: z (B, d_z) -> (B,)."""
    diff = (z - mean).unsqueeze(-1)  # (B, d_z, 1)
    white = torch.linalg.solve_triangular(chol, diff, upper=False)  # (B, d_z, 1)
    return white.squeeze(-1).pow(2).mean(-1)


def sample_grid(grids: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear read of grids (B, R, R, R) indexed [x, y, z] over [-1, 1]^3 at points (B, P, 3) -> (B, P).

    `grid_sample` indexes its input as (D, H, W) and reads coordinates as (W, H, D) = (z, y, x), so
    the points are flipped; align_corners=True puts -1 and 1 on the first and last samples, as in
    `weightspace.data.grid`.
    """
    loc = points.flip(-1)[:, :, None, None, :]  # (B, P, 1, 1, 3)
    out = F.grid_sample(grids.unsqueeze(1), loc, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(points.shape[0], points.shape[1])  # (B, P)


def unsigned_distance(queries: torch.Tensor, points: torch.Tensor, cap: float) -> torch.Tensor:
    """Distance from each query (B, Q, 3) to its nearest observed point (B, P, 3), capped at `cap`: (B, Q)."""
    return torch.cdist(queries, points).amin(-1).clamp(max=cap)

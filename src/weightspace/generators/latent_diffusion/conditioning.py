"""Condition encoders: point clouds, coarse voxels and family labels, each to condition tokens (B, M, d).

Two layouts (ModelConfig.cond_layout): `pooled` tokens come from attention pooling and carry no
place; `grid` tokens are one per latent token, on the same cells, so the denoiser can read the
condition where it writes the shape (points scattered into a grid as in Convolutional Occupancy
Networks, Peng et al. 2020).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

VOXEL_RES = 16  # every voxel input is resampled to this resolution before the voxel encoder


def fourier_features(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """x : (..., 3) in [-1, 1] -> (..., 3 + 6 n_freqs): x, sin and cos at octave frequencies."""
    freqs = (2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)) * math.pi  # (F,)
    xf = x.unsqueeze(-1) * freqs  # (..., 3, F)
    return torch.cat([x, xf.sin().flatten(-2), xf.cos().flatten(-2)], dim=-1)  # (..., 3 + 6F)


class AttentionPool(nn.Module):
    """M learned queries attend over a set of features (B, N, c) -> (B, M, d)."""

    def __init__(self, *, feat_dim: int, n_tokens: int, token_dim: int, heads: int = 4):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_tokens, feat_dim) * 0.02)  # (M, c)
        self.norm = nn.LayerNorm(feat_dim)
        self.attn = nn.MultiheadAttention(feat_dim, heads, batch_first=True)
        self.out = nn.Linear(feat_dim, token_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        kv = self.norm(feats)  # (B, N, c)
        q = self.queries.unsqueeze(0).expand(feats.shape[0], -1, -1)  # (B, M, c)
        pooled, _ = self.attn(q, kv, kv, need_weights=False)  # (B, M, c)
        return self.out(pooled + q)  # (B, M, d)


class PointEncoder(nn.Module):
    """PointNet: per-point MLP on Fourier features, a max-pooled global feature joined back to
    each point, then attention pooling into M tokens. Points (B, P, 3) -> (B, M, d)."""

    def __init__(self, *, n_tokens: int, token_dim: int, width: int = 64, n_freqs: int = 4):
        super().__init__()
        self.n_freqs = n_freqs
        self.local = nn.Sequential(
            nn.Linear(3 + 6 * n_freqs, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.mix = nn.Sequential(nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, width))
        self.pool = AttentionPool(feat_dim=width, n_tokens=n_tokens, token_dim=token_dim)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        h = self.local(fourier_features(points, self.n_freqs))  # (B, P, w)
        g = h.max(dim=1, keepdim=True).values.expand_as(h)  # (B, P, w) global shape feature
        h = self.mix(torch.cat([h, g], dim=-1))  # (B, P, w)
        return self.pool(h)  # (B, M, d)


def downsampler(c_in: int, width: int, levels: int) -> nn.Sequential:
    """`levels` stride-2 halvings, each followed by a 3x3x3 conv (a 3x3x3 conv alone when levels is 0):
    (B, c_in, G^3) -> (B, w, (G / 2^levels)^3). Halving first keeps the cost off the fine grid."""
    layers: list[nn.Module] = []
    c = c_in
    for _ in range(levels):
        layers += [nn.Conv3d(c, width, 4, stride=2, padding=1), nn.SiLU(), nn.Conv3d(width, width, 3, padding=1), nn.SiLU()]
        c = width
    if not levels:
        layers += [nn.Conv3d(c_in, width, 3, padding=1), nn.SiLU()]
    return nn.Sequential(*layers)


def scatter_to_grid(points: torch.Tensor, feats: torch.Tensor, G: int) -> torch.Tensor:
    """Mean of per-point features (B, P, w) over the cells of a G^3 grid on [-1, 1]^3, plus a hit
    channel (points in the cell / 8, saturating): (B, w + 1, G, G, G), axis 0 = x as the grids are indexed."""
    B, _, w = feats.shape
    ijk = ((points.clamp(-1, 1) + 1) * (G / 2)).long().clamp(0, G - 1)  # (B, P, 3)
    flat = (ijk[..., 0] * G + ijk[..., 1]) * G + ijk[..., 2]  # (B, P)
    sums = feats.new_zeros(B, G**3, w).scatter_add(1, flat.unsqueeze(-1).expand_as(feats), feats)  # (B, G^3, w)
    count = feats.new_zeros(B, G**3).scatter_add(1, flat, torch.ones_like(flat, dtype=feats.dtype))  # (B, G^3)
    mean = sums / count.clamp(min=1).unsqueeze(-1)  # (B, G^3, w)
    hits = (count.clamp(max=8) / 8).unsqueeze(-1)  # (B, G^3, 1)
    return torch.cat([mean, hits], dim=-1).transpose(1, 2).reshape(B, w + 1, G, G, G)  # (B, w + 1, G, G, G)


class GridPointEncoder(nn.Module):
    """Points (B, P, 3) in [-1, 1] -> per-point MLP on Fourier features -> mean-scattered into a
    G^3 grid with a hit-count channel -> conv net down to the token cells (n^3) -> (B, n^3, d),
    tokens in the latent's cell order (x slowest, as the grids are indexed)."""

    def __init__(self, *, cells: int, token_dim: int, grid: int = 8, width: int = 64, n_freqs: int = 4):
        super().__init__()
        if grid % cells or (grid // cells) & (grid // cells - 1):
            raise ValueError(f"grid {grid} must be a power-of-two multiple of cells {cells}")
        self.grid, self.n_freqs = grid, n_freqs
        self.local = nn.Sequential(nn.Linear(3 + 6 * n_freqs, width), nn.SiLU(), nn.Linear(width, width))
        self.net = downsampler(width + 1, width, (grid // cells).bit_length() - 1)
        self.pos = nn.Parameter(torch.randn(cells**3, width) * 0.02)  # (n^3, w) cell positions
        self.out = nn.Linear(width, token_dim)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        h = self.local(fourier_features(points, self.n_freqs))  # (B, P, w)
        cells = self.net(scatter_to_grid(points, h, self.grid)).flatten(2).transpose(1, 2)  # (B, n^3, w)
        return self.out(cells + self.pos)  # (B, n^3, d)


class VoxelEncoder(nn.Module):
    """Occupancy (B, V, V, V) in [0, 1] -> resampled to 16^3 -> small conv net -> 4^3 cells ->
    attention pooling into M tokens (B, M, d), or (grid layout, cells given) conv down to the
    token cells and one token per cell (B, n^3, d)."""

    def __init__(self, *, n_tokens: int, token_dim: int, width: int = 64, cells: int | None = None):
        super().__init__()
        self.grid = cells is not None
        self.res = VOXEL_RES
        if self.grid:
            levels = max(0, math.ceil(math.log2(VOXEL_RES / cells)))  # halvings from >= 16^3 down to the cells
            self.res = cells * 2**levels
            self.net = downsampler(1, width, levels)
            self.pos = nn.Parameter(torch.randn(cells**3, width) * 0.02)  # (n^3, w)
            self.out = nn.Linear(width, token_dim)
            return
        self.net = nn.Sequential(
            nn.Conv3d(1, width // 2, 3, padding=1), nn.SiLU(),
            nn.Conv3d(width // 2, width, 4, stride=2, padding=1), nn.SiLU(),  # 16 -> 8
            nn.Conv3d(width, width, 4, stride=2, padding=1), nn.SiLU(),  # 8 -> 4
        )
        self.pos = nn.Parameter(torch.randn(64, width) * 0.02)  # (4^3, w) cell positions
        self.pool = AttentionPool(feat_dim=width, n_tokens=n_tokens, token_dim=token_dim)

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        v = voxels.to(torch.float32).unsqueeze(1)  # (B, 1, V, V, V)
        if v.shape[-1] != self.res:
            v = F.interpolate(v, size=(self.res,) * 3, mode="trilinear", align_corners=True)  # (B, 1, res, res, res)
        h = self.net(v * 2.0 - 1.0)  # (B, w, c, c, c)
        h = h.flatten(2).transpose(1, 2) + self.pos  # (B, c^3, w)
        return self.out(h) if self.grid else self.pool(h)  # (B, M, d)

"""Condition encoders: point clouds, coarse voxels and family labels, each to condition tokens (B, M, d)."""

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


class VoxelEncoder(nn.Module):
    """Occupancy (B, V, V, V) in [0, 1] -> resampled to 16^3 -> small conv net -> 4^3 cells ->
    attention pooling into M tokens (B, M, d)."""

    def __init__(self, *, n_tokens: int, token_dim: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(1, width // 2, 3, padding=1), nn.SiLU(),
            nn.Conv3d(width // 2, width, 4, stride=2, padding=1), nn.SiLU(),  # 16 -> 8
            nn.Conv3d(width, width, 4, stride=2, padding=1), nn.SiLU(),  # 8 -> 4
        )
        self.pos = nn.Parameter(torch.randn(64, width) * 0.02)  # (4^3, w) cell positions
        self.pool = AttentionPool(feat_dim=width, n_tokens=n_tokens, token_dim=token_dim)

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        v = voxels.to(torch.float32).unsqueeze(1)  # (B, 1, V, V, V)
        if v.shape[-1] != VOXEL_RES:
            v = F.interpolate(v, size=(VOXEL_RES,) * 3, mode="trilinear", align_corners=True)  # (B, 1, 16, 16, 16)
        h = self.net(v * 2.0 - 1.0)  # (B, w, 4, 4, 4)
        h = h.flatten(2).transpose(1, 2) + self.pos  # (B, 64, w)
        return self.pool(h)  # (B, M, d)

"""WaLa's condition encoders: PointNet with induced-set attention pooling (point clouds) and a 3-D conv encoder (16^3 voxels).

Every width is a constructor argument, read from the state dict by `model.widths_from_state`;
WaLa hard-codes several of them (64/256/1024, 16 heads, 4 blocks, 64/128), the released weights
decide here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weightspace.generators.wala.layers import AEResBlock, Attention, GroupNorm32, Mlp, conv3, layer_norm, merge_heads, split_heads


class _InducedPooling(nn.Module):
    """Learned queries I attend to the points (per-head q/k LayerNorm), then LN (eps 1e-6, no affine) and an MLP; no residual."""

    def __init__(self, dims: int, num_inds: int, heads: int, out: int):
        super().__init__()
        self.heads = heads
        self.I = nn.Parameter(torch.zeros(1, num_inds, dims))
        self.mab0 = nn.Module()
        self.mab0.q, self.mab0.kv, self.mab0.proj = nn.Linear(dims, dims), nn.Linear(dims, 2 * dims), nn.Linear(dims, dims)
        self.mab0.q_norm, self.mab0.k_norm = nn.LayerNorm(dims // heads, eps=1e-5), nn.LayerNorm(dims // heads, eps=1e-5)
        self.mlp = Mlp(dims, 4 * dims, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mab0
        q = split_heads(m.q(self.I.expand(x.shape[0], -1, -1)), self.heads)  # (B, h, M, hd)
        k, v = (split_heads(t, self.heads) for t in m.kv(x).chunk(2, dim=-1))  # (B, h, N, hd)
        out = m.proj(merge_heads(F.scaled_dot_product_attention(m.q_norm(q), m.k_norm(k), v)))  # (B, M, dims)
        return self.mlp(layer_norm(out, 1e-6))  # (B, M, c)


class _Block(nn.Module):
    """Pre-norm transformer block, LN (eps 1e-6, no affine): x += attn(LN(x)); x += mlp(LN(x))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn, self.mlp = Attention(dim, heads, qkv_bias=False), Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(layer_norm(x, 1e-6))
        return x + self.mlp(layer_norm(x, 1e-6))


class PointNet(nn.Module):
    """Points (B, N, 3) -> condition tokens (B, num_inds, c). Points are used as given (WaLa does not normalise)."""

    def __init__(self, widths: list[int], num_inds: int, pool_heads: int, out: int, depth: int, heads: int):
        super().__init__()
        dims = [3, *widths]  # 3 -> 64 -> 256 -> 1024 -> pc_dims in the released models
        for i in range(4):
            setattr(self, f"linear{i + 1}", nn.Linear(dims[i], dims[i + 1]))
            setattr(self, f"ln{i + 1}", nn.LayerNorm(dims[i + 1], eps=1e-5))
        self.pooling = _InducedPooling(widths[-1], num_inds, pool_heads, out)
        self.t_blocks = nn.ModuleList(_Block(out, heads) for _ in range(depth))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x = points
        for i in range(1, 5):
            x = F.silu(getattr(self, f"ln{i}")(getattr(self, f"linear{i}")(x)))  # (B, N, w_i)
        x = self.pooling(x)  # (B, M, c)
        for block in self.t_blocks:
            x = block(x)
        return x


class VoxelEncoder(nn.Module):
    """Occupancy (B, 1, 16, 16, 16) -> tokens (B, 512, c), token (d 8 + h) 8 + w."""

    def __init__(self, first: int, hidden: int, out: int):
        super().__init__()
        self.in_conv = conv3(1, first)
        self.res_1 = AEResBlock(first, hidden)
        self.res_2, self.res_3 = AEResBlock(hidden, hidden), AEResBlock(hidden, hidden)
        self.res_4, self.res_5, self.res_6 = AEResBlock(hidden, hidden), AEResBlock(hidden, hidden), AEResBlock(hidden, hidden)
        self.out_conv = nn.Sequential(GroupNorm32(hidden), nn.SiLU(), conv3(hidden, out))

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        x = self.res_3(self.res_2(self.res_1(self.in_conv(voxels))))  # (B, h, 16, 16, 16)
        x = F.avg_pool3d(x, 3, stride=2, padding=1, count_include_pad=True)  # (B, h, 8, 8, 8)
        x = self.out_conv(self.res_6(self.res_5(self.res_4(x))))  # (B, c, 8, 8, 8)
        return x.permute(0, 2, 3, 4, 1).flatten(1, 3)  # (B, 512, c)

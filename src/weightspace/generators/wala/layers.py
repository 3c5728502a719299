"""Building blocks shared by WaLa's networks: GroupNorm(32), 3-D ResBlocks, attention with per-head q/k norm, MLPs, adaLN.

Parameter names follow the keys of WaLa's checkpoints (fixture README, section 3.1) so that a state
dict loads by name; the computations are written from the README's description of each block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from weightspace.runtime.errors import InputError

GROUPS = 32  # WaLa uses GroupNorm with 32 groups everywhere


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32 groups, C channels, eps 1e-5, affine), computed in float32."""

    def __init__(self, channels: int):
        if channels % GROUPS:
            raise InputError(f"GroupNorm needs a channel count divisible by {GROUPS}, got {channels}")
        super().__init__(GROUPS, channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def conv3(c_in: int, c_out: int) -> nn.Conv3d:
    """Conv3d, kernel 3, stride 1, padding 1, with bias."""
    return nn.Conv3d(c_in, c_out, 3, padding=1)


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last axis without affine parameters."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, N, H) * (1 + scale) + shift, with shift, scale (B, H)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class AEResBlock(nn.Module):
    """out = skip(x) + conv3(dropout(SiLU(GN(conv3(SiLU(GN(x))))))); skip is conv3 when widths differ."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.in_norm = GroupNorm32(c_in)
        self.in_conv = conv3(c_in, c_out)
        self.out_layers = nn.Sequential(GroupNorm32(c_out), nn.SiLU(), nn.Dropout(0.0), conv3(c_out, c_out))
        self.skip_connection = conv3(c_in, c_out) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip_connection(x) + self.out_layers(self.in_conv(F.silu(self.in_norm(x))))


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, heads, N, D / heads): head h takes features [h hd, (h+1) hd)."""
    B, N, D = x.shape
    return x.reshape(B, N, heads, D // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, hd) -> (B, N, heads hd), heads concatenated in order."""
    B, h, N, hd = x.shape
    return x.transpose(1, 2).reshape(B, N, h * hd)


class Attention(nn.Module):
    """Self-attention: fused qkv read as (3, heads, hd), per-head q/k LayerNorm (eps 1e-5), SDPA, proj."""

    def __init__(self, dim: int, heads: int, *, qkv_bias: bool):
        super().__init__()
        if dim % heads:
            raise InputError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads, hd = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm, self.k_norm = nn.LayerNorm(hd, eps=1e-5), nn.LayerNorm(hd, eps=1e-5)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, N, D)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))  # (B, h, N, hd)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(merge_heads(out))


class CrossAttention(nn.Module):
    """Cross-attention from x to a context: q from x, fused kv from the context, per-head q/k LayerNorm, no gate."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, hd = heads, dim // heads
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.q_norm, self.k_norm = nn.LayerNorm(hd, eps=1e-5), nn.LayerNorm(hd, eps=1e-5)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        q = split_heads(self.q(x), self.heads)  # (B, h, N, hd)
        k, v = (split_heads(t, self.heads) for t in self.kv(ctx).chunk(2, dim=-1))  # (B, h, T, hd)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(merge_heads(out))


class Mlp(nn.Module):
    """fc1 (4x) -> GELU (tanh approximation) -> fc2."""

    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def timestep_embedding(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """Sinusoidal embedding of timesteps t (B,) -> (B, dim), cosines first: freqs_i = 10000^(-i / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)  # (half,)
    a = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(a), torch.sin(a)], dim=-1)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, g, g, g) -> tokens (B, G^3, p^3 C), token (a G + b) G + c, feature ((p1 p + p2) p + p3) C + ch."""
    B, C, g = x.shape[0], x.shape[1], x.shape[-1]
    G = g // p
    x = x.reshape(B, C, G, p, G, p, G, p).permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, a, b, c, p1, p2, p3, C)
    return x.reshape(B, G**3, p**3 * C)


def unpatchify(tokens: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """The inverse of `patchify`: (B, G^3, p^3 C) -> (B, C, G p, G p, G p)."""
    B, N = tokens.shape[:2]
    G = round(N ** (1 / 3))
    x = tokens.reshape(B, G, G, G, p, p, p, channels).permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, a, p1, b, p2, c, p3)
    return x.reshape(B, channels, G * p, G * p, G * p)

"""The denoiser: a transformer over latent tokens with self-attention, cross-attention to the
condition tokens, and adaLN-Zero modulation from the time step and the pooled condition
(DiT, Peebles & Xie 2023, as used by WaLa). Predicts x0 (the clean latent)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (fractional) time steps t : (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)  # (dim/2,)
    args = t.to(torch.float32).unsqueeze(1) * freqs  # (B, dim/2)
    return torch.cat([args.cos(), args.sin()], dim=1)  # (B, dim)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1.0 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    """Multi-head attention with separate q and kv inputs (self when kv is x)."""

    def __init__(self, width: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        kv_dim = kv_dim or width
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(kv_dim, width)
        self.v = nn.Linear(kv_dim, width)
        self.proj = nn.Linear(width, width)

    def keys_values(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k(kv), self.v(kv)  # (B, S, W) each

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        B, T, W = x.shape
        k, v = self.keys_values(kv)  # (B, S, W)
        q = self.q(x).view(B, T, self.heads, -1).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, -1, self.heads, W // self.heads).transpose(1, 2)  # (B, nh, S, hs)
        v = v.view(B, -1, self.heads, W // self.heads).transpose(1, 2)  # (B, nh, S, hs)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, W))  # (B, T, W)


class DenoiserBlock(nn.Module):
    """x += g1 SA(mod(LN x)); x += g2 CA(mod(LN x), cond); x += g3 MLP(mod(LN x)); the 9 shifts,
    scales and gates come from adaLN (zero-initialised, so each block starts as identity)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.cross_attn = Attention(width, heads)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * width, width))
        self.adaln = nn.Linear(width, 9 * width)
        nn.init.zeros_(self.adaln.weight)
        nn.init.zeros_(self.adaln.bias)

    def modulation(self, c: torch.Tensor) -> torch.Tensor:
        return self.adaln(F.silu(c))  # (B, 9W)

    def forward(self, x: torch.Tensor, c: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2, sh3, sc3, g3 = self.modulation(c).chunk(9, dim=1)  # 9 x (B, W)
        x = x + g1.unsqueeze(1) * self.self_attn(h := modulate(self.norm1(x), sh1, sc1), h)  # (B, T, W)
        x = x + g2.unsqueeze(1) * self.cross_attn(modulate(self.norm2(x), sh2, sc2), cond)  # (B, T, W)
        x = x + g3.unsqueeze(1) * self.mlp(modulate(self.norm3(x), sh3, sc3))  # (B, T, W)
        return x


class Denoiser(nn.Module):
    """x0 prediction: noisy latent (B, C, r, r, r), time t (B,), condition tokens (B, M, d) -> (B, C, r, r, r).

    With cond_add (the grid layout, M = T), each condition token is also added to the input token
    of its cell, so the condition is read in place before any attention.

    With self_condition, forward also takes x0_prev (B, C, r, r, r), the denoiser's own earlier
    estimate of x0 (None reads as zeros, "no estimate yet"); it is patchified and added to the input
    tokens through its own zero-initialised projection, so a denoiser given the option later starts
    out computing exactly what it computed without it.

    With refine = h > 0, the token output (B, C, r, r, r) is refined at the latent grid by three 3x3x3
    convolutions (C + C -> h -> h -> C) over it and the noisy latent, the modulation input c added
    (projected to h) after the first; the result is added to it. The last convolution starts at zero,
    so a refinement added to a trained denoiser starts out computing what it computed without it. The
    tokens see each patch as one vector; the convolutions let the estimate vary across a patch's cells
    and their neighbours'. Written here: no library denoiser has this head.
    """

    def __init__(self, *, latent_channels: int, latent_res: int, patch: int, width: int, depth: int, heads: int, cond_dim: int,
                 cond_add: bool = False, self_condition: bool = False, refine: int = 0):
        super().__init__()
        self.C, self.r, self.p = latent_channels, latent_res, patch
        n_tokens = (latent_res // patch) ** 3
        patch_dim = latent_channels * patch**3
        self.patch_in = nn.Linear(patch_dim, width)
        self.pos = nn.Parameter(torch.randn(n_tokens, width) * 0.02)  # (T, W)
        self.t_embed = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_norm = nn.LayerNorm(cond_dim)
        self.cond_proj = nn.Linear(cond_dim, width)
        self.pool_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_in = nn.Linear(width, width) if cond_add else None
        self.self_cond_in = nn.Linear(patch_dim, width) if self_condition else None
        if self.self_cond_in is not None:
            nn.init.zeros_(self.self_cond_in.weight)
            nn.init.zeros_(self.self_cond_in.bias)
        self.blocks = nn.ModuleList([DenoiserBlock(width, heads) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_adaln = nn.Linear(width, 2 * width)
        self.final = nn.Linear(width, patch_dim)
        for layer in (self.final_adaln, self.final):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.refine = None
        if refine:
            self.refine = nn.ModuleDict({
                "conv1": nn.Conv3d(2 * latent_channels, refine, 3, padding=1),
                "cond": nn.Linear(width, refine),
                "conv2": nn.Conv3d(refine, refine, 3, padding=1),
                "conv3": nn.Conv3d(refine, latent_channels, 3, padding=1),
            })
            nn.init.zeros_(self.refine["conv3"].weight)
            nn.init.zeros_(self.refine["conv3"].bias)

    def patchify(self, z: torch.Tensor) -> torch.Tensor:
        B, C, r, p = z.shape[0], self.C, self.r, self.p
        n = r // p
        z = z.reshape(B, C, n, p, n, p, n, p).permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, n, n, n, C, p, p, p)
        return z.reshape(B, n**3, C * p**3)  # (B, T, C p^3)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        B, C, r, p = tokens.shape[0], self.C, self.r, self.p
        n = r // p
        z = tokens.reshape(B, n, n, n, C, p, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, n, p, n, p, n, p)
        return z.reshape(B, C, r, r, r)  # (B, C, r, r, r)

    def condition_context(self, t: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected condition tokens (B, M, W) and the modulation input c = emb(t) + pool(cond) (B, W)."""
        width = self.pos.shape[1]
        cond_w = self.cond_proj(self.cond_norm(cond))  # (B, M, W)
        c = self.t_embed(timestep_embedding(t, width)) + self.pool_mlp(cond_w.mean(dim=1))  # (B, W)
        return cond_w, c

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, x0_prev: torch.Tensor | None = None) -> torch.Tensor:
        cond_w, c = self.condition_context(t, cond)  # (B, M, W), (B, W)
        x = self.patch_in(self.patchify(z_t)) + self.pos  # (B, T, W)
        if self.self_cond_in is not None and x0_prev is not None:
            x = x + self.self_cond_in(self.patchify(x0_prev))  # (B, T, W) the previous estimate, in place
        if self.cond_in is not None:
            x = x + self.cond_in(cond_w)  # (B, T, W) the condition of each cell, in place
        for block in self.blocks:
            x = block(x, c, cond_w)  # (B, T, W)
        shift, scale = self.final_adaln(F.silu(c)).chunk(2, dim=1)  # (B, W) each
        x = self.final(modulate(self.final_norm(x), shift, scale))  # (B, T, C p^3)
        out = self.unpatchify(x)  # (B, C, r, r, r)
        if self.refine is None:
            return out
        ref = self.refine
        h = ref["conv1"](torch.cat([out, z_t], dim=1)) + ref["cond"](F.silu(c))[:, :, None, None, None]  # (B, h, r, r, r)
        h = ref["conv2"](F.gelu(h))  # (B, h, r, r, r)
        return out + ref["conv3"](F.gelu(h))  # (B, C, r, r, r)

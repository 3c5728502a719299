"""WaLa's autoencoder inference half: the VQ codebook snap, the decoder to wavelet coefficients, and the wavelet grid.

`Autoencoder` holds exactly the keys inference reads (`quantize.embedding`, `decoder.*`, the
synthesis filters `dwt_inverse_3d.g{0,1}_{dep,col,row}`); the wavelet encoder is never built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weightspace.generators.wala.layers import AEResBlock, GroupNorm32, conv3, layer_norm, merge_heads, split_heads
from weightspace.generators.wala.wavelet import inverse_dwt, unpack

AE_HEADS = 4  # the AE attention's head count is fixed in WaLa (4 heads of 64 features at width 256)


def quantize(z: torch.Tensor, codebook: torch.Tensor, normalize: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Snap each latent vector to its nearest codebook row: z (B, e, g, g, g) -> (z_q same shape, indices (B g^3,)).

    Vectors are taken at the g^3 positions in (d, h, w) order. With `l2_norm`, z and the rows are
    L2-normalised first and the output is the normalised row. The output is z + (e_j - z) in float32,
    as the reference computes it, with the difference detached (a straight-through gradient); ties go to
    the lowest index.
    """
    B, e = z.shape[:2]
    flat = z.permute(0, 2, 3, 4, 1).reshape(-1, e)  # (B g^3, e)
    book = codebook
    if normalize == "l2_norm":
        flat, book = F.normalize(flat, dim=-1, eps=1e-12), F.normalize(book, dim=-1, eps=1e-12)
    d = flat.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2 * flat @ book.t()  # (B g^3, n_e)
    idx = torch.argmin(d, dim=1)
    # straight-through: the forward value is the row (computed as the reference does, so the bits match it),
    # and the gradient passes to z unchanged; without the detach it was exactly zero (d/dz of z + (e_j - z)),
    # and a fit through the decoder could move nothing before it
    snapped = flat + (book[idx] - flat).detach()  # (B g^3, e)
    return snapped.reshape(B, *z.shape[2:], e).permute(0, 4, 1, 2, 3).contiguous(), idx


class _Mlp(nn.Module):
    def __init__(self, h: int):
        super().__init__()
        self.norm, self.dense1, self.out = nn.LayerNorm(h, eps=1e-5), nn.Linear(h, 4 * h), nn.Linear(4 * h, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.dense1(self.norm(x))))


class _Attention(nn.Module):
    """SiLU before every projection, a LayerNorm over all inner features of q and k, heads of width/4, scale 1/sqrt(inner)."""

    def __init__(self, h: int, inner: int):
        super().__init__()
        self.to_q = nn.Sequential(nn.SiLU(), nn.Linear(h, inner))
        self.to_k = nn.Sequential(nn.SiLU(), nn.Linear(h, inner))
        self.to_v = nn.Sequential(nn.SiLU(), nn.Linear(h, inner))
        self.norm_q, self.norm_k = nn.LayerNorm(inner, eps=1e-5), nn.LayerNorm(inner, eps=1e-5)
        self.to_out = nn.Sequential(nn.SiLU(), nn.Linear(inner, h))
        self.scale = inner**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = layer_norm(x, 1e-5)  # (B, N, h), no affine
        q, k, v = self.norm_q(self.to_q(y)), self.norm_k(self.to_k(y)), self.to_v(y)  # (B, N, inner)
        q, k, v = (split_heads(t, AE_HEADS) for t in (q, k, v))  # (B, 4, N, inner / 4)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.to_out(merge_heads(out))


class AETransformerBlock(nn.Module):
    """x += mlp(x); x += att(x) (the MLP comes first)."""

    def __init__(self, h: int, inner: int):
        super().__init__()
        self.mlp, self.att = _Mlp(h), _Attention(h, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mlp(x)
        return x + self.att(x)


class Decoder(nn.Module):
    """Latent (B, e, g, g, g) -> coefficient volume (B, 8**level, 4g-2, 4g-2, 4g-2)."""

    def __init__(self, e_dim: int, hidden: int, out_channels: int, grid_size: int, num_tran: int, att_inner: int):
        super().__init__()
        h = hidden
        self.in_conv = conv3(e_dim, h)
        self.res_in = AEResBlock(h, h)
        if num_tran > 0:
            self.pos_emb = nn.Parameter(torch.zeros(1, grid_size**3, h))
            self.t_blocks = nn.ModuleList(AETransformerBlock(h, att_inner) for _ in range(num_tran))
        self.res_1, self.res_1_1 = AEResBlock(h, h), AEResBlock(h, h)
        self.res_2, self.res_2_1 = AEResBlock(h, h), AEResBlock(h, h)
        self.res_3, self.res_3_1 = AEResBlock(h, h), AEResBlock(h, h)
        self.out_conv = nn.Sequential(GroupNorm32(h), nn.SiLU(), conv3(h, out_channels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.res_in(self.in_conv(z))  # (B, h, g, g, g)
        if hasattr(self, "t_blocks"):
            B, h, g = x.shape[0], x.shape[1], x.shape[-1]
            tokens = x.flatten(2).transpose(1, 2) + self.pos_emb  # (B, g^3, h), (d, h, w) order
            for block in self.t_blocks:
                tokens = block(tokens)
            x = tokens.transpose(1, 2).reshape(B, h, g, g, g)
        x = self.res_1_1(self.res_1(x))
        x = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)[..., :-1, :-1, :-1]  # (B, h, 2g-1, ...)
        x = self.res_2_1(self.res_2(x))
        x = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)  # (B, h, 4g-2, ...)
        return self.out_conv(self.res_3_1(self.res_3(x)))


class _Filters(nn.Module):
    """The synthesis filters as the checkpoint stores them: g0 (rec_lo), g1 (rec_hi) per axis."""

    def __init__(self, length: int):
        super().__init__()
        for name in ("g0", "g1"):
            self.register_buffer(f"{name}_dep", torch.zeros(1, 1, length, 1, 1))
            self.register_buffer(f"{name}_col", torch.zeros(1, 1, 1, length, 1))
            self.register_buffer(f"{name}_row", torch.zeros(1, 1, 1, 1, length))


class Autoencoder(nn.Module):
    """VQ snap -> decoder -> unpack -> inverse DWT: latent (B, e, g, g, g) -> grid (B, R, R, R)."""

    def __init__(self, *, e_dim: int, n_e: int, hidden: int, grid_size: int, num_tran: int, att_inner: int,
                 max_training_level: int, resolution: int, normalize_latent: str | None, filter_length: int):
        super().__init__()
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(n_e, e_dim)
        self.decoder = Decoder(e_dim, hidden, 8**max_training_level, grid_size, num_tran, att_inner)
        self.dwt_inverse_3d = _Filters(filter_length)
        self.level, self.resolution, self.normalize_latent = max_training_level, resolution, normalize_latent

    def snap(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return quantize(z, self.quantize.embedding.weight, self.normalize_latent)

    def coefficients(self, z_q: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Quantised latent -> (low, highs) wavelet coefficients."""
        return unpack(self.decoder(z_q), self.resolution, self.level)

    def to_grid(self, low: torch.Tensor, highs: list[torch.Tensor]) -> torch.Tensor:
        f = self.dwt_inverse_3d
        return inverse_dwt(low, highs, f.g0_dep.flatten(), f.g1_dep.flatten())[:, 0]  # (B, R, R, R)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z_q, _ = self.snap(z)
        return self.to_grid(*self.coefficients(z_q))

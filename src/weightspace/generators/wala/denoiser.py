"""WaLa's denoisers over the latent grid: the U-ViT (ResBlocks around a transformer) and the DiT, with their blocks.

Both are called as `unet(x, t, ctx)`: x (B, e, g, g, g), t (B,) original-scale timesteps, ctx the
processed condition (B, T, c) or None. Shared pieces (fixture README 4.3): the sinusoidal time
embedding, the pooled global condition added to it (`att_t`), adaLN transformer blocks with
optional cross-attention, and registers appended after the position tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from weightspace.generators.wala.config import WaLaConfig
from weightspace.generators.wala.layers import (
    Attention,
    CrossAttention,
    GroupNorm32,
    Mlp,
    conv3,
    layer_norm,
    modulate,
    patchify,
    timestep_embedding,
    unpatchify,
)

FREQ_DIM = 256  # width of the sinusoidal time features


class TimestepEmbedder(nn.Module):
    def __init__(self, H: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, H), nn.SiLU(), nn.Linear(H, H))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, FREQ_DIM))  # (B, H)


class GlobalProj(nn.Module):
    """Per-token Linear-LN-SiLU x2, mean over tokens, then Linear-SiLU-Linear: ctx (B, T, c) -> (B, out)."""

    def __init__(self, c: int, H: int, out: int):
        super().__init__()
        self.proj_layer = nn.Sequential(nn.Linear(c, H), nn.LayerNorm(H, eps=1e-5), nn.SiLU(),
                                        nn.Linear(H, H), nn.LayerNorm(H, eps=1e-5), nn.SiLU())
        self.mlp = nn.Sequential(nn.Linear(H, out), nn.SiLU(), nn.Linear(out, out))

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.proj_layer(ctx).mean(dim=1))


class DiTBlock(nn.Module):
    """adaLN block on att_t: x += gate_msa attn(mod(LN x)); [x += cross_attn(x, ctx)]; x += gate_mlp mlp(mod(LN x))."""

    def __init__(self, H: int, heads: int, cross: bool):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(H, 6 * H))
        self.attn = Attention(H, heads, qkv_bias=True)
        self.cross_attn = CrossAttention(H, heads) if cross else None
        self.mlp = Mlp(H, 4 * H)

    def forward(self, x: torch.Tensor, att_t: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(att_t).chunk(6, dim=1)  # 6 x (B, H)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(layer_norm(x, 1e-6), shift_msa, scale_msa))
        if self.cross_attn is not None:
            x = x + self.cross_attn(x, ctx)
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(layer_norm(x, 1e-6), shift_mlp, scale_mlp))


class _Conditioning(nn.Module):
    """Time embedding, cross-attention context and att_t, shared by both denoisers."""

    def _build_conditioning(self, cfg: WaLaConfig, H: int) -> None:
        c = cfg.cond_dim
        self.t_embedder = TimestepEmbedder(H)
        if cfg.cross:
            self.context_mlp = nn.Sequential(nn.Linear(c, H), nn.SiLU(), nn.Linear(H, H))
        if cfg.add_condition_time_ch is not None and c is not None:
            self.global_proj = GlobalProj(c, H, H)
        self.use_global = bool(cfg.add_condition_time_ch) and c is not None
        R = cfg.transformer_add_num_register
        if R > 0:
            self.register_emb = nn.Parameter(torch.zeros(1, R, H))
        self.n_registers = R

    def _embed(self, t: torch.Tensor, ctx: torch.Tensor | None):
        temb = self.t_embedder(t)  # (B, H)
        att_t = temb + self.global_proj(ctx) if self.use_global and ctx is not None else temb
        ctx_local = self.context_mlp(ctx) if hasattr(self, "context_mlp") and ctx is not None else ctx
        return temb, att_t, ctx_local

    def _transformer(self, tokens: torch.Tensor, att_t: torch.Tensor, ctx_local: torch.Tensor | None) -> torch.Tensor:
        if self.n_registers:
            tokens = torch.cat([tokens, self.register_emb.expand(tokens.shape[0], -1, -1)], dim=1)  # (B, N + R, H)
        for block in self.blocks:
            tokens = block(tokens, att_t, ctx_local)
        return tokens[:, : tokens.shape[1] - self.n_registers]


class UResBlock(nn.Module):
    """U-ViT ResBlock: GN -> SiLU -> conv, time scale/shift after GN_out, optional condition factor, residual on the input.

    An output block also takes the popped skip: normalised by `skip_norm`, mixed in by a learned
    per-channel gate (`skip_learn_f`) or averaged with 1/sqrt(2).
    """

    def __init__(self, Cu: int, H: int, res_ch: int | None, *, output: bool, skip_r: int | None):
        super().__init__()
        self.in_norm, self.in_conv = GroupNorm32(Cu), conv3(Cu, Cu)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(H, 2 * Cu))
        self.out_layers = nn.Sequential(GroupNorm32(Cu), nn.SiLU(), nn.Dropout(0.0), conv3(Cu, Cu))
        if res_ch is not None:
            self.linear_res_emb = nn.Linear(res_ch, Cu)
        if output:
            self.skip_norm = GroupNorm32(Cu)
            if skip_r is not None:
                self.skip_learn_f = nn.Sequential(nn.Linear(Cu, Cu // skip_r), nn.ReLU(), nn.Linear(Cu // skip_r, Cu), nn.Sigmoid())

    def forward(self, x: torch.Tensor, temb: torch.Tensor, res_emb: torch.Tensor | None, skip: torch.Tensor | None = None) -> torch.Tensor:
        u = self.in_norm(x)
        if skip is not None:
            s = self.skip_norm(skip)
            if hasattr(self, "skip_learn_f"):
                k = self.skip_learn_f(s.mean(dim=(2, 3, 4)))  # (B, Cu)
                u = u + k[:, :, None, None, None] * s
            else:
                u = (u + s) / math.sqrt(2)
        a = self.in_conv(F.silu(u))
        scale, shift = self.emb_layers(temb).chunk(2, dim=1)  # (B, Cu) each, scale first
        a = self.out_layers[0](a) * (1 + scale[:, :, None, None, None]) + shift[:, :, None, None, None]
        if res_emb is not None and hasattr(self, "linear_res_emb"):
            a = a * self.linear_res_emb(res_emb)[:, :, None, None, None]
        return x + self.out_layers[3](F.silu(a))


class UViT(_Conditioning):
    """conv_in -> input ResBlocks -> patch tokens through the transformer -> output ResBlocks (LIFO skips) -> out."""

    def __init__(self, cfg: WaLaConfig):
        super().__init__()
        H, Cu, p, e = cfg.att_hidden_size, cfg.unet_model_channels, cfg.att_patch_size, cfg.e_dim
        G = cfg.grid_size // p
        self.p, self.Cu = p, Cu
        self._build_conditioning(cfg, H)
        res_ch = cfg.add_condition_res_ch
        if res_ch is not None:
            self.res_cond_proj_layer = GlobalProj(cfg.cond_dim, H, res_ch)
        self.conv_in = conv3(e, Cu)
        n = cfg.unet_num_res_blocks
        self.input_blocks = nn.ModuleList(UResBlock(Cu, H, res_ch, output=False, skip_r=None) for _ in range(n))
        self.output_blocks = nn.ModuleList(UResBlock(Cu, H, res_ch, output=True, skip_r=cfg.learnable_skip_r) for _ in range(n))
        self.to_patch_att_embedding_input = nn.Sequential(nn.Identity(), nn.LayerNorm(p**3 * Cu, eps=1e-5), nn.Linear(p**3 * Cu, H))
        self.pos_emb = nn.Parameter(torch.zeros(1, G**3, H))
        self.blocks = nn.ModuleList(DiTBlock(H, cfg.transformer_num_heads, cfg.cross) for _ in range(cfg.transformer_num_blocks))
        self.to_patch_att_embedding_output = nn.Sequential(nn.LayerNorm(H, eps=1e-5), nn.Linear(H, p**3 * Cu))
        self.out = nn.Sequential(GroupNorm32(Cu), nn.SiLU(), conv3(Cu, e))

    def forward(self, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        temb, att_t, ctx_local = self._embed(t, ctx)
        res_emb = self.res_cond_proj_layer(ctx) if hasattr(self, "res_cond_proj_layer") and ctx is not None else None
        h = self.conv_in(x)  # (B, Cu, g, g, g)
        stack = []
        for block in self.input_blocks:
            h = block(h, temb, res_emb)
            stack.append(h)
        tokens = self.to_patch_att_embedding_input(patchify(h, self.p)) + self.pos_emb  # (B, G^3, H)
        tokens = self._transformer(tokens, att_t, ctx_local)
        h = unpatchify(self.to_patch_att_embedding_output(tokens), self.p, self.Cu)  # (B, Cu, g, g, g)
        for block in self.output_blocks:
            h = block(h, temb, res_emb, stack.pop())
        return self.out(h)  # (B, e, g, g, g)


class _FinalLayer(nn.Module):
    def __init__(self, H: int, out: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(H, 2 * H))
        self.linear = nn.Linear(H, out)

    def forward(self, x: torch.Tensor, att_t: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(att_t).chunk(2, dim=1)
        return self.linear(modulate(layer_norm(x, 1e-6), shift, scale))


class DiT(_Conditioning):
    """Strided-conv patch embedding -> adaLN transformer -> final adaLN layer -> un-patchify."""

    def __init__(self, cfg: WaLaConfig):
        super().__init__()
        H, p, e = cfg.att_hidden_size, cfg.att_patch_size, cfg.e_dim
        G = cfg.grid_size // p
        self.p, self.e = p, e
        self._build_conditioning(cfg, H)
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv3d(e, H, p, stride=p)
        self.pos_embed = nn.Parameter(torch.zeros(1, G**3, H))
        self.blocks = nn.ModuleList(DiTBlock(H, cfg.transformer_num_heads, cfg.cross) for _ in range(cfg.transformer_num_blocks))
        self.final_layer = _FinalLayer(H, p**3 * e)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        temb, att_t, ctx_local = self._embed(t, ctx)
        tokens = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, G^3, H)
        tokens = self._transformer(tokens, att_t, ctx_local)
        return unpatchify(self.final_layer(tokens, att_t), self.p, self.e)  # (B, e, g, g, g)

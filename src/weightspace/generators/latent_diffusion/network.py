"""The one nn.Module of the latent diffusion generator: autoencoder, condition encoders, denoiser,
family and null tokens, and the latent normalisation statistics."""

from __future__ import annotations

import torch
from torch import nn

from weightspace.generators.latent_diffusion.autoencoder import ShapeAutoencoder
from weightspace.generators.latent_diffusion.conditioning import GridPointEncoder, PointEncoder, VoxelEncoder
from weightspace.generators.latent_diffusion.config import ModelConfig
from weightspace.generators.latent_diffusion.denoiser import Denoiser
from weightspace.generators.latent_diffusion.schedule import cosine_alphas_cumprod


class LatentDiffusionNet(nn.Module):
    """Every weight a weight-space point may replace. Parameter prefixes:

    ae.encoder, ae.decoder, cond_points, cond_voxels, family_tokens, null_tokens, denoiser.*
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        M, d = cfg.n_cond_tokens, cfg.cond_dim
        self.ae = ShapeAutoencoder(front=cfg.front, channels=tuple(cfg.ae_channels), latent_channels=cfg.latent_channels,
                                   blocks=cfg.ae_blocks, gaussian=cfg.latent_posterior == "gaussian")
        if cfg.cond_layout == "grid":
            cells = cfg.resolution // 4 // cfg.patch  # token cells per axis
            self.cond_points = GridPointEncoder(cells=cells, token_dim=d, grid=2 * cells)
            self.cond_voxels = VoxelEncoder(n_tokens=M, token_dim=d, cells=cells)
        else:
            self.cond_points = PointEncoder(n_tokens=M, token_dim=d)
            self.cond_voxels = VoxelEncoder(n_tokens=M, token_dim=d)
        self.family_tokens = nn.Parameter(torch.randn(max(len(cfg.families), 1), M, d))  # (F, M, d)
        self.null_tokens = nn.Parameter(torch.randn(M, d))  # (M, d) the unconditional input
        self.denoiser = Denoiser(
            latent_channels=cfg.latent_channels, latent_res=cfg.resolution // 4, patch=cfg.patch,
            width=cfg.width, depth=cfg.depth, heads=cfg.heads, cond_dim=d, cond_add=cfg.cond_layout == "grid",
            self_condition=cfg.self_condition, refine=cfg.refine,
        )
        self.prediction = cfg.prediction
        # Per-channel latent statistics for diffusion (set after the autoencoder stage).
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))  # (C,)
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))  # (C,)
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(cfg.timesteps).to(torch.float32), persistent=False)  # (T,)

    # latent normalisation: z_norm = (z - mean) / std, per channel
    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean.view(1, -1, 1, 1, 1)) / self.latent_std.view(1, -1, 1, 1, 1)

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std.view(1, -1, 1, 1, 1) + self.latent_mean.view(1, -1, 1, 1, 1)

    def x0_from_output(self, out: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The x0 estimate (B, C, r, r, r) of the denoiser's output `out` at noisy latents z_t and steps t (B,):
        `out` itself with prediction x0; sqrt(a_t) z_t - sqrt(1 - a_t) out with prediction v."""
        if self.prediction == "x0":
            return out
        ab = self.alphas_cumprod.to(out.device)[t].to(out.dtype).view(-1, *([1] * (out.dim() - 1)))  # (B, 1, ...)
        return ab.sqrt() * z_t - (1 - ab).sqrt() * out

    def forward(self, mode: str, *args: torch.Tensor) -> torch.Tensor:
        """One entry point so `torch.func.functional_call` can swap weights for any computation:

        encode (tsdf_norm) -> z_norm; decode (z_norm) -> tsdf_norm; denoise (z_t, t, cond[, x0_prev]) -> x0_hat;
        points (pts) / voxels (occ) -> cond tokens; family (labels) -> cond tokens; null (batch) -> tokens.
        """
        if mode == "encode":
            return self.normalise(self.ae.encode(args[0]))  # (B, C, r, r, r)
        if mode == "decode":
            return self.ae.decode(self.denormalise(args[0]))  # (B, R, R, R)
        if mode == "denoise":
            return self.x0_from_output(self.denoiser(*args), args[0], args[1])  # (B, C, r, r, r)
        if mode == "points":
            return self.cond_points(args[0])  # (B, M, d)
        if mode == "voxels":
            return self.cond_voxels(args[0])  # (B, M, d)
        if mode == "family":
            return self.family_tokens[args[0]]  # (B, M, d)
        if mode == "null":
            return self.null_tokens.unsqueeze(0).expand(int(args[0]), -1, -1)  # (B, M, d)
        raise ValueError(f"unknown mode {mode!r}")

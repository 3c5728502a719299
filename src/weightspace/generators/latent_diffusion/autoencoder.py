"""The shape autoencoder: a normalised TSDF grid (B, R, R, R) to a latent grid (B, C, R/4, R/4, R/4) and back.

Two front ends, chosen by config:

* `haar` (default): two levels of the 3D Haar wavelet transform (as in WaLa's wavelet front end)
  turn the grid into 64 exact subbands at R/4, so every convolution runs at R/4, where it is
  cheapest; the decoder predicts the 64 subbands and the inverse transform is exact.
* `plain`: stride-2 convolutions down to R/4, and transposed convolutions back to R.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weightspace.generators.latent_diffusion.haar import haar3d, ihaar3d

CL3D = torch.channels_last_3d  # measured 1.5-2.3x faster for 3D convolutions on this CPU


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock3d(nn.Module):
    """Pre-norm residual block of two 3x3x3 convolutions at constant channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = _norm(channels)
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm2 = _norm(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C, D, D, D)
        h = self.conv2(F.silu(self.norm2(h)))  # (B, C, D, D, D)
        return x + h


def _extra_blocks(channels: int, blocks: int) -> nn.Sequential | None:
    """Residual blocks after the first (None for one block, so checkpoints saved before `ae_blocks` load unchanged)."""
    return nn.Sequential(*[ResBlock3d(channels) for _ in range(blocks - 1)]) if blocks > 1 else None


class Encoder(nn.Module):
    """Normalised TSDF (B, 1, R, R, R) -> latent (B, C_lat, R/4, R/4, R/4), or (B, 2 C_lat, ...) with
    `gaussian`: a diagonal Gaussian's mean (first C_lat channels) and log-variance."""

    def __init__(self, *, front: str, channels: tuple[int, int], latent_channels: int, blocks: int = 1,
                 gaussian: bool = False):
        super().__init__()
        c1, c2 = channels
        self.front = front
        if front == "haar":
            self.stem = nn.Conv3d(64, c2, 3, padding=1)  # on the 64 two-level Haar subbands at R/4
        else:
            self.stem = nn.Sequential(
                nn.Conv3d(1, c1, 4, stride=2, padding=1), nn.SiLU(),  # stride-2 first layer: R -> R/2
                nn.Conv3d(c1, c2, 4, stride=2, padding=1),  # R/2 -> R/4
            )
        self.res = ResBlock3d(c2)
        self.more = _extra_blocks(c2, blocks)
        self.out = nn.Sequential(_norm(c2), nn.SiLU(), nn.Conv3d(c2, latent_channels * (2 if gaussian else 1), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.front == "haar":
            x = haar3d(haar3d(x))  # (B, 64, R/4, R/4, R/4)
        x = x.contiguous(memory_format=CL3D)
        h = self.res(self.stem(x))  # (B, c2, R/4, R/4, R/4)
        if self.more is not None:
            h = self.more(h)  # (B, c2, R/4, R/4, R/4)
        return self.out(h)  # (B, C_lat or 2 C_lat, R/4, R/4, R/4)


class Decoder(nn.Module):
    """Latent (B, C_lat, R/4, R/4, R/4) -> normalised TSDF (B, 1, R, R, R) (unclamped)."""

    def __init__(self, *, front: str, channels: tuple[int, int], latent_channels: int, blocks: int = 1):
        super().__init__()
        c1, c2 = channels
        self.front = front
        self.stem = nn.Conv3d(latent_channels, c2, 3, padding=1)
        self.res = ResBlock3d(c2)
        self.more = _extra_blocks(c2, blocks)
        if front == "haar":
            self.out = nn.Sequential(_norm(c2), nn.SiLU(), nn.Conv3d(c2, 64, 3, padding=1))  # 64 subbands at R/4
        else:
            self.out = nn.Sequential(
                _norm(c2), nn.SiLU(), nn.ConvTranspose3d(c2, c1, 4, stride=2, padding=1), nn.SiLU(),  # R/4 -> R/2
                nn.ConvTranspose3d(c1, c1 // 2, 4, stride=2, padding=1), nn.SiLU(),  # R/2 -> R
                nn.Conv3d(c1 // 2, 1, 3, padding=1),
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.contiguous(memory_format=CL3D)
        h = self.res(self.stem(z))  # (B, c2, R/4, R/4, R/4)
        if self.more is not None:
            h = self.more(h)  # (B, c2, R/4, R/4, R/4)
        y = self.out(h)  # (B, 64, R/4, R/4, R/4) subbands, or (B, 1, R, R, R)
        if self.front == "haar":
            y = ihaar3d(ihaar3d(y.contiguous()))  # (B, 1, R, R, R)
        return y.contiguous()


class ShapeAutoencoder(nn.Module):
    """TSDF autoencoder; inputs and outputs are TSDF / truncation, so values lie in [-1, 1].

    With `gaussian` the encoder gives a diagonal Gaussian posterior (the KL-regularised latent of
    latent diffusion models); `encode` returns its mean, which is what sampling, fitting and
    evaluation use, and `posterior` both moments for training.
    """

    def __init__(self, *, front: str, channels: tuple[int, int], latent_channels: int, blocks: int = 1,
                 gaussian: bool = False):
        super().__init__()
        self.gaussian = gaussian
        self.encoder = Encoder(front=front, channels=channels, latent_channels=latent_channels, blocks=blocks,
                               gaussian=gaussian)
        self.decoder = Decoder(front=front, channels=channels, latent_channels=latent_channels, blocks=blocks)

    def posterior(self, tsdf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tsdf : (B, R, R, R) normalised -> mean, log-variance, each (B, C_lat, R/4, R/4, R/4) (`gaussian` only)."""
        if not self.gaussian:
            raise ValueError("a point autoencoder has no posterior: its encoder gives the latent itself (use encode)")
        mean, logvar = self.encoder(tsdf.unsqueeze(1)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, tsdf: torch.Tensor) -> torch.Tensor:
        """tsdf : (B, R, R, R) normalised -> (B, C_lat, R/4, R/4, R/4) (a Gaussian posterior's mean)."""
        return self.posterior(tsdf)[0] if self.gaussian else self.encoder(tsdf.unsqueeze(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z : (B, C_lat, r, r, r) -> (B, R, R, R) normalised TSDF (unclamped)."""
        return self.decoder(z).squeeze(1)

"""Noise schedule as pure functions: the cosine schedule (Nichol & Dhariwal 2021, eq. 17) and DDIM step lists."""

from __future__ import annotations

import math

import torch


def cosine_alphas_cumprod(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """alpha_bar_t for t = 0..T-1 (float64, (T,)): f(t) = cos^2(((t/T + s)/(1 + s)) pi/2), with each
    beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} clipped at `max_beta` (improved DDPM, eq. 17)."""
    if T < 2:
        raise ValueError(f"T must be >= 2, got {T}")
    steps = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos(((steps / T + s) / (1 + s)) * math.pi / 2) ** 2  # (T+1,)
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)  # (T,)
    return torch.cumprod(1 - betas, dim=0)  # (T,)


def ddim_timesteps(T: int, steps: int) -> torch.Tensor:
    """`steps` time steps from T-1 down to 0, evenly spaced ("trailing" spacing), (steps,) int64."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1..{T}, got {steps}")
    return torch.round(torch.linspace(T - 1, 0, steps)).to(torch.int64)


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Forward process x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4); x0 : (B, ...), t : (B,)."""
    ab = alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))  # (B, 1, ...)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

"""Samplers from noise to a clean latent. Every sampler has one signature (k-diffusion style):

    sampler(denoise, x_T, timesteps, alphas_cumprod, *, generators=None, callback=None) -> x_0

`denoise(x_t, t)` returns the x0 prediction (guidance already applied); `timesteps` runs from
high to low; `generators` gives one torch.Generator per item for any fresh noise (so a sample
never depends on the batch it is in); `callback(dict(i, t, x, x0_hat))` sees every step.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from weightspace.generators.latent_diffusion.config import SamplerName
from weightspace.runtime.errors import InputError

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None] | None


def _ab(alphas_cumprod: torch.Tensor, t: int, like: torch.Tensor) -> torch.Tensor:
    return alphas_cumprod[t].to(dtype=like.dtype, device=like.device) if t >= 0 else torch.ones((), dtype=like.dtype, device=like.device)


def _per_item_noise(x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    return torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype) for g in generators]).to(x.device)  # (B, ...)


def _sample(
    denoise: Denoise,
    x_T: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    *,
    eta: float | Callable[[int], float],
    generators: Sequence[torch.Generator] | None,
    callback: Callback,
) -> torch.Tensor:
    """The DDIM update (Song et al. 2021, eq. 12), x0-parameterised, with sigma = eta * eq. 16.

    x_T : (B, ...) start noise; returns x_0 (B, ...). eta = 0 is deterministic; eta = 1 is the
    DDPM posterior over the strided steps and draws its noise from one generator per item. A
    function of the step t gives each step its own eta.
    """
    x = x_T
    ts = [int(t) for t in timesteps]
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        eta_t = float(eta(t)) if callable(eta) else float(eta)
        if eta_t > 0 and t_prev >= 0 and (generators is None or len(generators) != x.shape[0]):
            raise InputError(f"a step with eta > 0 (t = {t}) needs one torch.Generator per item (generators=...)")
        ab_t, ab_prev = _ab(alphas_cumprod, t, x), _ab(alphas_cumprod, t_prev, x)
        x0_hat = denoise(x, torch.full((x.shape[0],), t, dtype=torch.int64, device=x.device))  # (B, ...)
        eps_hat = (x - ab_t.sqrt() * x0_hat) / (1 - ab_t).sqrt()  # predicted noise
        sigma = eta_t * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).clamp(min=0).sqrt()  # eq. 16
        x = ab_prev.sqrt() * x0_hat + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps_hat  # x_{t_prev}
        if eta_t > 0 and t_prev >= 0:
            x = x + sigma * _per_item_noise(x, generators)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0_hat": x0_hat})
    return x


def sample_ddim(
    denoise: Denoise,
    x_T: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    *,
    generators: Sequence[torch.Generator] | None = None,
    callback: Callback = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0). `generators` is unused and accepted for the shared signature."""
    return _sample(denoise, x_T, timesteps, alphas_cumprod, eta=0.0, generators=generators, callback=callback)


def sample_ddpm(
    denoise: Denoise,
    x_T: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    *,
    generators: Sequence[torch.Generator] | None = None,
    callback: Callback = None,
) -> torch.Tensor:
    """Ancestral sampling (DDIM with eta = 1, i.e. the DDPM posterior over the strided steps)."""
    if generators is None or len(generators) != x_T.shape[0]:
        raise InputError("sample_ddpm needs one torch.Generator per item (generators=...)")
    return _sample(denoise, x_T, timesteps, alphas_cumprod, eta=1.0, generators=generators, callback=callback)


def sample_eta(
    denoise: Denoise,
    x_T: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    *,
    eta: float | Callable[[int], float],
    generators: Sequence[torch.Generator] | None = None,
    callback: Callback = None,
) -> torch.Tensor:
    """DDIM with sigma = eta * eq. 16, eta a number or a function of the step t (for example
    deterministic while a sample's layout forms and stochastic below: `lambda t: 0.0 if t >= 600 else 1.0`).
    Steps with eta > 0 draw their noise from `generators`, one per item."""
    return _sample(denoise, x_T, timesteps, alphas_cumprod, eta=eta, generators=generators, callback=callback)


SAMPLERS: dict[SamplerName, Callable] = {"ddim": sample_ddim, "ddpm": sample_ddpm}


def get_sampler(name: SamplerName):
    if name not in SAMPLERS:
        raise InputError(f"sampler must be one of {sorted(SAMPLERS)}, got {name!r}")
    return SAMPLERS[name]

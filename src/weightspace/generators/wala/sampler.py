"""WaLa's sampler: ancestral DDPM over a spaced schedule (Ho et al. 2020, Alg. 2), with classifier-free guidance.

    spaced_ddpm(denoise, x_T, schedule, *, mean_type, noise, callback) -> x_0

`denoise(x, t)` returns the model output (guidance already applied) for original-scale timesteps
t (B,); `noise(i)` returns draw i + 1 (draw 0 is x_T), one per step, drawn even at the last step
where it is masked, so that a seeded run draws exactly what WaLa draws. No x0 clipping.
"""

from __future__ import annotations

from typing import Callable

import torch

from weightspace.generators.wala.schedule import SpacedSchedule

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided(unet: Callable, ctx_uncond: torch.Tensor | None, ctx_cond: torch.Tensor | None, scale: float | None) -> Denoise:
    """The denoiser WaLa samples with: out = u + s (c - u) from one call on [x, x], [t, t], [uncond, cond]; unguided without scale."""
    if scale is None or ctx_cond is None:
        return lambda x, t: unet(x, t, ctx_cond)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raw = unet(torch.cat([x, x]), torch.cat([t, t]), torch.cat([ctx_uncond, ctx_cond]))  # (2B, e, g, g, g)
        u, c = raw.chunk(2)
        return u + scale * (c - u)

    return denoise


def ddpm_step(denoise: Denoise, x: torch.Tensor, j: int, schedule: SpacedSchedule, *, mean_type: str,
              z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One reverse step at spaced index j: (x_{j-1}, x0_hat, model output). z is the step's draw, masked at j = 0."""
    c = schedule.step(j, x.device)
    t = torch.full((x.shape[0],), int(schedule.timestep_map[j]), dtype=torch.int64, device=x.device)
    out = denoise(x, t)
    if mean_type == "PREVIOUS_X":
        mean = out
        x0_hat = c["recip_coef1"] * out - c["coef2_over_coef1"] * x
    else:
        x0_hat = out if mean_type == "START_X" else c["sqrt_recip"] * x - c["sqrt_recipm1"] * out  # DDPM eq. 15, solved for x0
        mean = c["coef1"] * x0_hat + c["coef2"] * x  # posterior mean, DDPM eq. 7
    nonzero = 1.0 if j != 0 else 0.0
    return mean + nonzero * torch.exp(0.5 * c["log_variance"]) * z.to(x), x0_hat, out


def spaced_ddpm(
    denoise: Denoise,
    x_T: torch.Tensor,
    schedule: SpacedSchedule,
    *,
    mean_type: str,
    noise: Callable[[int], torch.Tensor],
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """x_T (B, e, g, g, g) -> x_0, stepping j = K-1 .. 0 with the model seeing timestep map[j]."""
    x = x_T
    K = len(schedule.timestep_map)
    for i, j in enumerate(range(K - 1, -1, -1)):
        x_in = x
        x, x0_hat, out = ddpm_step(denoise, x, j, schedule, mean_type=mean_type, z=noise(i))
        if callback is not None:
            callback({"i": i, "j": j, "t": int(schedule.timestep_map[j]), "x_in": x_in, "x": x, "x0_hat": x0_hat, "model_output": out})
    return x

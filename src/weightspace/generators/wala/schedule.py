"""WaLa's noise schedule as pure functions: betas, timestep spacing, and the spaced posterior coefficients.

All arithmetic is float64 (numpy); `StepCoefficients` casts each per-step array to float32 once, as
the sampler applies them in float32 (fixture README 4.4).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from weightspace.runtime.errors import InputError


def betas(schedule: str, T: int, scale_ratio: float = 1.0) -> np.ndarray:
    """(T,) float64. linear: linspace(s 1e-4, s 0.02, T), s = 1000 / T * scale_ratio; cosine: Nichol & Dhariwal (2021), eq. 17."""
    if schedule == "linear":
        s = 1000.0 / T * scale_ratio
        return np.linspace(s * 1e-4, s * 0.02, T, dtype=np.float64)
    if schedule == "cosine":
        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)], dtype=np.float64)
    raise InputError(f"beta schedule must be one of ['linear', 'cosine'], got {schedule!r}")


def space_timesteps(T: int, K: int) -> list[int]:
    """K of the T timesteps, evenly spread: round() (half to even) of a stride accumulated in float64."""
    if not 1 < K <= T:
        raise InputError(f"sampling steps must be in 2..{T}, got {K}")
    stride = (T - 1) / (K - 1)
    cur, taken = 0.0, []
    for _ in range(K):
        taken.append(round(cur))
        cur += stride
    return sorted(set(taken))


@dataclasses.dataclass(frozen=True)
class SpacedSchedule:
    """The K-step process: original timesteps, spaced betas and cumulative alphas, posterior terms (float64)."""

    timestep_map: np.ndarray          # (K,) int64: spaced index j -> original timestep
    betas: np.ndarray                 # (K,) beta'_j
    alphas_cumprod: np.ndarray        # (K,) abar'_j
    sqrt_recip_alphas_cumprod: np.ndarray
    sqrt_recipm1_alphas_cumprod: np.ndarray
    coef1: np.ndarray                 # posterior mean coefficient of x0
    coef2: np.ndarray                 # posterior mean coefficient of x_t
    log_variance: np.ndarray          # (K,) per var type; element 0 multiplies masked noise only

    def step(self, j: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Step j's coefficients as float32 scalars."""
        values = {
            "sqrt_recip": self.sqrt_recip_alphas_cumprod[j], "sqrt_recipm1": self.sqrt_recipm1_alphas_cumprod[j],
            "coef1": self.coef1[j], "coef2": self.coef2[j], "recip_coef1": 1.0 / self.coef1[j],
            "coef2_over_coef1": self.coef2[j] / self.coef1[j], "log_variance": self.log_variance[j],
        }
        return {k: torch.tensor(v, dtype=torch.float64).to(device=device, dtype=torch.float32) for k, v in values.items()}


def spaced_schedule(base_betas: np.ndarray, K: int, var_type: str) -> SpacedSchedule:
    """Respace a T-step schedule to K steps: beta'_j = 1 - abar[map_j] / abar[map_{j-1}]."""
    T = len(base_betas)
    abar = np.cumprod(1.0 - base_betas)
    tmap = np.array(space_timesteps(T, K), dtype=np.int64)
    prev = np.concatenate([[1.0], abar[tmap[:-1]]])
    b = 1.0 - abar[tmap] / prev  # (K,)
    ab = np.cumprod(1.0 - b)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    post_var = b * (1.0 - ab_prev) / (1.0 - ab)
    if var_type == "FIXED_SMALL":
        logvar = np.log(np.concatenate([[post_var[1]], post_var[1:]]))
    elif var_type == "FIXED_LARGE":
        logvar = np.log(np.concatenate([[post_var[1]], b[1:]]))
    else:
        raise InputError(f"variance type must be one of ['FIXED_SMALL', 'FIXED_LARGE'], got {var_type!r}")
    return SpacedSchedule(
        timestep_map=tmap, betas=b, alphas_cumprod=ab,
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ab), sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ab - 1.0),
        coef1=b * np.sqrt(ab_prev) / (1.0 - ab), coef2=(1.0 - ab_prev) * np.sqrt(1.0 - b) / (1.0 - ab),
        log_variance=logvar,
    )

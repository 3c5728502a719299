"""Inversion: fit k subspace coordinates to one observation through the generator's own loss.

Loss(z) = L_gen(point(z)) + prior * mean_i (z_i / sigma_i)^2, with point(z) = mean + z B (the
subspace reconstruction) and L_gen the generator's observation loss on surface points (B = 1,
P, 3) or its training loss on a target grid (R, R, R). The Gaussian prior is the subspace's
own distribution of training points (sigma = s / sqrt(N - 1)); the fit is Adam from z = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from weightspace.generators.protocol import Generator
from weightspace.runtime.errors import InputError
from weightspace.runtime.seeding import derive_seed
from weightspace.space.parameterisation import Parameterisation
from weightspace.space.subspace import Subspace

Target = Literal["points", "grid"]


@dataclass
class Inversion:
    """coords (k,), point (D,), losses (steps,) generator loss per step, total (steps,) with the prior."""

    coords: torch.Tensor
    point: torch.Tensor
    losses: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)


def invert(gen: Generator, param: Parameterisation, sub: Subspace, observation: torch.Tensor, *, target: str = "points",
           steps: int = 100, lr: float = 0.05, prior: float = 1e-2, seed: int = 0, fixed_noise: bool = False) -> Inversion:
    """Fit subspace coordinates to `observation` ((P, 3) points or (R, R, R) grid).

    steps : Adam steps; lr : step size in units of sigma (coordinates are optimised as z / sigma);
    prior : weight of the Gaussian prior; seed : seeds of the generator's loss (noise levels, ...)
    per step; fixed_noise : use one seed for every step (a deterministic objective).
    """
    if target not in ("points", "grid"):
        raise InputError(f"target must be one of points, grid, got {target!r}")
    sub.frame.layout.check_same(param.layout, what="subspace vs parameterisation")
    obs = observation.to(gen.device, torch.float32)[None]
    if target == "points" and (obs.ndim != 3 or obs.shape[-1] != 3):
        raise InputError(f"a point observation must be (P, 3), got {tuple(observation.shape)}")
    if target == "grid" and (obs.ndim != 4 or len(set(obs.shape[1:])) != 1):
        raise InputError(f"a grid observation must be (R, R, R), got {tuple(observation.shape)}")
    loss_fn = gen.observation_loss if target == "points" else gen.training_loss

    def objective(point: torch.Tensor, step: int) -> torch.Tensor:
        s = derive_seed(seed, "invert", 0 if fixed_noise else step)
        return loss_fn(obs, param.conditions(point[None]), [s], params=param.params(point))

    return minimise_in_subspace(sub, objective, steps=steps, lr=lr, prior=prior, device=gen.device)


def minimise_in_subspace(sub: Subspace, objective: Callable[[torch.Tensor, int], torch.Tensor], *,
                         start: torch.Tensor | None = None, steps: int = 100, lr: float = 0.05, prior: float = 1e-2,
                         device: torch.device | str = "cpu") -> Inversion:
    """Adam on u = z / sigma of `objective(point(z), step) + prior * mean(u^2)`, point(z) = mean + z B (D,).

    start : coordinates z (k,) to start from (default 0, the subspace mean); lr in units of sigma.
    `invert` is this with the generator's own loss; other objectives (e.g. a study's) plug in here.
    """
    sigma = sub.sigma.clamp_min(1e-12).to(device)
    u0 = torch.zeros(sub.k, device=device) if start is None else (start.to(device) / sigma).float()
    u = u0.detach().clone().requires_grad_(True)  # z / sigma
    opt = torch.optim.Adam([u], lr=lr)
    result = Inversion(torch.zeros(sub.k), sub.mean.clone())
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        point = sub.reconstruct((u * sigma)[None])[0]  # (D,)
        loss = objective(point, step)
        total = loss + prior * (u**2).mean()
        total.backward()
        opt.step()
        result.losses.append(float(loss.detach()))
        result.total.append(float(total.detach()))
    with torch.no_grad():
        result.coords = (u * sigma).detach().cpu()
        result.point = sub.reconstruct(result.coords[None])[0]
    return result

"""The fit study's methods as points to optimise, its objective, and one Adam loop with early stopping.

Every method is a `Method`: a start point x0 (D,), an Adam step, the model a point stands for (a
condition (1, *condition_shape) and weights or None) and an optional prior term. One loop,
`fit_method`, runs any of them through `space.population.minimise_point`, evaluates the objective on
held-out views of the same shape every `eval_every` steps, keeps the best point by that validation
loss and stops after `patience` evaluations without improvement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

from weightspace.generators.protocol import Generator, Params
from weightspace.runtime.seeding import item_rng
from weightspace.space.parameterisation import Parameterisation
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.population import minimise_point
from weightspace.space.subspace import Subspace

Model = Callable[[torch.Tensor], tuple[torch.Tensor, "Params | None"]]


class Objective:
    """Fitting loss of one observation (N, 3): mean |f| at the observed points + free_weight *
    mean | |f(q)| - min(d(q, obs), trunc) | at seeded points q around the observation (observed points
    jittered by Gaussian noise of `jitter` world units); d is the unsigned distance to the observation.

    The second term keeps a fit from flattening the field to zero (a surface-only loss is minimised by
    f = 0 everywhere). Its points lie near the observed surface because only there does the distance to
    a partial observation stand for |SDF|: near an unobserved part of the shape it would push the surface
    away (measured: 300 steps of condition optimisation on the latent diffusion model with box points
    broke a torus seen from two views into three parts while this loss fell)."""

    def __init__(self, gen: Generator, obs: np.ndarray, *, free_weight: float, seed: int, n_free: int = 512, trunc: float = 0.1,
                 jitter: float = 0.05):
        rng = item_rng(seed, "free-space")
        q = obs[rng.integers(0, len(obs), size=n_free)] + rng.normal(0.0, jitter, size=(n_free, 3))  # (Q, 3)
        q = q.astype(np.float32)
        d = np.minimum(cKDTree(obs).query(q)[0], trunc).astype(np.float32)  # (Q,)
        self.gen, self.n_obs, self.free_weight, self.seed = gen, len(obs), free_weight, seed
        self.x = torch.from_numpy(np.concatenate([obs, q]).astype(np.float32))[None].to(gen.device)  # (1, N + Q, 3)
        self.d = torch.from_numpy(d).to(gen.device)  # (Q,)

    def __call__(self, cond: torch.Tensor, params: Params | None) -> torch.Tensor:
        f = self.gen.sdf_points(self.x, cond, [self.seed], params=params)[0]  # (N + Q,)
        surface = f[: self.n_obs].abs().mean()
        free = (f[self.n_obs :].abs() - self.d).abs().mean()
        return surface + self.free_weight * free


@dataclass
class Method:
    """One method as a point to optimise: x0 (D,), Adam's step, `model(x)` -> (condition (1, *cs), params
    or None), an optional prior term `penalty(x)` -> (), and the number of trainable values."""

    name: str
    x0: torch.Tensor
    lr: float
    model: Model
    penalty: Callable[[torch.Tensor], torch.Tensor] | None = None
    optimised: bool = True  # False: the start is the result (encode)

    @property
    def trainable(self) -> int:
        return int(self.x0.numel()) if self.optimised else 0


def condition_method(gen: Generator, name: str, c_enc: torch.Tensor, *, lr_fraction: float) -> Method:
    """encode (no steps) or optimise: the condition itself, from the encoding c_enc (1, *cs); Adam's step
    is `lr_fraction` of the encoding's RMS (scale-free across generators)."""
    cond_param = make_parameterisation(gen, "condition")
    lr = lr_fraction * float(c_enc.pow(2).mean().sqrt().clamp_min(1e-6))
    return Method(name, c_enc.reshape(-1).to(gen.device), lr, lambda x: (cond_param.conditions(x[None]), None),
                  optimised=name != "encode")


def weight_method(gen: Generator, name: str, c_enc: torch.Tensor, *, parameterisation: str, lr: float, seed: int,
                  **options: Any) -> Method:
    """lora or full: fine-tune weights (a LoRA point, or every weight) under the encoding c_enc (1, *cs)."""
    param: Parameterisation = make_parameterisation(gen, parameterisation, **options)
    param.set_anchor(c_enc)
    return Method(name, param.initial_point(seed), lr, lambda x: (param.conditions(x[None]), param.params(x)))


def subspace_method(gen: Generator, name: str, sub: Subspace, *, lr: float, prior: float, starts: torch.Tensor | None = None,
                    objective: Objective | None = None) -> Method:
    """Inversion into a k-dimensional PCA subspace (condition or weights), as weights2weights inverts into
    its space: the point is mean + z B with z = u * sigma; Adam on u (k,) of loss + prior * mean(u^2),
    the Gaussian prior of the subspace's own members (`space.inversion.minimise_in_subspace`).

    starts : candidate coordinates z (M, k) to start from (default: 0, the members' mean); with an
        `objective` the candidate of lowest objective + prior is the start (one forward pass each: the
        loss is not convex in z, and a start in the wrong basin stops in a local minimum).
    """
    param = sub.frame.build(gen, what=f"{name} subspace")
    sigma = sub.sigma.clamp_min(1e-12).to(gen.device)  # (k,)
    u_starts = torch.zeros(1, sub.k, device=gen.device) if starts is None else (starts.to(gen.device) / sigma).float()  # (M, k)

    def model(u: torch.Tensor) -> tuple[torch.Tensor, Params | None]:
        point = sub.reconstruct((u * sigma)[None])[0]  # (D,)
        return param.conditions(point[None]), (param.params(point) if param.name != "condition" else None)

    def penalty(u: torch.Tensor) -> torch.Tensor:
        return prior * (u**2).mean()

    u0 = u_starts[0]
    if objective is not None and len(u_starts) > 1:
        with torch.no_grad():
            scores = torch.stack([objective(*model(u)) + penalty(u) for u in u_starts])  # (M,)
        u0 = u_starts[int(scores.argmin())]
    return Method(name, u0, lr, model, penalty=penalty)


# --- early stopping ------------------------------------------------------------------------------
@dataclass
class EarlyStopping:
    """Stop after `patience` evaluations without a relative improvement of at least `min_rel`
    over the best validation loss so far; the best is the last evaluation that improved."""

    patience: int
    min_rel: float = 1e-3
    best: float = math.inf
    best_step: int = -1
    bad: int = 0

    def update(self, step: int, value: float) -> bool:
        """Record the validation loss at `step`; True when it is the new best."""
        if self.best_step < 0 or value < self.best - self.min_rel * abs(self.best):
            self.best, self.best_step, self.bad = value, step, 0
            return True
        self.bad += 1
        return False

    @property
    def stop(self) -> bool:
        return self.bad >= self.patience


@dataclass
class FitRun:
    """What `fit_method` returns: the best point by validation loss, where it stopped, and its curves."""

    best: torch.Tensor
    best_step: int
    stopped_at: int
    losses: list[float] = field(default_factory=list)  # training objective (with the prior) per step
    validation: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss) per evaluation


def fit_method(method: Method, fit_obj: Objective, val_obj: Objective, *, max_steps: int, eval_every: int, patience: int,
               min_rel: float, budgets: list[int], on_budget: Callable[[int, int, torch.Tensor], None]) -> FitRun:
    """Run one method's Adam loop with early stopping on `val_obj` (held-out views of the same shape).

    At every step budget b (a multiple of eval_every, <= max_steps) `on_budget(b, best_step, best)` sees
    the model the method delivers at that budget: the best point by validation loss among the
    evaluations up to b. Budgets after an early stop see the final best.
    """
    stopper = EarlyStopping(patience=patience, min_rel=min_rel)
    run = FitRun(method.x0.detach().clone(), 0, 0)
    steps = max_steps if method.optimised else 0
    pending = sorted(b for b in budgets if b <= max_steps)

    def callback(step: int, x: torch.Tensor) -> bool:
        run.stopped_at = step
        if step % eval_every and step != steps:
            return False
        with torch.no_grad():
            v = float(val_obj(*method.model(x)))
        run.validation.append((step, v))
        if stopper.update(step, v):
            run.best, run.best_step = x.detach().clone(), step
        while pending and pending[0] <= step:
            on_budget(pending.pop(0), run.best_step, run.best)
        return stopper.stop

    def objective(x: torch.Tensor, step: int) -> torch.Tensor:
        loss = fit_obj(*method.model(x))
        return loss + method.penalty(x) if method.penalty is not None else loss

    _, losses = minimise_point(method.x0, objective, steps=steps, lr=method.lr, callback=callback)
    run.losses = [float(v) for v in losses]
    for b in pending:  # stopped early (or no steps): the delivered model stays the best
        on_budget(b, run.best_step, run.best)
    return run

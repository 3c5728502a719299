"""minimise_point: the one Adam loop every member fit runs (population members, batched members, the fit study's methods)."""

import numpy as np
import pytest
import torch
from toy_generator import make_toy

from weightspace.experiments.fit import FitConfig
from weightspace.experiments.fit_methods import Objective, condition_method, fit_method, weight_method
from weightspace.runtime.seeding import derive_seed
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.population import fit_member, member_loss, minimise_point


def _reference_adam(start, loss_fn, *, steps, lr):
    """The loop fit_member and the fit study each kept before they shared minimise_point."""
    x = start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    losses = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, step)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return x.detach(), losses


def test_minimises_a_quadratic_and_leaves_start_alone():
    c = torch.tensor([1.0, -2.0, 0.5])
    start = torch.zeros(3)
    x, losses = minimise_point(start, lambda x, step: ((x - c) ** 2).sum(), steps=300, lr=0.05)
    torch.testing.assert_close(x, c, atol=1e-3, rtol=0)
    assert len(losses) == 300 and float(losses[-1]) < 1e-4 < float(losses[0])
    assert not x.requires_grad and torch.equal(start, torch.zeros(3))


def test_zero_steps_is_a_copy_of_the_start():
    start = torch.arange(4.0)
    x, losses = minimise_point(start, lambda x, step: x.sum(), steps=0, lr=1.0)
    assert torch.equal(x, start) and x is not start and losses == []


def test_stacked_points_with_per_point_losses_are_independent_adams():
    targets = torch.tensor([[1.0, 2.0], [-3.0, 0.0], [0.5, 0.5]])  # (B, D)
    start = torch.zeros(3, 2)
    x, losses = minimise_point(start, lambda x, step: ((x - targets) ** 2).sum(dim=1) * (step + 1), steps=7, lr=0.1)
    assert losses[0].shape == (3,)
    for b in range(3):
        alone, alone_losses = minimise_point(start[b], lambda x, step, b=b: ((x - targets[b]) ** 2).sum() * (step + 1),
                                             steps=7, lr=0.1)
        torch.testing.assert_close(x[b], alone)
        torch.testing.assert_close(torch.stack([v[b] for v in losses]), torch.stack(alone_losses))


def test_fit_member_is_the_reference_loop_bit_for_bit():
    gen = make_toy(seed=0)
    param = make_parameterisation(gen, "lora", rank=2, targets="mid|vol")
    from weightspace.data.grid import grid_points

    grid = torch.from_numpy(np.linalg.norm(grid_points(gen.resolution), axis=-1) - 0.4).float().clamp(-0.2, 0.2)  # (R, R, R)
    out = fit_member(gen, param, grid, fit="grid", steps=3, lr=1e-2, seed=5, draws=2)
    ref, ref_losses = _reference_adam(
        param.initial_point(5), lambda x, step: member_loss(gen, param, x, grid, fit="grid", seed=derive_seed(5, "step", step), draws=2),
        steps=3, lr=1e-2)
    assert torch.equal(out["point"], ref) and out["losses"] == ref_losses and out["metrics"]["moved"] > 0


@pytest.mark.parametrize("method", ["optimise", "lora", "full"])
def test_fit_study_methods_run_minimise_point_on_their_own_objective(method):
    # the fit study's objective (observed points + free space, one seed) differs from a population's;
    # its optimised methods are minimise_point on it, with the numbers of the loop the study used to keep
    gen = make_toy(seed=0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(64, 3)).astype(np.float32)
    obs = 0.4 * obs / np.linalg.norm(obs, axis=1, keepdims=True)  # (64, 3) on a sphere
    with torch.no_grad():
        c_enc = gen.condition(points=torch.from_numpy(obs)[None])
    cfg = FitConfig(steps=3, lr_full=1e-2)
    obj = Objective(gen, obs, free_weight=cfg.free_weight, seed=7)
    if method == "optimise":
        m = condition_method(gen, method, c_enc, lr_fraction=cfg.lr_condition)
    else:
        m = weight_method(gen, method, c_enc, parameterisation="lora" if method == "lora" else "layers", seed=7,
                          lr=cfg.lr_lora if method == "lora" else cfg.lr_full,
                          **({"rank": cfg.lora_rank, "targets": cfg.lora_targets} if method == "lora" else {"targets": "all"}))
    # validation on the fit objective itself, every step; the best point is the reference loop's after best_step steps
    run = fit_method(m, obj, obj, max_steps=3, eval_every=1, patience=10, min_rel=0.0, budgets=[0], on_budget=lambda *a: None)
    if method == "optimise":
        param = make_parameterisation(gen, "condition")
        lr = cfg.lr_condition * float(c_enc.pow(2).mean().sqrt().clamp_min(1e-6))
        loss = lambda x, step: obj(param.conditions(x[None]), None)  # noqa: E731
        ref, ref_losses = _reference_adam(c_enc.reshape(-1), loss, steps=3, lr=lr)
        best, _ = _reference_adam(c_enc.reshape(-1), loss, steps=run.best_step, lr=lr)
        assert torch.equal(m.model(run.best)[0], param.conditions(best[None]))
    else:
        param = make_parameterisation(gen, "lora", rank=cfg.lora_rank, targets=cfg.lora_targets) if method == "lora" \
            else make_parameterisation(gen, "layers", targets="all")
        param.set_anchor(c_enc)
        loss = lambda x, step: obj(param.conditions(x[None]), param.params(x))  # noqa: E731
        lr = cfg.lr_lora if method == "lora" else cfg.lr_full
        ref, ref_losses = _reference_adam(param.initial_point(7), loss, steps=3, lr=lr)
        best, _ = _reference_adam(param.initial_point(7), loss, steps=run.best_step, lr=lr)
        for k, v in param.params(best).items():
            assert torch.equal(m.model(run.best)[1][k], v)
    assert run.losses == ref_losses and len(ref_losses) == 3 and run.best_step > 0
    assert min(v for _, v in run.validation) == dict(run.validation)[run.best_step]

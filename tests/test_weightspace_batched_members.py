"""Batched member fitting: B members in one forward/backward pass give the members one-at-a-time fitting gives."""

import dataclasses
import functools

import pytest
import torch
from test_latent_diffusion_model import tiny_generator as tiny_diffusion
from test_neural_field_model import tiny_generator as tiny_field
from toy_generator import make_toy, make_toy_data

from weightspace.generators import MissingCapability
from weightspace.generators.lowrank import StackedLowRank, is_low_rank, low_rank_hooks
from weightspace.generators.neural_field.batched import METHODS
from weightspace.runtime.allocator import retain_freed_memory
from weightspace.runtime.errors import InputError
from weightspace.space import population as population_module
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.population import PopulationConfig, build_population, fit_member, fit_members
from weightspace.space.store import Population

LOADER = functools.partial(make_toy, seed=0)
RTOL = 1e-4  # float rounding of batched matmuls, carried through a few Adam steps


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_toy_data(tmp_path_factory.mktemp("data"), count=4, resolution=10)


def _targets(gen, B: int, seed: int = 0) -> torch.Tensor:
    """B target grids (B, R, R, R) with a surface inside the generators' bands: spheres of several radii."""
    from weightspace.data.grid import grid_points

    R = gen.resolution
    r = torch.from_numpy(grid_points(R)).norm(dim=-1)  # (R, R, R)
    return torch.stack([(r - 0.3 - 0.1 * b).clamp(-0.2, 0.2) for b in range(B)]).float()


def _assert_same_members(gen, param, grids, *, steps, lr, draws, seeds):
    batched = fit_members(gen, param, grids, steps=steps, lr=lr, seeds=seeds, draws=draws)
    for b, seed in enumerate(seeds):
        alone = fit_member(gen, param, grids[b], fit="grid", steps=steps, lr=lr, seed=seed, draws=draws)
        moved = (alone["point"] - param.initial_point(seed).cpu()).norm()
        assert moved > 0  # the fit moved, so equal points are a real check
        assert (batched[b]["point"] - alone["point"]).norm() <= RTOL * moved
        torch.testing.assert_close(torch.tensor(batched[b]["losses"]), torch.tensor(alone["losses"]), rtol=RTOL, atol=1e-7)
        for key in ("loss_start", "loss_fit"):
            assert batched[b]["metrics"][key] == pytest.approx(alone["metrics"][key], rel=RTOL, abs=1e-7)
        assert batched[b]["metrics"]["batch_members"] == len(seeds)


@pytest.mark.parametrize("name,options", [("lora", {"rank": 2, "targets": "mid|vol"}), ("layers", {"targets": "mid|out"})])
def test_toy_batched_fit_equals_one_at_a_time(name, options):
    gen = make_toy(seed=0)
    param = make_parameterisation(gen, name, **options)
    _assert_same_members(gen, param, _targets(gen, 3), steps=4, lr=0.02, draws=2, seeds=[11, 12, 13])


def test_neural_field_batched_fit_equals_one_at_a_time():
    gen = tiny_field()
    param = make_parameterisation(gen, "lora", rank=2)
    _assert_same_members(gen, param, _targets(gen, 3), steps=3, lr=3e-3, draws=2, seeds=[1, 2, 3])


def test_latent_diffusion_batched_fit_equals_one_at_a_time():
    gen = tiny_diffusion()
    param = make_parameterisation(gen, "lora", rank=2)
    param.set_anchor(torch.randn(1, *gen.condition_shape, generator=torch.Generator().manual_seed(0)))
    _assert_same_members(gen, param, _targets(gen, 3), steps=3, lr=3e-3, draws=2, seeds=[1, 2, 3])


@pytest.mark.parametrize("method", METHODS)
def test_neural_field_batched_loss_and_gradient_per_member(method):
    gen = tiny_field()
    param = make_parameterisation(gen, "layers", targets="all")
    x = torch.stack([param.base_point() + 0.01 * torch.randn(param.layout.size) for _ in range(2)]).requires_grad_(True)
    grids, cond = _targets(gen, 2), torch.randn(2, *gen.condition_shape)
    seeds = [[5, 6, 7], [8, 9, 10]]
    losses = gen.training_loss_batched(grids, cond, seeds, param.params_batch(x), method=method)  # (2,)
    (grad,) = torch.autograd.grad(losses.sum(), x)
    for b in range(2):
        xb = x[b].detach().requires_grad_(True)
        alone = gen.training_loss(grids[b].expand(3, -1, -1, -1), cond[b].expand(3, -1), seeds[b], params=param.params(xb))
        (g,) = torch.autograd.grad(alone, xb)
        torch.testing.assert_close(losses[b], alone, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grad[b], g, rtol=1e-4, atol=1e-6)


def _loss_and_grad_per_member(gen, param, x, grids, cond, seeds, **kw):
    """Batched losses (B,) and d sum / d x (B, D) with the LoRA factors kept factored, and the same per member alone."""
    losses = gen.training_loss_batched(grids, cond, seeds, param.low_rank_batch(x), **kw)  # (B,)
    (grad,) = torch.autograd.grad(losses.sum(), x)
    for b in range(x.shape[0]):
        xb = x[b].detach().requires_grad_(True)
        D = len(seeds[b])
        alone = gen.training_loss(grids[b].expand(D, -1, -1, -1), cond[b].expand(D, *cond.shape[1:]), seeds[b], params=param.params(xb))
        (g,) = torch.autograd.grad(alone, xb)
        yield losses[b], alone, grad[b], g


@pytest.mark.parametrize("method", METHODS)
def test_neural_field_low_rank_loss_and_gradient_per_member(method):
    gen = tiny_field()
    param = make_parameterisation(gen, "lora", rank=2)
    x = torch.stack([param.initial_point(s) + 0.05 * torch.randn(param.layout.size) for s in (1, 2)]).requires_grad_(True)
    grids, cond = _targets(gen, 2), torch.randn(2, *gen.condition_shape)
    for loss, alone, grad, g in _loss_and_grad_per_member(gen, param, x, grids, cond, [[5, 6, 7], [8, 9, 10]], method=method):
        torch.testing.assert_close(loss, alone, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grad, g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("self_condition,prediction,refine", [(False, "x0", 0), (True, "x0", 0), (True, "v", 0), (True, "x0", 4)])
def test_latent_diffusion_low_rank_loss_and_gradient_per_member(self_condition, prediction, refine):
    gen = tiny_diffusion(self_condition=self_condition, prediction=prediction, refine=refine)
    param = make_parameterisation(gen, "lora", rank=2)
    x = torch.stack([param.initial_point(s) + 0.05 * torch.randn(param.layout.size) for s in (1, 2)]).requires_grad_(True)
    grids, cond = _targets(gen, 2), torch.randn(2, *gen.condition_shape)
    # every target a denoiser Linear: the factored path runs; a refinement's convolutions take the vmap path
    assert is_low_rank(param.low_rank_batch(x)) == (not refine)
    for loss, alone, grad, g in _loss_and_grad_per_member(gen, param, x, grids, cond, [[5, 6, 7], [8, 9, 10]]):
        torch.testing.assert_close(loss, alone, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grad, g, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in gen.net.parameters())  # no gradient reached the base weights


@pytest.mark.parametrize("self_condition,prediction,refine", [(False, "x0", 0), (True, "v", 0), (True, "x0", 4)])
def test_latent_diffusion_layers_loss_and_gradient_per_member(self_condition, prediction, refine):
    gen = tiny_diffusion(self_condition=self_condition, prediction=prediction, refine=refine)
    param = make_parameterisation(gen, "layers")
    x = torch.stack([param.base_point() + 0.01 * torch.randn(param.layout.size) for _ in range(2)]).requires_grad_(True)
    grids, cond = _targets(gen, 2), torch.randn(2, *gen.condition_shape)
    seeds = [[5, 6, 7], [8, 9, 10]]
    losses = gen.training_loss_batched(grids, cond, seeds, param.params_batch(x))  # (2,) through vmap
    (grad,) = torch.autograd.grad(losses.sum(), x)
    for b in range(2):
        xb = x[b].detach().requires_grad_(True)
        alone = gen.training_loss(grids[b].expand(3, -1, -1, -1), cond[b].expand(3, *cond.shape[1:]), seeds[b], params=param.params(xb))
        (g,) = torch.autograd.grad(alone, xb)
        torch.testing.assert_close(losses[b], alone, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grad[b], g, rtol=1e-4, atol=1e-6)


def test_latent_diffusion_target_latents_follow_the_grids():
    gen = tiny_diffusion()
    grids = _targets(gen, 2)
    z0 = gen._target_latents(grids)
    assert gen._target_latents(grids) is z0  # remembered across the steps of a fit
    grids.mul_(0.5)  # the same tensor changed in place: encoded again
    torch.testing.assert_close(gen._target_latents(grids), gen.encode_grids(grids))
    assert gen._target_latents(grids.clone()) is not z0


def test_low_rank_linear_and_hooks_equal_merged_weights():
    g = torch.Generator().manual_seed(0)
    K, n, r, i, o = 3, 5, 2, 4, 6
    lin = torch.nn.Linear(i, o)
    A, B = torch.randn(K, r, i, generator=g), torch.randn(K, o, r, generator=g)
    x = torch.randn(K, n, i, generator=g)
    delta = StackedLowRank(lin.weight.detach(), A.requires_grad_(True), B.requires_grad_(True), 0.7)
    merged = delta.merged()  # (K, o, i)
    want = torch.bmm(x, merged.transpose(1, 2)) + lin.bias
    dy = torch.randn(K, n, o, generator=g)
    want_grads = torch.autograd.grad(want, (A, B), dy)
    torch.testing.assert_close(delta.linear(x, lin.bias.detach()), want.detach())
    torch.testing.assert_close(torch.autograd.grad(delta.linear(x, lin.bias.detach()), (A, B), dy), want_grads)
    with low_rank_hooks(torch.nn.Sequential(lin), {"0.weight": delta}, K):
        got = lin(x.reshape(K * n, i)).reshape(K, n, o)  # member-major rows
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, (A, B), dy), want_grads)
    assert not lin._forward_hooks  # removed on exit
    cols = slice(1, 3)
    torch.testing.assert_close(delta.columns(cols).merged(), merged[:, :, cols])
    assert retain_freed_memory() in (True, False) and retain_freed_memory() == retain_freed_memory()


def test_batched_build_equals_unbatched_and_resumes(data, tmp_path, monkeypatch):
    def config(out, **kw):
        return PopulationConfig(checkpoint="toy", parameterisation="lora", data=str(data), out=str(out),
                                options={"rank": 2, "alpha": 4.0, "targets": "mid|vol"}, steps=4, lr=0.02, draws=2, **kw)

    one = build_population(config(tmp_path / "one"), generator=LOADER)
    out = tmp_path / "batched"
    real, calls = population_module.run_members, []

    def flaky(tasks):
        calls.append([t.id for t in tasks])
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(tasks)

    monkeypatch.setattr(population_module, "run_members", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_population(config(out, batch_members=3), generator=LOADER)
    assert calls == [[r["id"] for r in one.rows[:3]], [one.rows[3]["id"]]]
    assert len(Population(out)) == 3  # the finished batch was written member by member
    monkeypatch.setattr(population_module, "run_members", real)
    done = []
    pop = build_population(config(out, batch_members=2), generator=LOADER, on_member=lambda r: done.append(r["id"]))
    assert done == [one.rows[3]["id"]] and len(pop) == 4
    assert [r["id"] for r in pop.rows] == [r["id"] for r in one.rows]
    torch.testing.assert_close(pop.matrix(), one.matrix(), rtol=RTOL, atol=1e-6)
    assert all("fidelity_iou" in r["metrics"] for r in pop.rows)


def test_batch_members_is_refused_where_it_cannot_apply(data, tmp_path):
    base = dict(checkpoint="toy", data=str(data), out=str(tmp_path / "p"), steps=1, batch_members=2)
    with pytest.raises(InputError, match="batch_members > 1 fits lora or layers"):
        build_population(PopulationConfig(parameterisation="condition", **base), generator=LOADER)
    with pytest.raises(InputError, match="batch_members > 1 fits lora or layers"):
        build_population(PopulationConfig(parameterisation="lora", fit="points", **base), generator=LOADER)
    with pytest.raises(InputError, match="batch_members must be >= 1"):
        build_population(PopulationConfig(parameterisation="lora", **{**base, "batch_members": 0}), generator=LOADER)

    class Unbatched(type(make_toy())):
        training_loss_batched = None

    with pytest.raises(MissingCapability, match="BatchedTrainingLoss"):
        build_population(PopulationConfig(parameterisation="lora", options={"targets": "mid"}, **base), generator=Unbatched())


def test_auto_batch_members_batches_only_where_it_pays(data):
    """None chooses per generator: 8 LoRA members per pass on latent diffusion (factored LoRA, 2.2x), one
    elsewhere (the field's exact batched path runs at 1.0x; layers and point fits do not batch there)."""
    from weightspace.space.population import BATCH_MEMBERS, auto_batch_members

    diffusion, field = tiny_diffusion(), tiny_field()

    def auto(gen, **kw):
        config = PopulationConfig(**{"checkpoint": "x", "parameterisation": "lora", "data": str(data), "out": "o",
                                     "batch_members": None, **kw})
        config.validate()
        return config.resolved(gen).batch_members

    assert auto(diffusion) == BATCH_MEMBERS == 8
    assert auto(diffusion, parameterisation="layers") == 1
    assert auto(diffusion, fit="points") == 1
    assert auto(field) == 1 and auto(make_toy()) == 1
    assert auto(diffusion, batch_members=1) == 1  # an explicit value is kept
    assert auto_batch_members(diffusion, PopulationConfig(checkpoint="x", parameterisation="condition", data="d", out="o")) == 1


def test_latent_diffusion_build_fits_factored_one_at_a_time(tmp_path, monkeypatch):
    """A latent diffusion LoRA build at batch 1 runs its members through the factored path (`fit_members`,
    1.46x faster alone) and gets the members the merged one-member fit gives, to rounding."""
    from weightspace.data.dataset import load_grid
    from weightspace.data.make import make_dataset
    from weightspace.space.population import read_shapes

    data = tmp_path / "data"
    make_dataset(data, family="torus,pair", count=2, resolution=16, seed=5, split=(1.0, 0.0, 0.0), progress=False)
    gen = tiny_diffusion()
    config = PopulationConfig(checkpoint="tiny", parameterisation="lora", data=str(data), out=str(tmp_path / "pop"),
                              options={"rank": 2}, steps=3, lr=3e-3, draws=2)
    assert population_module.factored_fits(gen, config) and config.batch_members == 1

    def merged(task):
        raise AssertionError("the merged one-member path ran")

    monkeypatch.setattr(population_module, "run_member", merged)
    sizes = []
    real = population_module.run_members
    monkeypatch.setattr(population_module, "run_members", lambda tasks: sizes.append(len(tasks)) or real(tasks))
    pop = build_population(config, generator=gen)
    assert sizes == [1, 1] and len(pop) == 2
    param = pop.frame.build(gen)
    rows = read_shapes(data)
    for row, member in zip(rows, pop.rows):
        grid = torch.from_numpy(load_grid(data, row)).float()
        alone = fit_member(gen, param, grid, fit="grid", steps=3, lr=3e-3, seed=member["seed"], draws=2)
        moved = (alone["point"] - param.initial_point(member["seed"]).cpu()).norm()
        assert moved > 0
        got = pop.matrix()[member["index"]]
        assert (got - alone["point"]).norm() <= RTOL * moved


def test_automatic_batches_leave_no_worker_idle(tmp_path, monkeypatch):
    """Left open, a latent diffusion build on W workers fits ceil(N / W) members per pass when that is
    under 8, so every worker gets members; a batch size given is kept."""
    from weightspace.data.make import make_dataset
    from weightspace.runtime.executors import InProcessExecutor

    data = tmp_path / "data"
    make_dataset(data, family="torus,pair", count=6, resolution=16, seed=5, split=(1.0, 0.0, 0.0), progress=False)

    class TwoWorkers(InProcessExecutor):
        workers = 2  # what a 2-worker pool reports; the items run here so the sizes can be seen

    sizes = []
    real = population_module.run_members
    monkeypatch.setattr(population_module, "run_members", lambda tasks: sizes.append(len(tasks)) or real(tasks))
    config = PopulationConfig(checkpoint="tiny", parameterisation="lora", data=str(data), out=str(tmp_path / "a"),
                              options={"rank": 2}, steps=1, lr=3e-3, draws=1, batch_members=None)
    build_population(config, generator=tiny_diffusion(), executor=TwoWorkers())
    assert sorted(sizes) == [3, 3]
    sizes.clear()
    build_population(dataclasses.replace(config, out=str(tmp_path / "b"), batch_members=8), generator=tiny_diffusion(),
                     executor=TwoWorkers())
    assert sizes == [6]

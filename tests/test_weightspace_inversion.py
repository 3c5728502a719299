"""Inversion: fitting subspace coordinates to an observation reduces the generator's loss."""

import pytest
import torch
from toy_generator import make_toy

from weightspace.runtime.errors import InputError
from weightspace.space.frame import Frame
from weightspace.space.inversion import invert, minimise_in_subspace
from weightspace.space.layout import Layout
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.subspace import fit_subspace_matrix


@pytest.fixture(scope="module")
def setup():
    gen = make_toy(seed=0)
    param = make_parameterisation(gen, "lora", rank=2, alpha=4.0, targets="mid|inp")
    g = torch.Generator().manual_seed(0)
    pts = torch.stack([param.initial_point(i) for i in range(12)])
    b_mask = torch.zeros(param.layout.size, dtype=torch.bool)
    for e in param.layout.entries:
        if e.name.endswith("lora_B"):
            b_mask[e.offset : e.offset + e.numel] = True
    pts[:, b_mask] = 0.5 * torch.randn(12, int(b_mask.sum()), generator=g)
    sub = fit_subspace_matrix(pts, 6, frame=Frame.of(param))
    return gen, param, sub


def _target(gen, param, sub, kind):
    point = sub.reconstruct((1.5 * sub.sigma * torch.tensor([1.0, -1, 0.5, 0, 0, 0]))[None])[0]
    cond = param.conditions(point[None])
    with torch.no_grad():
        grid = gen.sdf_grid(cond, [0], params=param.params(point))[0]
    if kind == "grid":
        return grid
    from weightspace.decode.mesh import grid_to_mesh

    return torch.from_numpy(grid_to_mesh(grid.numpy()).vertices[:200]).float()


@pytest.mark.parametrize("kind", ["points", "grid"])
def test_inversion_reduces_the_loss(setup, kind):
    gen, param, sub = setup
    obs = _target(gen, param, sub, kind)
    res = invert(gen, param, sub, obs, target=kind, steps=25, lr=0.1, prior=1e-4, seed=0, fixed_noise=True)
    assert res.coords.shape == (6,) and res.point.shape == (param.layout.size,)
    assert len(res.losses) == 25
    assert res.losses[-1] < 0.7 * res.losses[0]
    again = invert(gen, param, sub, obs, target=kind, steps=25, lr=0.1, prior=1e-4, seed=0, fixed_noise=True)
    assert torch.equal(again.coords, res.coords)  # seeded


def test_inversion_checks_its_inputs(setup):
    gen, param, sub = setup
    with pytest.raises(InputError, match="target"):
        invert(gen, param, sub, torch.zeros(5, 3), target="mesh")
    with pytest.raises(InputError, match="point observation"):
        invert(gen, param, sub, torch.zeros(5, 2), target="points")
    other = make_parameterisation(gen, "lora", rank=2, alpha=4.0, targets="mid")
    with pytest.raises(InputError, match="subspace vs parameterisation"):
        invert(gen, other, sub, torch.zeros(5, 3))


def test_minimise_in_subspace_takes_any_objective_and_a_start():
    x = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))  # (N, D)
    layout = Layout.from_tensors([("w", (8,))], base_hash="h", parameterisation="layers")
    sub = fit_subspace_matrix(x, 3, frame=Frame(layout, {"name": "layers", "targets": "all"}, torch.zeros(1, 2)))
    goal = sub.reconstruct((0.5 * sub.sigma)[None])[0]  # (D,) a point inside the subspace
    seen = []

    def objective(point, step):
        seen.append(step)
        return ((point - goal) ** 2).sum()

    start = sub.project(x[:1])[0]  # (k,)
    none = minimise_in_subspace(sub, objective, start=start, steps=0)
    torch.testing.assert_close(none.coords, start)
    res = minimise_in_subspace(sub, objective, start=start, steps=300, lr=0.05, prior=0.0)
    assert seen[:3] == [0, 1, 2] and len(res.total) == 300 and res.total[-1] < 1e-3 * res.total[0]
    torch.testing.assert_close(res.point, goal, atol=1e-2, rtol=0)

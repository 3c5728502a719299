"""The weight-space core on the real generators (tiny random-initialised instances, not the shipped weights)."""

import functools

import pytest
import torch
from torch import nn
from toy_generator import make_toy_data

from weightspace.decode.points import decode_points
from weightspace.space.inversion import invert
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.population import PopulationConfig, build_population
from weightspace.space.subspace import fit_subspace


def tiny_latent_diffusion(seed: int = 0):
    from weightspace.generators.latent_diffusion.config import ModelConfig
    from weightspace.generators.latent_diffusion.model import LatentDiffusionGenerator

    torch.manual_seed(seed)
    cfg = ModelConfig(resolution=8, ae_channels=[8, 8], latent_channels=2, patch=1, width=16, depth=1, heads=2,
                      cond_dim=8, families=["sphere", "torus"], sample_steps=2)
    gen = LatentDiffusionGenerator(cfg)
    gen.net.eval()
    return gen


def tiny_neural_field(seed: int = 0):
    from weightspace.generators.neural_field.config import FieldConfig
    from weightspace.generators.neural_field.model import NeuralFieldGenerator

    torch.manual_seed(seed)
    gen = NeuralFieldGenerator(FieldConfig(n_codes=2, d_z=4, width=16, depth=3, skip=1, resolution=8, families=["sphere", "torus"]))
    gen.net.eval()
    return gen


def _available(factory):
    try:
        factory()
    except ImportError as e:  # the generator's code is not in this tree
        return pytest.param(factory, marks=pytest.mark.skip(reason=f"generator code missing: {e}"))
    return factory


GENERATORS = [_available(tiny_latent_diffusion), _available(tiny_neural_field)]
# decodes through a batched path differ from item-by-item ones by float reordering (and the
# diffusion sampler amplifies that a little over its steps)
TOL = 1e-3


@pytest.mark.parametrize("factory", GENERATORS)
@pytest.mark.parametrize("name,options", [("condition", {}), ("lora", {"rank": 2}), ("layers", {"targets": "all"})])
def test_base_point_decodes_like_the_base_model(factory, name, options):
    gen = factory()
    param = make_parameterisation(gen, name, **options)
    cond = torch.randn(1, *gen.condition_shape, generator=torch.Generator().manual_seed(0))
    param.set_anchor(cond)
    grids = decode_points(gen, param, param.base_point().expand(2, -1), [1, 2])
    with torch.no_grad():
        ref = gen.sdf_grid(cond.expand(2, *gen.condition_shape), [1, 2])
    torch.testing.assert_close(grids, ref, atol=TOL, rtol=0)
    if name == "lora":
        kinds = {type(m) for n, m in gen.net.named_modules() if n in param.modules}
        assert nn.Linear in kinds
        if "LatentDiffusion" in type(gen).__name__:
            # `all` leaves out the autoencoder (it defines a fit's target); asked for, its Conv3d layers adapt
            assert not any(m.startswith(("ae.", "cond_")) for m in param.modules)
            dec = make_parameterisation(gen, name, rank=2, targets=r"ae\.decoder\..*")
            assert nn.Conv3d in {type(m) for n, m in gen.net.named_modules() if n in dec.modules}


@pytest.mark.parametrize("factory", GENERATORS)
def test_population_subspace_and_inversion(factory, tmp_path):
    data = make_toy_data(tmp_path / "data", count=3, resolution=8, points=128)
    cfg = PopulationConfig(checkpoint="tiny", parameterisation="lora", data=str(data), out=str(tmp_path / "pop"),
                           options={"rank": 1, "targets": "all"}, steps=2, lr=1e-3)
    pop = build_population(cfg, generator=functools.partial(factory, 0))
    assert len(pop) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in pop.rows)
    sub = fit_subspace(pop, 2)
    gen = factory(0)
    param = sub.frame.build(gen)  # delta form: the subspace's own points
    obs = torch.from_numpy(__import__("numpy").load(data / "points" / f"{pop.rows[0]['id']}.npz")["points"][:64])
    res = invert(gen, param, sub, obs, steps=3, lr=0.1, seed=0)
    assert len(res.losses) == 3 and all(torch.isfinite(torch.tensor(res.losses)))
    grids = decode_points(gen, param, sub.sample(2, seed=0), [0, 1])
    assert grids.shape == (2, 8, 8, 8) and torch.isfinite(grids).all()

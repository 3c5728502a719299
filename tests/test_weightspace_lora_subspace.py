"""LoRA subspaces are learned in delta form by default: exact conversion, decodes kept, `--form factors`, refusals."""

import functools
import json

import pytest
import torch
from toy_generator import ToyGenerator, make_toy, make_toy_data
from typer.testing import CliRunner

from weightspace.cli import _register, app
from weightspace.decode.points import decode_points
from weightspace.decode.sources import DecodeConfig, decode_source
from weightspace.generators import register, unregister
from weightspace.runtime.errors import InputError
from weightspace.space import subspace as subspace_mod
from weightspace.space.lora import delta_layout, factors_to_delta
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.population import PopulationConfig, build_population
from weightspace.space.subspace import Subspace, fit_subspace

TARGETS = "mid|vol"  # a Linear layer and the Conv3d
SEEDS = [3, 3, 3, 3]


@pytest.fixture(scope="module")
def pop(tmp_path_factory):
    """Four rank-2 factor members, fitted far enough from B = 0 that they decode differently from the base."""
    root = tmp_path_factory.mktemp("lora-sub")
    data = make_toy_data(root / "data", count=4, resolution=10)
    cfg = PopulationConfig(checkpoint="toy", parameterisation="lora", data=str(data), out=str(root / "pop"),
                           options={"rank": 2, "targets": TARGETS}, steps=5, lr=0.05)
    return build_population(cfg, generator=functools.partial(make_toy, seed=0))


def test_conversion_from_the_layout_equals_the_parameterisations():
    gen = make_toy(seed=3)
    param = make_parameterisation(gen, "lora", rank=2, alpha=4.0, targets="inp|mid|vol")
    pts = 0.3 * torch.randn(3, param.layout.size, generator=torch.Generator().manual_seed(0))
    delta_layout(param.layout).check_same(param.delta_parameterisation().layout)
    assert torch.equal(factors_to_delta(pts, param.layout), param.to_delta(pts))
    assert torch.equal(factors_to_delta(pts[1], param.layout), param.to_delta(pts)[1])
    with pytest.raises(InputError, match="factor-form lora layout"):
        delta_layout(param.delta_parameterisation().layout)


def test_factor_population_subspace_defaults_to_delta_and_decodes_like_the_factors(pop, tmp_path):
    gen = make_toy(seed=0)
    sub = fit_subspace(pop, len(pop) - 1, out=tmp_path / "sub")  # k = N - 1: every member is reconstructed exactly
    assert sub.frame.parameterisation["form"] == "delta" and sub.frame.layout.extra["form"] == "delta"
    back = Subspace.load(tmp_path / "sub")
    param_d, param_f = back.frame.build(gen), pop.frame.build(gen)
    assert param_d.form == "delta"
    factors = pop.matrix()  # (N, D_factors)
    deltas = factors_to_delta(factors, pop.frame.layout)  # (N, D_delta)
    torch.testing.assert_close(back.mean, deltas.mean(0), rtol=1e-5, atol=1e-7)  # the mean of the deltas
    # ... which is not the delta of the mean of the factors: B A is not linear in (A, B)
    assert not torch.allclose(factors_to_delta(factors.mean(0), pop.frame.layout), back.mean, rtol=1e-2, atol=1e-6)

    base = decode_points(gen, param_f, param_f.base_point()[None], SEEDS[:1])
    from_factors = decode_points(gen, param_f, factors, SEEDS)
    assert (from_factors - base).abs().max() > 1e-3  # the members do move the shape
    # a delta point converted from a factor point, through the subspace's coordinates, decodes to the same grid
    through = back.reconstruct(back.project(deltas))
    torch.testing.assert_close(decode_points(gen, param_d, through, SEEDS), from_factors, rtol=0, atol=1e-5)
    # the subspace's mean decodes like the one factor adapter that is the members' exact mean (rank N r)
    big, mean_factors = param_f.combine_factors(factors, [1 / len(pop)] * len(pop))
    big.set_anchor(pop.frame.anchor)
    torch.testing.assert_close(decode_points(gen, param_d, back.mean[None], SEEDS[:1]),
                               decode_points(gen, big, mean_factors[None], SEEDS[:1]), rtol=0, atol=1e-5)
    rows = decode_source(DecodeConfig(source=str(tmp_path / "sub"), out=str(tmp_path / "d"), samples=2, meshes=False),
                         generator=gen)
    assert len(rows) == 2
    assert json.loads((tmp_path / "d" / "decode.json").read_text())["parameterisation"]["form"] == "delta"


def test_streamed_conversion_gives_the_in_memory_subspace(pop, monkeypatch):
    ref = fit_subspace(pop, 2, solver="exact")
    monkeypatch.setattr(subspace_mod, "IN_MEMORY_BYTES", 0)
    got = fit_subspace(pop, 2, solver="exact")
    got.frame.layout.check_same(ref.frame.layout)
    torch.testing.assert_close(got.mean, ref.mean)
    torch.testing.assert_close(got.singular_values, ref.singular_values)


def test_form_factors_keeps_the_stored_coordinates(pop):
    sub = fit_subspace(pop, 2, form="factors")
    assert sub.frame == pop.frame
    torch.testing.assert_close(sub.mean, pop.matrix().mean(0))


def test_bad_forms_are_refused(pop, tmp_path):
    with pytest.raises(InputError, match="form must be one of factors, delta, got 'lowrank'"):
        fit_subspace(pop, 2, form="lowrank")
    data = make_toy_data(tmp_path / "data", count=3, resolution=8, points=64)
    cond = build_population(PopulationConfig(checkpoint="toy", parameterisation="condition", data=str(data),
                                             out=str(tmp_path / "cond"), steps=0, fit="points", observations=32),
                            generator=functools.partial(make_toy, seed=0))
    assert fit_subspace(cond, 2).frame == cond.frame  # other parameterisations: one form
    with pytest.raises(InputError, match="applies to lora populations"):
        fit_subspace(cond, 2, form="delta")


@pytest.fixture()
def toy_checkpoint(tmp_path):
    """The population's generator saved as a checkpoint folder of a registered kind, for the CLI to load."""
    register("toy", ToyGenerator, replace=True)
    make_toy(seed=0).save(tmp_path / "toy")
    yield tmp_path / "toy"
    unregister("toy")


def test_cli_form_option(pop, tmp_path, toy_checkpoint):
    _register()
    runner = CliRunner()
    for form, size in ((None, delta_layout(pop.frame.layout).size), ("factors", pop.frame.layout.size)):
        out = tmp_path / f"sub-{form}"
        r = runner.invoke(app, ["subspace", "fit", str(pop.folder), "-k", "2", "--out", str(out),
                                *([] if form is None else ["--form", form])])
        assert r.exit_code == 0, r.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["d"] == size and summary["parameterisation"]["form"] == (form or "delta")
        assert f"form {form or 'delta'}" in r.output
        r = runner.invoke(app, ["decode", str(out), "--checkpoint", str(toy_checkpoint), "--samples", "1", "--no-meshes",
                                "--out", str(tmp_path / f"d-{form}")])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["subspace", "fit", str(pop.folder), "-k", "2", "--form", "bad", "--out", str(tmp_path / "x")])
    assert isinstance(r.exception, InputError) and "factors, delta" in str(r.exception)

"""The subspace and fit studies on the converted fixture WaLa (pc, 32^3, 2 sampler steps), on CPU in seconds.

The fixture's weights are random, so its decodes do not reproduce the shapes they encode: the subspace
study refuses such examples (tested as such), and the runs that go through accept every example's
topology check, as tests/test_experiments_studies.py does for its random tiny generators; they test
the studies' mechanics through WaLa's encoder, sampler, decoder and training loss."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from weightspace.data.families import FAMILY_NAMES
from weightspace.data.make import make_dataset
from weightspace.experiments import fit_populations, subspace_cell
from weightspace.experiments.fit import METHODS, FitConfig, run_fit
from weightspace.experiments.forgetting import forget_shapes
from weightspace.experiments.subspace import SubspaceConfig, run_subspace
from weightspace.generators import load_generator
from weightspace.generators.wala.convert import convert_wala
from weightspace.generators.wala.generator import WaLaGenerator
from weightspace.runtime.errors import InputError

FIX = Path(__file__).resolve().parent / "fixtures" / "wala"


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("wala")
    folder = tmp / "WaLa"
    folder.mkdir()
    for name in ("args.json", "checkpoint.ckpt"):
        shutil.copy(FIX / "pc" / name, folder / name)
    convert_wala(folder, tmp / "ck", steps=2)
    return str(tmp / "ck")


@pytest.fixture(scope="module")
def wala_data(tmp_path_factory) -> str:
    """Three tori (examples, a fit target) and three dumbbells (held out for forgetting), at WaLa's 32^3."""
    out = tmp_path_factory.mktemp("wala-data") / "data"
    make_dataset(out, family="torus,dumbbell", count=6, resolution=32, seed=1, n_points=2048, progress=False)
    return str(out)


@pytest.fixture
def accepted_examples(monkeypatch):
    """Every example passes its topology check (the fixture's random weights decode none of them faithfully)."""
    real = subspace_cell.topology_check

    def accept(*args, **kwargs):
        return [{**c, "ok": True} for c in real(*args, **kwargs)]

    monkeypatch.setattr(subspace_cell, "topology_check", accept)
    monkeypatch.setattr(fit_populations, "reproduces", lambda row: True)


def _results(folder: Path) -> dict:
    return json.loads((Path(folder) / "results.json").read_text())


def test_subspace_refuses_examples_the_random_fixture_does_not_reproduce(tmp_path, converted, wala_data):
    gen = load_generator(converted)
    assert isinstance(gen, WaLaGenerator)
    cfg = SubspaceConfig(checkpoint=converted, out=str(tmp_path / "s"), family="torus", examples=3, k=1, samples=1,
                         data=wala_data, observations=256, meshes=False)
    with pytest.raises(InputError, match="examples decode to their own shape's robust Betti"):
        run_subspace(cfg, generator=gen)
    res = _results(tmp_path / "s")
    check = res["examples_check"]
    assert "refused" in res and [c["id"] for c in check] == [f"torus-{i:05d}" for i in range(3)]
    assert all(c["intended"] == [1, 1, 0] for c in check)  # the clean tori
    assert all((c["decoded"] == c["intended"]) == c["ok"] for c in check) and sum(c["ok"] for c in check) < cfg.k + 1


@pytest.mark.parametrize("parameterisation", ["condition", "lora"])
def test_subspace_on_wala_runs_through(tmp_path, converted, wala_data, accepted_examples, parameterisation):
    """K = 3 encoded conditions, or K = 3 rank-1 LoRA fits (one step of WaLa's training loss each) under
    their mean; a k = 1 subspace (of Delta W for LoRA) and one sample per kind decoded by WaLa's sampler."""
    cfg = SubspaceConfig(checkpoint=converted, out=str(tmp_path / "s"), family="torus", examples=3, k=1, samples=1,
                         parameterisation=parameterisation, lora_rank=1, fit_steps=1, fit_draws=1, data=wala_data,
                         observations=256, meshes=False)
    folder = run_subspace(cfg, generator=load_generator(converted))
    res = _results(folder)
    assert res["generator"] == "wala" and res["parameterisation"] == parameterisation and res["K_used"] == 3
    cell = folder / "cells" / "torus-K3-s0"
    assert res["decodes"] == 3 + 4 * 1 and len(_results(cell)["explained_variance_ratio"]) == 1
    assert set(res["topology_kept"]) == {"examples", "subspace", "random", "full_gaussian", "condition_noise"}
    assert all(len(b) == 3 for b in _results(cell)["examples_topology"]["per_example_robust"])
    assert len((folder / "samples.csv").read_text().splitlines()) == 1 + 3 + 4
    if parameterisation == "condition":
        assert res["dimension"] == 16 * 32  # the pc model's condition (16, 32)
    else:  # learned on Delta W = B A of every targeted layer
        assert res["dimension"] > 16 * 32
        assert json.loads((cell / "subspace" / "summary.json").read_text())["parameterisation"]["form"] == "delta"


def test_fit_on_wala_runs_every_method_and_measures_forgetting(tmp_path, converted, wala_data, accepted_examples):
    """One partial view of a torus fitted by every method (five steps each; both subspaces span two other
    tori: their encodings, and rank-1 LoRA members fitted by one step of WaLa's training loss), each
    decoded, and a held-out dumbbell decoded again under each method's weights."""
    cfg = FitConfig(checkpoint=converted, out=str(tmp_path / "f"), family="torus", views=[1], sigmas=[0.0], steps=5,
                    budgets=[0, 5], validation_views=1, points_per_view=128, lr_full=1e-2, lr_lora=1e-1, subspace_examples=2,
                    subspace_k=1, population_steps=1, population_options={"rank": 1}, forget_shapes=1, lora_rank=1,
                    data=wala_data, meshes=False)
    folder = run_fit(cfg, generator=load_generator(converted))
    res = _results(folder)
    assert res["generator"] == "wala" and res["target"] == {"id": "torus-00002", "family": "torus", "robust": [1, 1, 0]}
    assert res["forget_set"] == ["dumbbell-00000"] and res["member_fidelity"]["n"] == 2
    table = {row["method"]: row for row in res["table"]}
    assert list(table) == list(METHODS) and set(res["methods"]) == set(METHODS)
    for method, row in table.items():
        assert row["observed_points"] == 128 and row["trainable"] >= 0 and len(row["robust"]) == 3
        if method in ("encode", "optimise", "condition_subspace"):
            # no shared weight moved: the held-out shape decodes bit-identically under WaLa's seeded sampler
            assert row["forget_max_grid_change"] == 0.0
        else:  # moved weights, unless early stopping kept the start (the base weights, for lora and full)
            assert row["forget_max_grid_change"] > 0.0 or (method != "weight_subspace" and row["best_step"] == 0)
    assert (folder / "table.csv").is_file() and (folder / "fit_forgetting.png").is_file()


def test_a_generator_without_families_gets_procedural_forgetting_shapes(tmp_path):
    """WaLa knows no family names; without --data its held-out set is made of the first other procedural
    families (it was empty before, and the fit study measured no forgetting without saying so)."""
    rows = forget_shapes(tmp_path, data=None, family="torus", known=[], count=2, seed=1, resolution=16, pose="random")
    assert [r["family"] for r in rows] == [f for f in FAMILY_NAMES if f != "torus"][:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(r["family"] for r in rows)  # no other family made

"""Subspace, fit and compare studies end to end on the toy generator and tiny random real generators (seconds)."""

import json

import pytest
import torch
from toy_generator import ToyGenerator, make_toy_data
from typer.testing import CliRunner

from weightspace.cli import _register, app
from weightspace.experiments.compare import CompareConfig, run_compare
from weightspace.experiments.interpolate import InterpolateConfig, run_interpolate
from weightspace.generators.latent_diffusion.config import ModelConfig
from weightspace.generators.latent_diffusion.model import LatentDiffusionGenerator
from weightspace.generators.neural_field.config import FieldConfig
from weightspace.generators.neural_field.model import NeuralFieldGenerator
from weightspace.runtime.errors import InputError

FAMILIES = ["dumbbell", "pair", "torus"]


def tiny_ld():
    torch.manual_seed(0)
    cfg = ModelConfig(resolution=16, ae_channels=[8, 8], latent_channels=2, patch=2, width=16, depth=1, heads=1, 
                      cond_dim=8, families=FAMILIES, timesteps=50, sample_steps=2)
    return LatentDiffusionGenerator(cfg)


def tiny_nf():
    torch.manual_seed(0)
    cfg = FieldConfig(n_codes=4, d_z=4, width=16, depth=2, skip=1, resolution=16, families=FAMILIES, recon_steps=3, recon_restarts=1)
    return NeuralFieldGenerator(cfg)


@pytest.fixture
def unchecked_endpoints(monkeypatch):
    """Random tiny generators decode broken shapes by construction, and the study refuses paths between
    broken shapes. These tests are about the study's mechanics on each architecture, so they accept
    every endpoint; the check itself is tested in test_experiments_interpolate and below."""
    from weightspace.experiments import interpolate

    real = interpolate.check_endpoints

    def accept(*args, **kwargs):
        rows, grids = real(*args, **kwargs)
        return [{**r, "ok": True} for r in rows], grids

    monkeypatch.setattr(interpolate, "check_endpoints", accept)


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return str(make_toy_data(tmp_path_factory.mktemp("toy") / "data", count=8))


def _results(folder):
    return json.loads((folder / "results.json").read_text())


@pytest.mark.parametrize("make", [tiny_ld, tiny_nf])
def test_a_random_generator_family_path_is_refused(tmp_path, make):
    cfg = InterpolateConfig(checkpoint="tiny", out=str(tmp_path / "i"), a="dumbbell", b="pair", steps=4, meshes=False)
    with pytest.raises(InputError, match="decodes to robust Betti .* not the"):
        run_interpolate(cfg, generator=make())
    res = _results(tmp_path / "i")
    assert [c["intended"] for c in res["endpoint_check"]] == [[1, 0, 0], [2, 0, 0]] and "transitions" not in res


@pytest.mark.parametrize("make", [tiny_ld, tiny_nf])
def test_interpolate_default_family_path_on_tiny_real_generators(tmp_path, make, unchecked_endpoints):
    gen = make()
    cfg = InterpolateConfig(checkpoint="tiny", out=str(tmp_path / "i"), a="dumbbell", b="pair", steps=4, tolerance=0.05,
                            attribute=True, meshes=False)
    res = _results(run_interpolate(cfg, generator=gen))
    assert res["search_decodes"] >= 5 and res["decodes"] >= res["search_decodes"]
    for tr in res["transitions"]:
        assert tr["t_hi"] - tr["t_lo"] <= 0.05 and len(tr["before"]) == 3
    assert res["attribution"]["mode"] == ("condition_tokens" if gen.kind == "latent-diffusion" else "effective_weights")
    # no members on a path between family conditions; dumbbell -> pair leaves no within-family path to keep
    assert res["member_fidelity"]["mean_iou"] is None and "family conditions" in res["member_fidelity"]["reason"]
    assert res["topology_kept"] == {"condition": {"rate": None, "ci_low": 0.0, "ci_high": 1.0, "n": 0, "successes": 0}}


@pytest.mark.parametrize("make,endpoints", [(tiny_nf, "family conditions"), (tiny_ld, "encoded shapes")])
def test_interpolate_pairs_on_tiny_generators(tmp_path, make, endpoints, unchecked_endpoints):
    cfg = InterpolateConfig(checkpoint="tiny", out=str(tmp_path / "p"), pairs=3, steps=2, tolerance=0.1, observations=128,
                            meshes=False)
    res = _results(run_interpolate(cfg, generator=make()))
    # the latent diffusion model's family tokens are deterministic, so its within-family pairs are encoded shapes
    assert res["pair_endpoints"] == endpoints
    assert res["pairs"] == 3 and set(res["summary"]) == {"all", "within", "across"}
    assert res["summary"]["within"]["paths"] == 2 and res["summary"]["across"]["paths"] == 1
    assert (tmp_path / "p" / "pairs.csv").read_text().count("\n") == 4
    kept = res["topology_kept"]["condition"]
    assert kept["n"] == 2 and kept["ci_low"] <= kept["rate"] <= kept["ci_high"] and res["member_fidelity"]["betti_match"] is None


def test_a_killed_pairs_sweep_takes_up_its_finished_paths(tmp_path, monkeypatch, unchecked_endpoints):
    import csv

    from weightspace.experiments import pairs

    def rows(folder):
        with open(folder / "pairs.csv") as f:
            return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]

    def run(out):
        cfg = InterpolateConfig(checkpoint="tiny", out=str(out), pairs=4, steps=2, tolerance=0.1, observations=128,
                                meshes=False)
        return run_interpolate(cfg, generator=tiny_nf())

    whole = run(tmp_path / "whole")
    real, calls = pairs.pair_path, []

    def killed_after_two(gen, param, task):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(task.k)
        return real(gen, param, task)

    monkeypatch.setattr(pairs, "pair_path", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    assert not (tmp_path / "killed" / "results.json").exists()
    with open(tmp_path / "killed" / pairs.PROGRESS, "a") as f:
        f.write('{"key": "torn')  # a line cut short by the kill
    calls.clear()
    monkeypatch.setattr(pairs, "pair_path", lambda gen, param, task: calls.append(task.k) or real(gen, param, task))
    folder = run(tmp_path / "killed")
    assert calls == [2, 3]  # only the paths the killed run had not finished
    res, ref = _results(folder), _results(whole)
    assert res["pairs_resumed"] == 2 and ref["pairs_resumed"] == 0
    assert rows(folder) == rows(whole) and res["summary"] == ref["summary"]
    assert (folder / "transitions.csv").read_text() == (whole / "transitions.csv").read_text()
    assert not (folder / pairs.PROGRESS).exists()


@pytest.mark.slow
def test_compare_writes_side_by_side_table(tmp_path, unchecked_endpoints):
    def shrink(study, cfg):
        cfg.meshes = False
        if study == "interpolate":
            cfg.steps, cfg.tolerance = 2, 0.1
        if study == "subspace":
            cfg.samples, cfg.examples, cfg.k, cfg.observations, cfg.fit_steps = 2, [2], 1, 128, 1
        if study == "fit":
            cfg.steps, cfg.budgets, cfg.forget_shapes, cfg.points_per_view = 1, [0], 1, 64
            # random tiny generators do not reproduce the subspaces' members, and the study refuses those
            cfg.methods = [m for m in cfg.methods if not m.endswith("subspace")]
        return cfg

    gens = {"ld": tiny_ld(), "nf": tiny_nf()}
    folder = run_compare(CompareConfig(checkpoints=["ld", "nf"], out=str(tmp_path / "c")), generators=gens, configure=shrink)
    md = (folder / "compare.md").read_text().splitlines()
    assert md[0] == "| figure | ld | nf |"
    figures = {line.split(" | ")[0].lstrip("| ") for line in md[2:]}
    # random tiny generators do not reproduce the subspace's examples: the study refuses, and the table says why
    assert {"interpolate.transitions", "subspace.refused", "fit.lora.forgetting"} <= figures
    assert (folder / "compare.csv").is_file()


def test_cli_help_and_clean_error():
    _register()
    runner = CliRunner()
    for cmd in ("interpolate", "subspace", "fit", "compare"):
        r = runner.invoke(app, ["experiment", cmd, "--help"])
        assert r.exit_code == 0 and "Example: weightspace experiment" in r.output
    r = runner.invoke(app, ["experiment", "fit", "--views", "one"])
    assert r.exit_code != 0 and "--views" in str(r.exception) + r.output


def test_interpolate_between_lora_population_members_attributes_by_module_group(tmp_path, toy_data):
    from weightspace.space.population import PopulationConfig, build_population

    gen = ToyGenerator(seed=0)
    pop = tmp_path / "pop"
    build_population(PopulationConfig(checkpoint="toy", parameterisation="lora", data=toy_data, out=str(pop),
                                      options={"rank": 2, "targets": "inp|mid|film"}, members=3, steps=2),
                     generator=gen)
    # two members that reproduce their spheres (two steps from the toy's sphere-like base do not make a torus,
    # and the endpoint check refuses a path from a member that does not reproduce its target)
    cfg = InterpolateConfig(checkpoint="toy", out=str(tmp_path / "i"), endpoints="population", population=str(pop),
                            a="sphere-000", b="sphere-002", steps=2, tolerance=0.1, attribute=True, meshes=False)
    res = _results(run_interpolate(cfg, generator=gen))
    assert res["parameterisation"] == "lora" and res["attribution"]["mode"] == "module_groups"
    assert res["member_fidelity"]["betti_match"] == {"rate": 1.0, "ci_low": pytest.approx(0.342, abs=1e-3), "ci_high": 1.0,
                                                     "n": 2, "successes": 2}  # both endpoints passed their build's check
    assert 0 < res["member_fidelity"]["mean_iou"] <= 1
    kept = res["topology_kept"]["weight"]  # two spheres: one within-family path
    assert kept["n"] == 1 and kept["rate"] == (1.0 if not res["transitions"] else 0.0)
    # effective-weight distance of a LoRA path is the distance between merged weights, so it grows from 0
    rows = (tmp_path / "i" / "steps.csv").read_text().splitlines()
    col = rows[0].split(",").index("dist_effective")
    dist = [float(r.split(",")[col]) for r in rows[1:]]
    assert dist[0] == 0.0 and dist[-1] > 0.0
    # the path runs in Delta W = s B A, as the condition-paths comparison's weight paths do (a lerp of the factors
    # added the cross terms B_a A_b + B_b A_a mid-path): its length is the members' Delta W distance
    import torch

    from weightspace.space.store import Population

    members = Population(pop)
    index = {str(r["id"]): i for i, r in enumerate(members.rows)}
    with torch.no_grad():
        delta = members.frame.build(gen).to_delta(torch.stack([members.point(index[i]) for i in ("sphere-000", "sphere-002")]))
    assert res["dist_param_total"] == pytest.approx(float((delta[0] - delta[1]).norm()), rel=1e-4)


def test_compare_runs_a_generator_without_families_between_encoded_shapes(tmp_path, unchecked_endpoints):
    """A generator with no families (a WaLa point-cloud model, here the toy) cannot take the small
    interpolation's family endpoints: compare runs it between the same families' encoded shapes, as
    the demo does, and still writes the table."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from toy_generator import make_toy

    def shrink(study, cfg):
        cfg.meshes, cfg.steps, cfg.tolerance, cfg.observations = False, 2, 0.1, 128
        return cfg

    folder = run_compare(CompareConfig(checkpoints=["toy"], studies=["interpolate"], out=str(tmp_path / "c")),
                         generators={"toy": make_toy(seed=0, resolution=16)}, configure=shrink)
    column = json.loads((folder / "results.json").read_text())["columns"]["toy"]
    assert column["interpolate.endpoints"] == "encoded shapes" and column["interpolate.path"] == "dumbbell-00000 -> pair-00000"
    assert "interpolate.transitions" in (folder / "compare.md").read_text()
    # its page leads with the side-by-side table
    from weightspace.experiments.compare import write_compare_page

    page = write_compare_page(folder).read_text()
    assert "<section id=compare>" in page and "<td>interpolate.transitions</td>" in page
    # a rerun of the comparison replaces the study folders it owns (the family endpoints are tried again)
    again = run_compare(CompareConfig(checkpoints=["toy"], studies=["interpolate"], out=str(tmp_path / "c")),
                        generators={"toy": make_toy(seed=0, resolution=16)}, configure=shrink)
    assert json.loads((again / "results.json").read_text())["columns"]["toy"]["interpolate.endpoints"] == "encoded shapes"


def test_interpolate_family_pairs_of_seeded_draws_refuse_data(tmp_path, toy_data):
    """The neural field's family conditions are seeded draws, so its family pairs encode no shapes: a --data beside
    them was silently unused (latent diffusion's deterministic tokens do encode them, see above)."""
    cfg = InterpolateConfig(checkpoint="tiny", out=str(tmp_path / "p"), pairs=3, steps=2, data=toy_data, meshes=False)
    with pytest.raises(InputError, match=r"data \(--data\) is not read by these pairs"):
        run_interpolate(cfg, generator=tiny_nf())

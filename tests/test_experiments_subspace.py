"""The subspace study in weight space (issue 17, part 1) on the toy generator: keys, counts, intervals, resume (seconds)."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from toy_generator import ToyGenerator, make_toy_data

from weightspace.data.grid import grid_points
from weightspace.experiments import subspace as subspace_module
from weightspace.experiments.subspace import SubspaceConfig, run_subspace
from weightspace.experiments.subspace_cell import KINDS
from weightspace.experiments.subspace_figures import ci_of
from weightspace.experiments.summary import summarize
from weightspace.runtime.errors import InputError

ALL_KINDS = {"examples", *KINDS}


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return str(make_toy_data(tmp_path_factory.mktemp("toy") / "data", count=8))


def _results(folder):
    return json.loads((Path(folder) / "results.json").read_text())


def _rows(folder):
    with open(Path(folder) / "samples.csv", newline="") as f:
        return list(csv.DictReader(f))


def small(tmp_path, toy_data, **kw):
    """`--small` on the toy: spheres (the toy reproduces them; its tori decode as balls), 2 fit steps per member."""
    base = {"families": ["sphere"], "data": toy_data, "fit_steps": 2, "meshes": False}
    return SubspaceConfig.small("toy", str(tmp_path / "s"), **{**base, **kw})


def test_wilson_interval_known_values():
    # Wilson score 95% intervals (z = 1.96), e.g. Brown, Cai & DasGupta (2001)
    for k, n, lo, hi in ((8, 8, 0.6756, 1.0), (0, 8, 0.0, 0.3244), (5, 10, 0.2366, 0.7634), (46, 80, 0.4657, 0.6775)):
        r = ci_of(k, n)
        assert r["n"] == n and r["rate"] == pytest.approx(k / n)
        assert r["ci_low"] == pytest.approx(lo, abs=1e-4) and r["ci_high"] == pytest.approx(hi, abs=1e-4)


def test_small_on_toy_writes_the_documented_keys(tmp_path, toy_data):
    folder = run_subspace(small(tmp_path, toy_data), generator=ToyGenerator(seed=0))
    res = _results(folder)
    assert res["parameterisation"] == "lora" and res["lora_form"] == "delta"
    assert {"mean_iou", "betti_match"} <= set(res["member_fidelity"]) and 0 <= res["member_fidelity"]["mean_iou"] <= 1
    assert res["member_fidelity"]["betti_match"]["n"] == 3  # the pool: K = 3 members fitted, fidelity recorded per member
    assert set(res["topology_kept"]) == ALL_KINDS
    for kind, r in res["topology_kept"].items():
        assert set(r) >= {"rate", "ci_low", "ci_high", "n"} and 0 <= r["ci_low"] <= r["rate"] <= r["ci_high"] <= 1
        assert r["n"] == (3 if kind == "examples" else 8)
    for kind in KINDS:
        s = res["summary"][kind]
        assert {"validity", "local_variation", "diversity", "novelty_shape_ratio", "novelty_weight_ratio"} <= set(s)
    rows = _rows(folder)
    assert len(rows) == 3 + 4 * 8
    # the per-item CSV holds the counts behind every rate
    kept = sum(r["kept_robust"] == "True" for r in rows if r["kind"] == "subspace")
    assert res["topology_kept"]["subspace"] == pytest.approx(ci_of(kept, 8))
    # every baseline sits at the subspace sample's distance from the mean, so only the direction differs
    radius = {k: [float(r["radius"]) for r in rows if r["kind"] == k] for k in ("subspace", "random", "full_gaussian")}
    np.testing.assert_allclose(radius["random"], radius["subspace"], rtol=1e-4)
    np.testing.assert_allclose(radius["full_gaussian"], radius["subspace"], rtol=1e-4)
    assert res["claim2"]["all"]["verdict"] in ("supported", "kept, not specific", "not supported", "unclear at this size")
    assert [t["kind"] for t in res["table"]] == ["examples", *KINDS] and res["table"][0]["family"] == "sphere"
    assert (folder / "claim2.png").is_file() and (folder / "cells" / "sphere-K3-s0" / "samples.csv").is_file()
    assert summarize(folder).startswith("[toy] subspace (lora) sphere")


def test_members_fitted_on_a_process_pool_give_the_in_process_study(tmp_path, toy_data):
    """The CLI, the --full grid and the demo fit the population on a process per core: same members, same samples."""
    here = _results(run_subspace(small(tmp_path / "a", toy_data), generator=ToyGenerator(seed=0)))
    there = _results(run_subspace(small(tmp_path / "b", toy_data, executor="process", workers=2), generator=ToyGenerator(seed=0)))
    def fidelity(res):  # without the seconds each member took
        fid = res["member_fidelity"]
        return {**{k: v for k, v in fid.items() if k not in ("seconds_per_member", "per_family")},
                "per_family": {f: {k: v for k, v in b.items() if k != "seconds_per_member"} for f, b in fid["per_family"].items()}}

    assert fidelity(there) == fidelity(here) and there["topology_kept"] == here["topology_kept"]
    assert _rows(tmp_path / "b" / "s") == _rows(tmp_path / "a" / "s")


def test_grid_resumes_cell_by_cell_and_a_broken_family_is_recorded(tmp_path, toy_data, monkeypatch):
    cfg = small(tmp_path, toy_data, families=["sphere", "torus"], examples=[2, 3], k=1, seeds=[0, 1], samples=3)
    res = _results(run_subspace(cfg, generator=ToyGenerator(seed=0)))
    assert len(res["cells"]) == 2 * 2 * 2
    # the toy decodes tori as balls: their cells refuse, the spheres' run and are pooled
    refused = {(c["family"], c["K"], c["seed"]) for c in res["cells"] if c["refused"]}
    assert refused == {("torus", K, s) for K in (2, 3) for s in (0, 1)} and res["cells_refused"] == 4
    assert res["topology_kept"]["subspace"]["n"] == 4 * 3 and set(res["by_family"]) == {"sphere"}
    assert res["member_fidelity"]["per_family"]["torus"]["betti_match"]["rate"] < 1
    # the console line and the page's verdict line named both families and said nothing of the refused cells
    assert "not pooled: 4 cell(s) refused" in summarize(tmp_path / "s")
    from weightspace.report.verdicts import read_finding
    line = read_finding(tmp_path / "s").line
    assert "not pooled: 4 cells refused (torus K=2 s0, torus K=2 s1, torus K=3 s0, torus K=3 s1)" in line
    # the four sphere cells used all 2 + 2 + 3 + 3 examples: no 'K=3 (10 used)' as if ten of three were
    assert "sphere,torus, K=3, k=1, lora" in line, line
    # a rerun computes nothing: every finished (or refused) cell is read back
    monkeypatch.setattr(subspace_module, "run_cell", lambda *a, **k: pytest.fail("a finished cell was recomputed"))
    again = _results(run_subspace(cfg, generator=ToyGenerator(seed=0)))
    assert again["topology_kept"] == res["topology_kept"]
    # a rerun with other settings is refused rather than mixed with the old cells
    with pytest.raises(InputError, match="different samples"):
        run_subspace(small(tmp_path, toy_data, families=["sphere", "torus"], examples=[2, 3], k=1, seeds=[0, 1], samples=4),
                     generator=ToyGenerator(seed=0))


def test_condition_parameterisation_still_runs(tmp_path, toy_data):
    res = _results(run_subspace(small(tmp_path, toy_data, parameterisation="condition", samples=3),
                                generator=ToyGenerator(seed=0)))
    assert res["parameterisation"] == "condition" and res["population"] is None
    assert res["member_fidelity"]["betti_match"]["n"] == 3 and res["topology_kept"]["condition_noise"]["n"] == 3


def test_refuses_when_no_family_reproduces_its_examples(tmp_path, toy_data):
    with pytest.raises(InputError, match="examples decode to their own shape's robust Betti"):
        run_subspace(small(tmp_path, toy_data, families=["torus"], samples=3), generator=ToyGenerator(seed=0))
    assert "refused" in _results(tmp_path / "s")


def test_an_example_that_does_not_reproduce_its_shape_is_dropped(tmp_path, toy_data):
    """Three spheres and a fourth `sphere` whose grid is two balls: the toy decodes every member as one ball,
    so the cell drops the fourth, lists it, and fits the subspace on the three that pass."""
    rows = [json.loads(line) for line in (Path(toy_data) / "manifest.jsonl").read_text().splitlines()]
    spheres = [r for r in rows if r["family"] == "sphere"][:4]
    data = tmp_path / "mixed"
    for sub in ("grids", "points"):
        shutil.copytree(Path(toy_data) / sub, data / sub)
    R = spheres[3]["resolution"]
    x = grid_points(R).reshape(-1, 3)
    two = np.minimum(np.linalg.norm(x - [0.5, 0, 0], axis=1), np.linalg.norm(x + [0.5, 0, 0], axis=1)) - 0.3
    np.save(data / spheres[3]["grid"], np.clip(two, -0.2, 0.2).reshape(R, R, R).astype(np.float32))
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in spheres))
    res = _results(run_subspace(small(tmp_path, str(data), examples=[4], samples=3, parameterisation="condition"),
                                generator=ToyGenerator(seed=0)))
    cell = res["cells"][0]
    assert cell["examples_dropped"] == [spheres[3]["id"]] and cell["K_used"] == 3
    assert res["decodes"] == 4 + 4 * 3
    from weightspace.report.verdicts import read_finding
    assert "K=4 (3 of 4 examples used)" in read_finding(tmp_path / "s").line


def test_rejects_k_not_below_K(tmp_path):
    with pytest.raises(InputError, match="1 <= k < K"):
        run_subspace(SubspaceConfig(out=str(tmp_path / "s"), examples=[2, 4], k=2), generator=ToyGenerator())
    with pytest.raises(InputError, match="parameterisation must be one of"):
        run_subspace(SubspaceConfig(out=str(tmp_path / "s"), parameterisation="weights"), generator=ToyGenerator())


def test_weight_paths_between_members_against_condition_paths(tmp_path, toy_data):
    """Paths between LoRA members of a toy population, run again between the encoded conditions of the same
    shapes: both spaces measured by the same search, tori (which the toy decodes as balls) dropped in both."""
    from weightspace.experiments.interpolate import InterpolateConfig, run_interpolate
    from weightspace.space.population import PopulationConfig, build_population

    gen = ToyGenerator(seed=0)
    pop = tmp_path / "pop"
    build_population(PopulationConfig(checkpoint="toy", parameterisation="lora", data=toy_data, out=str(pop),
                                      options={"rank": 2, "targets": "inp|mid|film"}, members=6, steps=2), generator=gen)
    cfg = InterpolateConfig(checkpoint="toy", out=str(tmp_path / "w"), endpoints="population", population=str(pop), pairs=3,
                            condition_paths=True, steps=2, tolerance=0.1, observations=128, meshes=False)
    res = _results(run_interpolate(cfg, generator=gen))
    assert res["parameterisation"] == "lora" and res["weight_form"] == "delta" and res["pairs"] == 3
    # the spheres pass in both spaces; tori the toy decodes as balls (in either space) are dropped
    assert {"torus-003", "torus-005"} <= set(res["endpoints_dropped"]) <= {"torus-001", "torus-003", "torus-005"}
    assert {"mean_iou", "betti_match"} <= set(res["member_fidelity"])
    assert set(res["topology_kept"]) == {"weight", "condition"}
    for space in ("weight", "condition"):
        assert set(res["topology_kept"][space]) >= {"rate", "ci_low", "ci_high", "n"}
        assert res["summary"][space]["all"]["paths"] == 3
    assert res["paired"]["pairs"] == 3
    with open(tmp_path / "w" / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["space"] for r in rows) == ["condition"] * 3 + ["weight"] * 3
    assert (tmp_path / "w" / "weight_paths.png").is_file()
    # the one-line summary and the report page read this layout (summary by space, then by group)
    assert summarize(tmp_path / "w").startswith("[toy] interpolate: 3 member pairs: weight ")
    from weightspace.report.verdicts import read_finding

    finding = read_finding(tmp_path / "w")
    assert finding.verdict in ("supported", "inconclusive") and "condition path" in finding.line
    assert set(finding.headline["paths_with_transition"]) == {"weight", "condition"}


def test_a_generator_at_another_resolution_than_the_data_is_measured_at_the_data_s(tmp_path, toy_data):
    # the toy data is 12^3; a generator decoding 16^3 natively is compared with it at 12^3
    folder = run_subspace(small(tmp_path, toy_data), generator=ToyGenerator(seed=0, resolution=16))
    res = _results(folder)
    assert res["member_fidelity"]["mean_iou"] is not None and res["cells_refused"] == 0
    with pytest.raises(InputError, match=r"SubspaceConfig\.k: expected an integer, got '1'"):
        run_subspace(small(tmp_path / "t", toy_data, k="1"), generator=ToyGenerator(seed=0))


@pytest.mark.parametrize("more", [{"families": ["sphere", "torus"]}, {"examples": [3, 4]}])
def test_a_rerun_that_needs_more_of_the_folder_s_pool_is_refused(tmp_path, toy_data, more):
    """The folder's pool (pool-data, and the population built on it) is made once; a rerun with another family
    or a larger K recorded its new cells as waiting for members that would never come, and reported the rest."""
    run_subspace(small(tmp_path, toy_data, samples=2), generator=ToyGenerator(seed=0))
    with pytest.raises(InputError, match=r"pool-data: the pool this folder was made with holds \d '(torus|sphere)' shapes"):
        run_subspace(small(tmp_path, toy_data, samples=2, **more), generator=ToyGenerator(seed=0))


def test_a_rerun_that_pins_the_members_default_fit_steps_reuses_the_cells(tmp_path, toy_data, monkeypatch):
    """docs/findings.md copies a default run's folder and reruns it with fit_steps pinned to the default its members
    were fitted at: the cells (fit_steps unset) refused as 'computed with different fit_steps', though the population
    had the same members. Other member settings are still refused, by the population."""
    base = small(tmp_path, toy_data, samples=2)
    base.fit_steps = None  # the generator's default: 50 steps on the toy
    res = _results(run_subspace(base, generator=ToyGenerator(seed=0)))
    monkeypatch.setattr(subspace_module, "run_cell", lambda *a, **k: pytest.fail("a finished cell was recomputed"))
    pinned = small(tmp_path, toy_data, samples=2, fit_steps=50)
    assert _results(run_subspace(pinned, generator=ToyGenerator(seed=0)))["topology_kept"] == res["topology_kept"]
    with pytest.raises(InputError, match="population was built with other steps 50 -> 49"):
        run_subspace(small(tmp_path, toy_data, samples=2, fit_steps=49), generator=ToyGenerator(seed=0))


def test_grids_of_another_resolution_are_refused_with_a_way_out_this_command_has(tmp_path):
    """A generator that fits grids at its own resolution only, on a pool of other grids: refused before any member,
    with a way out `experiment subspace` has (--population), not population build's --fit points."""

    class NativeToy(ToyGenerator):
        native_grids_only = True

    data = make_toy_data(tmp_path / "data", count=8, resolution=10)  # the toy generator's grids are 12^3
    with pytest.raises(InputError, match=r"grids are 10\^3") as e:
        run_subspace(small(tmp_path, str(data)), generator=NativeToy(seed=0))
    assert "--population" in str(e.value) and "(--fit points)" not in str(e.value)
    assert not (tmp_path / "s" / "population" / "manifest.jsonl").exists()

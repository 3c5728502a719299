"""The fit study (claim 3): early stopping, weight-subspace inversion of a planted member, and the --small run's keys."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
from toy_generator import ToyGenerator, make_toy, make_toy_data

from weightspace.data.observe import observe
from weightspace.decode.mesh import grid_to_mesh
from weightspace.experiments.fit import METHODS, FitConfig, run_fit
from weightspace.experiments.fit_methods import EarlyStopping, Method, Objective, fit_method, subspace_method
from weightspace.runtime.errors import InputError
from weightspace.space.frame import Frame
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.subspace import fit_subspace_matrix


def test_early_stopping_keeps_the_last_real_improvement_and_waits_patience_evaluations():
    stop = EarlyStopping(patience=2, min_rel=0.01)
    seen = [(0, 1.0), (5, 0.5), (10, 0.499), (15, 0.6)]  # 0.499 is within 1% of 0.5: not an improvement
    flags = [stop.update(s, v) for s, v in seen]
    assert flags == [True, True, False, False] and (stop.best_step, stop.best) == (5, 0.5) and stop.stop


class _Quadratic:
    """A fit objective (x - goal)^2 summed; a model whose 'condition' is the point itself."""

    def __init__(self, goal):
        self.goal = torch.as_tensor(goal, dtype=torch.float32)

    def __call__(self, cond, params):
        return ((cond[0] - self.goal) ** 2).sum()


def test_fit_method_stops_on_validation_and_delivers_the_best_point_at_every_budget():
    # training pulls x to 2, validation prefers 1: validation improves until x passes 1, then worsens
    method = Method("toy", torch.zeros(1), 0.05, lambda x: (x[None], None))
    seen = []
    run = fit_method(method, _Quadratic([2.0]), _Quadratic([1.0]), max_steps=200, eval_every=5, patience=3, min_rel=0.0,
                     budgets=[0, 10, 100, 200], on_budget=lambda b, s, x: seen.append((b, s, float(x[0]))))
    v = dict(run.validation)
    assert run.stopped_at < 200 and run.stopped_at == run.best_step + 3 * 5  # patience 3 evaluations after the best
    assert v[run.best_step] == min(v.values()) and abs(float(run.best[0]) - 1.0) < 0.15
    assert [b for b, _, _ in seen] == [0, 10, 100, 200] and seen[0][1] == 0
    assert seen[-1][1] == run.best_step and seen[-1][2] == float(run.best[0])  # after the stop: the final best
    assert len(run.losses) == run.stopped_at


def _surface(gen, param, point, n=1500):
    """Points on the zero level set of the model `point` (mesh vertices moved by Newton steps) and normals."""
    with torch.no_grad():
        grid = gen.sdf_grid(param.conditions(point[None]), [0], params=param.params(point))[0].numpy()
    x = torch.from_numpy(np.asarray(grid_to_mesh(grid).vertices, dtype=np.float32))[None]  # (1, P, 3)
    for _ in range(8):
        x = x.detach().requires_grad_(True)
        f = gen.sdf_points(x, param.conditions(point[None]), [0], params=param.params(point))
        (g,) = torch.autograd.grad(f.sum(), x)
        x = x - f[..., None] * g / g.pow(2).sum(-1, keepdim=True).clamp_min(1e-8)
    g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return x[0].detach().numpy()[:n], g[0].numpy()[:n]


def test_weight_subspace_inversion_recovers_a_planted_member_from_its_own_views():
    gen = make_toy(seed=0)
    param = make_parameterisation(gen, "lora", rank=2, alpha=4.0, targets="mid|inp")
    g = torch.Generator().manual_seed(0)
    pts = torch.stack([param.initial_point(i) for i in range(12)])  # (N, D): a population of 12 members
    b_mask = torch.zeros(param.layout.size, dtype=torch.bool)
    for e in param.layout.entries:
        if e.name.endswith("lora_B"):
            b_mask[e.offset : e.offset + e.numel] = True
    pts[:, b_mask] = 0.5 * torch.randn(12, int(b_mask.sum()), generator=g)
    sub = fit_subspace_matrix(pts, 2, frame=Frame.of(param))
    z_star = sub.sigma * torch.tensor([0.6, -0.4])  # (k,) the planted member's coordinates, in the mean's basin
    planted = sub.reconstruct(z_star[None])[0]
    surf, normals = _surface(gen, param, planted)
    views = [observe(surf, normals, "partial", n=256, seed=s) for s in range(3)]
    fit_obj = Objective(gen, np.concatenate(views[:2]), free_weight=0.0, seed=0)
    val_obj = Objective(gen, views[2], free_weight=0.0, seed=0)
    # the population's members are the candidate starts, as in the study: the loss has local minima
    method = subspace_method(gen, "weight_subspace", sub, lr=0.05, prior=0.0, starts=torch.cat([torch.zeros(1, 2), sub.project(pts)]),
                             objective=fit_obj)
    run = fit_method(method, fit_obj, val_obj, max_steps=300, eval_every=5, patience=10, min_rel=0.0, budgets=[0],
                     on_budget=lambda *a: None)
    z = run.best * sub.sigma  # (k,)
    assert torch.allclose(z / sub.sigma, z_star / sub.sigma, atol=0.02), (z / sub.sigma, z_star / sub.sigma)
    assert run.validation[-1][1] < 1e-3 * run.validation[0][1] or min(v for _, v in run.validation) < 1e-4


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    data = make_toy_data(tmp_path_factory.mktemp("toy") / "data", count=12)
    cfg = FitConfig.small("toy", str(tmp_path_factory.mktemp("fit") / "f"))
    cfg.family, cfg.data, cfg.population_steps, cfg.meshes = "sphere", str(data), 20, False
    return cfg, run_fit(cfg, generator=ToyGenerator(seed=0))


def test_small_fit_run_writes_the_documented_keys(small_run):
    cfg, folder = small_run
    res = json.loads((folder / "results.json").read_text())
    assert res["parameterisation"] == "lora"
    assert set(res["member_fidelity"]) >= {"mean_iou", "betti_match"} and 0 <= res["member_fidelity"]["mean_iou"] <= 1
    fid = res["member_fidelity"]["betti_match"]
    assert fid["n"] == res["member_fidelity"]["n"] and fid["ci_low"] <= fid["rate"] <= fid["ci_high"]
    assert set(res["topology_kept"]) == set(METHODS)
    for m, kept in res["topology_kept"].items():  # one item per method in the small run
        assert kept["n"] == 1 and kept["rate"] == float(next(r for r in res["table"] if r["method"] == m)["topology_correct"])
    assert set(res["methods"]) == set(METHODS) and "weight_subspace" in res["methods"]
    for m, s in res["by_method"].items():  # what the mean of chamfer_l1 leaves out, beside it
        assert s["n"] == 1 and s["empty"] == (s["chamfer_l1_median"] is None), (m, s)
    for m, s in res["methods"].items():
        assert s["fit"]["steps"] == cfg.budgets == s["forgetting"]["steps"]
        assert {"chamfer_l1", "fscore", "topology_correct"} <= set(s["fit"])
        assert {"chamfer_change", "topology_changed", "family_quality_drop"} <= set(s["forgetting"])
        assert all(len(v) == len(cfg.budgets) for v in (*s["fit"].values(), *s["forgetting"].values()))
        if m in ("encode", "optimise", "condition_subspace"):  # no shared weight moved: measured exactly zero
            assert s["forgetting"]["chamfer_change"] == [0.0] * len(cfg.budgets)
    rows = {r["method"]: r for r in res["table"]}
    assert rows["condition_subspace"]["forget_max_grid_change"] == 0.0 and rows["lora"]["forget_max_grid_change"] > 0.0
    assert rows["weight_subspace"]["forget_max_grid_change"] > 0.0  # the subspace's weights are not the base's
    assert res["forget_set"] and res["forget_before"]["family_quality"] is None  # the toy has no families
    assert len((folder / "curves.csv").read_text().splitlines()) == 1 + len(METHODS) * len(cfg.budgets)
    for name in ("table.csv", "fit_curves.png", "fit_forgetting.png"):
        assert (folder / name).is_file()


def test_fit_resumes_finished_items(small_run):
    cfg, folder = small_run
    items = sorted((folder / "items").glob("*.json"))
    assert len(items) == len(METHODS)
    stamp = [p.stat().st_mtime_ns for p in items]
    before = json.loads((folder / "results.json").read_text())["table"]
    run_fit(cfg, generator=ToyGenerator(seed=0))
    assert [p.stat().st_mtime_ns for p in items] == stamp  # nothing refitted
    after = json.loads((folder / "results.json").read_text())["table"]
    assert [r["chamfer_l1"] for r in after] == [r["chamfer_l1"] for r in before]


def test_items_on_process_workers_give_the_in_process_rows(small_run, tmp_path):
    """The default runs populations and items on a process pool: the rows and curves are the in-process run's."""
    cfg, folder = small_run
    for pop in folder.glob("population-*"):  # resumed (finished members are not refitted): the pool runs the items
        shutil.copytree(pop, tmp_path / "f" / pop.name)
    twin = run_fit(dataclasses.replace(cfg, out=str(tmp_path / "f"), executor="process", workers=2), generator=ToyGenerator(seed=0))
    a, b = (json.loads((f / "results.json").read_text()) for f in (folder, twin))
    keys = ("method", "best_step", "stopped_at", "chamfer_l1", "fscore", "topology_correct", "forgetting", "forget_max_grid_change")
    assert [{k: r[k] for k in keys} for r in b["table"]] == [{k: r[k] for k in keys} for r in a["table"]]
    assert b["methods"]["weight_subspace"]["fit"] == a["methods"]["weight_subspace"]["fit"]
    assert b["cpu_seconds"] > 0


def test_fit_config_rejects_budgets_off_the_evaluation_grid():
    with pytest.raises(InputError, match="budgets must be multiples"):
        FitConfig(steps=20, budgets=[0, 7]).validate()
    with pytest.raises(InputError, match="subspace_k"):
        FitConfig(subspace_examples=4, subspace_k=4).validate()
    # a negative step size was an internal error from Adam once the populations were built; a negative
    # prior or free-space weight rewarded distance from the members or from the observation
    for field, value in (("lr_lora", -3e-3), ("lr_condition", 0.0), ("prior", -1.0), ("free_weight", -0.5), ("min_rel", -1e-3)):
        with pytest.raises(InputError, match=field):
            FitConfig(**{field: value}).validate()
    assert math.isfinite(FitConfig().steps)
    # where members are fitted changes no result: a resumed run may use another executor
    assert FitConfig(executor="process", workers=2, batch_members=4).fingerprint() == FitConfig().fingerprint()
    assert FitConfig(subspace_k=4).fingerprint() != FitConfig().fingerprint()
    assert FitConfig(steps=100).step_budgets() == [0, 10, 25, 50, 100]


def test_cli_small_fit_on_the_toy_generator(tmp_path):
    from typer.testing import CliRunner

    from weightspace.cli import _register, app
    from weightspace.generators.registry import register, unregister

    register("toy", ToyGenerator.from_checkpoint, replace=True)
    try:
        ckpt = ToyGenerator(seed=0).save(tmp_path / "toy")
        data = make_toy_data(tmp_path / "data", count=12)
        _register()
        r = CliRunner().invoke(app, ["experiment", "fit", "--small", "--checkpoint", str(ckpt), "--family", "sphere",
                                     "--data", str(data), "--out", str(tmp_path / "f"), "--no-meshes"])
        assert r.exit_code == 0, r.output
    finally:
        unregister("toy")
    res = json.loads((tmp_path / "f" / "results.json").read_text())
    cfg = json.loads((tmp_path / "f" / "config.json").read_text())
    assert cfg["steps"] == FitConfig.small().steps and cfg["subspace_examples"] == 4 and cfg["family"] == "sphere"
    assert {"parameterisation", "member_fidelity", "methods"} <= set(res) and "weight_subspace" in res["methods"]


def test_fit_refuses_a_population_whose_members_do_not_reproduce_their_shapes(tmp_path):
    # the toy decodes tori as balls: its LoRA members of tori keep no hole, and a subspace of them is refused
    data = make_toy_data(tmp_path / "data", count=12)
    cfg = FitConfig(checkpoint="toy", out=str(tmp_path / "f"), family="torus", views=[1], steps=5, budgets=[0, 5],
                    subspace_examples=3, subspace_k=2, population_steps=2, forget_shapes=1, data=str(data), meshes=False,
                    methods=["encode", "weight_subspace"], executor="inprocess")
    with pytest.raises(InputError, match="lora population: only .* members decode to their own shape"):
        run_fit(cfg, generator=ToyGenerator(seed=0))
    res = json.loads((tmp_path / "f" / "results.json").read_text())
    assert "refused" in res and res["member_fidelity"]["lora"]["used"] < 3


def test_small_fit_run_summarises(small_run):
    from weightspace.experiments.summary import summarize

    text = summarize(small_run[1])
    assert "weight_subspace CD" in text and "max|dSDF|" in text


def test_a_rerun_with_more_members_than_the_folder_s_shapes_names_them(tmp_path):
    """Without --data the folder's procedural shapes are made once, N + 2 of them; a rerun with a larger N said
    'found 6' as if the user's data were short."""
    cfg = dataclasses.replace(FitConfig.small("toy", str(tmp_path / "f")), methods=["encode"], forget_shapes=0, meshes=False)
    gen = ToyGenerator(seed=0, resolution=16)  # the procedural shapes' least resolution
    run_fit(cfg, generator=gen)
    with pytest.raises(InputError, match=r"found 6 in .*data/torus, made by an earlier run of this folder with fewer --members"):
        run_fit(dataclasses.replace(cfg, subspace_examples=8), generator=gen)


def test_an_item_fitted_again_without_meshes_leaves_no_earlier_mesh(tmp_path):
    """A rerun with other settings and --no-meshes refits the items, and the report showed the earlier run's meshes
    under the new rows' figures."""
    data = make_toy_data(tmp_path / "data", count=12)
    cfg = dataclasses.replace(FitConfig.small("toy", str(tmp_path / "f")), family="sphere", data=str(data), methods=["encode"],
                              forget_shapes=0)
    folder = run_fit(cfg, generator=ToyGenerator(seed=0))
    assert [p.name for p in (folder / "meshes").glob("*.ply")] == ["v1-s0.01-encode.ply"]
    run_fit(dataclasses.replace(cfg, seed=1, meshes=False), generator=ToyGenerator(seed=0))
    assert not list((folder / "meshes").glob("*.ply"))


def _fit_folder(folder, chamfers: dict[str, list[float]], lost: dict[str, float] | None = None):
    """A fit study's results folder, written as run_fit writes it, with these early-stopped Chamfer-L1s per method
    (inf: a fit that decoded no surface), no forgetting and, per method in `lost`, held-out shapes lost per fit."""
    from weightspace.analysis.measure import finite_mean
    from weightspace.runtime.results import write_results

    table = [{"views": v, "sigma": 0.01, "method": m, "chamfer_l1": cd, "fscore": 0.0 if math.isinf(cd) else 0.9,
              "topology_correct": not math.isinf(cd), "forgetting": 0.0, "robust": [1, 1, 0]}
             for m, cds in chamfers.items() for v, cd in enumerate(cds, 1)]
    by = {m: {"chamfer_l1": finite_mean(cds), "fscore": 0.9, "topology_correct": 1.0, "forgetting": 0.0,
              "n": len(cds), "empty": sum(map(math.isinf, cds)), **({"forget_shapes_lost": lost[m]} if lost and m in lost else {})}
          for m, cds in chamfers.items()}
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"study": "FitConfig", "views": [1, 2, 3], "sigmas": [0.01]}))
    write_results(folder, {"checkpoint": "toy", "generator": "toy", "target": {"id": "torus-00000", "robust": [1, 1, 0]},
                           "table": table, "by_method": by, "wall_seconds": 1.0})
    return folder


def test_a_fit_that_decodes_nothing_counts_against_its_method(tmp_path):
    from weightspace.report.verdicts import read_finding

    inf = math.inf
    # lora's one shape is the closest, but two of its three fits decoded nothing: dropping them made it "the best"
    # and the subspace, which always gives a shape, look 3x worse
    f = read_finding(_fit_folder(tmp_path / "a", {"lora": [0.01, inf, inf], "weight_subspace": [0.03, 0.03, 0.03]}))
    assert f.headline["empty_fits"]["lora"] == {"empty": 2, "n": 3} and f.headline["chamfer_l1_median"]["lora"] is None
    assert f.verdict == "supported" and f.headline["subspace_over_best_chamfer"] == pytest.approx(1.0), f.line
    assert "lora 2/3" in f.line
    # a subspace method that fails twice in three is not "as close as the best" on its one shape
    f = read_finding(_fit_folder(tmp_path / "b", {"encode": [0.02, 0.02, 0.02], "weight_subspace": [0.02, inf, inf]}))
    assert f.verdict == "not supported" and f.headline["subspace_over_best_chamfer"] is None, f.line
    # equal medians, but the subspace leaves a fit empty that the best does not: not "supported"
    f = read_finding(_fit_folder(tmp_path / "c", {"encode": [0.02, 0.02, 0.02], "weight_subspace": [0.02, 0.02, inf]}))
    assert f.verdict == "inconclusive", f.line
    json.dumps(f.headline, allow_nan=False)  # the demo's results.json is strict JSON


def test_method_figures_count_the_fits_that_decoded_nothing():
    from weightspace.experiments.fit import _aggregate

    rows = [{"method": "lora", "chamfer_l1": cd, "fscore": 0.5, "topology_correct": True, "best_step": 10, "trainable": 1,
             **{k: 0.0 for k in ("forgetting", "forget_topology_changed", "family_quality_drop", "forget_fscore_drop")}}
            for cd in (0.01, math.inf, math.inf)]
    curves = [{**r, "step": b} for r in rows for b in (0, 10)]
    best = _aggregate(rows, curves, ["lora"], [0, 10])["lora"]
    assert best["best"]["chamfer_l1"] == pytest.approx(0.01)  # the mean of the fits with a surface, as before
    assert (best["best"]["n"], best["best"]["empty"], best["best"]["chamfer_l1_median"]) == (3, 2, math.inf)
    assert best["fit"]["empty"] == [2, 2]


def test_grids_of_another_resolution_are_refused_with_a_way_out_this_command_has(tmp_path):
    """The populations of the subspace methods fit grids; a generator that fits grids at its own resolution
    only was refused with population build's hint (--fit points), an option experiment fit does not have."""

    class NativeToy(ToyGenerator):
        native_grids_only = True

    data = make_toy_data(tmp_path / "data", count=12, resolution=10)  # the toy generator's grids are 12^3
    cfg = FitConfig.small("toy", str(tmp_path / "f"))
    cfg.family, cfg.data = "sphere", str(data)
    with pytest.raises(InputError, match="grids are 10\\^3") as e:
        run_fit(cfg, generator=NativeToy(seed=0))
    assert "--fit" not in str(e.value) and "--methods encode,optimise,lora,full" in str(e.value)
    assert not (tmp_path / "f" / "population-sphere-condition").exists()  # refused before any member is fitted


def test_a_held_out_shape_lost_to_a_fit_counts_as_forgetting(tmp_path):
    """A held-out shape that decodes to nothing after a fit has no Chamfer change to average: it is counted apart,
    and a subspace method that loses more of them than full fine-tuning does not forget 'no more' than it."""
    from weightspace.experiments.forgetting import forgetting
    from weightspace.report.verdicts import read_finding

    grids = np.zeros((2, 4, 4, 4), np.float32)
    before = {"grids": grids, "per_shape": [0.01, 0.02], "fscore": 0.9, "robust": [(1, 1, 0), (1, 0, 0)]}
    after = {"grids": grids, "per_shape": [0.015, math.inf], "fscore": 0.45, "robust": [(1, 1, 0), (0, 0, 0)]}
    f = forgetting(before, after)
    assert f["forgetting"] == pytest.approx(0.005) and f["forget_shapes_lost"] == 1 and f["forget_topology_changed"] == 1
    same = {"full": [0.02, 0.02], "weight_subspace": [0.02, 0.02]}
    assert read_finding(_fit_folder(tmp_path / "a", same, lost={"full": 0.0, "weight_subspace": 0.0})).verdict == "supported"
    finding = read_finding(_fit_folder(tmp_path / "b", same, lost={"full": 0.0, "weight_subspace": 1.0}))
    assert finding.verdict == "inconclusive" and "held-out shapes decoded to nothing, per fit: 1 vs 0" in finding.line
    assert read_finding(_fit_folder(tmp_path / "c", same)).verdict == "supported"  # a results.json from before the count

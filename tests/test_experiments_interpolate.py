"""Interpolation study: a planted transition is located within tolerance at the expected cost, and attributed."""

import json
import math
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from weightspace.data.grid import grid_points
from weightspace.experiments.interpolate import InterpolateConfig, run_interpolate
from weightspace.generators.protocol import Generator
from weightspace.runtime.errors import InputError
from weightspace.space.frame import Frame
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.store import save_point

C_STAR = 0.3718  # condition value at which a second ball appears


class PlantedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.radius = nn.Parameter(torch.tensor([0.3]))


class PlantedGenerator(Generator):
    """Condition c (2,): ball A always; ball B appears when c[0] >= C_STAR; c[1] changes nothing.

    So along the path (0, 0) -> (1, 1) the robust b0 goes 1 -> 2 exactly at t = C_STAR, and only
    the first condition coordinate can cause it.
    """

    kind: ClassVar[str] = "planted"

    def __init__(self, resolution: int = 16) -> None:
        self.net = PlantedNet()
        self.config = {"kind": self.kind, "resolution": resolution}
        self.calls = 0

    @property
    def condition_shape(self):
        return (2,)

    @property
    def resolution(self):
        return self.config["resolution"]

    def sdf_points(self, points, condition, seeds, *, params=None):
        r = (params or {}).get("radius", self.net.radius)
        d_a = (points - torch.tensor([-0.45, 0.0, 0.0])).norm(dim=-1) - r  # (B, P)
        d_b = (points - torch.tensor([0.45, 0.0, 0.0])).norm(dim=-1) - r
        present = (condition[:, 0] >= C_STAR)[:, None]  # (B, 1)
        d = torch.where(present, torch.minimum(d_a, d_b), d_a)
        return d.clamp(-0.2, 0.2)

    def sdf_grid(self, condition, seeds, *, params=None, resolution=None):
        self.calls += condition.shape[0]
        R = resolution or self.config["resolution"]
        x = torch.from_numpy(grid_points(R)).reshape(1, -1, 3).expand(condition.shape[0], -1, -1)
        return self.sdf_points(x, condition, seeds, params=params).reshape(-1, R, R, R)

    def training_loss(self, grids, condition, seeds, *, params=None):
        return (self.sdf_grid(condition, seeds, params=params, resolution=grids.shape[-1]) - grids).abs().mean()

    def effective_weights(self, condition):
        return {"shift": condition * 1.0}

    def module_groups(self):
        return {"all": ["radius"]}


def _points(tmp_path, gen):
    param = make_parameterisation(gen, "condition")
    paths = []
    for name, value in (("a", [0.0, 0.0]), ("b", [1.0, 1.0])):
        paths.append(str(save_point(tmp_path / f"{name}.safetensors", torch.tensor(value), Frame.of(param, "planted"))))
    return paths


def test_planted_transition_located_within_tolerance_at_expected_cost(tmp_path):
    gen = PlantedGenerator()
    a, b = _points(tmp_path, gen)
    cfg = InterpolateConfig(checkpoint="planted", out=str(tmp_path / "out"), endpoints="points", a=a, b=b, attribute=True,
                            meshes=False)
    folder = run_interpolate(cfg, generator=gen)
    res = json.loads((folder / "results.json").read_text())
    assert len(res["transitions"]) == 1
    tr = res["transitions"][0]
    assert {"t_lo", "t_hi", "before", "after"} <= set(tr)
    assert tr["t_lo"] < C_STAR <= tr["t_hi"] and tr["t_hi"] - tr["t_lo"] <= 1e-3
    assert tr["before"] == [1, 0, 0] and tr["after"] == [2, 0, 0]
    # 17 uniform decodes + ceil(log2((1/16) / 1e-3)) = 6 bisections; the attribution adds 2 per part (2 parts)
    expected_search = 17 + math.ceil(math.log2((1 / 16) / 1e-3))
    assert res["search_decodes"] == expected_search <= 40
    assert res["decodes"] == expected_search + 4 == gen.calls
    assert tr["chamfer_jump"] > 0.1  # a whole ball appears
    attr = res["attribution"]
    assert attr["mode"] == "condition_coordinates"
    assert attr["by_transition"][0]["alone_reproduces"] == ["coords0-0"]
    assert attr["by_transition"][0]["necessary"] == ["coords0-0"]
    steps = (folder / "steps.csv").read_text().splitlines()
    assert len(steps) == 1 + expected_search
    assert steps[0].startswith("t,phase,b0,b1,b2,rb0,rb1,rb2")
    for name in ("config.json", "transitions.csv", "attribution.csv", "path.png"):
        assert (folder / name).is_file()


def test_parameterisation_distance_grows_linearly_along_a_lerp(tmp_path):
    gen = PlantedGenerator()
    a, b = _points(tmp_path, gen)
    folder = run_interpolate(InterpolateConfig(checkpoint="planted", out=str(tmp_path / "o"), endpoints="points", a=a, b=b,
                                               steps=4, tolerance=0.01, meshes=False), generator=gen)
    rows = [line.split(",") for line in (folder / "steps.csv").read_text().splitlines()]
    head = rows[0]
    t = np.array([float(r[head.index("t")]) for r in rows[1:]])
    dist = np.array([float(r[head.index("dist_param")]) for r in rows[1:]])
    np.testing.assert_allclose(dist, t * math.sqrt(2), rtol=1e-4)


def test_bad_config_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="path must be one of lerp, slerp"):
        run_interpolate(InterpolateConfig(out=str(tmp_path / "x"), path="cubic"), generator=PlantedGenerator())
    with pytest.raises(InputError, match="tolerance"):
        run_interpolate(InterpolateConfig(out=str(tmp_path / "x"), tolerance=0.0), generator=PlantedGenerator())


def test_data_endpoints_without_a_data_folder_use_procedural_shapes(tmp_path):
    """`--endpoints data --a torus-00000 --b mug-00000` on a generator with families makes the shapes itself."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_neural_field_model import tiny_generator

    gen = tiny_generator()
    gen.cfg.resolution = 16  # the smallest that `data make` draws
    gen.save(tmp_path / "ckpt")
    folder = run_interpolate(InterpolateConfig(checkpoint=str(tmp_path / "ckpt"), out=str(tmp_path / "out"), endpoints="data",
                                               a="torus-00000", b="mug-00000", steps=2, meshes=False))
    res = json.loads((folder / "results.json").read_text())
    assert res["endpoints"] == "data" and res["a"] == "torus-00000" and res["b"] == "mug-00000"
    assert res["search_decodes"] >= 3


def test_a_broken_endpoint_is_recorded_and_refused(tmp_path):
    """A path from a member that does not reproduce its target measures nothing: the study writes the
    endpoint check and refuses; with pairs, broken endpoints are dropped and listed."""
    import functools
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from toy_generator import make_toy, make_toy_data

    from weightspace.space.population import PopulationConfig, build_population

    data = make_toy_data(tmp_path / "data", count=4, resolution=16)
    gen = make_toy(seed=0)
    pop = build_population(PopulationConfig(checkpoint="toy", parameterisation="lora", data=str(data), out=str(tmp_path / "pop"),
                                            options={"rank": 2, "alpha": 4.0, "targets": "mid|vol"}, steps=2, lr=0.01),
                           generator=functools.partial(make_toy, seed=0))
    rows = {r["id"]: r["metrics"] for r in pop.rows}
    broken = [i for i, m in rows.items() if not m["fidelity_betti"]]
    good = [i for i, m in rows.items() if m["fidelity_betti"]]
    assert broken and good, rows  # two steps from a sphere-like base: the tori are not reproduced, the spheres are
    out = tmp_path / "single"
    with pytest.raises(InputError, match=f"endpoint '{broken[0]}' decodes to robust Betti"):
        run_interpolate(InterpolateConfig(checkpoint="toy", out=str(out), endpoints="population", population=str(tmp_path / "pop"),
                                          a=broken[0], b=good[0], steps=2, meshes=False), generator=gen)
    res = json.loads((out / "results.json").read_text())
    assert "refused" in res and [c["ok"] for c in res["endpoint_check"]] == [False, True], res
    assert res["endpoint_check"][0]["intended"] == rows[broken[0]]["target_robust_betti"]
    folder = run_interpolate(InterpolateConfig(checkpoint="toy", out=str(tmp_path / "pairs"), endpoints="population",
                                               population=str(tmp_path / "pop"), pairs=2, steps=2, meshes=False), generator=gen)
    res = json.loads((folder / "results.json").read_text())
    assert sorted(res["endpoints_dropped"]) == sorted(broken)
    assert all(t["a"] in good and t["b"] in good for t in res["transitions"])
    assert res["member_fidelity"]["betti_match"]["rate"] == 1.0  # of the members the paths ran between
    assert set(res["topology_kept"]) == {"weight"}
    if len(good) < 2:
        pytest.skip("one good endpoint only")

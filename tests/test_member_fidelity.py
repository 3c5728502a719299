"""Weight-space members must reproduce their shapes: the latent diffusion fit keeps its target
fixed, `all` leaves out what a fit must not move, and every population records its fidelity."""

import functools
import json

import numpy as np
import pytest
import torch
from test_latent_diffusion_model import tiny_generator
from toy_generator import make_toy, make_toy_data
from typer.testing import CliRunner

from weightspace.cli import _register, app
from weightspace.data.make import make_dataset
from weightspace.experiments.common import generator_pose
from weightspace.generators import load_generator
from weightspace.runtime.seeding import decode_seed, derive_seed
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.population import PopulationConfig, _anchor, build_population, fidelity_summary, fit_member, load_target, member_fidelity, read_shapes
from weightspace.space.store import Population


def test_latent_diffusion_fit_target_does_not_move_with_the_encoder():
    """The bug behind empty members: the target latent was encoded with the adapted encoder, so a fit
    could lower its loss by collapsing every latent. The loss must not depend on the encoder."""
    gen = tiny_generator()
    grids = torch.rand(2, 16, 16, 16) * 0.4 - 0.2  # (B, R, R, R) world units
    cond = gen.condition(family=["torus", "mug"])
    params = {n: p.detach().clone().requires_grad_(True) for n, p in gen.net.named_parameters()}
    loss = gen.training_loss(grids, cond, [1, 2], params=params)
    loss.backward()
    enc = [n for n in params if n.startswith("ae.encoder.")]
    assert enc and all(params[n].grad is None or not params[n].grad.any() for n in enc)
    assert params["denoiser.final.weight"].grad.abs().sum() > 0  # the denoiser does learn
    # a decoder the fit adapts gets the reconstruction term: its only signal
    dec = [n for n in params if n.startswith("ae.decoder.")]
    assert all(params[n].grad is not None and params[n].grad.abs().sum() > 0 for n in dec)


def test_all_targets_leave_out_the_autoencoder_and_unused_encoders():
    gen = tiny_generator()
    lora = make_parameterisation(gen, "lora", rank=2)
    layers = make_parameterisation(gen, "layers")
    for names in (lora.modules, layers.names):
        assert names and all(n.startswith(("denoiser.", "null_tokens")) for n in names), names
    assert "null_tokens" in layers.names  # guidance runs the null branch: a fit may move it
    # asked for by name, the autoencoder is still reachable
    assert make_parameterisation(gen, "lora", rank=2, targets=r"ae\.decoder\..*").modules


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Four shapes of four families in the pose `default` was trained on, from a seed no default uses."""
    folder = tmp_path_factory.mktemp("shapes")
    make_dataset(folder, family="torus,pretzel,pair,dumbbell", count=4, seed=777, split=(1.0, 0.0, 0.0), progress=False,
                 pose=generator_pose(load_generator("default")))
    return folder


def test_shipped_latent_diffusion_member_reproduces_its_shape(shapes):
    """Regression for empty members on `default`: a LoRA member of a torus, fitted with the population
    defaults under the mean anchor of four families, must decode much closer to its target than the base."""
    torch.set_num_threads(1)
    gen = load_generator("default")
    cfg = PopulationConfig(checkpoint="default", parameterisation="lora", data=str(shapes), out="unused").resolved(gen)
    assert cfg.anchor == "mean" and cfg.draws > 1
    rows = read_shapes(shapes)
    param = make_parameterisation(gen, "lora", rank=4)
    param.set_anchor(_anchor(gen, cfg.anchor, shapes, rows, {"observations": cfg.observations, "seed": cfg.seed}))
    assert rows[0]["family"] == "torus"
    grid = load_target(shapes, rows[0], fit="grid", observations=0, noise=0.0, seed=0)
    out = fit_member(gen, param, grid, fit="grid", steps=cfg.steps, lr=cfg.lr, draws=cfg.draws,
                     seed=derive_seed(cfg.seed, "member", rows[0]["id"]))
    fid = member_fidelity(gen, param, out["point"], grid, seed=decode_seed(0, 0))
    assert not fid["fidelity_empty"]
    assert fid["fidelity_iou"] > fid["base_iou"] + 0.3, fid
    assert fid["fidelity_iou"] > 0.6, fid


def test_population_rows_carry_fidelity_and_check_reports_it(tmp_path):
    data = make_toy_data(tmp_path / "data", count=4, resolution=10)
    cfg = PopulationConfig(checkpoint="toy", parameterisation="lora", data=str(data), out=str(tmp_path / "pop"),
                           options={"rank": 2, "alpha": 4.0, "targets": "mid|vol"}, steps=6, lr=0.02)
    pop = build_population(cfg, generator=functools.partial(make_toy, seed=0))
    for r in pop.rows:
        m = r["metrics"]
        assert 0.0 <= m["fidelity_iou"] <= 1.0 and 0.0 <= m["base_iou"] <= 1.0
        assert isinstance(m["fidelity_betti"], bool) and len(m["target_robust_betti"]) == 3
        assert m["decode_seed"] == decode_seed(0, r["index"])  # what `weightspace decode` uses for it
    s = fidelity_summary(Population(tmp_path / "pop"), min_iou=1.01)  # nothing reaches IoU 1.01: all flagged
    assert s["all"]["n"] == 4 and len(s["flagged"]) == 4 and set(s["per_family"]) == {"sphere", "torus"}
    assert s["all"]["betti"]["low"] <= s["all"]["betti"]["rate"] <= s["all"]["betti"]["high"]
    _register()
    runner = CliRunner()
    assert all(f["reasons"] == [f"IoU {f['iou']:.3f} < 1.01"] for f in s["flagged"] if f["iou"] < 1.01
               and f["robust_betti"] == f["target_robust_betti"])  # a flag says what is wrong, and only that
    res = runner.invoke(app, ["population", "check", str(tmp_path / "pop"), "--json", "--min-iou", "1", "--strict"])
    out = json.loads(res.output)
    assert res.exit_code == (1 if out["flagged"] else 0) and out["all"]["n"] == 4 and out["unreadable"] == [], res.output
    res = runner.invoke(app, ["population", "check", str(tmp_path / "pop"), "--min-iou", "0"])
    assert res.exit_code == 0 and "fidelity" in res.output
    res = runner.invoke(app, ["population", "check", str(tmp_path / "pop"), "--min-iou", "5"])
    assert res.exit_code == 2 and "--min-iou" in res.output


def test_population_check_reads_every_member_file(tmp_path):
    """A population with a member's weights file gone, or with no manifest, is broken, not fine."""
    import shutil

    data = make_toy_data(tmp_path / "data", count=3, resolution=10)
    cfg = PopulationConfig(checkpoint="toy", parameterisation="lora", data=str(data), out=str(tmp_path / "pop"),
                           options={"rank": 2, "alpha": 4.0, "targets": "mid|vol"}, steps=2, lr=0.02)
    pop = build_population(cfg, generator=functools.partial(make_toy, seed=0))
    _register()
    runner = CliRunner()
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "pop", broken)
    (broken / pop.rows[1]["shard"]).unlink()
    res = runner.invoke(app, ["population", "check", str(broken)])
    assert res.exit_code == 1 and f"member {pop.rows[1]['id']}" in res.output and "not found" in res.output, res.output
    (broken / "manifest.jsonl").unlink()
    res = runner.invoke(app, ["population", "check", str(broken)])
    assert "no finished members (manifest.jsonl missing" in str(res.exception), res.output  # `weightspace` exits 2 on it


def test_member_fidelity_of_an_identical_decode_is_perfect():
    gen = make_toy(seed=0)
    param = make_parameterisation(gen, "lora", rank=2, alpha=4.0, targets="mid|vol")
    x = param.base_point()
    with torch.no_grad():
        grid = gen.sdf_grid(param.conditions(x[None]), [decode_seed(0, 3)], params=param.params(x))[0]
    fid = member_fidelity(gen, param, x, grid, seed=decode_seed(0, 3))
    assert fid["fidelity_iou"] == 1.0 and fid["fidelity_betti"] and np.isclose(fid["base_iou"], 1.0)


def test_weight_fits_draw_low_noise_time_steps_more_often():
    """A weight fit's time steps follow floor(T u^FIT_T_POWER) (half below T/4 at power 2); a
    condition fit keeps uniform draws."""
    import torch

    from weightspace.generators.latent_diffusion import model as ld
    from weightspace.runtime.seeding import item_generator

    T = 1000
    weight = torch.stack([ld._fit_timestep(item_generator(s, "t"), T, ld.FIT_T_POWER) for s in range(4000)]).float()
    uniform = torch.stack([ld._fit_timestep(item_generator(s, "t"), T, 1.0) for s in range(4000)]).float()
    assert ld.FIT_T_POWER > 1.0
    assert 0 <= int(weight.min()) and int(weight.max()) < T
    assert abs(float((weight < T * 0.5 ** ld.FIT_T_POWER).float().mean()) - 0.5) < 0.03  # the median of T u^p is T / 2^p
    assert abs(float(uniform.median()) - T / 2) < 40

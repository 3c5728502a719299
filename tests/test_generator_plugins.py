"""Plugging in a user's generator: FieldGenerator, register, the entry-point group, and the named refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from toy_generator import make_toy, make_toy_data

from weightspace.generators import (
    BatchedDecode,
    EffectiveWeights,
    EncodesPoints,
    EncodesVoxels,
    FieldGenerator,
    HasFamilies,
    MissingCapability,
    Saveable,
    known_kinds,
    load_generator,
    register,
    require,
    unregister,
)
from weightspace.runtime.errors import InputError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class Ball(nn.Module):
    """f(x, c) = |x| - r(c): a ball whose radius a one-number condition moves."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 1)
        with torch.no_grad():
            self.lin.weight.fill_(0.2)
            self.lin.bias.fill_(0.4)

    def forward(self, x, c):
        return x.norm(dim=-1) - self.lin(c)  # (B, P) - (B, 1)


def _ball(kind: str = "test-ball") -> FieldGenerator:
    return FieldGenerator(Ball(), condition_shape=(1,), kind=kind, resolution=12)


def test_field_generator_decodes_fits_and_round_trips(tmp_path):
    gen = _ball()
    grids = gen.sdf_grid(torch.tensor([[0.0], [1.0]]), [0, 1]).detach()
    assert grids.shape == (2, 12, 12, 12)
    assert float(grids[1].min()) < float(grids[0].min())  # a bigger condition, a bigger ball
    target = gen.sdf_grid(torch.tensor([[1.0]]), [0]).detach()
    c = torch.zeros(1, 1, requires_grad=True)
    loss = gen.training_loss(target, c, [3])
    loss.backward()
    assert c.grad is not None and float(c.grad) < 0  # growing the condition lowers the loss
    assert gen.module_groups() == {"lin": ["lin."]}  # the default: top-level children

    register("test-ball", lambda state, config: FieldGenerator.from_state(Ball(), state, config), replace=True)
    try:
        gen.save(tmp_path / "ck")
        assert json.loads((tmp_path / "ck" / "config.json").read_text())["kind"] == "test-ball"
        back = load_generator(tmp_path / "ck")
        assert back.condition_shape == (1,) and back.resolution == 12 and "test-ball" in known_kinds()
        torch.testing.assert_close(back.sdf_grid(torch.tensor([[0.5]]), [0]), gen.sdf_grid(torch.tensor([[0.5]]), [0]))
        with pytest.raises(InputError, match="already registered"):
            register("test-ball", lambda s, c: None)
    finally:
        unregister("test-ball")
    with pytest.raises(InputError, match="'kind' must be one of .*got 'test-ball'"):
        load_generator(tmp_path / "ck")
    with pytest.raises(InputError, match="built-in"):
        register("neural-field", lambda s, c: None)


def test_a_factory_that_returns_no_generator_is_refused(tmp_path):
    _ball("test-bad").save(tmp_path / "ck")
    register("test-bad", lambda state, config: object(), replace=True)
    try:
        with pytest.raises(InputError, match="not a weightspace Generator"):
            load_generator(tmp_path / "ck")
    finally:
        unregister("test-bad")


def test_each_missing_capability_is_refused_by_name(tmp_path):
    gen = _ball()
    for capability in (EncodesPoints, EncodesVoxels, HasFamilies, BatchedDecode, EffectiveWeights):
        assert not isinstance(gen, capability)
        with pytest.raises(MissingCapability, match=f"lacks {capability.__name__}"):
            require(gen, capability, "this test")
    assert isinstance(gen, Saveable) and require(gen, Saveable, "this test") is gen
    with pytest.raises(MissingCapability, match="lacks EncodesPoints"):
        gen.condition(points=torch.zeros(1, 5, 3))
    with pytest.raises(MissingCapability, match="lacks EncodesVoxels"):
        gen.condition(voxels=torch.zeros(1, 4, 4, 4))
    with pytest.raises(MissingCapability, match="lacks HasFamilies"):
        gen.condition(family=["torus"])
    # a weight-space path of conditions measured in induced weights needs EffectiveWeights
    from weightspace.space.parameterisations import make_parameterisation

    param = make_parameterisation(gen, "condition")
    with pytest.raises(MissingCapability, match="lacks EffectiveWeights"):
        param.effective_path(torch.zeros(3, 1))
    # a study asks for the capability it needs before it starts
    from weightspace.experiments.interpolate import InterpolateConfig, run_interpolate

    with pytest.raises(MissingCapability, match="endpoints=family .*lacks HasFamilies"):
        run_interpolate(InterpolateConfig(out=str(tmp_path / "i"), endpoints="family"), generator=gen)
    from weightspace.experiments.subspace import SubspaceConfig, run_subspace

    data = make_toy_data(tmp_path / "data", count=4, resolution=8, points=64)
    with pytest.raises(MissingCapability, match="lacks EncodesPoints"):
        run_subspace(SubspaceConfig(out=str(tmp_path / "s"), family="torus", examples=2, k=1, samples=2, data=str(data)),
                     generator=gen)
    # the toy generator has them
    toy = make_toy(seed=0)
    assert isinstance(toy, EncodesPoints) and isinstance(toy, BatchedDecode) and isinstance(toy, EffectiveWeights)


PLUGIN = '''
import torch
from torch import nn
from weightspace.generators import FieldGenerator


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 16)
        self.b = nn.Linear(16 + 2, 1)

    def forward(self, x, c):
        h = torch.tanh(self.a(x))
        return self.b(torch.cat([h, c[:, None, :].expand(-1, x.shape[1], -1)], -1))[..., 0] + x.norm(dim=-1) - 0.5


def load(state, config):
    return FieldGenerator.from_state(Net(), state, config)
'''


def test_an_installed_entry_point_generator_loads_from_the_cli(tmp_path):
    """A distribution with an entry point in group weightspace.generators (a dist-info on the path, as pip
    would install it) makes its kind loadable by the CLI in a fresh process, with no code of ours touched."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "ws_plugin_demo.py").write_text(PLUGIN)
    info = site / "ws_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ws-plugin-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[weightspace.generators]\nplugin-mlp = ws_plugin_demo:load\n")
    sys.path.insert(0, str(site))
    try:
        import ws_plugin_demo

        torch.manual_seed(0)
        FieldGenerator(ws_plugin_demo.Net(), condition_shape=(2,), kind="plugin-mlp", resolution=10).save(tmp_path / "ck")
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("ws_plugin_demo", None)
    data = make_toy_data(tmp_path / "data", count=2, resolution=10, points=64)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "WEIGHTSPACE_QUIET": "1",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "weightspace.cli", "population", "build", "--checkpoint", str(tmp_path / "ck"),
           "--parameterisation", "lora", "--rank", "2", "--targets", "a|b", "--data", str(data), "--out", str(tmp_path / "pop"),
           "--steps", "2", "--fit", "grid"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 members" in r.stdout
    # without the plug-in on the path the same checkpoint is refused with the kinds that are known
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    r = subprocess.run(cmd[:-6] + ["--out", str(tmp_path / "pop2"), "--steps", "2", "--fit", "grid"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode != 0 and "plugin-mlp" in r.stderr and "latent-diffusion" in r.stderr


def test_the_custom_generator_example_runs(tmp_path):
    """examples/custom_generator.py OUT: a plain MLP defined, registered and put through two studies."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WEIGHTSPACE_QUIET": "1"}
    r = subprocess.run([sys.executable, str(EXAMPLES / "custom_generator.py"), str(tmp_path / "out")], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    interp = json.loads((tmp_path / "out" / "interpolate" / "results.json").read_text())
    sub = json.loads((tmp_path / "out" / "subspace" / "results.json").read_text())
    assert interp["generator"] == "mlp-sdf" and all(c["ok"] for c in interp["endpoint_check"])
    assert sub["generator"] == "mlp-sdf" and sub["K_used"] >= sub["k"] + 1 and "subspace" in sub["topology_kept"]


def test_plugin_mistakes_are_named(tmp_path):
    # a FieldGenerator's settings are checked by name, in code and in a hand-edited config.json
    for kwargs, match in (({"condition_shape": "16"}, "condition_shape must be a non-empty list"),
                          ({"condition_shape": 8}, "condition_shape must be a non-empty list"),
                          ({"condition_shape": (1,), "resolution": 16.7}, "resolution must be an integer"),
                          ({"condition_shape": (1,), "resolution": "32"}, "resolution must be an integer"),
                          ({"condition_shape": (1,), "clamp": 0}, "clamp must be a number > 0"),
                          ({"condition_shape": (1,), "kind": "neural-field"}, "built-in kind"),
                          ({"condition_shape": (1,), "kind": "Neural-Field"}, "built-in kind")):
        with pytest.raises(InputError, match=match):
            FieldGenerator(Ball(), **kwargs)
    # a condition_shape that is not the net's: named at the first decode, not a bare matmul error
    wrong = FieldGenerator(Ball(), condition_shape=(3,), kind="test-wrong", resolution=8)
    with pytest.raises(InputError, match=r"is condition_shape \[3\] the code size the net takes"):
        wrong.sdf_grid(torch.zeros(1, 3), [0])
    # grids of the wrong shape for training_loss
    with pytest.raises(InputError, match=r"training_loss takes grids \(B, R, R, R\)"):
        _ball().training_loss(torch.zeros(2, 12, 12), torch.zeros(2, 1), [0, 1])
    # a net computing in float64 still gives the protocol's float32 grids
    gen64 = FieldGenerator(Ball().double(), condition_shape=(1,), kind="test-ball", resolution=8)
    gen64.net.float()  # the weights in float32, the output cast by the adapter either way
    assert gen64.sdf_grid(torch.zeros(1, 1), [0]).dtype == torch.float32

    # register: names with blanks, built-in names in another case, classes without from_checkpoint
    for kind in (" test-x ", "Neural-Field", "WALA"):
        with pytest.raises(InputError, match="blanks|built-in"):
            register(kind, lambda s, c: None)
    with pytest.raises(InputError, match="has no from_checkpoint"):
        register("test-cls", FieldGenerator)

    # a factory that does not fit its checkpoint names the kind and the folder
    _ball("test-keyerr").save(tmp_path / "k")
    register("test-keyerr", lambda state, config: config["n_codes"], replace=True)
    try:
        with pytest.raises(InputError, match=r"k: the factory of kind 'test-keyerr' failed on this checkpoint \(KeyError"):
            load_generator(tmp_path / "k")
    finally:
        unregister("test-keyerr")

    # a device name load_generator cannot use is refused by name
    with pytest.raises(InputError, match="device must be one of"):
        load_generator("default-field", device="gpu")


def test_a_hand_edited_config_is_read_and_diverged_weights_are_not_saved(tmp_path):
    gen = _ball("test-ball")
    register("test-ball", lambda state, config: FieldGenerator.from_state(Ball(), state, config), replace=True)
    try:
        gen.save(tmp_path / "ck")
        cfg_path = tmp_path / "ck" / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("weights_hash")
        cfg["field"]["resolution"] = 24
        cfg_path.write_text(json.dumps(cfg))
        assert load_generator(tmp_path / "ck").resolution == 24  # the user's edit, not the copy in the weights
        cfg["field"]["resolution"] = "sixteen"
        cfg_path.write_text(json.dumps(cfg))
        with pytest.raises(InputError, match=r"ck/config.json: field 'field' or 'kind': resolution must be an integer"):
            load_generator(tmp_path / "ck")
        with torch.no_grad():
            gen.net.lin.weight.fill_(float("nan"))
        before = (tmp_path / "ck" / "model.safetensors").read_bytes()
        with pytest.raises(InputError, match=r"not saved: tensor 'lin.weight' has 1 NaN"):
            gen.save(tmp_path / "ck")
        assert (tmp_path / "ck" / "model.safetensors").read_bytes() == before  # the earlier save is kept
    finally:
        unregister("test-ball")


def test_a_study_on_a_generator_built_in_code_records_no_made_up_checkpoint(tmp_path):
    from weightspace.experiments.interpolate import InterpolateConfig, run_interpolate

    gen, data = make_toy(), make_toy_data(tmp_path / "data")
    ids = [json.loads(line)["id"] for line in (data / "manifest.jsonl").read_text().splitlines()][:2]
    settings = {"endpoints": "data", "data": str(data), "a": ids[0], "b": ids[1], "steps": 4, "tolerance": 0.1, "meshes": False}
    out = run_interpolate(InterpolateConfig(out=str(tmp_path / "i"), **settings), generator=gen)
    results = json.loads((out / "results.json").read_text())
    assert results["checkpoint"] == "" and json.loads((out / "config.json").read_text())["checkpoint"] == ""
    # a label the caller gives is kept
    out = run_interpolate(InterpolateConfig(checkpoint="toy", out=str(tmp_path / "j"), **settings), generator=gen)
    assert json.loads((out / "results.json").read_text())["checkpoint"] == "toy"
    loaded = load_generator("default-field")
    assert loaded.source == "default-field"


def test_a_plugin_sdf_grid_of_the_wrong_shape_is_named_at_decode():
    from weightspace.decode.points import decode_points
    from weightspace.space.parameterisations import make_parameterisation

    class Flat(FieldGenerator):
        def sdf_grid(self, condition, seeds, *, params=None, resolution=None):
            return super().sdf_grid(condition, seeds, params=params, resolution=resolution)[:, 0]  # (B, R, R)

    gen = Flat(Ball(), condition_shape=(1,), kind="test-flat", resolution=8)
    param = make_parameterisation(gen, "condition")
    with pytest.raises(InputError, match=r"'test-flat' \(Flat\): sdf_grid must return grids \(B, R, R, R\) = \(2, 8, 8, 8\), got \(2, 8, 8\)"):
        decode_points(gen, param, torch.zeros(2, 1), [0, 1])


def _broken(kind: str, mistake):
    class Broken(FieldGenerator):
        def sdf_grid(self, condition, seeds, *, params=None, resolution=None):
            return mistake(super().sdf_grid(condition, seeds, params=params, resolution=resolution))

    return Broken(Ball(), condition_shape=(1,), kind=kind, resolution=8)


@pytest.mark.parametrize("mistake, match", [
    (lambda g: g.detach().numpy(), r"got numpy.ndarray \(return a torch.Tensor\)"),
    (lambda g: g.to("meta"), r"got a tensor on the meta device"),
    (lambda g: (g < 0).long(), r"of floats \(signed distances in world units\), got dtype torch.int64"),
    (lambda g: torch.cat([g[:1] * float("nan"), g[1:]]), r"of finite values, got 512 NaN or infinite value\(s\) of 1024 in item\(s\) \[0\] of 2 \(seeds \[5\]\)"),
    (lambda g: g[:, ::2, ::2, ::2], r", got \(2, 4, 4, 4\)"),
])
def test_a_plugin_sdf_grid_that_breaks_the_protocol_is_named_wherever_it_is_decoded(mistake, match):
    """An sdf_grid returning a NumPy array, a meta tensor, integers, NaN or another resolution is named (generator,
    sdf_grid, what was wrong) by every decode: they crashed with internal errors, meshed NaN or measured it."""
    from weightspace.decode.points import decode_conditions, decode_points
    from weightspace.space.parameterisations import make_parameterisation
    from weightspace.space.population import member_fidelity

    gen = _broken("test-broken", mistake)
    param = make_parameterisation(gen, "condition")
    where = r"generator 'test-broken' \(Broken\): sdf_grid must return grids \(B, R, R, R\) = \(2, 8, 8, 8\)"
    with pytest.raises(InputError, match=where + ".*" + match):
        decode_points(gen, param, torch.zeros(2, 1), [5, 6])
    with pytest.raises(InputError, match="'test-broken' \\(Broken\\): sdf_grid must return grids"):
        decode_conditions(gen, torch.zeros(2, 1), 5)
    with pytest.raises(InputError, match="'test-broken' \\(Broken\\): sdf_grid must return grids"):
        member_fidelity(gen, param, torch.zeros(1), torch.ones(8, 8, 8), seed=5)
    # a half or double decode is read as float32
    assert _broken("test-half", lambda g: g.half()).grids(torch.zeros(2, 1), [0, 1]).dtype == torch.float32


class Raises(nn.Module):
    """A user's network with a bug of its own: its forward divides by zero."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 1)

    def forward(self, x, c):
        return (x.norm(dim=-1) - self.lin(c)) * (1 // 0)  # (B, P), never reached


def test_an_exception_in_a_plugin_s_code_is_reported_as_the_plugin_s(tmp_path, monkeypatch, capsys):
    """A plug-in's own bug reached the user as 'internal error: ... this is a bug in weightspace'; the line now names
    the kind and the plug-in's file, line and function, and says the plug-in raised it."""
    from weightspace.cli import main

    monkeypatch.setenv("WEIGHTSPACE_QUIET", "1")
    monkeypatch.delenv("WEIGHTSPACE_DEBUG", raising=False)
    FieldGenerator(Raises(), condition_shape=(1,), kind="test-raises", resolution=10).save(tmp_path / "ck")
    register("test-raises", lambda state, config: FieldGenerator.from_state(Raises(), state, config), replace=True)
    try:
        data = make_toy_data(tmp_path / "data", count=2, resolution=10, points=64)
        with pytest.raises(SystemExit) as stop:
            main(["population", "build", "--checkpoint", str(tmp_path / "ck"), "--parameterisation", "lora", "--data", str(data),
                  "--out", str(tmp_path / "pop"), "--steps", "1"])
    finally:
        unregister("test-raises")
    err = " ".join(capsys.readouterr().err.split())
    assert stop.value.code == 70
    assert "error in the generator plug-in of kind 'test-raises' (" in err and "test_generator_plugins.py:" in err
    assert "in forward): ZeroDivisionError" in err and "bug in weightspace" not in err

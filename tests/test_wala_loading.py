"""WaLa checkpoints: the Lightning reader (no code runs, unknown objects inert), `convert wala`, its named errors,
and the converted model behind the generator protocol, through one study end to end."""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import pickles
from safetensors.torch import load_file, save_file

from weightspace.cli import main
from weightspace.generators import EncodesPoints, EncodesVoxels, load_generator
from weightspace.generators.wala import WaLa, config_from_args, read_voxel_json
from weightspace.generators.wala.convert import convert_wala
from weightspace.generators.wala.generator import WaLaGenerator
from weightspace.runtime.errors import InputError
from weightspace.runtime.safe_load import Placeholder, load_lightning_checkpoint

FIX = Path(__file__).resolve().parent / "fixtures" / "wala"
CALLED: list[str] = []


class TrainingCallback:
    """Stands for a class of the training code: unpickling it for real would record the call."""

    def __init__(self):
        self.n = 1

    def __setstate__(self, state):
        CALLED.append("setstate")
        self.__dict__.update(state)


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "a pickle ran code: the marker file was created"


def _pc_state() -> dict[str, torch.Tensor]:
    return torch.load(FIX / "pc" / "checkpoint.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def _folder(tmp_path: Path, *, args: dict | None = None, ckpt: dict | None = None, name: str = "WaLa") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    raw = json.loads((FIX / "pc" / "args.json").read_text())
    (folder / "args.json").write_text(json.dumps({**raw, **(args or {})}))
    if ckpt is None:
        shutil.copy(FIX / "pc" / "checkpoint.ckpt", folder / "checkpoint.ckpt")
    else:
        torch.save(ckpt, folder / "checkpoint.ckpt")
    return folder


# --- the Lightning reader ---------------------------------------------------------------------------
def test_reader_on_the_pc_checkpoint():
    read = load_lightning_checkpoint(FIX / "pc" / "checkpoint.ckpt")
    assert read.placeholders == [] and read.ema_state_dict is None
    assert "state_dict" in read.top_level_keys and "optimizer_states" in read.top_level_keys
    assert not any("_orig_mod" in k for k in read.state_dict)
    assert read.state_dict["autoencoder.quantize.embedding.weight"].shape == (64, 4)
    raw = load_lightning_checkpoint(FIX / "pc" / "checkpoint.ckpt", strip_compile=False).state_dict
    assert "autoencoder._orig_mod.quantize.embedding.weight" in raw


def test_reader_makes_unknown_objects_inert_and_reads_ema(tmp_path):
    state = {"w": torch.arange(4.0), "autoencoder._orig_mod.x": torch.ones(2)}
    ckpt = {"state_dict": state, "state_dict_ema": {"module." + k: v * 2 for k, v in state.items()},
            "hyper_parameters": argparse.Namespace(lr=0.1), "callbacks": {"cb": TrainingCallback()}, "epoch": 3}
    torch.save(ckpt, tmp_path / "c.ckpt")
    CALLED.clear()
    read = load_lightning_checkpoint(tmp_path / "c.ckpt")
    assert CALLED == []  # the training class was never touched
    assert set(read.placeholders) == {"argparse.Namespace", f"{__name__}.TrainingCallback"}
    assert torch.equal(read.state_dict["w"], torch.arange(4.0)) and "autoencoder.x" in read.state_dict
    assert torch.equal(read.ema_state_dict["w"], 2 * torch.arange(4.0))


def test_reader_refuses_a_code_running_pickle(tmp_path, marker):
    evil = pickles.write_torch_pickle(tmp_path / "evil.ckpt", marker)
    with pytest.raises(InputError, match=r"evil\.ckpt: refused: this checkpoint would import (__builtin__|builtins)\.exec"):
        load_lightning_checkpoint(evil)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "callbacks": pickles.MarkerBomb(marker)}, tmp_path / "cb.ckpt")
    with pytest.raises(InputError, match="refused"):
        convert_wala(_folder(tmp_path, ckpt=None), tmp_path / "ok")  # a clean folder converts ...
        shutil.copy(tmp_path / "cb.ckpt", tmp_path / "WaLa" / "checkpoint.ckpt")
        convert_wala(tmp_path / "WaLa", tmp_path / "out")  # ... the bomb does not


def test_placeholder_is_inert():
    cls = type("X", (Placeholder,), {"origin": "pkg.X"})
    p = cls(1, 2)
    assert p.args == (1, 2) and "pkg.X" in repr(p) and not callable(p)


# --- convert and its named errors ---------------------------------------------------------------------
def test_convert_then_every_command_loads_it(tmp_path):
    out = tmp_path / "ck"
    report = convert_wala(_folder(tmp_path), out, steps=3)
    assert report["kind"] == "pc" and report["dtypes"] == ["float32"] and report["placeholders"] == []
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "wala" and config["args"]["resolution"] == 32 and config["sampling"]["steps"] == 3
    assert not any(k.startswith("autoencoder.encoder.") or "_orig_mod" in k for k in load_file(str(out / "model.safetensors")))
    gen = load_generator(out)
    assert isinstance(gen, WaLaGenerator) and gen.steps == 3
    direct = WaLa.from_pretrained(FIX / "pc")
    assert all(torch.equal(a, b) for a, b in zip(gen.net.state_dict().values(), direct.net.state_dict().values()))
    assert torch.equal(WaLa.from_pretrained(out).net.autoencoder.quantize.embedding.weight, direct.net.autoencoder.quantize.embedding.weight)


def test_convert_keeps_half_precision_and_casts_on_request(tmp_path):
    folder = tmp_path / "half"
    folder.mkdir()
    shutil.copy(FIX / "pc" / "args.json", folder / "args.json")
    save_file({k: v.half().contiguous() for k, v in _pc_state().items()}, str(folder / "model.safetensors"))
    assert convert_wala(folder, tmp_path / "keep")["dtypes"] == ["float16"]
    assert convert_wala(folder, tmp_path / "f32", dtype="float32")["dtypes"] == ["float32"]
    assert isinstance(load_generator(tmp_path / "keep"), WaLaGenerator)  # computes in float32


def test_cli_convert(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["convert", "wala", str(_folder(tmp_path)), "--out", str(tmp_path / "ck")])
    assert e.value.code == 0 and "WaLa pc" in capsys.readouterr().out and (tmp_path / "ck" / "model.safetensors").is_file()
    with pytest.raises(SystemExit) as e:
        main(["convert", "wala", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "nowhere: WaLa folder not found" in capsys.readouterr().err


def test_cli_convert_names_a_plain_pickle_of_numpy_arrays_in_one_line(tmp_path, capsys):
    """A checkpoint.ckpt written by pickle.dump with NumPy arrays: one error line naming what it holds, no warning
    from PyTorch, and not PyTorch's advice to load it with weights_only=False."""
    folder = _folder(tmp_path)
    with open(folder / "checkpoint.ckpt", "wb") as f:
        pickle.dump({"state_dict": {k: v.numpy() for k, v in _pc_state().items()}}, f, protocol=4)
    with warnings.catch_warnings(record=True) as seen, pytest.raises(SystemExit) as e:
        warnings.simplefilter("always")
        main(["convert", "wala", str(folder), "--out", str(tmp_path / "ck")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {folder / 'checkpoint.ckpt'}: a plain Python pickle (pickle.dump), not a file torch.save wrote; "
                          "it holds objects outside PyTorch's weights-only allow-list (numpy."), err
    assert "NumPy arrays); weightspace will not unpickle it" in err and "weights_only" not in err
    assert not [w for w in seen if "pickle protocol" in str(w.message)]
    assert not (tmp_path / "ck").exists()


def test_missing_files_are_named(tmp_path):
    folder = _folder(tmp_path)
    (folder / "checkpoint.ckpt").unlink()
    with pytest.raises(InputError, match=r"neither checkpoint\.ckpt nor model\.safetensors found"):
        convert_wala(folder, tmp_path / "out")
    (folder / "args.json").unlink()
    with pytest.raises(InputError, match=r"args\.json: file not found"):
        convert_wala(folder, tmp_path / "out")


@pytest.mark.parametrize("option, value", [
    ("use_image_conditions", True), ("normalize_latent", "l1"), ("pc_encoder_type", "PointNet_Simple"),
    ("diffusion_model_var_type", "LEARNED_RANGE"), ("wavelet", "haar"), ("max_depth", 4), ("dp_cond_type", "zero"),
])
def test_unimplemented_args_option_is_named_with_its_value(tmp_path, option, value):
    with pytest.raises(InputError, match=rf"args option {option}={value!r} is not implemented"):
        convert_wala(_folder(tmp_path, args={option: value}), tmp_path / "out")


def test_state_dict_args_mismatch_names_key_and_both_shapes(tmp_path):
    with pytest.raises(InputError, match=r"disagree at 'network\.unet\.register_emb': the checkpoint "
                                         r"has shape \(1, 2, 48\), args\.json implies \(1, 2, 64\)"):
        convert_wala(_folder(tmp_path, args={"att_hidden_size": 64}), tmp_path / "out")
    with pytest.raises(InputError, match=r"has 'network\.unet\.blocks\.1\..*which the model"):
        convert_wala(_folder(tmp_path, args={"transformer_num_blocks": 1}, name="one"), tmp_path / "out")
    state = {k: v for k, v in _pc_state().items() if "quantize" not in k}
    with pytest.raises(InputError, match=r"lacks 'autoencoder\.quantize\.embedding\.weight'"):
        convert_wala(_folder(tmp_path, ckpt={"state_dict": state}, name="short"), tmp_path / "out")


def test_truncated_checkpoint_is_named(tmp_path):
    folder = _folder(tmp_path)
    data = (folder / "checkpoint.ckpt").read_bytes()
    for cut in (len(data) // 2, len(data) - 100):
        (folder / "checkpoint.ckpt").write_bytes(data[:cut])
        with pytest.raises(InputError, match=r"checkpoint\.ckpt: truncated or corrupt"):
            convert_wala(folder, tmp_path / "out")
    (folder / "checkpoint.ckpt").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        convert_wala(folder, tmp_path / "out")


def test_bad_resolution_and_grid_are_refused():
    raw = json.loads((FIX / "pc" / "args.json").read_text())
    with pytest.raises(InputError, match="grid_size 6 decodes to edge 4g-2 = 22"):
        config_from_args({**raw, "grid_size": 6})
    with pytest.raises(InputError, match="att_patch_size 2 must divide grid_size 5"):
        config_from_args({**raw, "att_patch_size": 2})


def test_voxel_json_follows_wala(tmp_path):
    f = tmp_path / "v.json"
    f.write_text(json.dumps({"resolution": 4, "occupancy": [[0, 1, 2], [4, 0, 0], [-2, 0, 0]], "color": [[0, 0, 0]] * 3}))
    v = read_voxel_json(f)
    assert v.shape == (1, 1, 4, 4, 4) and v.sum() == 2 and v[0, 0, 0, 1, 2] == 1 and v[0, 0, 3, 0, 0] == 1
    f.write_text(json.dumps({"resolution": 4, "occupancy": [[5, 0, 0]], "color": [[0, 0, 0]]}))
    with pytest.raises(InputError, match="out of range"):
        read_voxel_json(f)


# --- behind the protocol ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pc_gen():
    return WaLaGenerator(WaLa.from_pretrained(FIX / "pc"), steps=2)


def test_generator_core_and_capabilities(pc_gen):
    pts = torch.rand(2, 300, 3) * 2 - 1
    assert isinstance(pc_gen, EncodesPoints) and isinstance(pc_gen, EncodesVoxels)  # voxels refused at call: pc model
    cond = pc_gen.condition(points=pts)
    assert cond.shape == (2, *pc_gen.condition_shape) == (2, 16, 32)
    with pytest.raises(InputError, match="not voxels"):
        pc_gen.condition(voxels=torch.zeros(1, 16, 16, 16))
    with torch.no_grad():
        grids = pc_gen.sdf_grid(cond, [0, 1])
        assert grids.shape == (2, 32, 32, 32)
        assert torch.allclose(pc_gen.sdf_grid(cond[1:], [1]), grids[1:], atol=1e-5)  # one seed per item: batch-independent
        params = {k: v + 0.05 for k, v in pc_gen.net.named_parameters() if k.startswith("network.unet.blocks.0.")}
        assert not torch.allclose(pc_gen.sdf_grid(cond[:1], [0], params=params), grids[:1])
        assert pc_gen.sdf_grid(cond[:1], [0], resolution=16).shape == (1, 16, 16, 16)
    names = [n for n, _ in pc_gen.net.named_parameters()]
    for group, prefixes in pc_gen.module_groups().items():
        assert any(n.startswith(p) for p in prefixes for n in names), group


def test_the_python_api_keeps_no_graph_and_the_generator_stays_differentiable(pc_gen):
    """encode_condition -> sample -> decode_latent, as a user calls them, keep no autograd graph (it held
    every sampling step's activations); the generator's sampler, which fits run, still keeps it."""
    m = pc_gen.model
    assert all(p.requires_grad for p in m.net.parameters())
    cond = m.encode_condition(points=torch.rand(300, 3) * 2 - 1)  # (1, 16, 32)
    z = m.sample(cond, seed=0, steps=2)  # (1, e, g, g, g)
    grid = m.decode_latent(z)  # (32, 32, 32)
    assert [(t.requires_grad, t.grad_fn) for t in (cond, z, grid)] == [(False, None)] * 3

    c = cond.clone().requires_grad_(True)
    params = {k: v for k, v in m.net.named_parameters() if k.startswith("network.unet.blocks.0.")}
    pc_gen.sample_latents(c, [0], params=params).pow(2).sum().backward()  # the generator's sampler, as a fit runs it
    assert c.grad.abs().sum() > 0 and all(p.grad.abs().sum() > 0 for p in params.values())
    m.net.zero_grad(set_to_none=True)


def test_unconditional_generator_reproduces_wala_from_a_seed():
    state = load_file(str(FIX / "un" / "model.safetensors"))
    state.update({k: v for k, v in _pc_state().items() if k.startswith("autoencoder.")})
    model = WaLa.from_state(json.loads((FIX / "un" / "args.json").read_text()), state)
    gen = WaLaGenerator(model)
    with torch.no_grad():
        grid = gen.sdf_grid(torch.zeros(1, 1), [7])
        assert torch.equal(grid[0], model.decode_latent(model.sample(None, seed=7)))


def test_interpolation_study_end_to_end(tmp_path):
    """A lerp between the conditions of two encoded point clouds (a sphere and a larger sphere), on the converted fixture."""
    from weightspace.experiments.interpolate import InterpolateConfig, run_interpolate
    from weightspace.space.frame import Frame
    from weightspace.space.parameterisations import make_parameterisation
    from weightspace.space.store import save_point

    convert_wala(_folder(tmp_path), tmp_path / "ck", steps=2)
    gen = load_generator(tmp_path / "ck")
    param = make_parameterisation(gen, "condition")
    rng = np.random.default_rng(0)
    p = rng.standard_normal((2, 400, 3))
    pts = torch.tensor(p / np.linalg.norm(p, axis=-1, keepdims=True) * np.array([0.3, 0.7])[:, None, None], dtype=torch.float32)
    with torch.no_grad():
        cond = gen.condition(points=pts)
    files = [str(save_point(tmp_path / f"{n}.safetensors", c.reshape(-1), Frame.of(param, str(tmp_path / "ck")))) for n, c in zip("ab", cond)]
    cfg = InterpolateConfig(checkpoint=str(tmp_path / "ck"), out=str(tmp_path / "res"), endpoints="points",
                            a=files[0], b=files[1], steps=2, tolerance=0.3, meshes=False)
    results = json.loads((run_interpolate(cfg) / "results.json").read_text())
    assert results["generator"] == "wala" and results["endpoints"] == "points" and results["decodes"] >= 1


def test_a_fit_through_the_decoder_reaches_the_denoiser(pc_gen):
    """The codebook snap is straight-through: WaLa's grid loss sends gradient back through the decoder to
    the condition and the denoiser (it was exactly zero, so a fit moved nothing before the decoder), while
    the snapped values stay the reference's, bit for bit."""
    from weightspace.generators.wala.decoder import quantize

    z = torch.randn(1, 4, 2, 2, 2, requires_grad=True)
    book = torch.randn(8, 4)
    snapped, idx = quantize(z, book, None)
    flat = z.detach().permute(0, 2, 3, 4, 1).reshape(-1, 4)
    assert torch.equal(snapped.detach().permute(0, 2, 3, 4, 1).reshape(-1, 4), flat + (book[idx] - flat))
    snapped.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))

    m = pc_gen.model
    cond = m.encode_condition(points=torch.rand(300, 3) * 2 - 1).clone().requires_grad_(True)  # (1, 16, 32)
    params = {k: v for k, v in m.net.named_parameters() if k.startswith("network.unet.blocks.0.")}
    R = pc_gen.resolution
    target = torch.linspace(-0.2, 0.2, R).expand(R, R, R)[None].clone()  # (1, R, R, R) any grid
    pc_gen.training_loss(target, cond, [0], params=params).backward()
    assert cond.grad.abs().sum() > 0 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values())
    m.net.zero_grad(set_to_none=True)

"""WaLa configs at the edge: bad values and unknown keys in args.json and a converted config.json are input errors
(exit 2) naming the file and the dotted field; `convert wala` checks --steps and refuses to overwrite a checkpoint."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from weightspace.cli import main
from weightspace.generators import load_generator
from weightspace.generators.wala import WaLa, config_from_args
from weightspace.generators.wala.convert import convert_wala
from weightspace.generators.wala.generator import WaLaGenerator
from weightspace.runtime.checkpoint import load_checkpoint
from weightspace.runtime.errors import InputError

FIX = Path(__file__).resolve().parent / "fixtures" / "wala"
ARGS = json.loads((FIX / "pc" / "args.json").read_text())


def _source(tmp_path: Path, name: str = "WaLa", **args) -> Path:
    """A WaLa folder: the pc fixture's checkpoint with args.json edited."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "args.json").write_text(json.dumps({**ARGS, **args}))
    shutil.copy(FIX / "pc" / "checkpoint.ckpt", folder / "checkpoint.ckpt")
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, dict, dict]:
    """One converted pc checkpoint: (folder, state, config)."""
    tmp = tmp_path_factory.mktemp("wala")
    convert_wala(_source(tmp), tmp / "ck", steps=2)
    state, config = load_checkpoint(tmp / "ck")
    return tmp / "ck", state, config


def _edit(config: dict, path: str, value) -> dict:
    """A deep copy of `config` with the dotted field `path` set to `value`."""
    config = json.loads(json.dumps(config))
    *parents, key = path.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[key] = value
    return config


@pytest.mark.parametrize("field, value, message", [
    ("sampling.steps", "eight", r"config\.json: sampling\.steps: expected an integer, got 'eight'"),
    ("sampling.steps", 0, r"config\.json: sampling\.steps: must be >= 2, got 0"),
    ("sampling.steps", 1001, r"config\.json: sampling\.steps must be an integer in 2\.\.1000 \(diffusion_step\), got 1001"),
    ("sampling.guidance", -1, r"config\.json: sampling\.guidance: must be >= 0"),
    ("args.e_dim", -4, r"config\.json: args\.e_dim: must be >= 1, got -4"),
    ("args.att_hidden_size", "48", r"config\.json: args\.att_hidden_size: expected an integer"),
    ("args.decoder_num_tran", 10**7, r"config\.json: args\.decoder_num_tran: must be <= 1024"),
    ("bogus", 1, r"config\.json: unknown field\(s\) \['bogus'\]; valid fields are \['args', 'kind', 'sampling', 'source', 'weights_hash'\]"),
    ("sampling.bogus", 1, r"config\.json: sampling: unknown field\(s\) \['bogus'\]"),
    ("source.bogus", 1, r"config\.json: source: unknown field\(s\) \['bogus'\]"),
])
def test_bad_converted_config_is_named_by_file_and_field(converted, field, value, message):
    _, state, config = converted
    with pytest.raises(InputError, match=message):
        WaLaGenerator.from_checkpoint(state, _edit(config, field, value))


def test_unknown_args_keys_are_kept_not_refused(converted):
    """args is WaLa's own args.json: training-only keys we do not know are carried, not refused."""
    _, state, config = converted
    gen = WaLaGenerator.from_checkpoint(state, _edit(config, "args.some_training_option", [1, 2]))
    assert gen.model.args["some_training_option"] == [1, 2] and gen.steps == 2


def test_bad_config_exits_2_naming_the_folder_from_python_and_the_field_from_the_cli(converted, tmp_path, capsys):
    folder = tmp_path / "ck"
    shutil.copytree(converted[0], folder)
    (folder / "config.json").write_text(json.dumps(_edit(converted[2], "sampling.steps", "eight")))
    with pytest.raises(InputError, match=re.escape(f"{folder / 'config.json'}: sampling.steps: expected an integer")):
        WaLa.from_pretrained(folder)
    np.save(tmp_path / "p.npy", np.random.default_rng(0).uniform(-0.5, 0.5, (100, 3)).astype(np.float32))
    with pytest.raises(SystemExit) as e:
        main(["generate", "--checkpoint", str(folder), "--points", str(tmp_path / "p.npy"), "--out", str(tmp_path / "g")])
    assert e.value.code == 2 and "sampling.steps: expected an integer, got 'eight'" in capsys.readouterr().err


@pytest.mark.parametrize("field, value, message", [
    ("e_dim", -4, r"args\.json: e_dim: must be >= 1, got -4"),
    ("diffusion_step", "eight", r"args\.json: diffusion_step: expected an integer, got 'eight'"),
    ("dp_cond", float("nan"), r"args\.json: dp_cond: must be a finite number"),
    ("lr", float("inf"), r"args\.json: lr: must be a finite number"),  # unread, but config.json could not hold it
    ("unet_model_channels", 16, r"args\.json: unet_model_channels: .* multiple of 32, got 16"),
    ("diffusion_scale_ratio", 60, r"args\.json: diffusion_scale_ratio: the largest linear beta"),
    ("att_patch_size", 0, r"args\.json: att_patch_size: must be >= 1, got 0"),
    ("pc_output_dim", 1, r"head width of 2, which does not divide the attention width 1"),
])
def test_bad_args_json_is_named_at_convert(tmp_path, field, value, message):
    with pytest.raises(InputError, match=message):
        convert_wala(_source(tmp_path, **{field: value}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_args_json_exits_2_not_70(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["convert", "wala", str(_source(tmp_path, e_dim=-4)), "--out", str(tmp_path / "out")])
    assert e.value.code == 2 and "args.json: e_dim: must be >= 1, got -4" in capsys.readouterr().err


def test_args_bounds_without_a_checkpoint():
    with pytest.raises(InputError, match=r"args\.json: transformer_num_heads: must be >= 1, got 0"):
        config_from_args({**ARGS, "transformer_num_heads": 0})  # was a ZeroDivisionError
    with pytest.raises(InputError, match=r"args\.json: num_inds: expected an integer for a pc model, got None"):
        config_from_args({k: v for k, v in ARGS.items() if k != "num_inds"})


@pytest.mark.parametrize("steps", [0, 1, 1001])
def test_convert_checks_steps_by_option(tmp_path, capsys, steps):
    with pytest.raises(SystemExit) as e:
        main(["convert", "wala", str(_source(tmp_path)), "--out", str(tmp_path / "out"), "--steps", str(steps)])
    assert e.value.code == 2 and f"--steps must be an integer in 2..1000 (diffusion_step), got {steps}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="steps must be an integer in 2..1000"):
        WaLaGenerator(WaLa.from_pretrained(FIX / "pc"), steps=steps)


def test_convert_refuses_to_overwrite_a_checkpoint_unless_asked(tmp_path, capsys):
    source, out = _source(tmp_path), tmp_path / "out"
    convert_wala(source, out, steps=2)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(SystemExit) as e:
        main(["convert", "wala", str(source), "--out", str(out), "--steps", "3"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{out}: already holds a checkpoint (config.json, model.safetensors); pass --overwrite to replace it" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    with pytest.raises(SystemExit) as e:
        main(["convert", "wala", str(source), "--out", str(out), "--steps", "3", "--overwrite"])
    assert e.value.code == 0 and json.loads((out / "config.json").read_text())["sampling"]["steps"] == 3
    (out / "config.json").unlink()  # weights alone still count as a checkpoint
    with pytest.raises(InputError, match=r"already holds a checkpoint \(model\.safetensors\)"):
        convert_wala(source, out)
    with pytest.raises(InputError, match="--out is the WaLa folder being converted"):
        convert_wala(source, source, overwrite=True)


def test_home_folder_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _source(tmp_path, "WaLa-PC")
    model = WaLa.from_pretrained("~/WaLa-PC")
    assert model.cfg.kind == "pc"
    convert_wala("~/WaLa-PC", "~/ck", steps=2)
    assert (tmp_path / "ck" / "config.json").is_file() and WaLa.from_pretrained("~/ck").cfg.kind == "pc"


def test_save_refuses_what_loading_would_refuse(converted, tmp_path):
    _, state, config = converted
    gen = WaLaGenerator.from_checkpoint(state, config)
    with pytest.raises(InputError, match=r"config\.json: unknown field\(s\) \['note'\]"):
        gen.save(tmp_path / "a", extra_config={"note": "x"})
    assert not (tmp_path / "a").exists()
    again = load_generator(gen.save(tmp_path / "b"))
    assert again.steps == 2 and all(torch.equal(a, b) for a, b in zip(again.net.state_dict().values(), gen.net.state_dict().values()))


def test_convert_help_names_both_weight_files(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "wala", "--help"])
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "args.json + checkpoint.ckpt or model.safetensors" in text and "--overwrite" in text

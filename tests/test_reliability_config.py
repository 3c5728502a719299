"""The strict config loader: unknown keys, wrong types, negative sizes and non-finite numbers are named errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from weightspace.runtime.config import config_from_dict, config_to_dict, load_config, option
from weightspace.runtime.errors import InputError


@dataclass
class Inner:
    width: int = option(16, min=1)
    act: Literal["relu", "gelu"] = "relu"


@dataclass
class Cfg:
    steps: int = option(50, min=1, help="optimiser steps")
    lr: float = option(1e-2, min=0.0, exclusive_min=True)
    offset: float = -1.0  # floats have no default bound
    shift: int = option(0, min=None)  # an integer that may be negative
    seed: int = 0
    kind: Literal["grid", "points"] = "grid"
    sigmas: tuple[float, ...] = (0.01, 0.05)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    out: Optional[Path] = None
    names: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    flag: bool = False

    def validate(self, where: str) -> "Cfg":
        if abs(sum(self.split) - 1) > 1e-6:
            raise InputError(f"{where}.split: must sum to 1, got {self.split}")
        return self


def test_defaults_and_a_full_round_trip(tmp_path):
    assert config_from_dict(Cfg, None, where="x") == Cfg()
    raw = {"steps": 3, "lr": 1, "offset": -2, "shift": -4, "seed": 9, "kind": "points", "sigmas": [0.1], "split": [0.5, 0.25, 0.25],
           "out": "runs/a", "names": ["a"], "inner": {"width": 2, "act": "gelu"}, "flag": True}
    cfg = config_from_dict(Cfg, raw, where="x")
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.out == Path("runs/a") and cfg.sigmas == (0.1,)
    assert cfg.inner == Inner(2, "gelu")
    assert config_to_dict(cfg) == {**raw, "lr": 1.0, "offset": -2.0}
    (tmp_path / "c.json").write_text(json.dumps({"fit": raw}))
    assert load_config(Cfg, tmp_path / "c.json", section="fit") == cfg


BAD = [
    ({"stepz": 1}, "unknown field(s) ['stepz']"),
    ({"steps": "10"}, "steps: expected an integer"),
    ({"steps": True}, "steps: expected an integer"),
    ({"steps": 2.0}, "steps: expected an integer"),
    ({"steps": 0}, "steps: must be >= 1"),
    ({"seed": -1}, "seed: must be >= 0"),  # integers are sizes/counts/seeds: never negative by default
    ({"lr": 0}, "lr: must be > 0.0"),
    ({"lr": float("nan")}, "lr: must be a finite number"),
    ({"offset": float("inf")}, "offset: must be a finite number"),
    ({"lr": "0.1"}, "lr: expected a number"),
    ({"kind": "mesh"}, "kind: must be one of 'grid', 'points'"),
    ({"sigmas": [0.1, "x"]}, "sigmas[1]: expected a number"),
    ({"sigmas": 0.1}, "sigmas: expected a list"),
    ({"split": [1.0]}, "split: expected a list of 3 values"),
    ({"split": [0.5, 0.5, 0.5]}, "split: must sum to 1"),
    ({"out": 5}, "out: expected a path string"),
    ({"names": ["a", 1]}, "names[1]: expected a string"),
    ({"inner": {"width": 0}}, "inner.width: must be >= 1"),
    ({"inner": {"depth": 3}}, "inner: unknown field(s) ['depth']"),
    ({"inner": []}, "inner: expected a JSON object"),
    ({"flag": 1}, "flag: expected true or false"),
    ({"names": ["a\x00b"]}, "NUL"),
]


@pytest.mark.parametrize("raw,message", BAD)
def test_bad_values_name_the_file_and_field(tmp_path, raw, message):
    path = tmp_path / "fit.json"
    path.write_text(json.dumps({"fit": raw}))
    with pytest.raises(InputError) as e:
        load_config(Cfg, path, section="fit")
    assert str(e.value).startswith(f"{path}: fit"), str(e.value)
    assert message in str(e.value)


def test_whole_file_errors(tmp_path):
    cases = {"missing.json": None, "bad.json": "{oops", "list.json": "[]", "bin.json": b"\xff\xfe"}
    for name, text in cases.items():
        if isinstance(text, bytes):
            (tmp_path / name).write_bytes(text)
        elif text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=name):
            load_config(Cfg, tmp_path / name)


def test_required_fields_and_non_dataclasses():
    @dataclass
    class Needs:
        data: str

    with pytest.raises(InputError, match=r"missing required field\(s\) \['data'\]"):
        config_from_dict(Needs, {}, where="cfg.json")
    with pytest.raises(TypeError):
        config_from_dict(dict, {}, where="x")


def test_the_generators_configs_load_strictly():
    """The loader works on the project's real config dataclasses (so their owners can switch to it)."""
    from weightspace.generators.latent_diffusion.config import ModelConfig, TrainConfig
    from weightspace.generators.neural_field.config import FieldConfig

    assert config_from_dict(ModelConfig, {"width": 64, "heads": 4}, where="m.json").width == 64
    with pytest.raises(InputError, match="m.json: depth: must be >= 1"):
        config_from_dict(ModelConfig, {"depth": -1}, where="m.json")
    with pytest.raises(InputError, match="ae_lr: must be a finite number"):
        config_from_dict(TrainConfig, {"ae_lr": float("inf")}, where="t.json")
    assert config_from_dict(FieldConfig, {"d_z": 8}, where="f.json").d_z == 8


@dataclass
class Shares:
    drop: float = option(0.1, min=0, max=1, exclusive_max=True, help="a probability below 1")
    steps: int = option(4, min=1)
    warm: int = 2

    def validate(self) -> None:  # names the field only; the loader adds the file
        if self.warm > self.steps:
            raise InputError(f"warm must be <= steps = {self.steps}, got {self.warm}")


def test_exclusive_max_and_validate_messages_name_the_file(tmp_path):
    assert config_from_dict(Shares, {"drop": 0.99}, where="s.json").drop == 0.99
    with pytest.raises(InputError, match=r"s.json: drop: must be < 1, got 1"):
        config_from_dict(Shares, {"drop": 1}, where="s.json")
    with pytest.raises(InputError, match=r"^s.json: warm must be <= steps = 4, got 5$"):
        config_from_dict(Shares, {"warm": 5}, where="s.json")


def test_overrides_replace_the_files_values_and_are_checked_with_them(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"steps": 2, "warm": 6}))
    assert load_config(Shares, path, overrides={"steps": 8}) == Shares(steps=8, warm=6)  # valid only together
    with pytest.raises(InputError, match="warm must be <= steps = 2"):
        load_config(Shares, path)


def test_a_config_built_in_code_is_checked_by_the_same_rules():
    from weightspace.runtime.config import check_config

    assert check_config(Cfg(lr=1, sigmas=[0.5]), where="cfg") == Cfg(lr=1.0, sigmas=(0.5,))
    with pytest.raises(InputError, match=r"^model.steps: must be >= 1, got 0"):
        check_config(Cfg(steps=0), where="model")
    with pytest.raises(InputError, match=r"model.split: must sum to 1"):
        check_config(Cfg(split=(0.5, 0.5, 0.5)), where="model")

"""Strict typed configs: a JSON object (or file) into a dataclass, every bad key or value named.

    @dataclass
    class FitConfig:
        steps: int = option(50, min=1, help="optimiser steps")
        lr: float = option(1e-2, min=0.0, exclusive_min=True)
        kind: Literal["grid", "points"] = "grid"
        sigmas: tuple[float, ...] = (0.01, 0.05)

    cfg = load_config(FitConfig, "fit.json", section="fit")      # or config_from_dict(FitConfig, raw, where=...)

Rules, so that every config in the project behaves alike:
- unknown keys are refused with the list of valid ones; a missing field takes its default, a
  field without a default is required;
- types are checked against the annotations (`int`, `float`, `bool`, `str`, `Path`,
  `Literal[...]`, `X | None`, `list[X]`, `tuple[X, ...]`, `tuple[X, Y]`, `dict[str, X]`,
  nested dataclasses); `true` is not an integer, an integer is accepted as a float, a float
  with an integral value is not accepted as an integer;
- numbers must be finite (JSON's NaN / Infinity are refused);
- integers must be >= 0 unless the field says otherwise (`option(..., min=None)` or another
  `min`): sizes, counts, steps and seeds are never negative;
- after the fields, the dataclass's own `validate(where)` (or `validate()`) runs when it has one: it
  holds only what bounds cannot say (one field against another, a multiple of 4, distinct names).
Every error is an `InputError` whose message starts with the file and the dotted field path.
A config built in code goes through the same rules with `check_config(cfg, where=...)`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, get_args, get_origin

from weightspace.runtime.errors import InputError
from weightspace.runtime.io import read_json

T = TypeVar("T")
_UNSET = object()


def option(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, min: float | None | object = _UNSET,
           max: float | None = None, exclusive_min: bool = False, exclusive_max: bool = False,
           help: str = "") -> Any:  # noqa: A002 (min/max read best)
    """A dataclass field with bounds and help text for `config_from_dict` (bounds are inclusive by default;
    on a list or tuple field they bound every element)."""
    meta = {"help": help, "max": max, "exclusive_min": exclusive_min, "exclusive_max": exclusive_max}
    if min is not _UNSET:
        meta["min"] = min
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


COMMAND_LINE = "the command line"  # `where` of a config built from a command's options: a field is named as its option


def field_path(where: str, key: str) -> str:
    """`file.json: a.b` style paths: the first key after a bare file name follows ': '; a field of a
    config from the command line (`COMMAND_LINE`) is its option, `--key-name`."""
    if where == COMMAND_LINE:
        return "--" + key.replace("_", "-")
    return f"{where}.{key}" if ": " in where or not where.endswith(".json") else f"{where}: {key}"


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "an object"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path string",
             type(None): "null", list: "a list", tuple: "a list", dict: "an object"}
    return names.get(origin or tp, getattr(tp, "__name__", str(tp)))


def _number_bounds(value: float, meta: Mapping[str, Any], is_int: bool, where: str) -> None:
    lo = meta.get("min", 0 if is_int else None)
    hi = meta.get("max")
    if lo is not None and (value <= lo if meta.get("exclusive_min") else value < lo):
        raise InputError(f"{where}: must be {'>' if meta.get('exclusive_min') else '>='} {lo}, got {value!r}")
    if hi is not None and (value >= hi if meta.get("exclusive_max") else value > hi):
        raise InputError(f"{where}: must be {'<' if meta.get('exclusive_max') else '<='} {hi}, got {value!r}")


def _convert(value: Any, tp: Any, where: str, meta: Mapping[str, Any]) -> Any:
    """Check one JSON value against annotation `tp`; returns it converted (floats, tuples, paths, dataclasses)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _convert(value, a, where, meta)
            except InputError as e:
                errors.append(str(e))
        raise InputError(f"{where}: expected {_type_name(tp)}, got {value!r}" if len(errors) != 1 else errors[0])
    if origin is Literal:
        if not any(a == value and type(a) is type(value) for a in args):
            raise InputError(f"{where}: must be one of {', '.join(repr(a) for a in args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value, where=where)
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: expected an integer, got {value!r}")
        _number_bounds(value, meta, True, where)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise InputError(f"{where}: must be a finite number, got {value!r}")
        _number_bounds(float(value), meta, False, where)
        return float(value)
    if tp is str or tp is Path:
        if not isinstance(value, str):
            raise InputError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        if "\x00" in value:
            raise InputError(f"{where}: contains a NUL character")
        return Path(value) if tp is Path else value
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise InputError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_convert(v, inner, f"{where}[{i}]", meta) for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]", meta) for i, v in enumerate(value))
        if args and len(value) != len(args):
            raise InputError(f"{where}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]", meta) for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected an object, got {value!r}")
        kt, vt = args if args else (str, Any)
        return {_convert(k, kt, f"{where} key", {}): _convert(v, vt, field_path(where, str(k)), meta) for k, v in value.items()}
    raise TypeError(f"config field type {tp!r} at {where} is not supported by weightspace.runtime.config")


def config_from_dict(cls: type[T], data: Mapping[str, Any] | None, *, where: str) -> T:
    """Build the dataclass `cls` from a JSON object; `where` names the file/section in messages."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected a JSON object, got {type(data).__name__} {data!r}"[:300])
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise InputError(f"{where}: keys must be strings, got {bad_keys[0]!r}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown field(s) {unknown}; valid fields are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise InputError(f"{where}: missing required field(s) {missing}")
    values = {k: _convert(v, hints[k], field_path(where, k), fields[k].metadata) for k, v in data.items()}
    cfg = cls(**values)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        if inspect.signature(validate).parameters:
            out = validate(where)
        else:
            try:
                out = validate()
            except InputError as e:  # its messages name the field, not the file: add it
                if where == COMMAND_LINE:
                    raise
                raise InputError(f"{where}: {e}") from None
        cfg = out if isinstance(out, cls) else cfg
    return cfg


def check_config(cfg: T, *, where: str) -> T:
    """A config built in code, checked by the rules a file would be: types, bounds, then `validate`.

    Returns a checked copy (integers given for floats become floats, tuples given for lists become lists).
    """
    return config_from_dict(type(cfg), config_to_dict(cfg), where=where)


def load_config(cls: type[T], path: str | os.PathLike, *, section: str | None = None,
                overrides: Mapping[str, Any] | None = None) -> T:
    """Read a JSON file into `cls` (or its `section` key); errors name the file and the field.

    overrides : values given elsewhere (command-line options) that replace the file's; they are
    checked with it, so the config's own cross-field checks see the values it will run with.
    """
    path = Path(path)
    raw = read_json(path)
    where = str(path)
    if section is not None:
        if not isinstance(raw, dict):
            raise InputError(f"{path}: expected a JSON object with a {section!r} key")
        raw, where = raw.get(section), f"{path}: {section}"
    if overrides and (raw is None or isinstance(raw, Mapping)):
        raw = {**(raw or {}), **overrides}
    return config_from_dict(cls, raw, where=where)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A config as JSON-ready values (tuples become lists, paths strings), for config.json files."""
    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if type(v).__module__ == "numpy" and hasattr(v, "item") and getattr(v, "ndim", None) == 0:
            return v.item()  # a NumPy scalar (np.int64 from an array, np.float32) as the Python number it holds
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def json_section(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    """The object under `key` of a config file (empty when absent); anything but an object is an InputError."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where}: field {key!r} must be a JSON object, got {type(value).__name__}")
    return dict(value)


__all__ = ["option", "config_from_dict", "check_config", "load_config", "config_to_dict", "field_path", "json_section"]

"""The table of parameterisations (condition | lora | layers) and building one by name or saved config."""

from __future__ import annotations

from typing import Any, Literal, Mapping

from weightspace.generators.protocol import Generator
from weightspace.runtime.errors import InputError
from weightspace.space.condition import ConditionParameterisation
from weightspace.space.layers import LayersParameterisation
from weightspace.space.lora import LoraParameterisation, check_lora_options
from weightspace.space.parameterisation import Parameterisation

ParameterisationName = Literal["condition", "lora", "layers"]
PARAMETERISATIONS: dict[str, type[Parameterisation]] = {
    "condition": ConditionParameterisation,
    "lora": LoraParameterisation,
    "layers": LayersParameterisation,
}
OPTIONS: dict[str, tuple[str, ...]] = {
    "condition": (),
    "lora": ("rank", "alpha", "targets", "form"),
    "layers": ("targets",),
}


def make_parameterisation(gen: Generator, name: str, **options: Any) -> Parameterisation:
    """Build parameterisation `name` for `gen`; unknown names or options raise InputError listing valid ones."""
    if name not in PARAMETERISATIONS:
        raise InputError(f"parameterisation must be one of {', '.join(PARAMETERISATIONS)}, got {name!r}")
    unknown = sorted(set(options) - set(OPTIONS[name]))
    if unknown:
        raise InputError(f"parameterisation {name!r} takes options {list(OPTIONS[name])}, got unknown {unknown}")
    return PARAMETERISATIONS[name](gen, **options)


def parameterisation_from_config(gen: Generator, config: Mapping[str, Any]) -> Parameterisation:
    """Rebuild from `Parameterisation.config()` (a dict with `name` plus options)."""
    config = dict(config)
    name = config.pop("name", None)
    return make_parameterisation(gen, str(name), **config)


def check_parameterisation_config(config: Any, where: str) -> None:
    """A saved parameterisation config (`name` plus options, as a population's or a point file's
    frame records it), checked without a generator, so a hand-edited file is refused by name when it
    is opened rather than at the first decode, or after a subspace has been half written."""
    if not isinstance(config, Mapping):
        raise InputError(f"{where}: parameterisation must be an object with a 'name', got {config!r}")
    name = config.get("name")
    if not isinstance(name, str) or name not in PARAMETERISATIONS:
        raise InputError(f"{where}: parameterisation.name must be one of {', '.join(PARAMETERISATIONS)}, got {name!r}")
    options = {k: v for k, v in config.items() if k != "name"}
    unknown = sorted(set(options) - set(OPTIONS[name]))
    if unknown:
        raise InputError(f"{where}: parameterisation {name!r} takes options {list(OPTIONS[name])}, got unknown {unknown}")
    try:
        if name == "lora":
            check_lora_options(**options)
        elif name == "layers" and not isinstance(options.get("targets", "all"), str):
            raise InputError(f"layers targets must be a string (a group name, 'all', or a pattern), got {options['targets']!r}")
    except InputError as e:
        raise InputError(f"{where}: parameterisation: {e}") from None

"""The parameterisation protocol: which tensors of a generator form a weight-space point.

A parameterisation turns a point (D,) into what the generator takes: a `params` dict for its
`params=` argument (weights swapped through `torch.func.functional_call`) and a condition. Points
of `lora` and `layers` decode under one fixed *anchor* condition shared by a whole population
(so that a point alone determines the shape); `condition` points are the condition itself.
"""

from __future__ import annotations

import abc
import re
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from weightspace.generators.protocol import Generator
from weightspace.runtime.checkpoint import state_hash
from weightspace.runtime.errors import InputError
from weightspace.space.layout import Layout


def base_hash(gen: Generator) -> str:
    """`state_hash` of the generator's net: the base checkpoint every layout names."""
    return state_hash(gen.net.state_dict())


def in_groups(gen: Generator, targets: str, names) -> list[str]:
    """The names (of modules or parameters) under the module groups of a `group:a,b` target."""
    groups = gen.module_groups()
    wanted = [g.strip() for g in targets[len("group:"):].split(",") if g.strip()]
    unknown = [g for g in wanted if g not in groups]
    if unknown:
        raise InputError(f"targets: unknown module group(s) {unknown}; valid: {', '.join(groups)}")
    roots = [p.rstrip(".") for g in wanted for p in groups[g]]  # "ae." and "ae" both name the module ae
    return [n for n in names if any(n == r or n.startswith(r + ".") for r in roots)]


def excluded(gen: Generator, name: str) -> bool:
    """True when a module or parameter name falls under `gen.fit_excluded()` (left out of `all`)."""
    roots = [p.rstrip(".") for p in gen.fit_excluded()]  # "ae." and "ae" both name the module ae
    return any(name == r or name.startswith(r + ".") for r in roots)


def resolve_targets(gen: Generator, targets: str, *, kinds: tuple[type[nn.Module], ...] | None = None) -> list[str]:
    """Module names of `gen.net` chosen by `targets`.

    targets : a regular expression matched in full against module names (`mid`, `blocks\\.[0-3]\\..*`),
        or `group:a,b` naming entries of `gen.module_groups()` (prefixes), or `all` (every module
        but those under `gen.fit_excluded()`).
    kinds : keep only modules of these types (LoRA needs Linear / Conv layers).
    """
    modules = dict(gen.net.named_modules())
    if targets.startswith("group:"):
        chosen = in_groups(gen, targets, modules)
    elif targets == "all":
        chosen = [n for n in modules if not excluded(gen, n)]
    else:
        try:
            rx = re.compile(targets)
        except re.error as e:
            raise InputError(f"targets: {targets!r} is not a valid regular expression ({e})") from None
        chosen = [n for n in modules if rx.fullmatch(n)]
    if kinds is not None:
        chosen = [n for n in chosen if isinstance(modules[n], kinds)]
    if not chosen:
        kind_names = f" of type {'/'.join(k.__name__ for k in kinds)}" if kinds else ""
        options = [n for n, m in modules.items() if n and (kinds is None or isinstance(m, kinds))]
        raise InputError(f"targets: {targets!r} matches no module{kind_names}; modules: {', '.join(options[:30])}")
    return chosen


class Parameterisation(abc.ABC):
    """Maps points (D,) to generator inputs; `layout` explains every coordinate."""

    name: ClassVar[str]
    layout: Layout

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.anchor = torch.zeros((1, *gen.condition_shape), device=gen.device)  # (1, *condition_shape)

    @property
    @abc.abstractmethod
    def options(self) -> dict[str, Any]:
        """The keyword options that rebuild this parameterisation (JSON-serialisable)."""

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}

    @abc.abstractmethod
    def base_point(self) -> torch.Tensor:
        """The point (D,) that decodes exactly like the unmodified generator (under the anchor)."""

    def initial_point(self, seed: int) -> torch.Tensor:
        """Where a fit starts (D,); the base point unless the parameterisation needs noise (LoRA's A)."""
        return self.base_point()

    @abc.abstractmethod
    def params_batch(self, points: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Points (B, D) -> name -> (B, *shape) replacement weights (None for condition points)."""

    def low_rank_batch(self, points: torch.Tensor) -> dict[str, Any] | None:
        """Points (B, D) -> `params_batch` with low-rank weights kept factored (`generators.lowrank`),
        for a generator that `accepts_low_rank`; None when this parameterisation has no such form."""
        return None

    def params(self, point: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """One point (D,) -> name -> tensor for the generator's `params=` (None: base weights)."""
        batch = self.params_batch(point[None])
        return None if batch is None else {k: v[0] for k, v in batch.items()}

    def conditions(self, points: torch.Tensor) -> torch.Tensor:
        """The condition each point decodes under: (B, *condition_shape)."""
        return self.anchor.expand(points.shape[0], *self.anchor.shape[1:])

    def set_anchor(self, anchor: torch.Tensor) -> None:
        shape = (1, *self.gen.condition_shape)
        anchor = anchor.reshape(-1, *self.gen.condition_shape)
        if anchor.shape != shape:
            raise InputError(f"anchor condition must have shape {shape}, got {tuple(anchor.shape)}")
        self.anchor = anchor.detach().to(self.gen.device, torch.float32)

    def check_point(self, point: torch.Tensor) -> torch.Tensor:
        if point.shape[-1] != self.layout.size:
            raise InputError(f"point has length {point.shape[-1]}, {self.name} layout expects {self.layout.size}")
        return point.to(self.gen.device, torch.float32)

    def group_mask(self, groups: list[str]) -> torch.Tensor:
        """Bool mask (D,) of coordinates that belong to the named module groups of the generator."""
        table = self.gen.module_groups()
        unknown = [g for g in groups if g not in table]
        if unknown:
            raise InputError(f"unknown module group(s) {unknown}; valid: {', '.join(table)}")
        return self.layout.mask([p for g in groups for p in table[g]])


def layout_extra(options: Mapping[str, Any], condition_shape: tuple[int, ...]) -> dict[str, Any]:
    return {**dict(options), "condition_shape": list(condition_shape)}

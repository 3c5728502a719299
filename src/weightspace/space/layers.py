"""The `layers` parameterisation: a point is the raw weights of chosen modules (down to all weights)."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import torch

from weightspace.generators.protocol import Generator
from weightspace.runtime.errors import InputError
from weightspace.space.layout import Layout
from weightspace.space.parameterisation import Parameterisation, base_hash, excluded, in_groups, layout_extra


def resolve_parameters(gen: Generator, targets: str) -> list[str]:
    """Parameter names of `gen.net` chosen by `targets`.

    targets : `all` (every parameter but those under `gen.fit_excluded()`); `group:a,b` (entries of `gen.module_groups()`); or a regular expression
        matched in full against a parameter name (`out.weight`) or its module name (`mid`).
    """
    names = [n for n, _ in gen.net.named_parameters()]
    if targets == "all":
        chosen = [n for n in names if not excluded(gen, n)]
        if not chosen:
            raise InputError(f"targets: 'all' leaves no parameter of generator {gen.name} to fit "
                             f"({len(names)} parameter(s), all excluded or none in its net)")
        return chosen
    if targets.startswith("group:"):
        chosen = in_groups(gen, targets, names)
    else:
        try:
            rx = re.compile(targets)
        except re.error as e:
            raise InputError(f"targets: {targets!r} is not a valid regular expression ({e})") from None
        chosen = [n for n in names if rx.fullmatch(n) or rx.fullmatch(n.rpartition(".")[0])]
    if not chosen:
        raise InputError(f"targets: {targets!r} matches no parameter; parameters: {', '.join(names[:30])}")
    return chosen


class LayersParameterisation(Parameterisation):
    """Point = the chosen parameters of `gen.net`, flattened in `named_parameters` order."""

    name: ClassVar[str] = "layers"

    def __init__(self, gen: Generator, *, targets: str = "all") -> None:
        super().__init__(gen)
        if not isinstance(targets, str):
            raise InputError(f"layers targets must be a string (a group name, 'all', or a pattern), got {targets!r}")
        self.targets = targets
        self.names = resolve_parameters(gen, targets)
        params = dict(gen.net.named_parameters())
        self.layout = Layout.from_tensors(
            [(n, params[n]) for n in self.names],
            base_hash=base_hash(gen),
            parameterisation=self.name,
            extra=layout_extra(self.options, gen.condition_shape),
        )

    @property
    def options(self) -> dict[str, Any]:
        return {"targets": self.targets}

    def base_point(self) -> torch.Tensor:
        params = dict(self.gen.net.named_parameters())
        return self.layout.to_vector({n: params[n].detach() for n in self.names}).clone()  # (D,)

    def params_batch(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.layout.from_vector(self.check_point(points))  # name -> (B, *shape)

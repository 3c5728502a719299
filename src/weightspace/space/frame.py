"""The frame of weight-space points: layout, parameterisation config, anchor and checkpoint as one value.

Every stored point, population and subspace carries one `Frame`; `Frame.build(gen)` is the only
way back to a `Parameterisation`: it rebuilds the parameterisation from its config, checks the
layout (and with it the base checkpoint's hash) against the generator, and sets the anchor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from weightspace.generators.protocol import Generator
from weightspace.runtime.errors import InputError
from weightspace.space.layout import Layout
from weightspace.space.parameterisation import Parameterisation
from weightspace.space.parameterisations import parameterisation_from_config


@dataclass(frozen=True, eq=False)
class Frame:
    """What explains a point (D,): its layout, the parameterisation config that rebuilds it (`name`
    plus options), the anchor condition (1, *condition_shape) it decodes under, and the checkpoint
    (name or folder; '' when unknown) it was made from."""

    layout: Layout
    parameterisation: dict[str, Any]
    anchor: torch.Tensor
    checkpoint: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.layout, Layout):
            raise InputError(f"frame: layout must be a Layout, got {type(self.layout).__name__}")
        if not isinstance(self.parameterisation, Mapping) or not isinstance(self.parameterisation.get("name"), str):
            raise InputError(f"frame: parameterisation must be a config with a 'name', got {self.parameterisation!r}")
        if not isinstance(self.anchor, torch.Tensor) or self.anchor.ndim < 1 or self.anchor.shape[0] != 1:
            shape = tuple(self.anchor.shape) if isinstance(self.anchor, torch.Tensor) else type(self.anchor).__name__
            raise InputError(f"frame: anchor must be a tensor (1, *condition_shape), got {shape}")
        if not isinstance(self.checkpoint, str):
            raise InputError(f"frame: checkpoint must be a string, got {type(self.checkpoint).__name__}")
        # own copies: the frame does not change when the caller's dict or tensor does
        object.__setattr__(self, "parameterisation", json.loads(json.dumps(dict(self.parameterisation))))
        object.__setattr__(self, "anchor", self.anchor.detach().to("cpu", torch.float32).clone())

    @classmethod
    def of(cls, param: Parameterisation, checkpoint: str = "") -> "Frame":
        """The frame of a built parameterisation (its layout, config and current anchor)."""
        return cls(param.layout, param.config(), param.anchor, checkpoint)

    def build(self, gen: Generator, *, what: str = "points") -> Parameterisation:
        """The parameterisation these points are in, on `gen`, with the anchor set.

        Raises LayoutMismatchError when `gen` is not the base checkpoint of the layout (or its
        parameterisation builds another layout), naming `what` in the message.
        """
        param = parameterisation_from_config(gen, self.parameterisation)
        self.layout.check_same(param.layout, what=f"{what} vs generator")
        param.set_anchor(self.anchor)
        return param

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (self.layout == other.layout and self.parameterisation == other.parameterisation
                and self.checkpoint == other.checkpoint and self.anchor.shape == other.anchor.shape
                and torch.equal(self.anchor, other.anchor))

    # --- safetensors metadata (point and subspace files) -----------------------------------------
    def metadata(self) -> dict[str, Any]:
        """The metadata fields of a point or subspace file; the anchor is stored as tensor `anchor`."""
        return {"layout": self.layout.to_dict(), "parameterisation": self.parameterisation, "checkpoint": self.checkpoint}

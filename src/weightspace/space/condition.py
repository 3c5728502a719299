"""The `condition` parameterisation: a point is the generator's condition tensor, flattened.

The condition is not a weight, but it induces weights: `gen.effective_weights(condition)` gives
the per-layer tensors a condition sets (adaLN scales and shifts, cross-attention keys and
values, ...). `effective_path` measures a path of condition points as a path in weight space
(the paper's "conditioning induces a manifold in weight space").
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch

from weightspace.generators.protocol import EffectiveWeights, Generator, require
from weightspace.runtime.errors import InputError
from weightspace.space.layout import Layout
from weightspace.space.parameterisation import Parameterisation, base_hash, layout_extra


class ConditionParameterisation(Parameterisation):
    """Point = condition (D = prod(condition_shape)); decoded with the base weights."""

    name: ClassVar[str] = "condition"

    def __init__(self, gen: Generator) -> None:
        super().__init__(gen)
        self.layout = Layout.from_tensors(
            [("condition", gen.condition_shape)],
            base_hash=base_hash(gen),
            parameterisation=self.name,
            extra=layout_extra({}, gen.condition_shape),
        )

    @property
    def options(self) -> dict[str, Any]:
        return {}

    def base_point(self) -> torch.Tensor:
        return self.anchor.reshape(-1).clone()  # (D,)

    def params_batch(self, points: torch.Tensor) -> None:
        return None

    def conditions(self, points: torch.Tensor) -> torch.Tensor:
        points = self.check_point(points)
        return points.reshape(points.shape[0], *self.gen.condition_shape)  # (B, *condition_shape)

    def token_mask(self, tokens: Sequence[int]) -> torch.Tensor:
        """Bool mask (D,) that moves only the given condition tokens (rows of an (M, d) condition).

        A generator whose condition is one vector (d,) (the neural field's latent code) has no
        tokens, so token masks are not applicable there and raise InputError.
        """
        shape = self.gen.condition_shape
        if len(shape) < 2:
            raise InputError(f"token masks need a token condition (M, d); this generator's condition is {shape}")
        M = shape[0]
        bad = [t for t in tokens if not 0 <= int(t) < M]
        if bad:
            raise InputError(f"token indices {bad} out of range; the condition has {M} tokens")
        m = torch.zeros(shape, dtype=torch.bool)
        m[list(tokens)] = True
        return m.reshape(-1)

    def group_mask(self, groups: list[str]) -> torch.Tensor:
        raise InputError("condition points hold no weights, so module-group masks do not apply; use token_mask")

    def effective_path(self, points: torch.Tensor) -> dict[str, Any]:
        """Measure a path of condition points (T, D) in the weight space the conditions induce.

        Returns
        -------
        dict with `length` (float, sum over layers of per-layer path length), `displacement`
        (float, norm of end minus start over all layers), and `layers`: name ->
        {`length`, `displacement`, `step` (T-1,) per-step norms}.
        """
        with torch.no_grad():
            gen = require(self.gen, EffectiveWeights, "measuring a condition path in the weights it induces")
            ew = gen.effective_weights(self.conditions(points))  # name -> (T, ...)
        layers: dict[str, Any] = {}
        total_sq_disp, total_len = 0.0, 0.0
        for name, w in ew.items():
            w = w.reshape(w.shape[0], -1).double()  # (T, n)
            step = (w[1:] - w[:-1]).norm(dim=1)  # (T-1,)
            disp = float((w[-1] - w[0]).norm())
            layers[name] = {"length": float(step.sum()), "displacement": disp, "step": step.tolist()}
            total_len += float(step.sum())
            total_sq_disp += disp**2
        return {"length": total_len, "displacement": total_sq_disp**0.5, "layers": layers}

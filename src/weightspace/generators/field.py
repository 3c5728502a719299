"""`FieldGenerator`: the adapter that makes any torch module computing f(x, cond) -> sdf a generator.

    net = MySDF()                                   # forward(x (B, P, 3), cond (B, d)) -> (B, P)
    gen = FieldGenerator(net, condition_shape=(d,), kind="my-sdf", resolution=32)
    register("my-sdf", lambda state, config: FieldGenerator.from_state(MySDF(), state, config))

Like k-diffusion's wrappers of external models, the adapter adds only what the protocol needs around
the user's network: a grid decode over `weightspace.data.grid`'s lattice, a seeded training loss
(clamped L1 at points drawn uniformly and near the surface of the target grids, DeepSDF's loss), and
save/load of `model.safetensors` + `config.json`. The condition is the network's second input.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from weightspace.data.grid import grid_points
from weightspace.generators.neural_field.losses import clamped_l1, sample_grid
from weightspace.generators.protocol import Generator, Params
from weightspace.runtime.checkpoint import check_state_matches, save_checkpoint
from weightspace.runtime.errors import InputError
from weightspace.runtime.seeding import item_generator

# how torch words a shape the net cannot take (matmul, cat, broadcasting, view)
SHAPE_ERRORS = ("shape", "must match the size", "Expected size", "size mismatch", "Sizes of tensors must match")


class FieldGenerator(Generator):
    """Wraps `net(x (B, P, 3), cond (B, *condition_shape)) -> sdf (B, P)` (or (B, P, 1)) in world units."""

    def __init__(self, net: nn.Module, *, condition_shape: Sequence[int], kind: str = "field", resolution: int = 32,
                 clamp: float = 0.1, chunk: int = 32768, config: Mapping[str, Any] | None = None) -> None:
        from weightspace.generators.registry import check_kind_name

        if not isinstance(net, nn.Module):
            raise InputError(f"FieldGenerator: net must be a torch.nn.Module, got {type(net).__name__}")
        check_kind_name(kind, "FieldGenerator")
        shape_ok = (isinstance(condition_shape, (list, tuple)) and len(condition_shape) > 0
                    and all(_is_int(d) and d > 0 for d in condition_shape))
        if not shape_ok:
            raise InputError(f"FieldGenerator: condition_shape must be a non-empty list of positive integers "
                             f"(e.g. [16] for a 16-number code), got {condition_shape!r}")
        for name, value, low in (("resolution", resolution, 2), ("chunk", chunk, 1)):
            if not _is_int(value) or value < low:
                raise InputError(f"FieldGenerator: {name} must be an integer >= {low}, got {value!r}")
        if isinstance(clamp, bool) or not isinstance(clamp, (int, float)) or not clamp > 0:
            raise InputError(f"FieldGenerator: clamp must be a number > 0, got {clamp!r}")
        self.net = net
        self.kind = kind
        self._condition_shape = tuple(int(d) for d in condition_shape)
        self._resolution, self.clamp, self.chunk = int(resolution), float(clamp), int(chunk)
        field = {"condition_shape": list(self._condition_shape), "resolution": self._resolution, "clamp": self.clamp}
        self.config = {**dict(config or {}), "kind": kind, "field": field}

    @property
    def condition_shape(self) -> tuple[int, ...]:
        return self._condition_shape

    @property
    def resolution(self) -> int:
        return self._resolution

    def _f(self, x: torch.Tensor, cond: torch.Tensor, params: Params | None) -> torch.Tensor:
        try:
            out = self.net(x, cond) if params is None else functional_call(self.net, dict(params), (x, cond), strict=False)
        except RuntimeError as e:
            if not any(k in str(e) for k in SHAPE_ERRORS):
                raise  # a device mismatch, a CUDA fault, memory: not ours to rename
            # shapes the net cannot take: most often a condition_shape that is not its own
            raise InputError(f"FieldGenerator {self.kind!r}: net(x {tuple(x.shape)}, cond {tuple(cond.shape)}) failed "
                             f"({e}); is condition_shape {list(self._condition_shape)} the code size the net takes?") from e
        if out.dim() == 3 and out.shape[-1] == 1:
            out = out.squeeze(-1)
        if tuple(out.shape) != tuple(x.shape[:2]):
            raise InputError(f"FieldGenerator {self.kind!r}: net(x, cond) must return (B, P) = {tuple(x.shape[:2])}, got {tuple(out.shape)}")
        return out.float()  # (B, P); the protocol's grids are float32 whatever the net computes in

    def _check(self, condition: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        if tuple(condition.shape[1:]) != self._condition_shape or len(seeds) != condition.shape[0]:
            raise InputError(f"condition must be (B, {', '.join(map(str, self._condition_shape))}) with one seed per item; "
                             f"got {tuple(condition.shape)} and {len(seeds)} seeds")
        return condition.to(self.device, torch.float32)

    def sdf_points(self, points, condition, seeds, *, params=None):
        condition = self._check(condition, seeds)
        points = points.to(self.device, torch.float32)  # (B, P, 3)
        return torch.cat([self._f(c, condition, params) for c in points.split(self.chunk, dim=1)], dim=1)  # (B, P)

    def sdf_grid(self, condition, seeds, *, params=None, resolution=None):
        R = int(resolution or self._resolution)
        x = torch.from_numpy(grid_points(R).reshape(1, -1, 3)).to(self.device)  # (1, R^3, 3)
        sdf = self.sdf_points(x.expand(condition.shape[0], -1, -1), condition, seeds, params=params)  # (B, R^3)
        return sdf.reshape(-1, R, R, R)  # (B, R, R, R)

    def training_loss(self, grids, condition, seeds, *, params=None, n_points: int = 4096):
        """Clamped L1 at seeded points, half uniform in the box and half near the target surface."""
        condition = self._check(condition, seeds)
        if grids.dim() != 4 or grids.shape[0] != condition.shape[0] or len(set(grids.shape[1:])) != 1:
            raise InputError(f"FieldGenerator {self.kind!r}: training_loss takes grids (B, R, R, R) with B = "
                             f"{condition.shape[0]} (one per condition), got {tuple(grids.shape)}")
        grids = grids.to(self.device, torch.float32)  # (B, R, R, R)
        R = grids.shape[-1]
        pts = []
        for b, s in enumerate(seeds):
            g = item_generator(int(s), "field-loss")
            uniform = torch.rand(n_points // 2, 3, generator=g) * 2 - 1  # (P/2, 3)
            band = torch.nonzero(grids[b].abs().cpu() < self.clamp).float()  # (n, 3) voxel indices near the surface
            band = band if band.shape[0] else torch.zeros(1, 3)
            pick = band[torch.randint(band.shape[0], (n_points - n_points // 2,), generator=g)]
            near = pick / (R - 1) * 2 - 1 + (torch.rand(pick.shape, generator=g) - 0.5) * (2 / (R - 1))  # (P/2, 3)
            pts.append(torch.cat([uniform, near.clamp(-1, 1)]))
        x = torch.stack(pts).to(self.device)  # (B, P, 3)
        return clamped_l1(self._f(x, condition, params), sample_grid(grids, x), self.clamp)

    # --- Saveable --------------------------------------------------------------------------
    def save(self, folder: str | Path, *, extra_config: Mapping[str, Any] | None = None) -> Path:
        """Write model.safetensors + config.json (kind, `field` settings, `extra_config`) into `folder`;
        `load_generator` reads it back through the factory registered for this kind."""
        return save_checkpoint(folder, self.net.state_dict(), {**self.config, **dict(extra_config or {}),
                                                                "kind": self.kind, "field": self.config["field"]})

    @classmethod
    def from_state(cls, net: nn.Module, state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> "FieldGenerator":
        """Wrap `net` with the weights of a checkpoint written by `save` (a factory's one line)."""
        field = config.get("field")
        if not isinstance(field, Mapping) or "condition_shape" not in field:
            raise InputError("config.json: missing field 'field.condition_shape' (written by FieldGenerator.save)")
        check_state_matches(state, net.state_dict(), "the network")
        net.load_state_dict({k: v.float() for k, v in state.items()})
        rest = {k: v for k, v in config.items() if k not in ("kind", "field")}
        try:
            return cls(net, condition_shape=field["condition_shape"], kind=config.get("kind", "field"),
                       resolution=field.get("resolution", 32), clamp=field.get("clamp", 0.1), config=rest)
        except InputError as e:  # name the file and its fields, as a user who edited config.json reads them
            raise InputError(f"config.json: field 'field' or 'kind': {str(e).removeprefix('FieldGenerator: ')}") from None


def _is_int(value: Any) -> bool:
    """A whole number as JSON or Python writes one: an int (not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)

"""The layout of a weight-space point: which tensors a flat vector holds, in which order, on which base.

A point is a 1-D float tensor; its layout lists (name, shape, dtype, offset) for every tensor
packed into it, plus the content hash of the base checkpoint (`runtime.checkpoint.state_hash`)
whose weights the point modifies, and the parameterisation that made it. Points of different
layouts never mix silently: `Layout.check_same` raises an error naming what differs.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from weightspace.runtime.errors import InputError

# dtypes a point may hold, by their JSON names (an explicit table, no getattr on torch).
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class LayoutMismatchError(InputError):
    """Two layouts (or base checkpoints) differ where they must agree."""


@dataclass(frozen=True)
class Entry:
    """One tensor inside a point: `numel` values at [offset, offset + numel)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Layout:
    """Ordered tensors of a point, the base checkpoint hash and the parameterisation name."""

    entries: tuple[Entry, ...]
    base_hash: str
    parameterisation: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    # --- construction ----------------------------------------------------------------
    @classmethod
    def from_tensors(
        cls,
        tensors: Iterable[tuple[str, torch.Tensor | Sequence[int]]],
        *,
        base_hash: str,
        parameterisation: str,
        dtype: torch.dtype = torch.float32,
        extra: Mapping[str, Any] | None = None,
    ) -> "Layout":
        """Pack (name, tensor-or-shape) pairs in the given order; every entry stored as `dtype`."""
        entries, offset = [], 0
        names = set()
        for name, t in tensors:
            if name in names:
                raise InputError(f"layout: tensor name {name!r} appears twice")
            names.add(name)
            shape = tuple(int(s) for s in (t.shape if isinstance(t, torch.Tensor) else t))
            entries.append(Entry(name, shape, DTYPE_NAMES[dtype], offset))
            offset += math.prod(shape)
        return cls(tuple(entries), base_hash, parameterisation, dict(extra or {}))

    @property
    def size(self) -> int:
        """D, the length of a point."""
        return self.entries[-1].offset + self.entries[-1].numel if self.entries else 0

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    @property
    def dtype(self) -> torch.dtype:
        kinds = {e.dtype for e in self.entries}
        assert len(kinds) <= 1, "a point holds one dtype"
        return DTYPES[kinds.pop()] if kinds else torch.float32

    # --- vectors <-> tensors -------------------------------------------------------------
    def to_vector(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Flatten named tensors into one point (D,) in layout order (keeps autograd)."""
        missing = [e.name for e in self.entries if e.name not in tensors]
        if missing:
            raise InputError(f"layout: tensors missing for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        parts = []
        for e in self.entries:
            t = tensors[e.name]
            if tuple(t.shape) != e.shape:
                raise InputError(f"layout: tensor {e.name!r} has shape {tuple(t.shape)}, layout says {e.shape}")
            parts.append(t.reshape(-1).to(DTYPES[e.dtype]))
        return torch.cat(parts) if parts else torch.zeros(0)

    def from_vector(self, point: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a point (D,) or a batch (B, D) into named views (*, *shape) (no copies)."""
        if point.shape[-1] != self.size:
            raise InputError(f"point has length {point.shape[-1]}, layout {self.parameterisation!r} expects {self.size}")
        lead = tuple(point.shape[:-1])
        if [e.offset for e in self.entries] == list(itertools.accumulate((e.numel for e in self.entries[:-1]), initial=0)):
            # packed: one split, whose backward is one concatenation; a slice per entry would fill a
            # zero (*, D) gradient per entry, which dominated a batched fit's backward pass
            parts = point.split([e.numel for e in self.entries], dim=-1)
            return {e.name: t.reshape(lead + e.shape) for e, t in zip(self.entries, parts)}
        return {e.name: point[..., e.offset : e.offset + e.numel].reshape(lead + e.shape) for e in self.entries}

    def mask(self, prefixes: Sequence[str]) -> torch.Tensor:
        """A bool mask (D,) that is True on entries whose name equals or starts with `prefix.`."""
        m = torch.zeros(self.size, dtype=torch.bool)
        hit = False
        for e in self.entries:
            if any(e.name == p or e.name.startswith(p + ".") for p in prefixes):
                m[e.offset : e.offset + e.numel] = True
                hit = True
        if prefixes and not hit:
            raise InputError(f"mask: no tensor of this layout starts with any of {list(prefixes)}")
        return m

    def slices(self) -> dict[str, slice]:
        return {e.name: slice(e.offset, e.offset + e.numel) for e in self.entries}

    # --- checks ------------------------------------------------------------------------------
    def check_same(self, other: "Layout", *, what: str = "points") -> None:
        """Raise LayoutMismatchError naming the first difference between two layouts."""
        if self.base_hash != other.base_hash:
            raise LayoutMismatchError(
                f"{what}: base checkpoints differ (hash {self.base_hash} vs {other.base_hash})"
            )
        if self.parameterisation != other.parameterisation:
            raise LayoutMismatchError(
                f"{what}: parameterisations differ ({self.parameterisation!r} vs {other.parameterisation!r})"
            )
        if len(self.entries) != len(other.entries):
            raise LayoutMismatchError(f"{what}: layouts hold {len(self.entries)} vs {len(other.entries)} tensors")
        for a, b in zip(self.entries, other.entries):
            if a != b:
                raise LayoutMismatchError(f"{what}: layout entries differ: {a} vs {b}")
        if dict(self.extra) != dict(other.extra):
            keys = sorted(k for k in set(self.extra) | set(other.extra) if self.extra.get(k) != other.extra.get(k))
            raise LayoutMismatchError(f"{what}: layout settings differ in {keys}")

    # --- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "base_hash": self.base_hash,
            "parameterisation": self.parameterisation,
            "extra": dict(self.extra),
            "entries": [[e.name, list(e.shape), e.dtype, e.offset] for e in self.entries],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "layout") -> "Layout":
        try:
            entries = tuple(Entry(str(n), tuple(int(s) for s in shape), str(dt), int(off)) for n, shape, dt, off in d["entries"])
            layout = cls(entries, str(d["base_hash"]), str(d["parameterisation"]), dict(d.get("extra", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{source}: not a valid layout ({type(e).__name__}: {e})") from None
        bad = [e.dtype for e in entries if e.dtype not in DTYPES]
        if bad:
            raise InputError(f"{source}: unknown dtype {bad[0]!r}; valid: {', '.join(DTYPES)}")
        offset = 0
        for e in entries:
            if e.offset != offset:
                raise InputError(f"{source}: entry {e.name!r} has offset {e.offset}, expected {offset}")
            offset += e.numel
        return layout

    @classmethod
    def from_json(cls, text: str, *, source: str = "layout") -> "Layout":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{source}: layout is not valid JSON ({e.msg})") from None
        return cls.from_dict(d, source=source)


def check_all_same(layouts: Sequence[Layout], *, what: str = "points") -> Layout:
    """Check that all layouts agree; return the first."""
    if not layouts:
        raise InputError(f"{what}: nothing to combine")
    for other in layouts[1:]:
        layouts[0].check_same(other, what=what)
    return layouts[0]


def as_matrix(points: Sequence[torch.Tensor] | torch.Tensor | np.ndarray, layout: Layout) -> torch.Tensor:
    """Stack points into (N, D) float32, checking their length against the layout."""
    x = torch.as_tensor(np.asarray(points) if isinstance(points, np.ndarray) else (torch.stack(list(points)) if not isinstance(points, torch.Tensor) else points))
    if x.ndim == 1:
        x = x[None]
    if x.shape[-1] != layout.size:
        raise InputError(f"points have length {x.shape[-1]}, layout {layout.parameterisation!r} expects {layout.size}")
    return x

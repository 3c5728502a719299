"""Paths between weight-space points: linear, spherical, piecewise through several points, and masked.

All functions take points (D,) and times t (T,) in [0, 1] and return (T, D); t = 0 and t = 1
give the end points exactly. A masked path moves only the coordinates where mask (D,) is True
(module groups via `Parameterisation.group_mask`, or condition tokens via
`ConditionParameterisation.token_mask`), attributing a transition to that part of the network.
"""

from __future__ import annotations

from typing import Sequence

import torch

from weightspace.runtime.errors import InputError


def _times(t: Sequence[float] | torch.Tensor | int) -> torch.Tensor:
    if isinstance(t, int):
        if t < 2:
            raise InputError(f"a path needs at least 2 steps, got {t}")
        return torch.linspace(0.0, 1.0, t, dtype=torch.float64)
    return torch.as_tensor(t, dtype=torch.float64).reshape(-1)


def _pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 1:
        raise InputError(f"path end points must be two points (D,) of the same length, got {tuple(a.shape)} and {tuple(b.shape)}")


def lerp(a: torch.Tensor, b: torch.Tensor, t: Sequence[float] | torch.Tensor | int) -> torch.Tensor:
    """(1 - t) a + t b, (T, D); exact at both ends."""
    _pair(a, b)
    t = _times(t).to(a.dtype)[:, None]  # (T, 1)
    out = a + t * (b - a)
    out[t[:, 0] == 1] = b  # exact at t = 1 despite rounding of a + (b - a)
    return out


def slerp(a: torch.Tensor, b: torch.Tensor, t: Sequence[float] | torch.Tensor | int, *, center: torch.Tensor | None = None) -> torch.Tensor:
    """Spherical interpolation of a - center and b - center (angle and norm interpolated), (T, D).

    Norms are interpolated linearly while the direction moves along the great circle, so the path
    neither shrinks toward the centre (as lerp does between distant points) nor needs equal norms.
    Falls back to lerp when the two directions are (anti)parallel within float precision.
    """
    _pair(a, b)
    c = torch.zeros_like(a) if center is None else center
    ts = _times(t)
    u, v = (a - c).double(), (b - c).double()
    nu, nv = u.norm(), v.norm()
    if nu == 0 or nv == 0:
        return lerp(a, b, ts)
    cos = torch.clamp((u @ v) / (nu * nv), -1.0, 1.0)
    omega = torch.arccos(cos)
    if omega < 1e-6 or torch.pi - omega < 1e-6:
        return lerp(a, b, ts)
    tt = ts[:, None]
    dirs = (torch.sin((1 - tt) * omega) * (u / nu) + torch.sin(tt * omega) * (v / nv)) / torch.sin(omega)  # (T, D) unit
    out = (c.double() + dirs * ((1 - tt) * nu + tt * nv)).to(a.dtype)
    out[ts == 0] = a
    out[ts == 1] = b
    return out


def piecewise(points: torch.Tensor, t: Sequence[float] | torch.Tensor | int, *, by: str = "length") -> torch.Tensor:
    """A polyline through points (P, D) (P >= 2), linear within each segment, (T, D).

    by : `length` (t is the fraction of total Euclidean length) or `uniform` (each segment takes 1/(P-1)).
    Every t that falls on a knot returns that point exactly.
    """
    if points.ndim != 2 or points.shape[0] < 2:
        raise InputError(f"piecewise paths need points (P >= 2, D), got {tuple(points.shape)}")
    if by not in ("length", "uniform"):
        raise InputError(f"by must be one of length, uniform, got {by!r}")
    ts = _times(t)
    seg = (points[1:] - points[:-1]).double().norm(dim=1) if by == "length" else torch.ones(points.shape[0] - 1, dtype=torch.float64)
    if by == "length" and seg.sum() == 0:
        seg = torch.ones_like(seg)
    knots = torch.cat([torch.zeros(1, dtype=torch.float64), seg.cumsum(0) / seg.sum()])  # (P,)
    knots[-1] = 1.0
    out = []
    for ti in ts:
        i = int(torch.searchsorted(knots, ti, right=True)) - 1
        i = min(max(i, 0), points.shape[0] - 2)
        span = knots[i + 1] - knots[i]
        local = float((ti - knots[i]) / span) if span > 0 else 0.0
        out.append(lerp(points[i], points[i + 1], [local])[0])
    return torch.stack(out)


def masked(a: torch.Tensor, b: torch.Tensor, t: Sequence[float] | torch.Tensor | int, mask: torch.Tensor, *,
           kind: str = "lerp") -> torch.Tensor:
    """A path from a that moves only coordinates where mask is True toward b; the rest stay at a.

    At t = 1 the point equals b on the mask and a elsewhere.
    """
    _pair(a, b)
    if mask.shape != a.shape or mask.dtype != torch.bool:
        raise InputError(f"mask must be a bool tensor of shape {tuple(a.shape)}, got {mask.dtype} {tuple(mask.shape)}")
    if kind not in ("lerp", "slerp"):
        raise InputError(f"kind must be one of lerp, slerp, got {kind!r}")
    ts = _times(t)
    out = a.expand(ts.shape[0], -1).clone()  # (T, D)
    if mask.any():
        out[:, mask] = (lerp if kind == "lerp" else slerp)(a[mask], b[mask], ts)  # only the masked coordinates move
    return out

"""Transition finding along a path: locate where a discrete property (robust Betti numbers) changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V", bound=Hashable)


@dataclass
class Transition(Generic[V]):
    """A change of the property between t_lo and t_hi (t_hi - t_lo <= tolerance, or the step if unrefined)."""

    t_lo: float
    t_hi: float
    before: V
    after: V

    @property
    def width(self) -> float:
        return self.t_hi - self.t_lo


@dataclass
class TransitionSearch(Generic[V]):
    """Everything a search evaluated: every sample (t -> value) and the located transitions."""

    samples: dict[float, V] = field(default_factory=dict)
    transitions: list[Transition[V]] = field(default_factory=list)

    @property
    def decodes(self) -> int:
        return len(self.samples)


def find_transitions(
    evaluate: Callable[[float], V],
    *,
    n_steps: int = 16,
    tolerance: float = 1e-3,
    t0: float = 0.0,
    t1: float = 1.0,
    max_depth: int = 40,
) -> TransitionSearch[V]:
    """Uniform pass of `n_steps` intervals over [t0, t1], then bisection wherever neighbours differ.

    Each interval whose ends differ is halved until it is at most `tolerance` wide. When the
    midpoint differs from both ends, both halves hold a change and both are refined, so a
    step that hides two changes (a -> b -> c) yields two transitions. A change that leaves
    and returns within one uniform step (a -> b -> a) is invisible to this search; the
    uniform step sets that resolution.

    Parameters
    ----------
    evaluate : t -> hashable value (e.g. a (b0, b1, b2) tuple); called once per distinct t.
    n_steps : number of uniform intervals (n_steps + 1 evaluations).
    tolerance : the width in t to which each transition is located.

    Returns
    -------
    TransitionSearch with `samples`, `transitions` (sorted by t) and `decodes`.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    search: TransitionSearch[V] = TransitionSearch()

    def value(t: float) -> V:
        if t not in search.samples:
            search.samples[t] = evaluate(t)
        return search.samples[t]

    ts = [t0 + (t1 - t0) * i / n_steps for i in range(n_steps + 1)]
    for t in ts:
        value(t)

    def refine(lo: float, hi: float, depth: int) -> None:
        v_lo, v_hi = search.samples[lo], search.samples[hi]
        if v_lo == v_hi:
            return
        if hi - lo <= tolerance or depth >= max_depth:
            search.transitions.append(Transition(lo, hi, v_lo, v_hi))
            return
        mid = 0.5 * (lo + hi)
        value(mid)
        refine(lo, mid, depth + 1)
        refine(mid, hi, depth + 1)

    for lo, hi in zip(ts[:-1], ts[1:]):
        refine(lo, hi, 0)
    search.transitions.sort(key=lambda tr: tr.t_lo)
    return search

"""One interpolation path: decode and measure points a -> b under one noise seed, and locate its topology changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from weightspace.analysis.measure import Shape, chamfer, measure
from weightspace.analysis.transitions import TransitionSearch, find_transitions
from weightspace.decode.points import decode_points
from weightspace.experiments.common import Clock
from weightspace.experiments.subspace_figures import ci_of
from weightspace.generators.protocol import EffectiveWeights, Generator
from weightspace.space.parameterisation import Parameterisation
from weightspace.space.paths import lerp, slerp


@dataclass
class PathRun:
    """Everything measured on one path: samples t -> Shape, distances, the search and its transitions."""

    shapes: dict[float, Shape] = field(default_factory=dict)
    grids: dict[float, np.ndarray] = field(default_factory=dict)
    dist_param: dict[float, float] = field(default_factory=dict)
    dist_effective: dict[float, float | None] = field(default_factory=dict)
    search: TransitionSearch | None = None
    seconds: float = 0.0


def flat_effective(gen: Generator, param: Parameterisation, point: torch.Tensor) -> torch.Tensor | None:
    """The effective weights of a point as one vector: the weights a condition induces
    (`gen.effective_weights`) for condition points, the replaced weights themselves otherwise.
    None for a condition point of a generator without the EffectiveWeights capability."""
    with torch.no_grad():
        params = param.params(param.check_point(point))
        if params is None and not isinstance(gen, EffectiveWeights):
            return None
        tensors = params if params is not None else gen.effective_weights(param.conditions(point[None]))
        return torch.cat([v.reshape(-1).double() for _, v in sorted(tensors.items())])


class PathStudy:
    """Decodes and measures points of one path a -> b, caching every t."""

    def __init__(self, gen: Generator, param: Parameterisation, a: torch.Tensor, b: torch.Tensor, *, kind: str, seed: int,
                 volume_threshold: float) -> None:
        self.gen, self.param, self.a, self.b, self.kind, self.seed = gen, param, a, b, kind, seed
        self.volume_threshold = volume_threshold
        self.ew_a = flat_effective(gen, param, a)
        self.run = PathRun()
        self.decodes = 0
        self.known: dict[float, np.ndarray] = {}  # grids of path points decoded before the search (the endpoints)

    def point(self, t: float) -> torch.Tensor:
        return (lerp if self.kind == "lerp" else slerp)(self.a, self.b, [t])[0]  # (D,)

    def decode(self, point: torch.Tensor, params_extra: dict[str, torch.Tensor] | None = None) -> np.ndarray:
        """One decode (counted) under the path's fixed noise seed."""
        self.decodes += 1
        if params_extra is None:
            return decode_points(self.gen, self.param, point[None], [self.seed])[0].numpy()
        with torch.no_grad():
            cond = self.param.conditions(self.param.check_point(point[None]))
            return self.gen.grids(cond, [self.seed], params=params_extra)[0].cpu().numpy()

    def shape(self, grid: np.ndarray) -> Shape:
        return measure(grid, seed=self.seed, volume_threshold=self.volume_threshold)

    def evaluate(self, t: float) -> tuple[int, int, int]:
        p = self.point(t)
        grid = self.known.pop(t) if t in self.known else self.decode(p)
        s = self.shape(grid)
        self.run.shapes[t], self.run.grids[t] = s, grid
        self.run.dist_param[t] = float((p - self.a).double().norm())
        ew = flat_effective(self.gen, self.param, p)
        self.run.dist_effective[t] = None if ew is None else float((ew - self.ew_a).norm())  # None: not measurable
        return s.robust

    def search(self, steps: int, tolerance: float) -> PathRun:
        clock = Clock()
        self.run.search = find_transitions(self.evaluate, n_steps=steps, tolerance=tolerance)
        self.run.seconds = clock()
        return self.run


def step_rows(run: PathRun, steps: int) -> list[dict[str, Any]]:
    """One row per decoded t (uniform and bisection), sorted by t."""
    ts = sorted(run.shapes)
    start, end = run.shapes[0.0], run.shapes[1.0]
    uniform = {round(i / steps, 12) for i in range(steps + 1)}
    rows = []
    for t in ts:
        s = run.shapes[t]
        rows.append({"t": t, "phase": "uniform" if round(t, 12) in uniform else "bisection", **s.row(),
                     "chamfer_start": chamfer(s.points, start.points), "chamfer_end": chamfer(s.points, end.points),
                     "dist_param": run.dist_param[t], "dist_effective": run.dist_effective[t]})
    return rows


def transition_rows(run: PathRun) -> list[dict[str, Any]]:
    """Per transition: t_lo, t_hi, before, after ([b0, b1, b2] robust), width, Chamfer jump, and extras."""
    out = []
    for tr in run.search.transitions:
        lo, hi = run.shapes[tr.t_lo], run.shapes[tr.t_hi]
        out.append({"t_lo": tr.t_lo, "t_hi": tr.t_hi, "before": list(tr.before), "after": list(tr.after),
                    "width": tr.width, "chamfer_jump": chamfer(lo.points, hi.points),
                    "exact_before": list(lo.betti), "exact_after": list(hi.betti),
                    "components_before": lo.components_above, "components_after": hi.components_above,
                    "width_param": run.dist_param[tr.t_hi] - run.dist_param[tr.t_lo],
                    "width_effective": None if run.dist_effective[tr.t_lo] is None
                    else abs(run.dist_effective[tr.t_hi] - run.dist_effective[tr.t_lo])})
    return out



KEPT_MEANS = "within-family paths with no robust topology change located"


def space_of(param: Parameterisation) -> str:
    """The space a path runs in: `condition` for condition points, `weight` for weight-space points."""
    return "condition" if param.name == "condition" else "weight"


def topology_kept(within: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
    """results.json `topology_kept`: per space, the within-family paths (their located transition counts)
    that keep their topology, {rate, ci_low, ci_high, n, successes} with a Wilson 95% interval; the rate
    is null when no path stayed within a family (a path between families is meant to change)."""
    out = {}
    for space, counts in within.items():
        kept = ci_of(sum(c == 0 for c in counts), len(counts))
        out[space] = {**kept, "rate": kept["rate"] if counts else None}
    return out

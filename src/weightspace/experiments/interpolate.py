"""The interpolation study (paper claim 1, open question 1): where and how sharply topology changes along a path.

A path runs between two weight-space points (two shapes' conditions by default). A uniform pass
of N steps plus bisection (`analysis.transitions.find_transitions`) on the robust Betti numbers
locates every change within a tolerance in t; the sampler's noise seed is the same at every t, so
every change comes from the weights. `attribute` reruns each transition moving one part of the
point at a time (module groups for weight points; condition tokens, or the effective weights a
condition induces, for condition points) and reports which parts alone reproduce it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from weightspace.analysis.measure import DEFAULT_VOLUME_THRESHOLD, Shape, chamfer, finite_mean, measure
from weightspace.analysis.persistence import robust_betti
from weightspace.analysis.transitions import TransitionSearch, find_transitions
from weightspace.data.dataset import load_grid
from weightspace.decode.mesh import save_mesh
from weightspace.decode.points import decode_points
from weightspace.experiments.common import (
    Clock,
    check_choice,
    clean_surface,
    encode_points,
    generator_families,
    generator_pose,
    load_study_generator,
    mismatches,
    native_resolution,
    refuse,
    row_root,
    start_results,
    study_data,
    topology_check,
)
from weightspace.generators.protocol import EffectiveWeights, Generator, HasFamilies, require
from weightspace.runtime.errors import InputError
from weightspace.runtime.results import pyplot, save_figure, write_csv, write_results
from weightspace.runtime.seeding import derive_seed, item_rng
from weightspace.space.condition import ConditionParameterisation
from weightspace.space.parameterisation import Parameterisation
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.paths import lerp, masked, slerp
from weightspace.space.store import Population, load_point

Endpoints = Literal["family", "data", "population", "points"]
ENDPOINTS = ("family", "data", "population", "points")
PATHS = ("lerp", "slerp")


@dataclass
class InterpolateConfig:
    """One interpolation study (the CLI builds one of these)."""

    checkpoint: str = "default"  # default | default-field | checkpoint folder
    out: str = "results/interpolate"
    endpoints: str = "family"  # family: conditions of two family names (with pairs: shapes_per_family seeded draws
    #                            per family, or encoded shapes when family conditions are deterministic); data: encoded
    #                            shapes (ids) of --data; population: two members (ids) of --population; points: two files
    a: str = "dumbbell"
    b: str = "pair"
    data: str | None = None  # data folder (default: a small procedural set made in the results folder)
    population: str | None = None
    path: str = "lerp"  # lerp | slerp
    steps: int = 16  # uniform intervals before bisection
    tolerance: float = 1e-3  # width in t to which each transition is located
    seed: int = 0  # sampler noise seed, fixed along every path
    data_seed: int = 1  # seed of the procedural shapes (the shipped generators trained on seed 0)
    observations: int = 1024  # surface points per encoded shape
    attribute: bool = False
    attribute_margin: float = 0.0  # widen each transition by this many uniform steps each side before attributing
    pairs: int = 0  # > 0: that many pairs within and across families instead of the single path
    shapes_per_family: int = 2  # procedural shapes per family for --pairs
    volume_threshold: float = DEFAULT_VOLUME_THRESHOLD
    meshes: bool = True

    @classmethod
    def small(cls, checkpoint: str = "default", out: str = "results/demo/interpolate") -> "InterpolateConfig":
        """The demo-sized run: the default single path (about a minute on a laptop CPU)."""
        return cls(checkpoint=checkpoint, out=out)

    def validate(self) -> None:
        check_choice("endpoints", self.endpoints, ENDPOINTS)
        check_choice("path", self.path, PATHS)
        if self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}")
        if not 0 < self.tolerance < 1:
            raise InputError(f"tolerance must be in (0, 1), got {self.tolerance}")
        if self.pairs < 0 or self.attribute_margin < 0 or self.observations < 1 or self.shapes_per_family < 1:
            raise InputError("pairs and attribute_margin must be >= 0, observations and shapes_per_family >= 1")
        if self.endpoints == "population" and not self.population:
            raise InputError("endpoints=population needs population (a population folder)")
        if self.pairs and self.endpoints == "points":
            raise InputError("pairs needs endpoints family, data or population (points files name one pair)")


# --- one path ----------------------------------------------------------------------------------------
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
            return self.gen.sdf_grid(cond, [self.seed], params=params_extra)[0].float().cpu().numpy()

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


# --- attribution ---------------------------------------------------------------------------------------
def attribution_parts(gen: Generator, param: Parameterisation) -> tuple[str, list[tuple[str, Any]]]:
    """How a transition is split into parts: (mode, [(name, mask or effective-weight key)]).

    weight points: one part per module group (`param.group_mask`); condition points of tokens
    (M, d): one part per token; a single condition vector: one part per effective-weight tensor
    that is a parameter of the net (the neural field's code-induced biases), else 4 coordinate blocks.
    """
    if not isinstance(param, ConditionParameterisation):
        parts = []
        for g in gen.module_groups():
            try:
                m = param.group_mask([g])
            except InputError:  # the group holds none of this point's tensors (e.g. a LoRA that skips it)
                continue
            if bool(m.any()):
                parts.append((g, m))
        return "module_groups", parts
    shape = gen.condition_shape
    if len(shape) >= 2:
        return "condition_tokens", [(f"token{i}", param.token_mask([i])) for i in range(shape[0])]
    names = dict(gen.net.named_parameters())
    with torch.no_grad():
        keys = [k for k in gen.effective_weights(param.anchor) if k in names] if isinstance(gen, EffectiveWeights) else []
    if keys:
        return "effective_weights", [(k, k) for k in keys]
    d = param.layout.size
    blocks = np.array_split(np.arange(d), min(4, d))
    parts = []
    for idx in blocks:
        m = torch.zeros(d, dtype=torch.bool)
        m[torch.as_tensor(idx)] = True
        parts.append((f"coords{idx[0]}-{idx[-1]}", m))
    return "condition_coordinates", parts


def attribute(study: PathStudy, transitions: list[dict[str, Any]], *, margin: float) -> tuple[str, list[dict[str, Any]]]:
    """For each transition and part: move only that part across it ("alone") and all but that part
    ("without"); a part alone reproduces the transition when `alone` has the `after` topology, and
    is necessary when `without` keeps the `before` topology."""
    gen, param = study.gen, study.param
    mode, parts = attribution_parts(gen, param)
    rows: list[dict[str, Any]] = []
    base = dict(gen.net.named_parameters())
    for k, tr in enumerate(transitions):
        lo, hi = max(0.0, tr["t_lo"] - margin), min(1.0, tr["t_hi"] + margin)
        p_lo, p_hi = study.point(lo), study.point(hi)
        before = study.run.shapes[lo].robust if lo in study.run.shapes else study.shape(study.decode(p_lo)).robust
        after = study.run.shapes[hi].robust if hi in study.run.shapes else study.shape(study.decode(p_hi)).robust
        for name, part in parts:
            if mode == "effective_weights":
                with torch.no_grad():
                    ew_lo = gen.effective_weights(param.conditions(p_lo[None]))[part][0]
                    ew_hi = gen.effective_weights(param.conditions(p_hi[None]))[part][0]
                delta = (ew_hi - ew_lo).to(base[part].dtype)
                alone = study.decode(p_lo, {part: base[part].detach() + delta})
                without = study.decode(p_hi, {part: base[part].detach() - delta})
            else:
                alone = study.decode(masked(p_lo, p_hi, [1.0], part)[0])
                without = study.decode(masked(p_lo, p_hi, [1.0], ~part)[0])
            s_alone, s_without = study.shape(alone), study.shape(without)
            rows.append({"transition": k, "part": name, "t_lo": lo, "t_hi": hi, "before": list(before), "after": list(after),
                         "alone": list(s_alone.robust), "without": list(s_without.robust),
                         "alone_reproduces": s_alone.robust == tuple(after), "necessary": s_without.robust == tuple(before)})
    return mode, rows


# --- endpoints ------------------------------------------------------------------------------------------
@dataclass
class Endpoints_:
    param: Parameterisation
    points: dict[str, torch.Tensor]  # id -> point (D,)
    families: dict[str, str]  # id -> family ("" when unknown)
    intended: dict[str, tuple[int, int, int] | None] = field(default_factory=dict)  # id -> the topology it stands for


def _declared(family: str) -> tuple[int, int, int] | None:
    """A procedural family's declared (b0, b1, b2); None for a family name this project does not define."""
    from weightspace.data.families import FAMILIES

    return tuple(FAMILIES[family].betti) if family in FAMILIES else None


def check_endpoints(gen: Generator, ends: Endpoints_, *, seed: int,
                    volume_threshold: float) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Decode every endpoint once (under the paths' seed) and compare its robust Betti numbers with the
    topology it stands for (a family's declaration, an encoded shape's own grid, a member's target).

    Returns one row per endpoint (id, family, decoded, intended (None: nothing to check against), ok)
    and the decoded grids by id, which the paths reuse as their t = 0 and t = 1 decodes."""
    ids = list(ends.points)
    grids = decode_points(gen, ends.param, torch.stack([ends.points[i] for i in ids]), [seed] * len(ids)).numpy()
    rows = topology_check(ids, [measure(g, seed=seed, volume_threshold=volume_threshold).robust for g in grids],
                          [ends.intended.get(i) for i in ids])
    return [{**r, "family": ends.families.get(r["id"], "")} for r in rows], dict(zip(ids, grids))


def _population_ends(gen: Generator, cfg: InterpolateConfig, folder: Path, ids: list[str] | None) -> Endpoints_:
    """Members of `cfg.population`, each standing for the target its build's fidelity check recorded."""
    pop = Population(cfg.population)
    param = pop.frame.build(gen, what=f"population {pop.folder.name}")
    index = {str(r["id"]): i for i, r in enumerate(pop.rows)}
    want = ids if ids is not None else (list(index) if cfg.pairs else [cfg.a, cfg.b])
    missing = [i for i in want if i not in index]
    if missing:
        raise InputError(f"population {pop.folder}: no member with id {missing[0]!r}; ids: {', '.join(list(index)[:20])}")
    rows = {i: pop.rows[index[i]] for i in want}
    targets = {i: r.get("metrics", {}).get("target_robust_betti") for i, r in rows.items()}
    return Endpoints_(param, {i: pop.point(index[i]) for i in want},
                      {i: str(r.get("source", {}).get("family", "")) for i, r in rows.items()},
                      {i: tuple(t) if t is not None else None for i, t in targets.items()})


def _point_file_ends(gen: Generator, cfg: InterpolateConfig, folder: Path, ids: list[str] | None) -> Endpoints_:
    """Two point files `cfg.a`, `cfg.b` of one frame (nothing recorded to check them against)."""
    files = [load_point(p) for p in (cfg.a, cfg.b)]
    a, b = files[0].frame, files[1].frame
    param = a.build(gen, what=f"point file {cfg.a} (checkpoint {cfg.checkpoint})")
    b.layout.check_same(a.layout, what=f"point file {cfg.b} vs {cfg.a}")
    if not torch.equal(a.anchor, b.anchor):
        raise InputError(f"point files {cfg.a} and {cfg.b} decode under different anchor conditions; "
                         "a path between them needs points of one frame (e.g. members of one population)")
    return Endpoints_(param, {"a": files[0].point, "b": files[1].point}, {"a": "", "b": ""})


def _family_ends(gen: Generator, cfg: InterpolateConfig, folder: Path, ids: list[str] | None) -> Endpoints_:
    """Seeded family conditions: `cfg.a` and `cfg.b`, or for pairs `shapes_per_family` draws per family,
    each standing for its family's declared topology."""
    require(gen, HasFamilies, "endpoints=family (use --endpoints data with --data otherwise)")
    known = generator_families(gen)
    if cfg.pairs:
        if not known:
            raise InputError("endpoints=family: this generator knows no family names; use --endpoints data with --data")
        names = [f"{f}#{i}" for f in known for i in range(cfg.shapes_per_family)]
    else:
        bad = [f for f in (cfg.a, cfg.b) if f not in known]
        if bad:
            raise InputError(f"a/b: unknown family {bad[0]!r}; this generator knows {known}")
        names = [cfg.a, cfg.b]
    family = {n: n.split("#")[0] for n in names}
    seeds = [derive_seed(cfg.seed, "family", n) % 2**31 for n in names]
    with torch.no_grad():
        c = gen.condition(family=[family[n] for n in names], seeds=seeds).cpu()  # (N, *condition_shape)
    if cfg.pairs and cfg.shapes_per_family > 1 and torch.equal(c[0], c[1]):
        # deterministic family conditions (latent diffusion's family tokens): within-family pairs need shapes
        return _data_ends(gen, cfg, folder, ids)
    return Endpoints_(make_parameterisation(gen, "condition"), {n: c[i].reshape(-1) for i, n in enumerate(names)}, family,
                      {n: _declared(family[n]) for n in names})


def _data_ends(gen: Generator, cfg: InterpolateConfig, folder: Path, ids: list[str] | None) -> Endpoints_:
    """Encoded clean surface samples of shapes in `cfg.data` (without it, procedural shapes of the
    generator's families), each standing for its own grid's robust topology."""
    families = generator_families(gen) if cfg.pairs or cfg.data is None else []
    root, rows = study_data(folder / "data", data=cfg.data, families=families, count=cfg.shapes_per_family,
                            seed=cfg.data_seed, resolution=native_resolution(gen), pose=generator_pose(gen))
    by_id = {str(r["id"]): r for r in rows}
    want = ids if ids is not None else (list(by_id) if cfg.pairs else [cfg.a, cfg.b])
    missing = [i for i in want if i not in by_id]
    if missing:
        raise InputError(f"a/b: no shape with id {missing[0]!r} in the data; ids: {', '.join(list(by_id)[:20])}")
    clouds = []
    for i in want:
        pts, _ = clean_surface(root, by_id[i])
        take = item_rng(cfg.seed, "observe", i).choice(len(pts), size=min(cfg.observations, len(pts)), replace=False)
        clouds.append(pts[take])
    conds = encode_points(gen, clouds, seed=cfg.seed)
    intended = {i: tuple(int(v) for v in robust_betti(load_grid(row_root(root, by_id[i]), by_id[i]))) for i in want}
    return Endpoints_(make_parameterisation(gen, "condition"), {i: conds[j].reshape(-1) for j, i in enumerate(want)},
                      {i: str(by_id[i].get("family", "")) for i in want}, intended)


Resolver = Callable[[Generator, InterpolateConfig, Path, "list[str] | None"], Endpoints_]
RESOLVERS: dict[str, Resolver] = {"family": _family_ends, "data": _data_ends, "population": _population_ends,
                                  "points": _point_file_ends}


def resolve_endpoints(gen: Generator, cfg: InterpolateConfig, folder: Path, ids: list[str] | None = None) -> Endpoints_:
    """The points named by the config (`ids` overrides a/b; for pairs, None with data means all shapes)."""
    return RESOLVERS[cfg.endpoints](gen, cfg, folder, ids)


def make_pairs(ends: Endpoints_, n: int, seed: int) -> list[tuple[str, str, bool]]:
    """n pairs (a, b, within_family), alternating within and across families where both exist."""
    rng = item_rng(seed, "pairs")
    by_fam: dict[str, list[str]] = {}
    for i, f in ends.families.items():
        by_fam.setdefault(f, []).append(i)
    within_fams = [f for f, ids in by_fam.items() if len(ids) >= 2]
    ids = list(ends.points)
    if len(ids) < 2:
        raise InputError("pairs needs at least two shapes or members")
    pairs: list[tuple[str, str, bool]] = []
    seen: set[frozenset[str]] = set()
    for k in range(n):
        for _ in range(100):  # redraw a pair already used (in either direction) while others remain
            if k % 2 == 0 and within_fams:
                f = within_fams[rng.integers(len(within_fams))]
                a, b = rng.choice(by_fam[f], size=2, replace=False)
            else:
                a, b = rng.choice(ids, size=2, replace=False)
            if frozenset((str(a), str(b))) not in seen:
                break
        seen.add(frozenset((str(a), str(b))))
        pairs.append((str(a), str(b), ends.families[str(a)] == ends.families[str(b)]))
    return pairs


# --- the study --------------------------------------------------------------------------------------------
def run_interpolate(config: InterpolateConfig, *, generator: Generator | None = None) -> Path:
    """Run the interpolation study into `config.out`; returns the results folder.

    results.json: `decodes` (total decodes of the run), `transitions` (objects with `t_lo`, `t_hi`,
    `before`, `after` ([b0, b1, b2] robust) plus width, Chamfer jump, ...), and wall time; with
    pairs > 0 a `summary` of transition rate and sharpness within and across families.
    """
    config.validate()
    clock = Clock()
    folder = start_results(config.out, config)
    gen = load_study_generator(config.checkpoint, generator)
    if config.pairs:
        return _run_pairs(config, gen, folder, clock)
    ends = resolve_endpoints(gen, config, folder)
    (id_a, a), (id_b, b) = list(ends.points.items())[:2]
    check, end_grids = check_endpoints(gen, Endpoints_(ends.param, {id_a: a, id_b: b}, ends.families, ends.intended),
                                       seed=config.seed, volume_threshold=config.volume_threshold)
    broken = [c for c in check if not c["ok"]]
    if broken:
        c = broken[0]
        refuse(folder, config.checkpoint, (
            f"endpoint {c['id']!r} decodes to robust Betti {tuple(c['decoded'])}, not the {tuple(c['intended'])} it stands "
            f"for: a path from a broken shape measures nothing. Choose another endpoint (a shape this generator "
            f"reproduces, another --seed, or a population member whose fidelity check passed)"), endpoint_check=check)
    study = PathStudy(gen, ends.param, a, b, kind=config.path, seed=config.seed, volume_threshold=config.volume_threshold)
    study.known = {0.0: end_grids[id_a], 1.0: end_grids[id_b]}
    study.decodes = 2  # the endpoint check's
    run = study.search(config.steps, config.tolerance)
    search_decodes = study.decodes
    steps = step_rows(run, config.steps)
    transitions = transition_rows(run)
    write_csv(folder / "steps.csv", steps)
    write_csv(folder / "transitions.csv", transitions)
    results: dict[str, Any] = {
        "checkpoint": config.checkpoint, "generator": gen.kind, "a": id_a, "b": id_b, "endpoints": config.endpoints,
        "parameterisation": ends.param.name, "path": config.path, "decodes": search_decodes,
        "search_decodes": search_decodes, "uniform_decodes": config.steps + 1,
        "bisection_decodes": search_decodes - (config.steps + 1),
        "uniform_sweep_decodes": math.ceil(1 / config.tolerance) + 1, "tolerance": config.tolerance,
        "transitions": transitions, "search_seconds": run.seconds,
        "start": list(run.shapes[0.0].robust), "end": list(run.shapes[1.0].robust),
        "chamfer_start_end": chamfer(run.shapes[0.0].points, run.shapes[1.0].points),
        "dist_param_total": run.dist_param[1.0], "dist_effective_total": run.dist_effective[1.0],
        "endpoint_check": check,
    }
    if config.attribute and transitions:
        mode, rows = attribute(study, transitions, margin=config.attribute_margin / config.steps)
        write_csv(folder / "attribution.csv", rows)
        results["attribution"] = {"mode": mode, "decodes": study.decodes - search_decodes,
                                  "by_transition": _attribution_summary(rows)}
    elif config.attribute:
        results["attribution"] = {"mode": attribution_parts(gen, ends.param)[0], "decodes": 0, "by_transition": []}
    results["decodes"] = study.decodes
    if config.meshes:
        for t in sorted({0.0, 1.0} | {tr["t_lo"] for tr in transitions} | {tr["t_hi"] for tr in transitions}):
            save_mesh(run.grids[t], folder / "meshes" / f"t{t:.6f}.ply")
    _plot_path(folder / "path.png", steps, transitions, title=f"{gen.kind}: {id_a} -> {id_b} ({config.path})")
    results["wall_seconds"] = clock()
    write_results(folder, results)
    return folder


def _attribution_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        s = out.setdefault(r["transition"], {"transition": r["transition"], "alone_reproduces": [], "necessary": []})
        if r["alone_reproduces"]:
            s["alone_reproduces"].append(r["part"])
        if r["necessary"]:
            s["necessary"].append(r["part"])
    return list(out.values())


def _run_pairs(config: InterpolateConfig, gen: Generator, folder: Path, clock: Callable[[], float]) -> Path:
    ends = resolve_endpoints(gen, config, folder, ids=None)
    check, end_grids = check_endpoints(gen, ends, seed=config.seed, volume_threshold=config.volume_threshold)
    keep = [c["id"] for c in check if c["ok"]]
    if len(keep) < 2:
        refuse(folder, config.checkpoint, (
            f"only {len(keep)} of {len(check)} endpoints decode to the topology they stand for ({mismatches(check)}); pairs "
            f"need two. Use --endpoints data with shapes this generator reproduces, or a population whose members "
            f"passed their fidelity check"), endpoint_check=check)
    ends = Endpoints_(ends.param, {i: ends.points[i] for i in keep}, {i: ends.families[i] for i in keep},
                      {i: ends.intended.get(i) for i in keep})
    pairs = make_pairs(ends, config.pairs, config.seed)
    pair_rows, all_transitions, decodes = [], [], len(check)
    for k, (ia, ib, within) in enumerate(pairs):
        study = PathStudy(gen, ends.param, ends.points[ia], ends.points[ib], kind=config.path,
                          seed=config.seed, volume_threshold=config.volume_threshold)
        study.known = {0.0: end_grids[ia], 1.0: end_grids[ib]}  # decoded (and counted) by the endpoint check
        run = study.search(config.steps, config.tolerance)
        decodes += study.decodes
        trs = transition_rows(run)
        span = chamfer(run.shapes[0.0].points, run.shapes[1.0].points)
        for tr in trs:
            # sharpness: Chamfer change per unit t across the transition over the path's average change per unit t
            tr["sharpness"] = tr["chamfer_jump"] / tr["width"] / span if span and np.isfinite(span) and span > 0 else float("nan")
            all_transitions.append({"pair": k, "a": ia, "b": ib, "within_family": within, **tr})
        pair_rows.append({"pair": k, "a": ia, "b": ib, "family_a": ends.families[ia], "family_b": ends.families[ib],
                          "within_family": within, "start": list(run.shapes[0.0].robust), "end": list(run.shapes[1.0].robust),
                          "transitions": len(trs), "decodes": study.decodes, "seconds": run.seconds,
                          "min_width": min((t["width"] for t in trs), default=float("nan")),
                          "max_chamfer_jump": max((t["chamfer_jump"] for t in trs), default=float("nan")),
                          "chamfer_start_end": span})
    write_csv(folder / "pairs.csv", pair_rows)
    write_csv(folder / "transitions.csv", all_transitions)
    summary = {name: _pair_summary([r for r in pair_rows if sel(r)], [t for t in all_transitions if sel(t)])
               for name, sel in (("all", lambda r: True), ("within", lambda r: r["within_family"]),
                                 ("across", lambda r: not r["within_family"]))}
    _plot_pairs(folder / "pairs.png", pair_rows, all_transitions)
    write_results(folder, {"checkpoint": config.checkpoint, "generator": gen.kind, "pairs": len(pairs), "decodes": decodes,
                           "pair_endpoints": "family conditions" if all("#" in i for i in ends.points) else "encoded shapes",
                           "transitions": all_transitions, "summary": summary, "wall_seconds": clock(),
                           "endpoint_check": check, "endpoints_dropped": [c["id"] for c in check if not c["ok"]],
                           "uniform_sweep_decodes_per_path": math.ceil(1 / config.tolerance) + 1})
    return folder


def _pair_summary(pairs: list[dict[str, Any]], transitions: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(pairs)
    return {"paths": n, "paths_with_transition": sum(r["transitions"] > 0 for r in pairs),
            "rate": float(np.mean([r["transitions"] > 0 for r in pairs])) if n else float("nan"),
            "transitions_per_path": float(np.mean([r["transitions"] for r in pairs])) if n else float("nan"),
            "mean_decodes_per_path": float(np.mean([r["decodes"] for r in pairs])) if n else float("nan"),
            "median_width": float(np.median([t["width"] for t in transitions])) if transitions else float("nan"),
            "mean_chamfer_jump": finite_mean([t["chamfer_jump"] for t in transitions]),
            "median_sharpness": float(np.nanmedian([t["sharpness"] for t in transitions])) if transitions else float("nan")}


def _plot_path(path: Path, steps: list[dict[str, Any]], transitions: list[dict[str, Any]], *, title: str) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    t = [r["t"] for r in steps]
    for key, lab in (("rb0", "b0"), ("rb1", "b1"), ("rb2", "b2")):
        ax1.step(t, [r[key] for r in steps], where="post", label=f"robust {lab}")
    ax1.plot(t, [r["components_above"] for r in steps], "k.", ms=3, label="components > threshold")
    for tr in transitions:
        ax1.axvspan(tr["t_lo"], tr["t_hi"], color="red", alpha=0.4)
        ax1.axvline(0.5 * (tr["t_lo"] + tr["t_hi"]), color="red", lw=0.6)
    ax1.set_ylabel("Betti number")
    ax1.legend(fontsize=7)
    ax1.set_title(title, fontsize=9)
    ax2.plot(t, [r["chamfer_start"] for r in steps], ".-", label="Chamfer to start")
    ax2.plot(t, [r["chamfer_end"] for r in steps], ".-", label="Chamfer to end")
    ax2.set_xlabel("t")
    ax2.set_ylabel("Chamfer-L1")
    ax2.legend(fontsize=7)
    save_figure(fig, path)


def _plot_pairs(path: Path, pairs: list[dict[str, Any]], transitions: list[dict[str, Any]]) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for within, lab in ((True, "within family"), (False, "across families")):
        ax1.hist([r["transitions"] for r in pairs if r["within_family"] == within], bins=range(0, 8), alpha=0.6, label=lab)
        ax2.hist([t["width"] for t in transitions if t["within_family"] == within] or [0], bins=10, alpha=0.6, label=lab)
    ax1.set_xlabel("transitions per path")
    ax2.set_xlabel("transition width in t")
    ax1.legend(fontsize=7)
    save_figure(fig, path)

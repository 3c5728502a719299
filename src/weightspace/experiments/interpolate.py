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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Literal

from weightspace.analysis.measure import DEFAULT_VOLUME_THRESHOLD, chamfer
from weightspace.decode.mesh import save_mesh
from weightspace.experiments.attribution import attribute, attribution_parts, attribution_summary
from weightspace.experiments.common import Clock, check_choice, check_executor, given_checkpoint, load_study_generator, refuse, start_results
from weightspace.experiments.endpoints import RESOLVERS, Endpoints_, check_endpoints, endpoint_fidelity, resolve_endpoints
from weightspace.experiments.pairs import PROGRESS, make_pairs, run_pairs
from weightspace.experiments.path_study import (
    KEPT_MEANS,
    PathRun,
    PathStudy,
    flat_effective,
    space_of,
    step_rows,
    topology_kept,
    transition_rows,
)
from weightspace.experiments.plots import plot_path
from weightspace.experiments.weight_paths import delta_form, run_weight_paths
from weightspace.generators.protocol import Generator
from weightspace.runtime.config import check_config
from weightspace.runtime.errors import InputError
from weightspace.runtime.results import write_csv, write_results

Endpoints = Literal["family", "data", "population", "points"]
ENDPOINTS = ("family", "data", "population", "points")
PATHS = ("lerp", "slerp")
# endpoints that take no shapes from --data (family: on one path; its pairs encode shapes when the family conditions
# are deterministic, `endpoints._family_ends`)
DATA_UNUSED = {"family": "one path runs between the conditions of the families --a and --b",
               "points": "the endpoints are the point files --a and --b",
               "population": "the endpoints are members of --population, fitted to its own data"}
# what the study writes into its folder (besides config.json, results.json and report.html); `data` too when it
# makes its own shapes there
OUTPUTS = ("steps.csv", "transitions.csv", "path.png", "attribution.csv", "pairs.csv", "pairs.png", PROGRESS, "weight_paths.png",
           "meshes", "renders")


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
    # with endpoints=population: run every path again between the encoded conditions of the same two
    # shapes and compare the two spaces (experiments.weight_paths)
    condition_paths: bool = False
    shapes_per_family: int = 2  # procedural shapes per family for --pairs
    volume_threshold: float = DEFAULT_VOLUME_THRESHOLD
    meshes: bool = True
    overwrite: bool = False  # replace an earlier run with other settings in `out` (else it is refused)
    # where the --pairs paths run (results do not depend on it): inprocess | process (`workers` processes) |
    # ray (a local instance with `workers` CPUs, or the cluster at `address`: auto or HOST:PORT)
    executor: str = "inprocess"
    workers: int = 1
    address: str | None = None

    @classmethod
    def small(cls, checkpoint: str = "default", out: str = "results/demo/interpolate") -> "InterpolateConfig":
        """The demo-sized run: the default single path (about a minute on a laptop CPU)."""
        return cls(checkpoint=checkpoint, out=out)

    def validate(self) -> None:
        if not self.volume_threshold >= 0:
            raise InputError(f"volume_threshold (world units^3; parts smaller are floaters) must be >= 0, got {self.volume_threshold}")
        check_choice("endpoints", self.endpoints, ENDPOINTS)
        check_choice("path", self.path, PATHS)
        if self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}")
        if not 0 < self.tolerance < 1:
            raise InputError(f"tolerance must be in (0, 1), got {self.tolerance}")
        if self.pairs < 0 or self.attribute_margin < 0 or self.observations < 1 or self.shapes_per_family < 1:
            raise InputError("pairs (--pairs) and attribute_margin must be >= 0, observations and shapes_per_family >= 1")
        if self.endpoints == "population" and not self.population:
            raise InputError("endpoints 'population' needs a population folder (--population)")
        if self.population and self.endpoints != "population":  # else the paths ran between other endpoints, silently
            raise InputError(f"population (--population) names the endpoints' population; it needs endpoints 'population' "
                             f"(--endpoints population), got {self.endpoints!r}")
        if self.data is not None and self.endpoints in DATA_UNUSED and not (self.endpoints == "family" and self.pairs):
            # else the paths ran between other endpoints and the folder was silently unused
            raise InputError(f"data (--data) is not read with endpoints {self.endpoints!r} (--endpoints {self.endpoints}): "
                             f"{DATA_UNUSED[self.endpoints]}; drop --data, or use --endpoints data to encode its shapes")
        if self.condition_paths and self.endpoints != "population":
            raise InputError(f"condition_paths (--condition-paths) compares paths between population members; it needs "
                             f"endpoints 'population' (--endpoints population), got {self.endpoints!r}")
        if self.attribute and (self.pairs or self.condition_paths):
            raise InputError(f"attribute (--attribute) reruns the transitions of one path; it does not apply to "
                             f"{'pairs (--pairs)' if self.pairs else 'condition_paths (--condition-paths)'}")
        if self.pairs and self.endpoints == "points":
            raise InputError("pairs (--pairs) needs endpoints family, data or population (--endpoints; points files name one pair)")
        check_executor(self.executor, self.workers)

    def refuse_unused(self, given: Collection[str]) -> None:
        """Refuse fields in `given` (set by the user: options typed, keys of a config file) that this run does not
        read; their defaults (a dumbbell, b pair, meshes on) cannot tell `validate` whether they were given."""
        ends = [n for n in ("a", "b") if n in given]
        if self.pairs and ends:  # else the pairs ran between endpoints of their own choosing, silently
            raise InputError(f"{' and '.join(f'{n} (--{n})' for n in ends)} name{'s' if len(ends) == 1 else ''} the "
                             f"endpoints of one path; pairs (--pairs) choose theirs among the endpoints' families, shapes "
                             f"or members: drop {' and '.join(f'--{n}' for n in ends)}")
        many = "pairs (--pairs)" if self.pairs else "condition_paths (--condition-paths)" if self.condition_paths else ""
        if "meshes" in given and self.meshes and many:
            raise InputError(f"meshes (--meshes): {many} write no meshes (their paths are in pairs.csv and "
                             f"transitions.csv); drop --meshes")


# --- the study (one path here; many: experiments.pairs) --------------------------------------------------
def run_interpolate(config: InterpolateConfig, *, generator: Generator | None = None) -> Path:
    """Run the interpolation study into `config.out`; returns the results folder.

    results.json: `decodes` (total decodes of the run), `transitions` (objects with `t_lo`, `t_hi`,
    `before`, `after` ([b0, b1, b2] robust) plus width, Chamfer jump, ...), and wall time; with
    pairs > 0 a `summary` of transition rate and sharpness within and across families. Like every
    study: `parameterisation`, `member_fidelity` ({mean_iou, betti_match} of population endpoints,
    nulls and a `reason` for other endpoints) and `topology_kept` ({space: {rate, ci_low, ci_high, n}}
    over the within-family paths; n = 0 and rate null for a path between two families).
    """
    config = check_config(config, where=type(config).__name__)  # types and bounds as a config file's, then validate
    config = given_checkpoint(config, generator)
    clock = Clock()
    folder = start_results(config.out, config, overwrite=config.overwrite, outputs=OUTPUTS + (() if config.data else ("data",)))
    gen = load_study_generator(config.checkpoint, generator)
    if config.condition_paths:
        return run_weight_paths(config, gen, folder, clock)
    if config.pairs:
        ends = delta_form(resolve_endpoints(gen, config, folder, ids=None))
        check, end_grids = check_endpoints(gen, ends, seed=config.seed, volume_threshold=config.volume_threshold)
        return run_pairs(config, gen, folder, clock, ends, check, end_grids)
    # LoRA members as Delta W (docs/lora-delta.md): a lerp of their factors adds cross terms B_a A_b mid-path
    ends = delta_form(resolve_endpoints(gen, config, folder))
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
    within = bool(ends.families.get(id_a)) and ends.families.get(id_a) == ends.families.get(id_b)
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
        "endpoint_check": check, "within_family": within, "member_fidelity": endpoint_fidelity(config, [id_a, id_b]),
        "topology_kept": topology_kept({space_of(ends.param): [len(transitions)] if within else []}),
        "topology_kept_means": KEPT_MEANS,
    }
    if config.attribute and transitions:
        mode, rows = attribute(study, transitions, margin=config.attribute_margin / config.steps)
        write_csv(folder / "attribution.csv", rows)
        results["attribution"] = {"mode": mode, "decodes": study.decodes - search_decodes,
                                  "by_transition": attribution_summary(rows)}
    elif config.attribute:
        results["attribution"] = {"mode": attribution_parts(gen, ends.param)[0], "decodes": 0, "by_transition": []}
    results["decodes"] = study.decodes
    if config.meshes:
        for t in sorted({0.0, 1.0} | {tr["t_lo"] for tr in transitions} | {tr["t_hi"] for tr in transitions}):
            save_mesh(run.grids[t], folder / "meshes" / f"t{t:.6f}.ply")
    plot_path(folder / "path.png", steps, transitions, title=f"{gen.kind}: {id_a} -> {id_b} ({config.path})")
    results["wall_seconds"] = clock()
    write_results(folder, results)
    return folder


__all__ = ["ENDPOINTS", "PATHS", "RESOLVERS", "Endpoints", "Endpoints_", "InterpolateConfig", "PathRun", "PathStudy", "attribute",
           "attribution_parts", "check_endpoints", "flat_effective", "make_pairs", "resolve_endpoints", "run_interpolate",
           "step_rows", "transition_rows"]

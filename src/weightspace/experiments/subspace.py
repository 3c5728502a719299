"""The subspace study (paper claim 2): does a PCA subspace of K examples vary local geometry and keep topology?

By default the examples are LoRA members of a population (`space.population.build_population`,
fitted with the generator's measured defaults until they reproduce their shapes; every member's
decode IoU and Betti match is recorded), learned in delta form (Delta W = B A per layer). The
grid runs families x K x seeds; one cell (`subspace_cell.run_cell`) picks K members of one family
under one seed, fits a PCA with k < K components, and decodes subspace samples against three
baselines at the same distance from the mean: a random direction in the full point space, the
members' full-rank diagonal Gaussian (same mean and total variance), and condition noise.

Every cell writes its own folder (`cells/<family>-K<K>-s<seed>`) and a rerun skips finished cells,
so the full grid resumes; the population resumes member by member. results.json pools the cells
into rates with Wilson 95% intervals per kind, per family and per (family, K).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

import torch

from weightspace.analysis.measure import DEFAULT_VOLUME_THRESHOLD
from weightspace.data.dataset import load_grid, load_points, read_manifest
from weightspace.experiments.common import (
    Clock,
    check_choice,
    check_distinct,
    check_executor,
    generator_pose,
    given_checkpoint,
    load_study_generator,
    record_config,
    refuse,
    row_root,
    start_results,
    study_data,
)
from weightspace.experiments.plots import plot_subspace
from weightspace.experiments.subspace_cell import KINDS, Cell, run_cell
from weightspace.experiments.subspace_figures import (
    fidelity_of_checks,
    fidelity_of_population,
    plot_claim2,
    pool_cells,
)
from weightspace.generators.protocol import EncodesPoints, Generator, require
from weightspace.runtime.config import check_config
from weightspace.runtime.errors import InputError
from weightspace.runtime.executors import executor_workers
from weightspace.runtime.io import atomic_write_text, read_json
from weightspace.runtime.results import write_csv, write_results
from weightspace.runtime.seeding import derive_seed, item_rng
from weightspace.space.lora import LORA_FORMS
from weightspace.space.parameterisation import Parameterisation
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.population import PopulationConfig, build_population, check_grid_resolution, fit_member
from weightspace.space.store import Population

SUBSPACE_PARAMETERISATIONS = ("lora", "condition")
FAMILIES = ["torus", "pretzel", "pair"]  # one hole, two holes, two parts
GRID_K = [2, 4, 8, 16]
# settings a finished cell was computed with; a resumed study must match them
CELL_SETTINGS = ("checkpoint", "parameterisation", "samples", "temperature", "data", "data_seed", "observations", "pool",
                 "population", "lora_rank", "lora_targets", "lora_form", "fit_steps", "lr", "fit_draws", "gate_factor",
                 "volume_threshold")
# ... of which these only set how the population's members are fitted: unset, they are the generator's defaults, so
# `fit_steps` None and 100 may be the same members. The population build, which runs before any cell, refuses
# members fitted otherwise, so a cell does not compare them itself (docs/findings.md pins them on a copied folder)
MEMBER_FIT_SETTINGS = ("fit_steps", "lr", "fit_draws")


@dataclass
class SubspaceConfig:
    """One subspace study over families x K x seeds (the CLI builds one of these)."""

    checkpoint: str = "default"
    out: str = "results/subspace"
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    family: str | None = None  # one family: the same as families = [family]
    examples: int | list[int] = field(default_factory=lambda: [4])  # K per cell (the paper's regime: 2, 4, 8, 16)
    k: int | None = None  # PCA components, 1 <= k < K; None: K // 2 in each cell
    seeds: list[int] = field(default_factory=lambda: [0])  # member choice, sampling and sampler noise seed per cell
    samples: int = 16  # S samples per kind (subspace and each baseline) per cell
    parameterisation: str = "lora"  # lora: population members (weight space) | condition: encoded examples
    population: str | None = None  # an existing lora population whose members carry their source family
    pool: int | None = None  # shapes (members) per family when the study builds its own; None: max K
    temperature: float = 1.0  # subspace samples z_i ~ N(0, (temperature sigma_i)^2)
    data: str | None = None  # data folder (default: procedural shapes made in the results folder)
    data_seed: int = 1
    observations: int = 1024  # surface points per encoded example (conditions)
    # the population the study builds: rank-r adapters on `lora_targets`, fitted with the generator's
    # measured defaults (`Generator.fit_defaults`) unless fit_steps / lr / fit_draws say otherwise
    lora_rank: int = 4
    lora_targets: str = "all"
    lora_form: str = "delta"  # the form the subspace is learned in: delta (Delta W = B A) | factors (A, B)
    fit_steps: int | None = None
    lr: float | None = None
    fit_draws: int | None = None
    batch_members: int = 1  # members fitted together (`population build --batch-members`)
    # where the population's members are fitted: inprocess | process | ray (`runtime.executors`); the CLI
    # and the demo use a process per usable core, a config made in code fits in its own process by default
    executor: str = "inprocess"
    workers: int | None = None  # workers of the process or ray executor (None: every usable core)
    gate_factor: float = 1.5  # a gate score above factor x the examples' largest flags a failure
    volume_threshold: float = DEFAULT_VOLUME_THRESHOLD
    meshes: bool = True

    @classmethod
    def small(cls, checkpoint: str = "default", out: str = "results/demo/subspace", **overrides: Any) -> "SubspaceConfig":
        """The demo-sized run: one family, K = 3 LoRA members, k = 2, 8 samples per kind, one seed. Other examples
        (K) given without k keep k = 2 where it is below every K, else leave k unset (K // 2 in each cell)."""
        examples = overrides.get("examples", [3])
        fits = all(2 < K for K in ([examples] if isinstance(examples, int) else examples))
        return cls(**{"checkpoint": checkpoint, "out": out, "families": ["torus"], "examples": [3], "k": 2 if fits else None,
                      "samples": 8, **overrides})

    @classmethod
    def full(cls, checkpoint: str = "default", out: str = "results/subspace-grid", **overrides: Any) -> "SubspaceConfig":
        """The paper's regime: torus, pretzel, pair x K in {2, 4, 8, 16} (k = K // 2) x seeds 0, 1, 2."""
        return cls(**{"checkpoint": checkpoint, "out": out, "examples": list(GRID_K), "seeds": [0, 1, 2], "executor": "process",
                      **overrides})

    def pool_workers(self) -> int:
        """Workers of the executor (`runtime.executors.executor_workers`)."""
        return executor_workers(self.executor, self.workers)

    def __post_init__(self) -> None:
        if self.family is not None:
            self.families = [self.family]

    @property
    def Ks(self) -> list[int]:
        return [int(v) for v in ([self.examples] if isinstance(self.examples, int) else self.examples)]

    def k_for(self, K: int) -> int:
        return max(1, K // 2) if self.k is None else int(self.k)

    def validate(self) -> None:
        if not self.volume_threshold >= 0:
            raise InputError(f"volume_threshold (world units^3; parts smaller are floaters) must be >= 0, got {self.volume_threshold}")
        check_choice("parameterisation", self.parameterisation, SUBSPACE_PARAMETERISATIONS)
        check_choice("lora_form", self.lora_form, LORA_FORMS)
        if not self.families or not self.Ks or not self.seeds:
            raise InputError("families, examples (K) and seeds each need at least one value")
        check_distinct("families (--families)", self.families)
        check_distinct("examples (-K)", self.Ks)
        check_distinct("seeds (--seeds)", self.seeds)
        if min(self.Ks) < 2:
            raise InputError(f"examples (K) must be >= 2, got {self.Ks}")
        bad = [K for K in self.Ks if not 1 <= self.k_for(K) < K]
        if bad:
            raise InputError(f"k must satisfy 1 <= k < K = {bad[0]}, got {self.k} (leave k unset for K // 2 in each cell)")
        if self.pool is not None and self.pool < max(self.Ks):
            raise InputError(f"pool must be >= the largest K ({max(self.Ks)}), got {self.pool}")
        if self.samples < 1 or self.temperature < 0 or (self.fit_steps or 0) < 0 or self.gate_factor <= 0 \
                or (self.lr is not None and not self.lr > 0) or (self.fit_draws is not None and self.fit_draws < 1) \
                or self.batch_members < 1:
            raise InputError("samples must be >= 1, temperature and fit_steps >= 0, lr and gate_factor > 0, "
                             "fit_draws and batch_members >= 1")
        check_executor(self.executor, self.workers)
        if self.population is not None and self.parameterisation != "lora":
            raise InputError("population applies to parameterisation lora")
        if self.population is not None and self.data is not None:  # else the population's own data, silently
            raise InputError("data (--data) is for the population the study builds; the members of population "
                             "(--population) come with the data folder they were fitted to")
        fitting = [n for n in ("fit_steps", "lr", "fit_draws", "workers") if getattr(self, n) is not None]
        if self.population is not None and fitting:  # else set for members that are not fitted, silently
            _refuse_fitting(fitting)

    def refuse_unused(self, given: Collection[str]) -> None:
        """Refuse fields in `given` (set by the user: options typed, keys of a config file) that this run does not
        read; their defaults (batch_members 1, executor inprocess, lora_rank 4, ...) cannot tell `validate`."""
        fitting = [n for n in ("batch_members", "executor", "lora_rank", "lora_targets") if n in given]
        if self.population is not None and fitting:
            _refuse_fitting(fitting)


# settings of the population the study builds, by their options (the others are config fields only)
FITTING_OPTIONS = {"batch_members": "--batch-members", "executor": "--executor", "workers": "--workers"}


def _refuse_fitting(names: list[str]) -> None:
    said = ", ".join(f"{n} ({FITTING_OPTIONS[n]})" if n in FITTING_OPTIONS else n for n in names)
    raise InputError(f"{said}: how the study fits the members of the population it builds; the members of population "
                     f"(--population) are already fitted: drop {'it' if len(names) == 1 else 'them'} or --population")


# --- the shapes and their points ----------------------------------------------------------------------
def pool_data(config: SubspaceConfig, gen: Generator, folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The pool's shapes: with config.population, the rows of its data folder that have a finished member
    (a population still being built gives what it has); else config.pool per family (the first of each
    family in the data) copied into one data folder, `folder/pool-data`, reused as it is when it exists."""
    if config.population is not None:
        pop = Population(config.population)
        data = Path(str(pop.config.get("data", "")))
        have = {str(r["id"]) for r in pop.rows}
        rows = [r for r in read_manifest(data) if str(r["id"]) in have and r.get("family") in config.families]
        return data, rows
    out = folder / "pool-data"
    if (out / "manifest.jsonl").is_file():
        return out, read_manifest(out)
    pool = config.pool or max(config.Ks)
    root, rows = study_data(folder / "data", data=config.data, families=config.families, count=pool,
                            seed=config.data_seed, resolution=gen.resolution, pose=generator_pose(gen))
    chosen = []
    for fam in config.families:
        got = [r for r in rows if r.get("family") == fam][:pool]
        if len(got) < max(config.Ks):
            raise InputError(f"family {fam!r}: {len(got)} shapes in the data, the largest K is {max(config.Ks)}")
        chosen += got
    (out / "grids").mkdir(parents=True, exist_ok=True)
    (out / "points").mkdir(parents=True, exist_ok=True)
    copied = []
    for i, r in enumerate(chosen):
        src = row_root(root, r)
        grid, points = f"grids/{i:05d}.npy", f"points/{i:05d}.npz"
        shutil.copyfile(src / r["grid"], out / grid)
        shutil.copyfile(src / r["points"], out / points)
        keep = {k: v for k, v in r.items() if k not in ("_root", "grid", "points")}
        copied.append({**keep, "id": str(r["id"]), "family": r.get("family", ""), "split": "train", "grid": grid, "points": points})
    atomic_write_text(out / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in copied))
    return out, copied


def weight_points(config: SubspaceConfig, gen: Generator, folder: Path, data: Path,
                  rows: list[dict[str, Any]]) -> tuple[Parameterisation, dict[str, torch.Tensor], dict[str, bool], Population]:
    """The lora members of the pool shapes: the parameterisation the subspace is learned in, points by
    shape id (delta form unless lora_form is factors), whether each member passed its fidelity check,
    and the population (built in `folder/population` unless config.population names one)."""
    if config.population is None:
        check_grid_resolution(gen, data, rows, "grid", instead=(  # before any member, with this command's own way out
            "build the members on the shapes' points yourself (weightspace population build --fit points) and pass "
            "them with --population"))
        build_population(PopulationConfig(
            checkpoint=config.checkpoint, parameterisation="lora", data=str(data), out=str(folder / "population"),
            options={"rank": config.lora_rank, "targets": config.lora_targets}, steps=config.fit_steps, lr=config.lr,
            draws=config.fit_draws, seed=config.data_seed, batch_members=config.batch_members, executor=config.executor,
            workers=config.pool_workers()), generator=gen)
    pop = Population(config.population or folder / "population")
    if pop.frame.parameterisation.get("name") != "lora":
        raise InputError(f"population {pop.folder}: parameterisation {pop.frame.parameterisation.get('name')!r}; need lora")
    param = pop.frame.build(gen, what=f"population {pop.folder.name}")
    index = {str(r["id"]): i for i, r in enumerate(pop.rows)}
    missing = [str(r["id"]) for r in rows if str(r["id"]) not in index]
    if missing:
        raise InputError(f"population {pop.folder}: no member for shapes {missing[:5]}; build it on the same data")
    ids = [str(r["id"]) for r in rows]
    x = torch.stack([pop.point(index[i]) for i in ids])  # (N, D) as stored
    if config.lora_form == "delta" and getattr(param, "form", "factors") == "factors":
        with torch.no_grad():
            param, x = param.delta_parameterisation(), param.to_delta(x).cpu()  # (N, D_delta), exact
    ok = {i: bool(pop.rows[index[i]].get("metrics", {}).get("fidelity_betti", True)) for i in ids}
    return param, dict(zip(ids, x)), ok, pop


def condition_points(gen: Generator, data: Path, rows: list[dict[str, Any]], *, observations: int) -> dict[str, torch.Tensor]:
    """Each shape's encoded condition (D_c,), from `observations` of its stored surface samples (seeded per shape)."""
    cond_param = make_parameterisation(gen, "condition")
    out = {}
    for r in rows:
        pts, _ = load_points(data, r)
        take = item_rng(0, "observe", r["id"]).choice(len(pts), size=min(observations, len(pts)), replace=False)
        grid = torch.from_numpy(load_grid(data, r))
        fit = fit_member(gen, cond_param, grid, fit="grid", steps=0, lr=1.0, seed=derive_seed(0, "member", str(r["id"])),
                         condition_fit="encode", surface=torch.from_numpy(pts[take]))
        out[str(r["id"])] = fit["point"].cpu()
    return out


def candidates(ids: list[str], K: int, pool: int) -> int:
    """How many of a family's pool (in pool order) a cell of K draws from: min(pool, 2 K), so small-K
    cells vary their members across seeds and run before a large pool has finished building."""
    return min(pool, 2 * K)


def choose_members(ids: list[str], ok: dict[str, bool], K: int, seed: int, family: str) -> list[str]:
    """K of `ids` (a family's candidates) for one cell: a seeded draw among members that passed their
    fidelity check, then (only when too few passed) among the others; in pool order."""
    rng = item_rng(seed, "members", family, K)
    good, bad = [i for i in ids if ok[i]], [i for i in ids if not ok[i]]
    order = [good[j] for j in rng.permutation(len(good))] + [bad[j] for j in rng.permutation(len(bad))]
    chosen = set(order[:K])
    return [i for i in ids if i in chosen]


# --- the study ------------------------------------------------------------------------------------------
def run_subspace(config: SubspaceConfig, *, generator: Generator | None = None) -> Path:
    """Run the subspace study into `config.out`; returns the results folder.

    results.json: `parameterisation`, `member_fidelity` ({mean_iou, betti_match: {rate, ci_low,
    ci_high, n}}), `topology_kept` ({kind: {rate, ci_low, ci_high, n}} pooled over every cell),
    `summary` (pooled per kind: validity, local variation, diversity, novelty, ...), `table`
    (family x K x kind), `by_family` (family x kind), `claim2` (the verdict and the rule behind it),
    `cells` and wall time. samples.csv: every decoded point of every cell.
    """
    config = check_config(config, where=type(config).__name__)  # types and bounds as a config file's, then validate
    config = given_checkpoint(config, generator)
    clock = Clock()
    folder = start_results(config.out, config, settings_may_differ=True)  # each cell checks its own settings
    gen = load_study_generator(config.checkpoint, generator)
    require(gen, EncodesPoints, "the subspace study (the examples' conditions and the condition-noise baseline)")
    settings = {k: getattr(config, k) for k in CELL_SETTINGS}
    data, rows = pool_data(config, gen, folder)
    by_family = {f: [str(r["id"]) for r in rows if r.get("family") == f] for f in config.families}
    pool = config.pool or max(config.Ks)
    short = [(f, K) for f in config.families for K in config.Ks if len(by_family[f]) < candidates(by_family[f], K, pool)]
    if short and config.population is None:  # the study's own pool never grows: such a cell would wait forever
        f, K = short[0]
        raise InputError(f"{data}: the pool this folder was made with holds {len(by_family[f])} {f!r} shapes and a K = {K} "
                         f"cell draws from {candidates(by_family[f], K, pool)}: it was made for other families or a smaller "
                         f"pool (K). Choose a new --out, or rerun with the families and K it was made with")
    cond_param = make_parameterisation(gen, "condition")
    member_fidelity: dict[str, Any]
    if config.parameterisation == "lora":
        param, points, ok, pop = weight_points(config, gen, folder, data, rows)
        member_fidelity = fidelity_of_population(pop, [r["id"] for r in rows])
    else:
        param, points, ok, pop = cond_param, None, {str(r["id"]): True for r in rows}, None
        member_fidelity = {}
    row_of = {str(r["id"]): r for r in rows}
    conds: dict[str, torch.Tensor] = {}
    cells: list[dict[str, Any]] = []
    waiting = []
    for fam in config.families:
        for K in config.Ks:
            n_cand = candidates(by_family[fam], K, pool)
            if len(by_family[fam]) < n_cand:  # a population still being built: this cell waits for its members
                waiting.append({"family": fam, "K": K, "members": len(by_family[fam]), "needs": n_cand})
                continue
            for seed in config.seeds:
                ids = choose_members(by_family[fam][:n_cand], ok, K, seed, fam)
                cell_folder = folder / "cells" / f"{fam}-K{K}-s{seed}"
                res = _finished(cell_folder, settings)
                if res is None:
                    c0 = Clock()
                    todo = [i for i in ids if i not in conds]
                    conds.update(condition_points(gen, data, [row_of[i] for i in todo], observations=config.observations))
                    cond_x = torch.stack([conds[i] for i in ids])  # (K, D_c)
                    x = cond_x if points is None else torch.stack([points[i] for i in ids])  # (K, D)
                    cell = Cell(fam, K, config.k_for(K), seed, ids, [load_grid(data, row_of[i]) for i in ids], param, x,
                                cond_param, cond_x)
                    res = run_cell(gen, cell, cell_folder, samples=config.samples, temperature=config.temperature,
                                   gate_factor=config.gate_factor, volume_threshold=config.volume_threshold,
                                   checkpoint=config.checkpoint, meshes=config.meshes)
                    res["settings"], res["wall_seconds"] = settings, c0()
                    write_results(cell_folder, res)
                cells.append({**res, "folder": str(cell_folder.relative_to(folder))})
    done = [c for c in cells if "refused" not in c]
    if not done:
        why = "; ".join([f"{c['family']} K={c['K']} s{c['seed']}: {c['refused']}" for c in cells]
                        + [f"{w['family']} K={w['K']}: {w['members']} members, needs {w['needs']}" for w in waiting])
        refuse(folder, config.checkpoint, f"no cell ran: {why}"[:800], cells_waiting=waiting,
               examples_check=[c for cell in cells for c in cell["examples_check"]],
               cells=[{k: c[k] for k in ("family", "K", "seed", "refused", "examples_check")} for c in cells])
    if not member_fidelity:  # condition examples: their decode check in every cell
        checks = {c["id"]: c for cell in cells for c in cell["examples_check"]}
        member_fidelity = fidelity_of_checks(list(checks.values()))
    _write_samples(folder, cells)
    pooled = pool_cells(cells, KINDS)
    plot_subspace(folder / "subspace.png", pooled["summary"], title=f"{gen.kind}: {', '.join(config.families)}, "
                  f"K={config.Ks}, {config.parameterisation}, {len(config.seeds)} seed(s), pooled")
    plot_claim2(folder / "claim2.png", pooled["by_family"], title=f"{gen.kind} ({config.parameterisation}): topology kept "
                "per family and kind, Wilson 95%")
    targets = {tuple(c["examples_topology"]["robust"]) for c in done}
    ks = sorted({c["k"] for c in done})
    write_results(folder, {
        "checkpoint": config.checkpoint, "generator": gen.kind, "parameterisation": config.parameterisation,
        "lora_form": config.lora_form if config.parameterisation == "lora" else None,
        "population": None if pop is None else str(pop.folder), "dimension": done[0]["dimension"],
        "families": config.families, "Ks": config.Ks, "seeds": config.seeds, "samples": config.samples,
        "family": ",".join(config.families), "K": max(config.Ks), "k": ks[0] if len(ks) == 1 else ks,
        "K_used": sum(c["K_used"] for c in done),
        "examples_topology": {"robust": list(targets.pop()) if len(targets) == 1 else None},
        "member_fidelity": member_fidelity, **pooled,
        "cells": [{k: c.get(k) for k in ("family", "K", "k", "seed", "folder", "K_used", "refused", "examples_dropped",
                                         "explained_variance_ratio", "wall_seconds")} for c in cells],
        "cells_refused": sum("refused" in c for c in cells), "cells_waiting": waiting, "decodes": sum(c.get("decodes", len(c["examples_check"])) for c in cells),
        # this run's wall time; a resumed run reads its finished cells back, so the cells' own times add up
        # what every piece spent on them
        "wall_seconds": clock(), "cells_seconds": sum(float(c.get("wall_seconds") or 0.0) for c in cells),
    })
    record_config(folder, config)
    return folder


def _finished(cell_folder: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """A finished cell's results (None when it has none); a cell computed with other settings is an error."""
    path = cell_folder / "results.json"
    if not path.is_file():
        return None
    res = read_json(path)
    if "settings" not in res:
        return None  # written before it finished
    diff = [k for k in settings if k not in MEMBER_FIT_SETTINGS and res["settings"].get(k) != settings[k]]
    if diff:
        raise InputError(f"{cell_folder}: a finished cell was computed with different {', '.join(diff)}; "
                         "use a new --out folder or the original settings to resume")
    return res


def _write_samples(folder: Path, cells: list[dict[str, Any]]) -> None:
    import csv

    rows = []
    for c in cells:
        path = folder / c["folder"] / "samples.csv"
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                rows += list(csv.DictReader(f))
    write_csv(folder / "samples.csv", rows)

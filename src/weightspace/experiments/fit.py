"""The fitting study (paper claim 3): adapt to a held-out shape seen only as a few noisy partial point clouds.

The shape is observed as V partial views (each `points_per_view` points, Gaussian noise sigma).
Methods (`fit_methods`): encode the condition; optimise the condition; invert into a k-dimensional
PCA of the conditions of N members of the family (`condition_subspace`); LoRA fine-tuning; full
fine-tuning; invert into a k-dimensional PCA of a LoRA population of N members of the family, with
the Gaussian prior of its members, as weights2weights inverts into its space (`weight_subspace`).
Every optimised method runs up to `steps` Adam steps with early stopping on held-out views of the
same shape. At each step budget the model the method delivers (its best point by validation loss so
far) is decoded under one fixed noise seed and measured: fit (Chamfer, F-score, topology against the
clean shape) and forgetting (held-out shapes of every family decoded again under its weights:
Chamfer change, topology changes; and the drop in family-sample quality where the generator has
families). Each (views, sigma, method) item is written as it finishes, so a rerun resumes. Population
members and items run on a pool of one process per usable core by default (`executor`, `workers`).
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from weightspace.analysis.measure import failed_count, finite_mean, geometry, measure, median_counting_failures
from weightspace.analysis.rates import rate
from weightspace.data.dataset import load_grid
from weightspace.data.observe import observe
from weightspace.decode.mesh import save_mesh
from weightspace.decode.points import decode_conditions
from weightspace.experiments.common import (
    Clock,
    check_choice,
    check_distinct,
    check_executor,
    clean_surface,
    encode_points,
    generator_pose,
    given_checkpoint,
    load_study_generator,
    record_config,
    row_root,
    start_results,
    study_data,
)
from weightspace.experiments.fit_methods import Method, Objective, condition_method, fit_method, subspace_method, weight_method
from weightspace.experiments.fit_populations import family_subspaces
from weightspace.experiments.forgetting import family_quality, forget_figures, forget_set, forget_shapes, forgetting
from weightspace.experiments.plots import plot_fit, plot_fit_curves, plot_fit_forgetting
from weightspace.experiments.subspace_figures import ci_of
from weightspace.generators.protocol import Generator, families_of
from weightspace.generators.registry import generator_loader
from weightspace.runtime.config import check_config
from weightspace.runtime.errors import InputError
from weightspace.runtime.executors import executor_workers, make_executor, worker_cached
from weightspace.runtime.io import atomic_write_text
from weightspace.runtime.progress import track
from weightspace.runtime.results import write_csv, write_results
from weightspace.runtime.seeding import derive_seed, item_rng
from weightspace.space.population import check_grid_resolution

METHODS = ("encode", "optimise", "condition_subspace", "lora", "full", "weight_subspace")
CONDITION_METHODS = ("encode", "optimise", "condition_subspace")  # no shared weight moves
FIT_KEYS = ("chamfer_l1", "fscore", "topology_correct")
FORGET_KEYS = ("forgetting", "forget_shapes_lost", "forget_topology_changed", "family_quality_drop", "forget_fscore_drop")


@dataclass
class FitConfig:
    """One fitting study (the CLI builds one of these)."""

    checkpoint: str = "default"
    out: str = "results/fit"
    family: str = "torus"  # family of the held-out shape and of both subspaces' members
    views: list[int] = field(default_factory=lambda: [2])  # numbers of partial views (full grid: 1, 2, 4)
    sigmas: list[float] = field(default_factory=lambda: [0.01])  # noise, world units (full grid: 0, 0.01, 0.03)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    points_per_view: int = 256
    validation_views: int = 2  # held-out partial views of the same shape, seen only by early stopping
    steps: int = 300  # step budget: the most Adam steps of every optimised method
    budgets: list[int] = field(default_factory=lambda: [0, 10, 25, 50, 100, 200, 300])  # steps where curves are measured
    eval_every: int = 5  # steps between validation evaluations
    patience: int = 10  # evaluations without improvement before stopping
    min_rel: float = 1e-3  # relative improvement of the validation loss that counts
    lr_condition: float = 0.05  # optimise: Adam step as a fraction of the encoded condition's RMS
    lr_subspace: float = 0.05  # both subspaces: Adam step on coordinates in units of sigma
    lr_lora: float = 3e-3
    lr_full: float = 1e-4
    free_weight: float = 0.5  # weight of the free-space term (|f(q)| ~ distance from q to the observed points)
    prior: float = 1e-2  # Gaussian prior on subspace coordinates (as in weightspace.inversion)
    subspace_examples: int = 32  # N members of the family in each subspace's population (condition and LoRA)
    subspace_k: int = 8  # dimension k of both subspaces
    population_steps: int | None = None  # LoRA members' Adam steps (None: the generator's measured fit_defaults)
    population_options: dict[str, Any] = field(default_factory=dict)  # LoRA members' options ({}: rank 4, alpha 8, every layer)
    # where population members and the (views, sigma, method) items run: inprocess | process | ray (`runtime.executors`)
    executor: str = "process"
    workers: int | None = None  # workers of the process or ray executor (None: every usable core)
    # LoRA members fitted together in one pass (None: the build's choice, `population.auto_batch_members`:
    # 8 on latent diffusion, the same members to float rounding at 1.8x fewer CPU seconds; 1 elsewhere)
    batch_members: int | None = None
    forget_shapes: int = 10  # held-out shapes, one per family (a held-out shape of the target's family first)
    family_samples: int = 1  # samples per family for the family-sample quality (generators with families)
    lora_rank: int = 4  # rank of the LoRA method and of the population's members
    lora_targets: str = "all"
    data: str | None = None
    data_seed: int = 1
    seed: int = 0
    meshes: bool = True

    @classmethod
    def small(cls, checkpoint: str = "default", out: str = "results/demo/fit") -> "FitConfig":
        """The demo-sized run: 1 view at sigma 0.01, every method, 20 steps, populations of 4."""
        return cls(checkpoint=checkpoint, out=out, views=[1], sigmas=[0.01], steps=20, budgets=[0, 10, 20], patience=2,
                   subspace_examples=4, subspace_k=2, forget_shapes=3, executor="inprocess", workers=1, batch_members=1)

    def validate(self) -> None:
        for m in self.methods:
            check_choice("methods", m, METHODS)
        if not self.methods or not self.views or not self.sigmas or not self.budgets:
            raise InputError("methods, views, sigmas and budgets must each name at least one value")
        if any(v < 1 for v in self.views) or any(s < 0 for s in self.sigmas):
            raise InputError(f"views must be >= 1 and sigmas >= 0, got {self.views} and {self.sigmas}")
        check_distinct("views (--views)", self.views)
        check_distinct("sigmas (--sigmas)", [f"{s:g}" for s in self.sigmas])  # as an item's key writes it
        check_distinct("methods (--methods)", self.methods)
        if self.points_per_view < 1 or self.validation_views < 1 or self.steps < 0 or self.forget_shapes < 0:
            raise InputError("points_per_view and validation_views must be >= 1, steps and forget_shapes >= 0")
        step_sizes = {"lr_condition": self.lr_condition, "lr_subspace": self.lr_subspace, "lr_lora": self.lr_lora,
                       "lr_full": self.lr_full}
        bad = next((k for k, v in step_sizes.items() if not v > 0), None)
        if bad is not None:  # Adam refuses one only when the first item starts, after the populations are built
            raise InputError(f"{bad} (an Adam step size) must be > 0, got {step_sizes[bad]}")
        if self.free_weight < 0 or self.prior < 0 or self.min_rel < 0:
            raise InputError(f"free_weight, prior and min_rel must be >= 0, got {self.free_weight}, {self.prior} and {self.min_rel}")
        if self.eval_every < 1 or self.patience < 1:
            raise InputError(f"eval_every and patience must be >= 1, got {self.eval_every} and {self.patience}")
        if any(b < 0 or b % self.eval_every for b in self.budgets):
            raise InputError(f"budgets must be multiples of eval_every = {self.eval_every} and >= 0, got {self.budgets}")
        check_executor(self.executor, self.workers)
        if self.batch_members is not None and self.batch_members < 1:
            raise InputError(f"batch_members must be >= 1 (or None: chosen per generator), got {self.batch_members}")
        if any(m.endswith("subspace") for m in self.methods) and not 1 <= self.subspace_k < self.subspace_examples:
            raise InputError(f"subspace_k (--k) must satisfy 1 <= k < subspace_examples (--members) = {self.subspace_examples}, "
                             f"got {self.subspace_k}")

    def pool_workers(self) -> int:
        """Workers of the executor (`runtime.executors.executor_workers`)."""
        return executor_workers(self.executor, self.workers)

    def step_budgets(self) -> list[int]:
        """The budgets measured: those up to `steps`, and `steps` itself (the curves end there)."""
        used = {b for b in self.budgets if b <= self.steps} | {self.steps}
        return sorted(used)

    def fingerprint(self) -> str:
        """Digest of every setting that changes an item's result (a resumed item must match it)."""
        skip = {"out", "views", "sigmas", "methods", "meshes", "executor", "workers", "batch_members"}
        body = {k: v for k, v in asdict(self).items() if k not in skip}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _views(t_pts: np.ndarray, t_nrm: np.ndarray, *, count: int, n: int, sigma: float, seed: int, tag: str, V: int) -> np.ndarray:
    """`count` seeded partial views of the target's surface, concatenated: (count * n, 3)."""
    return np.concatenate([observe(t_pts, t_nrm, "partial", n=n, sigma=sigma, seed=derive_seed(seed, tag, V, sigma, v))
                           for v in range(count)])


class Measure:
    """Decode a method's point and measure fit against the clean target and forgetting on the held-out set."""

    def __init__(self, gen: Generator, cfg: FitConfig, *, t_ref: np.ndarray, t_robust, t_betti, f_conds, f_refs, dseed: int,
                 base: tuple[dict[str, Any], dict[str, Any] | None] | None = None):
        self.gen, self.cfg, self.t_ref, self.t_robust, self.t_betti = gen, cfg, t_ref, t_robust, t_betti
        self.f_conds, self.f_refs, self.dseed = f_conds, f_refs, dseed
        # the base model's forgetting-set figures and family samples (`base`: measured already, in the driver)
        self.before, self.family_before = base if base is not None else (
            forget_figures(gen, f_conds, f_refs, None, dseed, cfg.seed), family_quality(gen, None, per_family=cfg.family_samples,
                                                                                         seed=cfg.seed))

    def state(self) -> dict[str, Any]:
        """Everything but the generator and config, for `Measure(gen, cfg, **state)` in a worker (no decode there)."""
        return {"t_ref": self.t_ref, "t_robust": self.t_robust, "t_betti": self.t_betti, "f_conds": self.f_conds,
                "f_refs": self.f_refs, "dseed": self.dseed, "base": (self.before, self.family_before)}

    def __call__(self, method: Method, x: torch.Tensor, *, forget: bool) -> tuple[dict[str, Any], np.ndarray]:
        """Figures of the model `x` stands for, and its grid (R, R, R). forget=False for a point that moves
        no shared weight: its forgetting figures are the base's (zero) without decoding the held-out set."""
        with torch.no_grad():
            cond, params = method.model(x)
            params = None if params is None else {k: v.detach() for k, v in params.items()}
            grid = decode_conditions(self.gen, cond.detach(), self.dseed, params=params)[0]
        s = measure(grid, seed=self.cfg.seed)
        geo = geometry(s.points, self.t_ref)
        row = {"chamfer_l1": geo["chamfer_l1"], "fscore": geo["fscore"], "topology_correct": s.robust == self.t_robust,
               "exact_topology_correct": s.betti == self.t_betti, "robust": list(s.robust), "valid": s.valid,
               "forget_measured": forget or params is not None}
        if row["forget_measured"]:
            after = forget_figures(self.gen, self.f_conds, self.f_refs, params, self.dseed, self.cfg.seed)
            fam = family_quality(self.gen, params, per_family=self.cfg.family_samples, seed=self.cfg.seed)
            row.update(forget_chamfer_after=after["chamfer"], **forgetting(self.before, after))
        else:
            fam = self.family_before
            row.update(forget_chamfer_after=self.before["chamfer"], forgetting=0.0, forget_shapes_lost=0, forget_fscore_drop=0.0,
                       forget_topology_changed=0, forget_max_grid_change=0.0, forget_mean_grid_change=0.0)
        row["forget_chamfer_before"] = self.before["chamfer"]
        row["family_quality_drop"] = (self.family_before["rate"] - fam["rate"]) if fam is not None else float("nan")
        return row, grid


def _build_method(gen: Generator, name: str, cfg: FitConfig, c_enc: torch.Tensor, subs: dict[str, Any], seed: int,
                  fit_obj: Objective) -> Method:
    if name in ("encode", "optimise"):
        return condition_method(gen, name, c_enc, lr_fraction=cfg.lr_condition)
    if name == "lora":
        return weight_method(gen, name, c_enc, parameterisation="lora", lr=cfg.lr_lora, seed=seed, rank=cfg.lora_rank,
                             targets=cfg.lora_targets)
    if name == "full":
        return weight_method(gen, name, c_enc, parameterisation="layers", lr=cfg.lr_full, seed=seed, targets="all")
    # both subspaces start from the best of their members' coordinates and the encoding's projection
    # (condition) or the members' mean (weights), by the fit objective
    sub, coords = subs["condition" if name == "condition_subspace" else "lora"]
    first = sub.project(c_enc.reshape(1, -1).cpu()) if name == "condition_subspace" else torch.zeros(1, sub.k)
    return subspace_method(gen, name, sub, lr=cfg.lr_subspace, prior=cfg.prior, starts=torch.cat([first, coords]), objective=fit_obj)


def _run_item(gen: Generator, name: str, cfg: FitConfig, meas: Measure, *, obs: np.ndarray, val: np.ndarray,
              c_enc: torch.Tensor, subs: dict[str, Any], dseed: int) -> dict[str, Any]:
    """Fit one observation by one method: its curve (one row per budget) and its early-stopped row."""
    clock = Clock()
    fit_obj = Objective(gen, obs, free_weight=cfg.free_weight, seed=dseed)
    method = _build_method(gen, name, cfg, c_enc, subs, dseed, fit_obj)
    val_obj = Objective(gen, val, free_weight=cfg.free_weight, seed=derive_seed(dseed, "validation") % 2**31)
    seen: dict[int, dict[str, Any]] = {}  # best step -> figures (a budget whose best did not move reuses them)
    seen_grid: dict[int, np.ndarray] = {}  # best step -> its decoded grid (R, R, R)
    curve: list[dict[str, Any]] = []

    def on_budget(budget: int, best_step: int, best: torch.Tensor) -> None:
        if best_step not in seen:
            seen[best_step], seen_grid[best_step] = meas(method, best, forget=False)
        curve.append({"step": budget, "best_step": best_step, **seen[best_step]})

    run = fit_method(method, fit_obj, val_obj, max_steps=cfg.steps, eval_every=cfg.eval_every, patience=cfg.patience,
                     min_rel=cfg.min_rel, budgets=cfg.step_budgets(), on_budget=on_budget)
    fit_seconds = clock()
    # the last budget measured the delivered model (forgetting too when it moves weights; a condition
    # method keeps the base's figures by construction: the held-out set decodes under the base weights)
    row, grid = dict(seen[run.best_step]), seen_grid[run.best_step]
    row.update(method=name, trainable=method.trainable, best_step=run.best_step, stopped_at=run.stopped_at,
               loss_start=run.losses[0] if run.losses else run.validation[0][1],
               loss_end=run.losses[-1] if run.losses else run.validation[0][1],
               validation_best=min(v for _, v in run.validation), fit_seconds=fit_seconds)
    return {"row": row, "curve": curve, "validation": run.validation, "losses": run.losses, "grid": grid}


def empty_fits(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What a mean of `chamfer_l1` leaves out: of `n` fits, the `empty` ones (a decode with no surface: Chamfer-L1
    inf), and `chamfer_l1_median` with each empty fit counted as infinite (inf, null in results.json, when half
    or more are empty). The study's ranking reads the median, so a method cannot look better by failing."""
    cd = [r["chamfer_l1"] for r in rows]
    return {"n": len(cd), "empty": failed_count(cd), "chamfer_l1_median": median_counting_failures(cd)}


def _aggregate(table: list[dict[str, Any]], curves: list[dict[str, Any]], methods: list[str], budgets: list[int]) -> dict[str, Any]:
    """results.json `methods`: per method, fit and forgetting curves over budgets (means over observations,
    Chamfer-L1 over those that decoded a surface, with the count of empty fits beside it) and its early-stopped
    figures with the topology rate's Wilson interval."""
    out: dict[str, Any] = {}
    for m in methods:
        rows = [r for r in table if r["method"] == m]
        at = {b: [c for c in curves if c["method"] == m and c["step"] == b] for b in budgets}
        best_budget = next((b for b in budgets if b >= max(r["best_step"] for r in rows)), budgets[-1])

        def series(key: str, at: dict[int, list[dict[str, Any]]] = at) -> list[float]:
            return [finite_mean([c[key] for c in at[b]]) for b in budgets]

        out[m] = {"fit": {"steps": budgets, **{k: series(k) for k in FIT_KEYS},
                          "empty": [empty_fits(at[b])["empty"] for b in budgets]},
                  "forgetting": {"steps": budgets, "chamfer_change": series("forgetting"),
                                 "topology_changed": series("forget_topology_changed"),
                                 "family_quality_drop": series("family_quality_drop"), "fscore_drop": series("forget_fscore_drop")},
                  "best_budget": best_budget, "best_step": [r["best_step"] for r in rows],
                  "best": {**{k: finite_mean([r.get(k) for r in rows]) for k in FIT_KEYS + FORGET_KEYS},  # a key older rows lack: NaN
                           "topology_correct_rate": rate(bool(r["topology_correct"]) for r in rows), **empty_fits(rows)},
                  "trainable": rows[0]["trainable"] if rows else 0}
    return out


SUBSPACE_OF = {"condition_subspace": "condition", "weight_subspace": "lora"}  # method -> the population it inverts into


@dataclass
class FitTask:
    """One (views, sigma, method) item: its observation (N, 3), validation views (N_val, 3), the encoding
    (1, *cs), the subspace it inverts into (if any) and the encoding's seconds (part of its cost)."""

    key: str
    name: str
    obs: np.ndarray
    val: np.ndarray
    c_enc: torch.Tensor
    subs: dict[str, Any]
    encode_seconds: float
    shared: Any = None  # in a worker: (generator loader, config, Measure.state()) through Executor.share


def run_fit_task(task: FitTask) -> tuple[FitTask, dict[str, Any]]:
    """`_run_item` in an executor worker: the generator is loaded once per worker (one thread: the workers
    share the cores), the base figures come from the driver."""
    loader, cfg, state = task.shared()

    def build() -> tuple[Generator, Measure]:
        torch.set_num_threads(1)
        gen = loader()
        return gen, Measure(gen, cfg, **state)

    gen, meas = worker_cached(repr(("fit", loader, cfg.fingerprint())), build)
    res = _run_item(gen, task.name, cfg, meas, obs=task.obs, val=task.val, c_enc=task.c_enc, subs=task.subs, dseed=state["dseed"])
    res["row"]["fit_seconds"] += task.encode_seconds
    task.shared = None
    return task, res


def _run_items(gen: Generator, cfg: FitConfig, meas: Measure, todo: list[FitTask], *, dseed: int,
               loader: Any) -> Iterator[tuple[FitTask, dict[str, Any]]]:
    """Run the missing items, yielding each as it finishes: here, or with several of them on the
    executor's workers (`cfg.executor`, `cfg.pool_workers()`; each loads the generator once)."""
    workers = min(cfg.pool_workers(), len(todo))
    if cfg.executor == "inprocess" or workers <= 1:
        for task in todo:
            res = _run_item(gen, task.name, cfg, meas, obs=task.obs, val=task.val, c_enc=task.c_enc, subs=task.subs, dseed=dseed)
            res["row"]["fit_seconds"] += task.encode_seconds
            yield task, res
        return
    with make_executor(cfg.executor, workers=workers) as executor:
        shared = executor.share(_Shared(loader, cfg, meas.state()))
        for task in todo:
            task.shared = shared
        yield from track(executor.map(run_fit_task, todo, ordered=False), "fit items", total=len(todo), status=executor.status)


@dataclass
class _Shared:
    """What every worker needs once: the generator's loader, the config and the base figures."""

    loader: Any
    cfg: FitConfig
    state: dict[str, Any]

    def __call__(self) -> tuple[Any, FitConfig, dict[str, Any]]:
        return self.loader, self.cfg, self.state


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished workers (population and item pools)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def run_fit(config: FitConfig, *, generator: Generator | None = None) -> Path:
    """Run the fitting study into `config.out` (resuming finished items); returns the results folder.

    results.json: `parameterisation` (of the weight subspace), `member_fidelity` {mean_iou, betti_match:
    {rate, ci_low, ci_high, n}} of the LoRA population, `topology_kept` {method: {rate, ci_low, ci_high, n}}
    (items whose early-stopped fit has the target's robust topology), `methods` (per method: `fit` and `forgetting` curves over step budgets,
    its early-stopped figures), `table` (one early-stopped row per views x sigma x method; also table.csv,
    with every budget in curves.csv), `by_method` means (`chamfer_l1` over the fits that decoded a surface; `n`,
    `empty` and `chamfer_l1_median` say what it leaves out: `empty_fits`), the held-out shape and the wall time.
    """
    config = check_config(config, where=type(config).__name__)  # types and bounds as a config file's, then validate
    config = given_checkpoint(config, generator)
    clock, cpu0 = Clock(), _cpu_seconds()
    folder = start_results(config.out, config, settings_may_differ=True)  # items resume by their own fingerprint
    gen = load_study_generator(config.checkpoint, generator)
    seed, N = config.seed, config.subspace_examples
    dseed = derive_seed(seed, "decode") % 2**31

    # --- shapes: N members of the family, the target, a held-out shape of the family, one of every other family ---
    pose = generator_pose(gen)
    root, fam_rows = study_data(folder / "data", data=config.data, families=[config.family], count=N + 2,
                                seed=config.data_seed, resolution=gen.resolution, pose=pose, population_option=None)
    if len(fam_rows) < N + 1:
        # without --data the shapes are made once per folder, N + 2 of them, by the folder's first run
        where = (f"in {config.data}" if config.data is not None else f"in {folder / 'data' / config.family}, made by an earlier "
                 "run of this folder with fewer --members; choose a new --out")
        raise InputError(f"family {config.family!r}: need {N + 1} shapes (N = {N} members and the target), found "
                         f"{len(fam_rows)} {where}")
    members, target = fam_rows[:N], fam_rows[N]
    forget_rows = fam_rows[N + 1 : N + 2][: config.forget_shapes]
    forget_rows += forget_shapes(folder / "data", data=config.data, family=config.family, known=families_of(gen),
                                 count=config.forget_shapes - len(forget_rows), seed=config.data_seed,
                                 resolution=gen.resolution, pose=pose)

    t_pts, t_nrm = clean_surface(root, target)
    t_clean = measure(load_grid(row_root(root, target), target), seed=seed)
    t_ref = t_pts[item_rng(seed, "reference").choice(len(t_pts), size=min(2048, len(t_pts)), replace=False)]

    kinds = [k for k, m in (("condition", "condition_subspace"), ("lora", "weight_subspace")) if m in config.methods]
    if kinds:  # only the subspaces' populations fit grids: refuse other grids before anything is fitted
        check_grid_resolution(gen, root, members, "grid", instead=(
            "leave out the subspace methods, whose populations fit the grids (--methods without condition_subspace and "
            "weight_subspace, e.g. --methods encode,optimise,lora,full)"))
    c0 = Clock()
    subs, fidelity = family_subspaces(gen, config, folder, root, members, kinds) if kinds else ({}, {})
    population_seconds = c0()

    f_conds, f_refs = forget_set(gen, root, forget_rows, seed=seed)
    meas = Measure(gen, config, t_ref=t_ref, t_robust=t_clean.robust, t_betti=t_clean.betti, f_conds=f_conds, f_refs=f_refs,
                   dseed=dseed)

    # --- items: one per (views, sigma, method); the missing ones run (on the executor's workers), each written as it finishes ---
    fingerprint = config.fingerprint()
    items: dict[str, dict[str, Any]] = {}
    observed: dict[str, int] = {}
    todo: list[FitTask] = []
    for V in config.views:
        for sigma in config.sigmas:
            obs = _views(t_pts, t_nrm, count=V, n=config.points_per_view, sigma=sigma, seed=seed, tag="view", V=V)  # (V n, 3)
            val = _views(t_pts, t_nrm, count=config.validation_views, n=config.points_per_view, sigma=sigma, seed=seed,
                         tag="validation", V=V)  # (V_val n, 3)
            c_enc = None
            for name in config.methods:
                key = f"v{V}-s{sigma:g}-{name}"
                observed[key] = len(obs)
                path = folder / "items" / f"{key}.json"
                item = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
                if item is not None and item.get("fingerprint") == fingerprint:
                    items[key] = item
                    continue
                if c_enc is None:  # encoded once per observation; its time is part of every method's cost
                    c1 = Clock()
                    c_enc = encode_points(gen, [obs], seed=dseed)  # (1, *cs)
                    encode_seconds = c1()
                sub = {k: v for k, v in subs.items() if k == SUBSPACE_OF.get(name)}  # only the subspace it inverts into
                todo.append(FitTask(key, name, obs, val, c_enc, sub, encode_seconds))
    for task, res in _run_items(gen, config, meas, todo, dseed=dseed, loader=generator_loader(generator, config.checkpoint)):
        if config.meshes:
            save_mesh(res["grid"], folder / "meshes" / f"{task.key}.ply")
        else:  # an earlier run's mesh of this item shows another fit than the one its row now describes
            (folder / "meshes" / f"{task.key}.ply").unlink(missing_ok=True)
        items[task.key] = {"fingerprint": fingerprint, "row": res["row"], "curve": res["curve"], "validation": res["validation"],
                           "losses": res["losses"]}
        atomic_write_text(folder / "items" / f"{task.key}.json", json.dumps(items[task.key]))  # NaN kept (no family samples, an empty decode)
    table: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    for V in config.views:
        for sigma in config.sigmas:
            for name in config.methods:
                key = f"v{V}-s{sigma:g}-{name}"
                item = items[key]
                head = {"views": V, "sigma": sigma, "method": name, "observed_points": observed[key]}
                table.append({**head, **item["row"]})
                curves += [{**head, **c} for c in item["curve"]]

    write_csv(folder / "table.csv", table)
    write_csv(folder / "curves.csv", curves)
    methods = _aggregate(table, curves, config.methods, config.step_budgets())
    by_method = {m: {k: finite_mean([r.get(k) for r in table if r["method"] == m])
                     for k in ("chamfer_l1", "fscore", "topology_correct", "forgetting", "forget_shapes_lost", "forget_fscore_drop", "forget_topology_changed",
                               "forget_max_grid_change", "family_quality_drop", "best_step", "fit_seconds")}
                 | empty_fits([r for r in table if r["method"] == m]) for m in config.methods}
    plot_fit(folder / "fit.png", table, views=config.views, sigmas=config.sigmas, methods=config.methods)
    plot_fit_curves(folder / "fit_curves.png", methods, title=f"{config.checkpoint}: {target['id']} from partial views")
    plot_fit_forgetting(folder / "fit_forgetting.png", methods, title=f"{config.checkpoint}: fit versus forgetting")
    weight_fid = fidelity.get("lora")
    write_results(folder, {
        "checkpoint": config.checkpoint, "generator": gen.kind,
        "parameterisation": "lora" if "lora" in subs else "condition",
        "member_fidelity": weight_fid, "condition_member_fidelity": fidelity.get("condition"),
        "subspaces": {k: {"k": s.k, "n": s.n, "explained_variance_ratio": s.explained_variance_ratio.tolist()} for k, (s, _) in subs.items()},
        "target": {"id": target["id"], "family": config.family, "robust": list(t_clean.robust)},
        "forget_set": [r["id"] for r in forget_rows],
        "forget_before": {"chamfer": meas.before["chamfer"], "fscore": meas.before["fscore"], "valid": meas.before["kept"],
                          "family_quality": meas.family_before["rate"] if meas.family_before else None},
        "topology_kept": {m: ci_of(sum(bool(r["topology_correct"]) for r in table if r["method"] == m),
                                   sum(r["method"] == m for r in table)) for m in config.methods},
        "topology_kept_means": "per method, the (views, sigma) items whose early-stopped fit has the clean target's robust Betti numbers",
        "methods": methods, "table": table, "by_method": by_method, "population_seconds": population_seconds,
        "wall_seconds": clock(), "cpu_seconds": _cpu_seconds() - cpu0,  # wall time inflates on a shared machine
    })
    record_config(folder, config)
    return folder

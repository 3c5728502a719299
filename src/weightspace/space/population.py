"""Building populations: one fitted point per shape (or per observation set), resumable and parallel.

For `condition` a member is the encoded condition (`gen.condition(points=...)`) or a condition
optimised through the generator's loss; for `lora` / `layers` it is a fine-tune from the base
through `gen.training_loss` (target grid) or `gen.observation_loss` (observed surface points),
under the population's anchor condition. Members run through an `Executor`; the driver writes
each member's shard and then its manifest row, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np
import torch

from weightspace.data.dataset import check_grid_sizes, check_shape_folder, load_grid, manifest_hash
from weightspace.data.dataset import read_shapes as dataset_shapes
from weightspace.data.observe import KINDS as OBSERVATION_KINDS
from weightspace.data.observe import observe
from weightspace.generators.protocol import BatchedTrainingLoss, Generator, require
from weightspace.runtime.allocator import retain_freed_memory
from weightspace.runtime.config import check_config
from weightspace.runtime.errors import InputError, Interrupted
from weightspace.runtime.executors import Executor, TaskFailure, in_calling_process, make_executor
from weightspace.runtime.folders import check_out_folder
from weightspace.runtime.io import atomic_write_text, read_json, read_jsonl, remove_stale_temps, safe_child
from weightspace.runtime.progress import log_line, track
from weightspace.runtime.seeding import decode_seed, derive_seed
from weightspace.space.frame import Frame
from weightspace.space.parameterisation import Parameterisation, base_hash
from weightspace.space.parameterisations import PARAMETERISATIONS, make_parameterisation
from weightspace.space.store import Population, read_manifest, save_population_frame, save_tensors, shard_name, write_manifest

FitTarget = Literal["grid", "points"]
FIT_TARGETS = ("grid", "points")
AnchorKind = Literal["auto", "zeros", "mean"]
ANCHORS = ("auto", "zeros", "mean")
MIN_FIDELITY_IOU = 0.5  # `population check` flags a member whose decode IoU to its target is below this
ConditionFit = Literal["auto", "encode", "optimise"]
CONDITION_FITS = ("auto", "encode", "optimise")
BATCHED_PURPOSE = "fitting members in batches (batch_members > 1)"


@dataclass
class PopulationConfig:
    """How to build a population (the CLI builds one of these)."""

    checkpoint: str  # generator name (`default`, `default-field`) or checkpoint folder
    parameterisation: str  # condition | lora | layers
    data: str  # data folder with manifest.jsonl (see weightspace.data)
    out: str  # population folder
    options: dict[str, Any] = field(default_factory=dict)  # parameterisation options (rank, alpha, targets, form)
    members: int | None = None  # first N shapes of the data (all when None)
    split: str | None = None  # only shapes of this split
    fit: str = "grid"  # grid: generator training loss on the SDF grid; points: observation loss on surface points
    observations: int = 512  # surface points per member when fit == points
    observation: str = "clean"  # clean | noisy | partial | subsampled (weightspace.data.observe)
    noise: float = 0.0  # Gaussian noise (world units) on observed points
    # Optimiser steps per member (lora, layers, optimised condition), Adam's learning rate, and loss
    # draws averaged per step (time steps and noise, or point samples), each with its own seed.
    # None: the generator's `fit_defaults`, chosen by measuring member fidelity (see Generator).
    steps: int | None = None
    lr: float | None = None
    draws: int | None = None
    seed: int = 0
    # The condition lora/layers members are fitted and decoded under: zeros | mean (of the shapes'
    # encodings) | auto (the generator's `fit_anchor`: mean for latent diffusion, zeros for the field)
    anchor: str = "auto"
    condition_fit: str = "auto"  # condition members: encode | optimise | auto (encode if the generator can)
    executor: str = "inprocess"
    workers: int = 1
    # Members fitted together in one forward/backward pass (`fit_members`; lora/layers members fitted
    # to grids by a generator with BatchedTrainingLoss). The same members as 1 to float rounding, so not
    # a fit setting: a build may resume with another value. None: `auto_batch_members`.
    batch_members: int | None = 1

    def validate(self) -> None:
        checks = {"parameterisation": (self.parameterisation, tuple(PARAMETERISATIONS)), "fit": (self.fit, FIT_TARGETS),
                  "anchor": (self.anchor, ANCHORS), "observation": (self.observation, tuple(OBSERVATION_KINDS)),
                  "condition_fit": (self.condition_fit, CONDITION_FITS)}
        for name, (value, valid) in checks.items():
            if value not in valid:
                raise InputError(f"{name} must be one of {', '.join(valid)}, got {value!r}")
        if (self.steps is not None and self.steps < 0) or (self.lr is not None and not self.lr > 0) \
                or (self.draws is not None and self.draws < 1) or self.observations < 1 or self.noise < 0:
            raise InputError(f"steps must be >= 0, lr > 0, draws >= 1, observations >= 1 and noise >= 0; got steps "
                             f"{self.steps}, lr {self.lr}, draws {self.draws}, observations {self.observations}, noise {self.noise}")
        if self.fit == "grid" and (self.observation != "clean" or self.noise > 0):
            # recorded in the fit settings, a setting that does nothing would refuse a later resume without it
            raise InputError(f"observation {self.observation!r} and noise {self.noise} apply to fit points only "
                             f"(members fitted to grids see no observation); drop them or use fit points")
        if self.fit == "points" and self.observation == "noisy" and not self.noise > 0:
            raise InputError(f"observation noisy needs noise > 0 (world units, e.g. 0.01), got {self.noise}")
        if self.observation == "clean" and self.noise > 0:  # as `data observe` refuses it: noisy points called clean
            raise InputError(f"a clean observation (--observation clean) has no noise, got --noise {self.noise:g}; use "
                             "--observation noisy for noise on the whole cloud, or --noise 0")
        if self.members is not None and self.members < 1:
            raise InputError(f"members must be >= 1, got {self.members}")
        if self.batch_members is not None and self.batch_members < 1:
            raise InputError(f"batch_members must be >= 1 (or None: chosen per generator), got {self.batch_members}")
        if self.batch_members is not None and self.batch_members > 1 and (self.parameterisation == "condition" or self.fit != "grid"):
            raise InputError(f"batch_members > 1 fits lora or layers members to grids; got parameterisation "
                             f"{self.parameterisation!r} with fit {self.fit!r} (use batch_members 1)")

    def resolved(self, gen: Generator) -> "PopulationConfig":
        """This config with `auto` and None settings replaced by the generator's own."""
        defaults = gen.fit_defaults[self.parameterisation]
        return dataclasses.replace(
            self, anchor=gen.fit_anchor if self.anchor == "auto" else self.anchor,
            steps=defaults["steps"] if self.steps is None else self.steps,
            lr=defaults["lr"] if self.lr is None else self.lr,
            draws=defaults["draws"] if self.draws is None else self.draws,
            batch_members=auto_batch_members(gen, self) if self.batch_members is None else self.batch_members)

    def fit_settings(self) -> dict[str, Any]:
        """Everything that changes a member's result (a resumed build must match it)."""
        keys = ("parameterisation", "options", "fit", "observations", "observation", "noise", "steps", "lr", "seed", "anchor", "condition_fit")
        settings = {k: getattr(self, k) for k in keys}
        if self.draws != 1:  # absent at 1, so populations built before the field resume unchanged
            settings["draws"] = self.draws
        return settings


def factored_fits(gen: Generator, config: PopulationConfig) -> bool:
    """Whether this build's members are fitted through `fit_members` even one at a time: LoRA members fitted
    to grids by a generator that keeps LoRA factored (`accepts_low_rank`). A member alone is then 1.46x
    faster than through merged weights (`default`, 20 steps: 1.084 against 0.740 members per CPU second,
    `benchmarks/batched_members.py`, docs/scaling.md) and the same member to about 1e-4."""
    return config.parameterisation == "lora" and config.fit == "grid" and isinstance(gen, BatchedTrainingLoss) \
        and gen.accepts_low_rank


BATCH_MEMBERS = 8  # members per pass where batching pays: 1.7-2.2x the merged one-at-a-time rate on `default` (docs/scaling.md)


def auto_batch_members(gen: Generator, config: PopulationConfig) -> int:
    """Members per pass when a build leaves it open: BATCH_MEMBERS for LoRA members fitted to grids by a
    generator whose batched loss keeps LoRA factored (`accepts_low_rank`: latent diffusion), else 1
    (the field's exact batched path runs at 1.0x, so batching would only coarsen resuming). With
    several workers a build takes fewer per pass when the members left would not fill every worker."""
    return BATCH_MEMBERS if factored_fits(gen, config) else 1


# --- data ----------------------------------------------------------------------------------------
def read_shapes(data: str | Path, *, split: str | None = None, members: int | None = None) -> list[dict[str, Any]]:
    """The shapes a population fits (`data.dataset.read_shapes`), the first `members` of them."""
    rows = dataset_shapes(data, split=split)
    return rows[:members] if members else rows




def check_grid_resolution(gen: Generator, data: Path, rows: list[dict[str, Any]], fit: str, *,
                          instead: str = "fit its surface points (--fit points)") -> None:
    """Refuse, naming the data folder and the resolution needed, a grid fit of a generator that takes grids at
    its native resolution only (`native_grids_only`) to a folder of other grids: its first member failed with
    the generator's own message, which names neither the folder nor the fix. `instead`: the other way out,
    in the options of the command that asks (`population build`'s by default)."""
    if fit != "grid" or not gen.native_grids_only or not rows:
        return
    sizes = sorted({int(r["resolution"]) for r in rows if "resolution" in r}) or [int(load_grid(data, rows[0]).shape[-1])]
    R = gen.resolution
    if sizes != [R]:
        raise InputError(f"{data}: grids are {'/'.join(map(str, sizes))}^3, but this {gen.kind} generator fits members to "
                         f"{R}^3 grids; make or import the folder with --resolution {R}, or {instead}")


def warn_empty_targets(rows: list[dict[str, Any]], fit: str, log: Callable[[str], None]) -> None:
    """Warn of grid fits to shapes whose grid has no inside sample (`data import` lists them under
    `empty_at_resolution`: solids thinner than a voxel): a member fitted to an empty grid reproduces it by
    decoding nothing, and its fidelity check passes (IoU 1.0, Betti (0, 0, 0)) without saying so."""
    empty = [str(r["id"]) for r in rows if isinstance(r.get("betti_measured"), list) and r["betti_measured"][:1] == [0]]
    if fit == "grid" and empty:
        log(f"warning: {len(empty)} shape(s) have an empty grid at this resolution ({', '.join(empty[:5])}"
            f"{', ...' if len(empty) > 5 else ''}): their members fit nothing and pass the fidelity check by decoding "
            "nothing; import them at a higher --resolution, or fit their surface points (--fit points)")


def load_target(data: Path, row: dict[str, Any], *, fit: str, observations: int, noise: float, seed: int,
                observation: str = "clean") -> torch.Tensor:
    """The member's target: its grid (R, R, R), or one seeded observation (n, 3) of its surface points
    (`weightspace.data.observe`: clean | noisy | partial | subsampled, noise sigma in world units)."""
    if fit == "grid":
        return torch.from_numpy(load_grid(data, row))  # (R, R, R)
    if "points" not in row:
        raise InputError(f"{data / 'manifest.jsonl'}: shape {row['id']!r} has no 'points' (needed for fit=points)")
    path = safe_child(data, row["points"])
    try:
        with np.load(path, allow_pickle=False) as f:
            pts = f["points"].astype(np.float32)  # (P, 3)
            normals = f["normals"].astype(np.float32) if "normals" in f.files else None
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: not a points file with a 'points' array ({type(e).__name__})") from None
    if pts.ndim != 2 or pts.shape[1:] != (3,) or not np.isfinite(pts).all():
        raise InputError(f"{path}: points must be finite (P, 3), got shape {pts.shape}")
    obs = observe(pts, normals, observation, n=observations, sigma=noise, seed=derive_seed(seed, "observe", row["id"]))
    return torch.from_numpy(obs)  # (n, 3)


# --- fitting one member --------------------------------------------------------------------------
def draw_seeds(seed: int, draws: int) -> list[int]:
    """The loss draws of one step: `seed` itself for one draw, else derive_seed(seed, "draw", j) for j < draws."""
    return [seed] if draws == 1 else [derive_seed(seed, "draw", j) for j in range(draws)]


def member_loss(gen: Generator, param: Parameterisation, point: torch.Tensor, target: torch.Tensor, *,
                fit: str, seed: int, draws: int = 1) -> torch.Tensor:
    """The generator's own loss of one point against one target, averaged over `draws` seeded draws
    (one draw uses `seed` itself; more use derive_seed(seed, "draw", j))."""
    seeds = draw_seeds(seed, draws)
    cond = param.conditions(point[None]).expand(draws, *gen.condition_shape)  # (draws, *condition_shape)
    params = param.params(point)
    targets = target[None].expand(draws, *target.shape).to(gen.device)  # (draws, ...)
    if fit == "grid":
        return gen.training_loss(targets, cond, seeds, params=params)
    return gen.observation_loss(targets, cond, seeds, params=params)


def check_fit_reaches(gen: Generator, param: Parameterisation, target: torch.Tensor, *, fit: str, seed: int) -> None:
    """Refuse weights the fit's loss does not depend on: with a zero gradient at the start, every member
    would stay where it starts (a population of copies, or of LoRA noise) and nothing says why."""
    if param.name == "condition":
        return
    x = param.initial_point(seed).detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(member_loss(gen, param, x, target, fit=fit, seed=seed), x, allow_unused=True)
    if g is None or not bool(torch.any(g != 0)):
        targets = param.config().get("targets", "all")
        raise InputError(f"--targets {targets}: the {fit} fit's loss does not depend on these weights of {gen.name} (its "
                         "gradient there is zero), so every member would stay where it starts. Choose weights the "
                         f"generator's loss reaches (module groups: {', '.join(gen.module_groups())})")


@torch.no_grad()
def member_fidelity(gen: Generator, param: Parameterisation, point: torch.Tensor, grid: torch.Tensor, *, seed: int,
                    with_base: bool = True) -> dict[str, Any]:
    """How well a member reproduces its target grid (R, R, R): decoded (under the population's anchor,
    with the decode seed `weightspace decode` uses for it) against the target.

    Returns fidelity_iou (solid voxels), the robust (b0, b1, b2) of decode and target and whether they
    are equal (fidelity_betti), and with_base: the IoU of the base point decoded the same way
    (a fit that is no closer than the base has not learnt its shape).
    """
    from weightspace.analysis.geometry import iou
    from weightspace.analysis.persistence import robust_betti

    R = int(grid.shape[-1])

    def decode(x: torch.Tensor) -> np.ndarray:
        return gen.grids(param.conditions(x[None]), [seed], params=param.params(x), resolution=R)[0].cpu().numpy()

    target = grid.float().cpu().numpy()  # (R, R, R)
    out = decode(point.to(gen.device))
    rb_out, rb_target = (tuple(int(v) for v in robust_betti(g)) for g in (out, target))
    res = {"fidelity_iou": float(iou(out, target)), "fidelity_robust_betti": list(rb_out), "target_robust_betti": list(rb_target),
           "fidelity_betti": rb_out == rb_target, "fidelity_empty": not bool((out < 0).any()), "decode_seed": int(seed)}
    if with_base:
        res["base_iou"] = float(iou(decode(param.base_point()), target))
    return res


class NonFiniteLoss(InputError):
    """A fit's loss became NaN or infinite: the generator (or its weights under the point) computes
    no usable loss for this target."""


def minimise_point(start: torch.Tensor, objective: Callable[[torch.Tensor, int], torch.Tensor], *, steps: int,
                   lr: float, callback: Callable[[int, torch.Tensor], bool] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Adam from `start`, a point (D,) or a stack of points (B, D), on `objective(x, step)`: a loss () or
    per-point losses (B,), whose sum is minimised. Per-point losses that each reach only their own row
    make one Adam over the stack B independent Adams (Adam is elementwise).

    callback : called as callback(step, x) with the point before step `step` (x detached; step == steps
        after the last step); returning True stops the loop there (early stopping).

    Every member fit goes through this (`fit_member`, `fit_members`, the fit study's own objective).
    Returns the point(s) (detached, start's shape) and the detached loss of every step.
    """
    x = start.detach().clone().requires_grad_(True)
    losses: list[torch.Tensor] = []
    opt = torch.optim.Adam([x], lr=lr) if steps > 0 else None
    for step in range(steps + 1):
        if callback is not None and callback(step, x.detach()):
            break
        if step < steps:
            opt.zero_grad(set_to_none=True)
            loss = objective(x, step)  # () or (B,)
            if not bool(torch.isfinite(loss).all()):  # Adam would carry a NaN into every later step
                raise NonFiniteLoss(f"the loss is NaN or infinite at step {step} of {steps}")
            loss.sum().backward()
            opt.step()
            losses.append(loss.detach())
    return x.detach(), losses


def fit_member(gen: Generator, param: Parameterisation, target: torch.Tensor, *, fit: str, steps: int, lr: float,
               seed: int, condition_fit: str = "auto", surface: torch.Tensor | None = None, draws: int = 1) -> dict[str, Any]:
    """Fit one point to one target. Returns dict(point (D,), losses list, seconds (wall), metrics)."""
    t0, c0 = time.perf_counter(), time.process_time()
    start = param.initial_point(seed)
    mode = "optimise"
    if param.name == "condition" and condition_fit in ("auto", "encode"):
        pts = surface if surface is not None else (target if fit == "points" else None)
        try:
            if pts is None:
                raise InputError("no surface points to encode")
            start = gen.condition(points=pts[None].to(gen.device)).reshape(-1).detach()
            mode = "encode"
        except InputError:
            if condition_fit == "encode":
                raise
    eval_seed = derive_seed(seed, "eval")
    x, step_losses = minimise_point(
        start, lambda x, step: member_loss(gen, param, x, target, fit=fit, seed=derive_seed(seed, "step", step), draws=draws),
        steps=steps if mode == "optimise" else 0, lr=lr)
    losses = [float(v) for v in step_losses]
    with torch.no_grad():
        loss_start = float(member_loss(gen, param, start, target, fit=fit, seed=eval_seed))
        loss_fit = float(member_loss(gen, param, x, target, fit=fit, seed=eval_seed))
    metrics = {"loss_start": loss_start, "loss_fit": loss_fit, "moved": float((x - start).norm()), "mode": mode}
    metrics["cpu_seconds"] = time.process_time() - c0  # wall time inflates on a shared machine; CPU time does not
    return {"point": x.cpu(), "losses": losses, "seconds": time.perf_counter() - t0, "metrics": metrics}


def fit_members(gen: Generator, param: Parameterisation, grids: torch.Tensor, *, steps: int, lr: float,
                seeds: list[int], draws: int = 1) -> list[dict[str, Any]]:
    """Fit B lora/layers members to grids (B, R, R, R) at once: what `fit_member(fit="grid")` gives each
    (to float rounding), through the generator's `training_loss_batched`.

    One Adam over the stacked points (B, D) is B independent Adams (Adam is elementwise and every
    member's loss reaches only its own row); member b draws from its own seed exactly as alone.
    Returns one dict per member as `fit_member` (seconds and cpu_seconds: the batch's, divided by B).
    """
    batched = require(gen, BatchedTrainingLoss, BATCHED_PURPOSE)
    t0, c0 = time.perf_counter(), time.process_time()
    B = len(seeds)
    start = torch.stack([param.initial_point(s) for s in seeds])  # (B, D)
    grids = grids.to(gen.device)  # (B, R, R, R)
    cond = param.conditions(start)  # (B, *condition_shape)
    # LoRA factors stay factored where the generator takes them (`generators.lowrank`): the same weights,
    # without a full weight and weight gradient per member and layer
    low_rank = gen.accepts_low_rank and param.low_rank_batch(start[:1]) is not None
    params_batch = param.low_rank_batch if low_rank else param.params_batch

    def objective(x: torch.Tensor, step: int) -> torch.Tensor:
        step_draws = [draw_seeds(derive_seed(s, "step", step), draws) for s in seeds]
        return batched.training_loss_batched(grids, cond, step_draws, params_batch(x))  # (B,)

    x, step_losses = minimise_point(start, objective, steps=steps, lr=lr)  # x (B, D)
    losses = [[float(v[b]) for v in step_losses] for b in range(B)]
    with torch.no_grad():
        eval_draws = [[derive_seed(s, "eval")] for s in seeds]
        loss_start = batched.training_loss_batched(grids, cond, eval_draws, params_batch(start)).tolist()
        loss_fit = batched.training_loss_batched(grids, cond, eval_draws, params_batch(x)).tolist()
    seconds, cpu = (time.perf_counter() - t0) / B, (time.process_time() - c0) / B
    moved = (x - start).norm(dim=1).tolist()
    return [{"point": x[b].cpu(), "losses": losses[b], "seconds": seconds,
             "metrics": {"loss_start": loss_start[b], "loss_fit": loss_fit[b], "moved": moved[b], "mode": "optimise",
                         "cpu_seconds": cpu, "batch_members": B}}
            for b in range(B)]


@dataclass
class MemberTask:
    """Everything a worker needs for one member (picklable)."""

    index: int
    id: str
    row: dict[str, Any]
    seed: int
    data: str
    settings: dict[str, Any]
    loader: Callable[[], Generator]
    frame: Frame


_WORKER_CACHE: dict[str, tuple[Generator, Parameterisation]] = {}


def _worker_key(loader: Callable[[], Generator], frame: Frame) -> str:
    return repr((loader, sorted(frame.parameterisation.items())))


def _worker_state(task: MemberTask) -> tuple[Generator, Parameterisation]:
    if not in_calling_process():  # a worker that only fits keeps its freed activations' pages (runtime.allocator);
        retain_freed_memory()  # the caller of an in-process build keeps its own allocator settings
    key = _worker_key(task.loader, task.frame)
    if key not in _WORKER_CACHE:
        torch.set_num_threads(1)
        gen = task.loader()
        _WORKER_CACHE.clear()
        _WORKER_CACHE[key] = (gen, task.frame.build(gen, what="population"))
    return _WORKER_CACHE[key]


def run_member(task: MemberTask) -> dict[str, Any]:
    """Fit one member (runs inside an executor worker)."""
    gen, param = _worker_state(task)
    s = task.settings
    data = Path(task.data)
    target = load_target(data, task.row, fit=s["fit"], observations=s["observations"], noise=s["noise"], seed=task.seed,
                         observation=s["observation"])
    surface = None
    if param.name == "condition" and s["fit"] == "grid" and "points" in task.row:
        surface = load_target(data, task.row, fit="points", observations=s["observations"], noise=0.0, seed=task.seed)
    try:
        out = fit_member(gen, param, target, fit=s["fit"], steps=s["steps"], lr=s["lr"], seed=task.seed,
                         condition_fit=s["condition_fit"], surface=surface, draws=s.get("draws", 1))
    except NonFiniteLoss as e:
        raise NonFiniteLoss(f"member {task.id!r}: {e} (generator {gen.name}, parameterisation {param.name}, "
                            f"lr {s['lr']})") from None
    grid = target if s["fit"] == "grid" else load_target(data, task.row, fit="grid", observations=0, noise=0.0, seed=task.seed)
    t0 = time.perf_counter()
    out["metrics"].update(member_fidelity(gen, param, out["point"], grid, seed=decode_seed(0, task.index)))
    out["metrics"]["fidelity_seconds"] = time.perf_counter() - t0
    out.update(index=task.index, id=task.id)
    return out


def run_members(tasks: list[MemberTask]) -> list[dict[str, Any]]:
    """Fit a batch of lora/layers members to their grids together (runs inside an executor worker);
    each result as `run_member`'s."""
    gen, param = _worker_state(tasks[0])
    s = tasks[0].settings
    grids = torch.stack([load_target(Path(t.data), t.row, fit="grid", observations=s["observations"], noise=s["noise"],
                                     seed=t.seed, observation=s["observation"]) for t in tasks])  # (B, R, R, R)
    try:
        outs = fit_members(gen, param, grids, steps=s["steps"], lr=s["lr"], seeds=[t.seed for t in tasks],
                           draws=s.get("draws", 1))
    except NonFiniteLoss as e:
        raise NonFiniteLoss(f"members {[t.id for t in tasks]} (fitted together): {e} (generator {gen.name}, "
                            f"parameterisation {param.name}, lr {s['lr']})") from None
    for task, grid, out in zip(tasks, grids, outs):
        t0 = time.perf_counter()
        out["metrics"].update(member_fidelity(gen, param, out["point"], grid, seed=decode_seed(0, task.index)))
        out["metrics"]["fidelity_seconds"] = time.perf_counter() - t0
        out.update(index=task.index, id=task.id)
    return outs


# --- building --------------------------------------------------------------------------------------
def _anchor(gen: Generator, kind: str, data: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> torch.Tensor:
    if kind == "zeros":
        return torch.zeros((1, *gen.condition_shape))
    conds = []
    for row in rows:
        pts = load_target(data, row, fit="points", observations=settings["observations"], noise=0.0, seed=settings["seed"])
        with torch.no_grad():
            conds.append(gen.condition(points=pts[None].to(gen.device)).cpu())
    return torch.cat(conds).mean(0, keepdim=True)  # (1, *condition_shape)


def _check_resume(out: Path, expected: dict[str, Any]) -> bool:
    """Refuse to resume the population in `out` with other base weights, data or settings; True when
    it is to be started afresh instead: an earlier build that stopped before its first member (a
    failure in the first fit, say) pins no settings, so the corrected command is not refused."""
    old = read_json(out / "config.json")
    if not isinstance(old, dict) or old.get("kind", "population") != "population" or "settings" not in old:
        raise InputError(f"--out: {out} holds a config.json that is not a population's; choose a new --out")
    diff = [k for k in ("base_hash", "data_hash", "settings") if old.get(k) != expected.get(k)]
    if diff and not read_manifest(out) and not read_failures(out):
        return True
    if diff:
        was = old.get("settings") if isinstance(old.get("settings"), dict) else {}
        what = [{"base_hash": "base weights (another checkpoint or its weights changed)",
                 "data_hash": "data (its manifest.jsonl differs)"}[k] for k in diff if k != "settings"]
        what += [f"{k} {repr(was[k]) if k in was else '(not set)'} -> {v!r}" for k, v in expected["settings"].items() if was.get(k) != v]
        what += [f"{k} {v!r} -> (not set)" for k, v in was.items() if k not in expected["settings"]]
        raise InputError(f"{out}: an existing population was built with other {'; '.join(what)}; "
                         "use a new --out folder, or the original settings to resume")


def _check_indices(out: Path, manifest: list[dict[str, Any]], rows: list[dict[str, Any]], todo: list[tuple[int, Any]]) -> None:
    """A member's index names its shard: a resume whose shapes come in another order (another --split or
    data order) would fit new members onto finished members' shards. Refused, naming the first."""
    position = {str(r["id"]): i for i, r in enumerate(rows)}
    taken = {int(r["index"]): str(r["id"]) for r in manifest}
    moved = [(str(r["id"]), int(r["index"]), position[str(r["id"])]) for r in manifest
             if str(r["id"]) in position and position[str(r["id"])] != int(r["index"])]
    clash = [(str(r["id"]), i, taken[i]) for i, r in todo if i in taken]
    if moved or clash:
        what = (f"member {moved[0][0]!r} was fitted as index {moved[0][1]}, the data now put it at {moved[0][2]}" if moved
                else f"shape {clash[0][0]!r} would be fitted as index {clash[0][1]}, the shard of finished member {clash[0][2]!r}")
        raise InputError(f"{out}: {what} (another --split or another order of shapes than the build began with); "
                         f"resume with the original --split and data, or use a new --out")


FAILURES_NAME = "failures.jsonl"  # members whose task kept failing: id, index, error (the driver writes it)


def read_failures(out: Path) -> list[dict[str, Any]]:
    """The failed members recorded in a population folder (none when it has no failures.jsonl)."""
    path = Path(out) / FAILURES_NAME
    if not path.is_file():
        return []
    return [row for _, row in read_jsonl(path)]


def write_failures(out: Path, failures: Iterable[dict[str, Any]]) -> None:
    rows = sorted(failures, key=lambda f: f["index"])
    if rows:
        atomic_write_text(out / FAILURES_NAME, "".join(json.dumps(f) + "\n" for f in rows))
    elif (out / FAILURES_NAME).is_file():
        (out / FAILURES_NAME).unlink()


def _batch_failures(failed: TaskFailure) -> list[TaskFailure]:
    """A failed batch of members as one failure per member."""
    return [TaskFailure(task, failed.error, failed.detail) for task in failed.item]



def _drop_unreadable(pop: Population, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The manifest rows of `pop` whose weights file reads back; a member whose file is missing or
    damaged (truncated, not safetensors, the wrong length) is named and its row leaves the manifest,
    rewritten atomically before any refit, so the build fits it again. Reads every member's file."""
    bad = {b["id"]: b for b in pop.unreadable()}
    for b in bad.values():
        state = "damaged" if (pop.folder / b["shard"]).exists() else "missing"
        log(f"member {b['id']}: weights file {state} ({b['error']}); refitting")
    rows = [r for r in pop.rows if str(r["id"]) not in bad]
    if bad:
        write_manifest(pop.folder, rows)
    return rows


def build_population(config: PopulationConfig, *, generator: Any = None, executor: Executor | None = None,
                     on_member: Callable[[dict[str, Any]], None] | None = None,
                     log: Callable[[str], None] = log_line) -> Population:
    """Fit every missing member of the population in `config.out`; finished members are skipped.

    generator : a Generator, a checkpoint, or a zero-argument picklable callable returning the generator
        (`generators.registry.generator_loader`); default: load `config.checkpoint`.
    executor : where members run (default: from `config.executor` / `config.workers`); with
        `config.batch_members` B > 1 each of its items is a batch of B members (`run_members`).
    on_member : called with each manifest row after it is written (progress, tests).
    log : hears one line per finished member found damaged or missing on resume (default: stderr).

    Results are written as they finish, in any order, by this process alone (shard, then manifest
    row), so a killed driver or worker loses no finished member and a rerun resumes. On an executor
    that keeps going (Ray) a member whose task keeps failing is recorded in failures.jsonl with its
    error and the build goes on; a rerun tries it again. On resume every finished member's weights file
    is read: one that is missing or damaged is named through `log` and fitted again. Ctrl-C raises
    `Interrupted`, whose message counts the members saved.
    """
    config = check_config(config, where=type(config).__name__)  # types and bounds as a config file's, then validate
    check_shape_folder(config.data, "--data")  # an observation set or a population is named as such, before the load
    from weightspace.generators.registry import checkpoint_of, generator_loader

    loader = generator_loader(generator, config.checkpoint)
    gen = loader()
    auto_batch = config.batch_members is None
    config = config.resolved(gen)
    if config.batch_members > 1:
        require(gen, BatchedTrainingLoss, BATCHED_PURPOSE)
    by_batches = config.batch_members > 1 or factored_fits(gen, config)
    param = make_parameterisation(gen, config.parameterisation, **config.options)
    data, out = Path(config.data), Path(config.out)
    rows = read_shapes(data, split=config.split, members=config.members)
    check_grid_resolution(gen, data, rows, config.fit)
    if config.fit == "grid":
        check_grid_sizes(data, rows)  # every target before the first member, not at the member whose grid is wrong
    warn_empty_targets(rows, config.fit, log)
    settings = config.fit_settings()
    expected = {"base_hash": base_hash(gen), "data_hash": manifest_hash(data), "settings": settings}
    check_out_folder(out, "population", writes="config.json, manifest.jsonl and shards/")  # a data folder, a subspace...
    starting = not (out / "config.json").is_file()
    if not starting:
        starting = _check_resume(out, expected)
        remove_stale_temps(out)  # a killed member's half-written shard; no writer runs on `out` now
    if starting:
        anchor = _anchor(gen, config.anchor if param.name != "condition" else "zeros", data, rows, settings)
        frame = Frame(param.layout, param.config(), anchor, checkpoint_of(generator, config.checkpoint))
        save_population_frame(out, frame, {**expected, "kind": "population", "data": str(config.data)})
    pop = Population(out)
    param = pop.frame.build(gen, what=f"population {out.name}")
    manifest = _drop_unreadable(pop, log)
    done = {str(r["id"]) for r in manifest}
    todo = [(i, r) for i, r in enumerate(rows) if str(r["id"]) not in done]
    _check_indices(out, manifest, rows, todo)
    if todo:
        first = rows[todo[0][0]]
        first_seed = derive_seed(config.seed, "member", str(first["id"]))
        check_fit_reaches(gen, param, load_target(data, first, fit=config.fit, observations=settings["observations"],
                                                  noise=settings["noise"], seed=first_seed, observation=settings["observation"]),
                          fit=config.fit, seed=first_seed)
        # in-process work reuses the generator loaded here instead of loading it again
        _WORKER_CACHE.clear()
        _WORKER_CACHE[_worker_key(loader, pop.frame)] = (gen, param)
        own = executor is None
        executor = executor or make_executor(config.executor, workers=config.workers)
        shared = executor.share(loader)  # Ray: one copy in its object store, a reference in every task
        tasks = [MemberTask(i, str(r["id"]), r, derive_seed(config.seed, "member", str(r["id"])), str(data), settings, shared, pop.frame)
                 for i, r in todo]
        failures = {str(f["id"]): f for f in read_failures(out)}
        errors = "return" if executor.keeps_going else "raise"  # distributed: a member that keeps failing is recorded
        status = executor.status
        try:
            if by_batches:
                B = config.batch_members
                if auto_batch:  # fewer per pass when B each would leave a worker without members
                    B = max(1, min(B, -(-len(tasks) // executor.workers)))
                batches = executor.map(run_members, [tasks[i : i + B] for i in range(0, len(tasks), B)], ordered=False, errors=errors)
                results = (res for batch in batches for res in (_batch_failures(batch) if isinstance(batch, TaskFailure) else batch))
                if B > 1:  # the bar counts members, the executor its tasks
                    status = functools.partial(_batched_status, B, executor.status)
            else:
                results = executor.map(run_member, tasks, ordered=False, errors=errors)
            for res in track(results, "members", total=len(tasks), status=status):
                if isinstance(res, TaskFailure):
                    failures[res.item.id] = {"index": res.item.index, "id": res.item.id, "error": res.error, "detail": res.detail}
                    write_failures(out, failures.values())
                    continue
                shard = shard_name(res["index"])
                save_tensors(out / shard, {"point": res["point"]}, {"id": res["id"], "base_hash": expected["base_hash"]})
                row = {"index": res["index"], "id": res["id"], "shard": shard, "seed": next(t.seed for t in tasks if t.index == res["index"]),
                       "source": {k: v for k, v in rows[res["index"]].items() if k in ("id", "family", "label", "split", "grid")},
                       "loss": res["metrics"]["loss_fit"], "loss_curve": res["losses"], "seconds": res["seconds"],
                       "metrics": res["metrics"]}
                manifest.append(row)
                write_manifest(out, sorted(manifest, key=lambda r: r["index"]))
                if failures.pop(res["id"], None) is not None:  # a member that failed before and now fitted
                    write_failures(out, failures.values())
                if on_member is not None:
                    on_member(row)
        except KeyboardInterrupt as e:
            if isinstance(e, Interrupted):
                raise
            raise Interrupted(f"interrupted: {len(manifest)} of {len(rows)} members are saved in {out}; "
                              "run the same command again to resume") from e
        finally:
            if own:
                executor.close()
            _WORKER_CACHE.clear()
    return Population(out)


def _batched_status(members_per_task: int, status: Callable[[], str]) -> str:
    return f"{members_per_task} members per task; {status()}"


def fidelity_summary(pop: Population, *, min_iou: float = MIN_FIDELITY_IOU) -> dict[str, Any]:
    """The fidelity table of a population: per source family and overall, the members' mean decode
    IoU, the rate of robust Betti numbers equal to the target's (with its Wilson 95% interval),
    the empty decodes and the seconds per member; and the members flagged (IoU < min_iou, Betti
    differs, or empty). Rows built before fidelity was recorded are listed as `unchecked`; members
    imported from adapters or checkpoints (`population import`) have no target and are listed as `imported`."""
    from weightspace.analysis.rates import rate

    checked = [r for r in pop.rows if "fidelity_iou" in r.get("metrics", {})]
    imported = [str(r["id"]) for r in pop.rows if "fidelity_iou" not in r.get("metrics", {}) and r.get("imported")]
    unchecked = [str(r["id"]) for r in pop.rows if "fidelity_iou" not in r.get("metrics", {}) and not r.get("imported")]

    def table(rows: list[dict[str, Any]]) -> dict[str, Any]:
        m = [r["metrics"] for r in rows]
        return {"n": len(rows), "iou": float(np.mean([x["fidelity_iou"] for x in m])) if m else None,
                "betti": rate(x["fidelity_betti"] for x in m), "empty": sum(bool(x.get("fidelity_empty")) for x in m),
                "base_iou": float(np.mean([x["base_iou"] for x in m])) if m and all("base_iou" in x for x in m) else None,
                "seconds_per_member": float(np.mean([r["seconds"] for r in rows])) if rows else None}

    families = sorted({str(r.get("source", {}).get("family", "")) for r in checked})
    flagged = []
    for r in checked:
        m, why = r["metrics"], []
        if m["fidelity_iou"] < min_iou:
            why.append(f"IoU {m['fidelity_iou']:.3f} < {min_iou:g}")
        if not m["fidelity_betti"]:
            why.append(f"robust Betti {tuple(m['fidelity_robust_betti'])} != target {tuple(m['target_robust_betti'])}")
        if m.get("fidelity_empty"):
            why.append("decodes empty")
        if why:
            flagged.append({"id": r["id"], "family": r.get("source", {}).get("family"), "iou": m["fidelity_iou"],
                            "robust_betti": m["fidelity_robust_betti"], "target_robust_betti": m["target_robust_betti"],
                            "reasons": why})
    return {"population": str(pop.folder), "parameterisation": pop.frame.parameterisation, "checkpoint": pop.frame.checkpoint,
            "min_iou": min_iou, "all": table(checked),
            "per_family": {f: table([r for r in checked if str(r.get("source", {}).get("family", "")) == f]) for f in families},
            "flagged": flagged, "unchecked": unchecked, "imported": imported}


__all__ = ["PopulationConfig", "build_population", "read_failures", "fidelity_summary", "fit_member", "fit_members", "member_fidelity",
           "minimise_point", "read_shapes"]

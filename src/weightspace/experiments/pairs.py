"""The interpolation study's pairs mode: many paths within and across families, and how often and how sharply they change topology."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from weightspace.analysis.measure import chamfer, finite_mean, finite_median
from weightspace.analysis.rates import wilson_interval
from weightspace.experiments.common import mismatches, refuse
from weightspace.experiments.endpoints import Endpoints_, endpoint_fidelity
from weightspace.experiments.path_study import KEPT_MEANS, PathStudy, space_of, topology_kept, transition_rows
from weightspace.experiments.plots import plot_pairs
from weightspace.generators.protocol import Generator
from weightspace.runtime.errors import InputError
from weightspace.runtime.executors import make_executor, worker_cached
from weightspace.runtime.progress import track
from weightspace.runtime.results import write_csv, write_results
from weightspace.runtime.resume import ProgressFile
from weightspace.runtime.seeding import item_rng
from weightspace.space.frame import Frame
from weightspace.space.parameterisation import Parameterisation

if TYPE_CHECKING:
    from weightspace.experiments.interpolate import InterpolateConfig


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


@dataclass
class PairTask:
    """One path of the sweep, for an executor worker: its endpoints (points (D,) and their decoded grids),
    the generator's loader (shared, see Executor.share), the frame of the points and the search settings."""

    k: int
    a: str
    b: str
    within: bool
    families: tuple[str, str]
    points: tuple[torch.Tensor, torch.Tensor]
    grids: tuple[np.ndarray, np.ndarray]
    loader: Callable[[], Generator]
    frame: Frame
    path: str
    seed: int
    volume_threshold: float
    steps: int
    tolerance: float


def pair_path(gen: Generator, param: Parameterisation, task: PairTask) -> dict[str, Any]:
    """One path searched for transitions: its pairs.csv row and its transitions.csv rows."""
    study = PathStudy(gen, param, task.points[0], task.points[1], kind=task.path, seed=task.seed,
                      volume_threshold=task.volume_threshold)
    study.known = {0.0: task.grids[0], 1.0: task.grids[1]}  # decoded (and counted) by the endpoint check
    run = study.search(task.steps, task.tolerance)
    trs = transition_rows(run)
    span = chamfer(run.shapes[0.0].points, run.shapes[1.0].points)
    transitions = []
    for tr in trs:
        # sharpness: Chamfer change per unit t across the transition over the path's average change per unit t
        tr["sharpness"] = tr["chamfer_jump"] / tr["width"] / span if span and np.isfinite(span) and span > 0 else float("nan")
        transitions.append({"pair": task.k, "a": task.a, "b": task.b, "within_family": task.within, **tr})
    row = {"pair": task.k, "a": task.a, "b": task.b, "family_a": task.families[0], "family_b": task.families[1],
           "within_family": task.within, "start": list(run.shapes[0.0].robust), "end": list(run.shapes[1.0].robust),
           "transitions": len(trs), "decodes": study.decodes, "seconds": run.seconds,
           "min_width": min((t["width"] for t in trs), default=float("nan")),
           "max_chamfer_jump": max((t["chamfer_jump"] for t in trs), default=float("nan")),
           "chamfer_start_end": span}
    return {"row": row, "transitions": transitions}


def run_pair(task: PairTask) -> dict[str, Any]:
    """`pair_path` in an executor worker, whose generator is loaded once for all its pairs."""
    def build() -> tuple[Generator, Parameterisation]:
        torch.set_num_threads(1)
        gen = task.loader()
        return gen, task.frame.build(gen, what="pair endpoints")

    gen, param = worker_cached(repr(("pairs", task.loader, sorted(task.frame.parameterisation.items()))), build)
    return pair_path(gen, param, task)


def run_pairs(config: InterpolateConfig, gen: Generator, folder: Path, clock: Callable[[], float], ends: Endpoints_,
              check: list[dict[str, Any]], end_grids: dict[str, np.ndarray]) -> Path:
    """`config.pairs` paths between the endpoints that passed their check (`check`, with their decoded
    grids `end_grids` as each path's t = 0 and t = 1), into `folder`: pairs.csv, transitions.csv, pairs.png
    and results.json with the transition rate and sharpness within and across families.

    With `config.executor` process or ray the paths run in workers (`config.workers`, or the Ray cluster
    at `config.address`), each loading the generator once; the rows come back in pair order."""
    keep = [c["id"] for c in check if c["ok"]]
    if len(keep) < 2:
        refuse(folder, config.checkpoint, (
            f"only {len(keep)} of {len(check)} endpoints decode to the topology they stand for ({mismatches(check)}); pairs "
            f"need two. Use --endpoints data with shapes this generator reproduces, or a population whose members "
            f"passed their fidelity check"), endpoint_check=check)
    ends = Endpoints_(ends.param, {i: ends.points[i] for i in keep}, {i: ends.families[i] for i in keep},
                      {i: ends.intended.get(i) for i in keep})
    pairs = make_pairs(ends, config.pairs, config.seed)
    tasks = [PairTask(k, ia, ib, within, (ends.families[ia], ends.families[ib]), (ends.points[ia], ends.points[ib]),
                      (end_grids[ia], end_grids[ib]), None, None, config.path, config.seed, config.volume_threshold,  # type: ignore[arg-type]
                      config.steps, config.tolerance)
             for k, (ia, ib, within) in enumerate(pairs)]
    # a path is taken up only when every path's endpoints are the same bytes as the killed run's (`pair_key`)
    progress = ProgressFile(folder, "experiment interpolate --pairs", {"paths": [pair_key(t) for t in tasks]},
                            name=PROGRESS, allow_nan=True)
    earlier, _ = progress.earlier()
    done = {e["k"]: e["result"] for e in earlier if e.get("k") in range(len(tasks)) and isinstance(e.get("result"), dict)}
    todo = [t for t in tasks if t.k not in done]
    label = f"pairs (resuming: {len(done)} of {len(tasks)} already run)" if done else "pairs"
    with progress:
        progress.start([{"k": k, "result": r} for k, r in sorted(done.items())])
        if config.executor == "inprocess":
            for t in track(todo, label):
                done[t.k] = record_pair(progress, t, pair_path(gen, ends.param, t))
        elif todo:
            from weightspace.generators.registry import generator_loader

            with make_executor(config.executor, workers=config.workers, address=config.address) as executor:
                loader, frame = executor.share(generator_loader(gen)), Frame.of(ends.param, config.checkpoint)
                for t in todo:
                    t.loader, t.frame = loader, frame
                for t, result in zip(todo, track(executor.map(run_pair, todo), label, total=len(todo), status=executor.status)):
                    done[t.k] = record_pair(progress, t, result)
    results = [done[t.k] for t in tasks]
    pair_rows = [r["row"] for r in results]
    all_transitions = [tr for r in results for tr in r["transitions"]]
    decodes = len(check) + sum(r["decodes"] for r in pair_rows)
    write_csv(folder / "pairs.csv", pair_rows)
    write_csv(folder / "transitions.csv", all_transitions)
    summary = {name: _pair_summary([r for r in pair_rows if sel(r)], [t for t in all_transitions if sel(t)])
               for name, sel in (("all", lambda r: True), ("within", lambda r: r["within_family"]),
                                 ("across", lambda r: not r["within_family"]))}
    plot_pairs(folder / "pairs.png", pair_rows, all_transitions)
    within = [r["transitions"] for r in pair_rows if r["within_family"]]
    write_results(folder, {"checkpoint": config.checkpoint, "generator": gen.kind, "pairs": len(pairs), "decodes": decodes,
                           "parameterisation": ends.param.name, "member_fidelity": endpoint_fidelity(config, keep),
                           "topology_kept": topology_kept({space_of(ends.param): within}), "topology_kept_means": KEPT_MEANS,
                           "pair_endpoints": "family conditions" if all("#" in i for i in ends.points) else "encoded shapes",
                           "transitions": all_transitions, "summary": summary, "wall_seconds": clock(),
                           "endpoint_check": check, "endpoints_dropped": [c["id"] for c in check if not c["ok"]],
                           "uniform_sweep_decodes_per_path": math.ceil(1 / config.tolerance) + 1,
                           "pairs_resumed": len(tasks) - len(todo)})
    progress.remove()  # results.json now holds every path
    return folder


# Each finished path is appended here as it comes back, so a sweep killed part-way (hours of paths on a big
# generator) takes up its finished paths on a rerun of the same command; start_results has already refused a
# rerun with other settings, and the paths are taken up only when every path's endpoints are the same bytes
# (`pair_key`, the progress file's settings).
PROGRESS = ".pairs-progress.jsonl"


def pair_key(task: PairTask) -> str:
    """What a recorded path must match to be taken up: its index, endpoint ids, and the bytes of its endpoint
    points and decoded grids (a regenerated data folder or a retrained checkpoint under the same names differs)."""
    h = hashlib.sha256(repr((task.k, task.a, task.b, task.within, task.families)).encode())
    for x in (*task.points, *task.grids):
        h.update(np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x).tobytes())
    return h.hexdigest()


def record_pair(progress: ProgressFile, task: PairTask, result: dict[str, Any]) -> dict[str, Any]:
    """Record one finished path and return it as the log reads it back: a resumed path and a fresh one
    then write the same bytes into pairs.csv, transitions.csv and results.json."""
    entry = json.loads(json.dumps({"k": task.k, "result": result}, default=_plain))
    progress.add(entry)
    return entry["result"]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot record {type(value).__name__} in the pairs progress log")


def _pair_summary(pairs: list[dict[str, Any]], transitions: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(pairs)
    k = sum(r["transitions"] > 0 for r in pairs)
    low, high = wilson_interval(k, n)
    return {"paths": n, "paths_with_transition": k,
            # the share of paths with a transition, with its sample size and Wilson 95% interval
            "rate": k / n if n else float("nan"), "n": n, "ci_low": low, "ci_high": high,
            "transitions_per_path": float(np.mean([r["transitions"] for r in pairs])) if n else float("nan"),
            "mean_decodes_per_path": float(np.mean([r["decodes"] for r in pairs])) if n else float("nan"),
            "median_width": float(np.median([t["width"] for t in transitions])) if transitions else float("nan"),
            "mean_chamfer_jump": finite_mean([t["chamfer_jump"] for t in transitions]),
            "median_sharpness": finite_median([t["sharpness"] for t in transitions])}



"""Members per second of `population build`: one member at a time against B members per forward/backward pass.

    weightspace data make --family torus,pair --count 16 --seed 7 --split 1,0,0 --pose aligned --out runs/bm-data16
    python benchmarks/batched_members.py --data runs/bm-data16 --steps 10 --batch 8,16 --reps 3

For each generator it builds the same LoRA population (the generator's lr and draws, `--steps` steps)
one at a time through merged weights (`merged one`: every build before the factored path), at batch 1
(`one`: on latent diffusion the factored path, member by member), and with `--batch-members B` for each
B, interleaved `--reps` times in one process, and prints the medians of members/s of the whole build
(fit + the fidelity decode every member gets) and of the fit alone, both from CPU time (process time: on
a shared machine wall time counts the other jobs), their ratios to `merged one` (and the fit's to `one`),
and how far each population's members are from `merged one`'s. Then the
median CPU time of one fit step (loss of B members and its backward) per method against B one-member
steps: `low-rank` (LoRA factors kept factored, `generators.lowrank`, what a build uses) and the merged
weights' method of the generator. One thread unless `--threads`; `--clock wall` times elapsed seconds instead. `--allocator default` measures without
`runtime.allocator.retain_freed_memory`, which a pool or Ray worker applies (it cannot be undone in a process;
the builds here run in process, which leaves it to `--allocator`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from weightspace.data.grid import grid_points
from weightspace.generators.registry import load_generator
from weightspace.runtime.allocator import retain_freed_memory
from weightspace.space import population as population_module
from weightspace.space.population import PopulationConfig, build_population, draw_seeds, member_loss
from weightspace.space.store import Population


def build(gen, name: str, data: str, out: Path, *, steps: int, batch: int, merged: bool = False,
          wall: bool = False) -> tuple[float, float, torch.Tensor]:
    """(members per CPU second of the build, members per CPU second of the fits, the points (N, D)); per
    wall second with `wall`. merged: members one at a time through merged weights (`fit_member`), what a
    build did before it fitted a lone LoRA member of a generator that `accepts_low_rank` through the
    factored path too."""
    clock = time.perf_counter if wall else time.process_time
    shutil.rmtree(out, ignore_errors=True)
    config = PopulationConfig(checkpoint=name, parameterisation="lora", data=data, out=str(out), steps=steps, batch_members=batch)
    factored = population_module.factored_fits
    if merged:
        population_module.factored_fits = lambda gen, config: False
    c0 = clock()
    try:
        pop = build_population(config, generator=gen)
    finally:
        population_module.factored_fits = factored
    cpu = clock() - c0
    fit = sum(r["seconds"] if wall else r["metrics"]["cpu_seconds"] for r in pop.rows)
    return len(pop) / cpu, len(pop) / fit, Population(out).matrix()


def step_times(gen, pop_dir: Path, batch: int, reps: int, clock=time.process_time) -> dict[str, float]:
    """Median seconds (`clock`) of one fit step of `batch` members: a loop of one-member steps, and each batched method."""
    pop = Population(pop_dir)
    param = pop.frame.build(gen)
    x = pop.matrix()[:batch].to(gen.device).requires_grad_(True)  # (B, D)
    r = torch.from_numpy(grid_points(gen.resolution)).norm(dim=-1)  # (R, R, R)
    grids = torch.stack([(r - 0.4 - 0.05 * b).clamp(-0.2, 0.2).float() for b in range(batch)])  # (B, R, R, R) spheres
    draws = gen.fit_defaults["lora"]["draws"]
    cond = param.conditions(x.detach())

    def loop() -> None:
        for b in range(batch):
            member_loss(gen, param, x[b], grids[b], fit="grid", seed=b, draws=draws).backward()

    def batched(low_rank: bool, **kw):
        def run() -> None:
            seeds = [draw_seeds(b, draws) for b in range(batch)]
            params = param.low_rank_batch(x) if low_rank else param.params_batch(x)
            gen.training_loss_batched(grids, cond, seeds, params, **kw).sum().backward()
        return run

    fns = {"one-at-a-time": loop, "low-rank": batched(True)}
    if gen.kind == "neural-field":
        fns.update({"low-rank grouped": batched(True, method="grouped"), "merged loop": batched(False, method="loop"),
                    "merged vmap": batched(False, method="vmap")})
    else:
        fns["merged vmap"] = batched(False)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps + 1):  # the first round warms up
        for k, f in fns.items():
            c0 = clock()
            f()
            times[k].append(clock() - c0)
    return {k: statistics.median(v[1:]) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="runs/bm-data16")
    ap.add_argument("--generators", default="default-field,default")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", default="8,16", help="comma-separated batch sizes B")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--allocator", choices=("retain", "default"), default="retain")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="cpu: process time (all threads summed; robust on a shared machine); wall: elapsed time, "
                         "what --threads > 1 gains (needs otherwise idle cores)")
    args = ap.parse_args()
    sizes = [int(b) for b in args.batch.split(",")]
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.allocator == "retain":
        print(f"allocator: retain_freed_memory() -> {retain_freed_memory()}")
    else:  # an in-process build leaves the allocator of its caller alone (runtime.executors.in_calling_process)
        print("allocator: glibc defaults")
    root = Path(tempfile.mkdtemp(prefix="batched-members-"))
    print(f"threads {args.threads}, steps {args.steps}, B {sizes}, reps {args.reps} (interleaved; medians of {args.clock} time)")
    try:
        for name in args.generators.split(","):
            gen = load_generator(name)
            # "merged one" is one at a time as builds fitted before the factored path; "one" is a build at
            # batch 1 now (the same on the field, whose batched loss does not keep LoRA factored)
            kinds = {"merged one": (1, True), "one": (1, False), **{f"B = {B}": (B, False) for B in sizes}}
            rates: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
            points = {}
            for _ in range(args.reps):
                for kind, (B, merged) in kinds.items():
                    whole, fit, points[kind] = build(gen, name, args.data, root / f"{name}-{B}-{merged}", steps=args.steps,
                                                     batch=B, merged=merged, wall=args.clock == "wall")
                    rates[kind].append((whole, fit))
            med = {k: (statistics.median(w for w, _ in v), statistics.median(f for _, f in v)) for k, v in rates.items()}
            base = med["merged one"]
            print(f"\n{name}: {len(points['one'])} LoRA members, D = {points['one'].shape[1]}")
            print(f"  {'':10s} {'build members/s':>16s} {'ratio':>6s} {'fit members/s':>14s} {'ratio':>6s} {'vs one':>7s} "
                  f"{'max rel. distance':>18s}")
            for k, (w, f) in med.items():
                ref = points["merged one"]
                diff = ((points[k] - ref).norm(dim=1) / ref.norm(dim=1)).max()
                print(f"  {k:10s} {w:16.3f} {w / base[0]:6.2f} {f:14.3f} {f / base[1]:6.2f} {f / med['one'][1]:7.2f} {float(diff):18.1e}")
            steps = step_times(gen, root / f"{name}-1-False", sizes[0], args.reps,
                               time.perf_counter if args.clock == "wall" else time.process_time)
            print(f"  one fit step of {sizes[0]} members (median {args.clock} s): " +
                  ", ".join(f"{k} {v:.3f} (x{steps['one-at-a-time'] / v:.2f})" for k, v in steps.items()))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Members per second of `population build`: one member at a time against B members per forward/backward pass.

    weightspace data make --family torus,pair --count 8 --seed 7 --split 1,0,0 --pose aligned --out runs/bm-data
    python benchmarks/batched_members.py --data runs/bm-data --steps 10 --batch 8 --reps 3

For each generator it builds the same LoRA population (the generator's lr and draws, `--steps` steps)
one at a time and with `--batch-members B`, interleaved `--reps` times in one process, and prints
the medians of members/s of the whole build (fit + the fidelity decode every member gets) and of the
fit alone (the members' recorded fit seconds), their ratios, and how far the batched members are
from the unbatched ones. Then, per batched method of the generator, the median time of one fit step
(loss of B members and its backward) against B one-member steps. One thread unless `--threads`.
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
from weightspace.space.population import PopulationConfig, build_population, draw_seeds, member_loss
from weightspace.space.store import Population


def build(gen, name: str, data: str, out: Path, *, steps: int, batch: int) -> tuple[float, float, torch.Tensor]:
    """(members/s of the build, members/s of the fits, the points (N, D))."""
    shutil.rmtree(out, ignore_errors=True)
    config = PopulationConfig(checkpoint=name, parameterisation="lora", data=data, out=str(out), steps=steps, batch_members=batch)
    t0 = time.perf_counter()
    pop = build_population(config, generator=gen)
    wall = time.perf_counter() - t0
    fit = sum(r["seconds"] for r in pop.rows)
    return len(pop) / wall, len(pop) / fit, Population(out).matrix()


def step_times(gen, pop_dir: Path, batch: int, methods: list[str | None], reps: int) -> dict[str, float]:
    """Median seconds of one fit step of `batch` members: a loop of one-member steps, and each batched method."""
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

    def batched(method: str | None):
        kw = {} if method is None else {"method": method}

        def run() -> None:
            seeds = [draw_seeds(b, draws) for b in range(batch)]
            gen.training_loss_batched(grids, cond, seeds, param.params_batch(x), **kw).sum().backward()
        return run

    fns = {"one-at-a-time": loop, **{m or "vmap": batched(m) for m in methods}}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps + 1):  # the first round warms up
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v[1:]) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="runs/bm-data")
    ap.add_argument("--generators", default="default-field,default")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    root = Path(tempfile.mkdtemp(prefix="batched-members-"))
    print(f"threads {args.threads}, steps {args.steps}, B {args.batch}, reps {args.reps} (interleaved; medians)")
    try:
        for name in args.generators.split(","):
            gen = load_generator(name)
            rates: dict[str, list[tuple[float, float]]] = {"one": [], "batched": []}
            points = {}
            for _ in range(args.reps):
                for kind, B in (("one", 1), ("batched", args.batch)):
                    wall, fit, points[kind] = build(gen, name, args.data, root / f"{name}-{kind}", steps=args.steps, batch=B)
                    rates[kind].append((wall, fit))
            med = {k: (statistics.median(w for w, _ in v), statistics.median(f for _, f in v)) for k, v in rates.items()}
            diff = ((points["batched"] - points["one"]).norm(dim=1) / points["one"].norm(dim=1)).max()
            print(f"\n{name}: {len(points['one'])} LoRA members, D = {points['one'].shape[1]}")
            print(f"  {'':10s} {'build members/s':>16s} {'fit members/s':>14s}")
            for k, (w, f) in med.items():
                print(f"  {k:10s} {w:16.3f} {f:14.3f}")
            print(f"  ratio      {med['batched'][0] / med['one'][0]:16.2f} {med['batched'][1] / med['one'][1]:14.2f}")
            print(f"  max relative distance batched vs one-at-a-time member: {float(diff):.2e}")
            methods = ["grouped", "vmap", "loop"] if gen.kind == "neural-field" else [None]
            steps = step_times(gen, root / f"{name}-one", args.batch, methods, args.reps)
            print(f"  one fit step of {args.batch} members (median s): " +
                  ", ".join(f"{k} {v:.3f} (x{steps['one-at-a-time'] / v:.2f})" for k, v in steps.items()))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

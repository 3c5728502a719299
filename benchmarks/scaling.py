"""Scaling figures of issue 18 in one run: members/s of a population build one at a time, batched, on a
process pool and on Ray; Ray's per-task overhead and start time; peak memory of a Ray build against the
pool's; and 1 against 2 torchrun (gloo) training processes: steps/s and how far their loss curves differ.

    python benchmarks/scaling.py                       # default-field, 8 LoRA members, 10 steps
    python benchmarks/scaling.py --generator default --members 8 --steps 10

Every figure is a median over `--reps` interleaved repetitions, and each ratio is taken against the
one-at-a-time build of the same run (the machine is shared: absolute numbers move between runs, the
ratios much less). Memory is the peak of the summed resident set of the driver and every process it
started (Ray: its raylet, GCS and workers; the pool: its workers), sampled every 50 ms; shared pages
count once per process, so both figures overstate, alike. Ray's workers run at nice 0 here, as the
pool's (Ray's default is 15).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import psutil
import torch

from weightspace.generators.registry import load_generator
from weightspace.runtime.allocator import retain_freed_memory
from weightspace.runtime.executors import InProcessExecutor, ProcessPoolExecutorBackend
from weightspace.space.population import PopulationConfig, build_population


def _noop(x: int) -> int:
    return x


class PeakMemory:
    """Samples the summed RSS (bytes) of this process and all its descendants until stopped."""

    def __init__(self, every: float = 0.05) -> None:
        self.peak, self.every = 0, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.every)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def build(name: str, data: Path, out: Path, executor, *, steps: int, batch: int = 1) -> tuple[float, float, torch.Tensor]:
    """(members/s of the whole build, members/s once every worker has delivered its first result,
    points (N, D)). The second leaves out the start of workers and their first generator load, which a
    long build pays once."""
    shutil.rmtree(out, ignore_errors=True)
    config = PopulationConfig(checkpoint=name, parameterisation="lora", data=str(data), out=str(out), steps=steps, batch_members=batch)
    stamps: list[float] = []
    t0 = time.perf_counter()
    pop = build_population(config, generator=functools.partial(load_generator, name), executor=executor,
                           on_member=lambda row: stamps.append(time.perf_counter()))
    k = executor.workers * batch  # results before the steady state: each worker's first member (or first batch)
    steady = (len(stamps) - k) / (stamps[-1] - stamps[k - 1]) if len(stamps) > k and stamps[-1] > stamps[k - 1] else float("nan")
    return len(pop) / (time.perf_counter() - t0), steady, pop.matrix()


def task_overhead(executor, n: int) -> float:
    """Median seconds of one no-op item sent and returned, one at a time (after a warm-up)."""
    list(executor.map(_noop, range(4)))
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        list(executor.map(_noop, [i]))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def members(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from weightspace.data.make import make_dataset
    from weightspace.runtime.ray_executor import RayExecutor

    torch.set_num_threads(1)  # each worker runs one thread; the one-at-a-time build gets the same
    gen = load_generator(args.generator)
    data = root / "data"
    make_dataset(data, family="torus,pair", count=args.members, resolution=gen.resolution, seed=7, split=(1.0, 0.0, 0.0),
                 pose="aligned", progress=False)
    B = args.batch
    rates: dict[str, list[tuple[float, float]]] = {"one-at-a-time": [], f"batched B={B}": [], "process pool 2": [], "ray 2": [],
                                                   f"pool 2, B={B}": [], f"ray 2, B={B}": []}
    peaks: dict[str, list[int]] = {"process pool 2": [], "ray 2": []}
    starts, overhead, points = [], {"process pool 2": [], "ray 2": []}, {}
    for _ in range(args.reps):
        *r, points["one"] = build(args.generator, data, root / "one", InProcessExecutor(), steps=args.steps)
        rates["one-at-a-time"].append(r)
        *r, _ = build(args.generator, data, root / "batched", InProcessExecutor(), steps=args.steps, batch=args.batch)
        rates[f"batched B={args.batch}"].append(r)
        with PeakMemory() as mem:  # workers start inside the measured build, as a CLI run starts them
            with ProcessPoolExecutorBackend(workers=2) as pool:
                *r, points["pool"] = build(args.generator, data, root / "pool", pool, steps=args.steps)
                overhead["process pool 2"].append(task_overhead(pool, args.tasks))
        rates["process pool 2"].append(r)
        peaks["process pool 2"].append(mem.peak)
        with PeakMemory() as mem:
            with RayExecutor(workers=2) as ray_ex:
                starts.append(ray_ex.start_seconds)
                *r, points["ray"] = build(args.generator, data, root / "ray", ray_ex, steps=args.steps)
                overhead["ray 2"].append(task_overhead(ray_ex, args.tasks))
        rates["ray 2"].append(r)
        peaks["ray 2"].append(mem.peak)
        # both at once: batches of B members as the executors' items (a long build on a cluster)
        with ProcessPoolExecutorBackend(workers=2) as pool:
            *r, _ = build(args.generator, data, root / "pool-b", pool, steps=args.steps, batch=B)
        rates[f"pool 2, B={B}"].append(r)
        with RayExecutor(workers=2) as ray_ex:
            *r, _ = build(args.generator, data, root / "ray-b", ray_ex, steps=args.steps, batch=B)
        rates[f"ray 2, B={B}"].append(r)
    med = {k: [statistics.median(r[j] for r in v) for j in (0, 1)] for k, v in rates.items()}
    one = med["one-at-a-time"]
    return {"generator": args.generator, "members": args.members, "steps": args.steps,
            "members_per_s": {k: v[0] for k, v in med.items()}, "ratio": {k: v[0] / one[0] for k, v in med.items()},
            "steady_members_per_s": {k: v[1] for k, v in med.items()}, "steady_ratio": {k: v[1] / one[1] for k, v in med.items()},
            "ray_equals_pool": bool(torch.equal(points["ray"], points["pool"])),
            "pool_vs_one_max_abs": float((points["pool"] - points["one"]).abs().max()),
            "task_overhead_ms": {k: 1e3 * statistics.median(v) for k, v in overhead.items()},
            "ray_start_s": statistics.median(starts),
            "peak_rss_mib": {k: statistics.median(v) / 2**20 for k, v in peaks.items()}}


def _train(kind: str, data: Path, out: Path, config: dict, processes: int) -> None:
    cfg = out.with_suffix(".json")
    cfg.write_text(json.dumps(config))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)] \
        if processes > 1 else [sys.executable]
    env = {**os.environ, "WEIGHTSPACE_QUIET": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([*launcher, "-m", "weightspace", "train", kind, "--data", str(data), "--out", str(out), "--config", str(cfg),
                    "--device", "cpu"], check=True, capture_output=True, env=env)


def ddp(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """1 against 2 gloo processes on one global batch: steps/s (from the loss log's own clock, so start-up
    is left out) and the largest relative difference of the logged losses."""
    from weightspace.data.make import make_dataset

    data = root / "ddp-data"
    make_dataset(data, family="all", count=args.ddp_shapes, resolution=32, seed=0, n_points=1024, split=(1.0, 0.0, 0.0), progress=False)
    configs: dict[str, tuple[dict, Callable[[dict], float], str]] = {
        "neural-field": ({"train": {"minutes": 30, "steps": args.ddp_steps, "points_per_shape": 256, "bank_size": 4096, "log_every": 5,
                                    "warmup_steps": 10}}, lambda r: r["elapsed_s"], "l1"),
        "latent-diffusion": ({"train": {"minutes": 30, "ae_steps": args.ddp_steps, "diffusion_steps": args.ddp_steps, "ae_batch": 8,
                                        "diffusion_batch": 16, "log_every": 5, "threads": 1}}, lambda r: r["seconds"], "loss"),
    }
    out: dict[str, Any] = {}
    for kind, (config, clock, key) in configs.items():
        rates: dict[int, list[float]] = {1: [], 2: []}
        logs: dict[int, list[dict]] = {}
        for _ in range(args.reps):
            for n in (1, 2):
                folder = root / f"{kind}-{n}"
                shutil.rmtree(folder, ignore_errors=True)
                _train(kind, data, folder, config, n)
                rows = [json.loads(line) for line in (folder / "loss_log.jsonl").read_text().splitlines() if line.strip()]
                logs[n] = rows
                stage = [r for r in rows if key in r and r.get("stage", "diffusion") == "diffusion"]
                rates[n].append((stage[-1]["step"] - stage[0]["step"]) / max(clock(stage[-1]) - clock(stage[0]), 1e-9))
        diffs = [abs(a[key] - b[key]) / abs(a[key]) for a, b in zip(logs[1], logs[2]) if key in a]
        out[kind] = {"steps_per_s": {n: statistics.median(v) for n, v in rates.items()},
                     "ratio": statistics.median(rates[2]) / statistics.median(rates[1]), "max_rel_loss_diff": max(diffs)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default="default-field")
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=50, help="no-op items timed for the per-task overhead")
    ap.add_argument("--ddp-steps", type=int, default=40)
    ap.add_argument("--ddp-shapes", type=int, default=32)
    ap.add_argument("--no-ddp", action="store_true", help="leave out the torchrun figures")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    retain_freed_memory()  # in-process builds here run as the weightspace command runs them (cli.main)
    warnings.filterwarnings("ignore", category=UserWarning)
    os.environ.setdefault("WEIGHTSPACE_QUIET", "1")
    # Ray starts its workers at nice 15 (so its raylet stays responsive); on a shared machine that hands
    # CPU to other jobs and measures the neighbours, not Ray. Workers here run at the pool's nice 0.
    os.environ.setdefault("RAY_worker_niceness", "0")
    root = Path(tempfile.mkdtemp(prefix="scaling-"))
    try:
        m = members(args, root)
        d = {} if args.no_ddp else ddp(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{m['generator']}: {m['members']} LoRA members, {m['steps']} steps, medians of {args.reps} interleaved reps, "
          f"{os.cpu_count()} CPUs, 1 torch thread per process")
    print(f"  {'':22s} {'members/s':>10s} {'ratio':>7s} {'steady/s':>9s} {'ratio':>7s}   (steady: after each worker's first member)")
    for k, v in m["members_per_s"].items():
        print(f"  {k:22s} {v:10.3f} {m['ratio'][k]:7.2f} {m['steady_members_per_s'][k]:9.3f} {m['steady_ratio'][k]:7.2f}")
    print(f"  Ray build == process pool build bit for bit: {m['ray_equals_pool']}; pool vs in-process max |diff| {m['pool_vs_one_max_abs']:.1e}")
    print("  per-task overhead (no-op round trip, ms): " + ", ".join(f"{k} {v:.1f}" for k, v in m["task_overhead_ms"].items()))
    print(f"  local Ray start (ray.init, 2 CPUs): {m['ray_start_s']:.1f} s")
    print("  peak RSS of the build, driver + its processes (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in m["peak_rss_mib"].items())
          + f" (Ray / pool {m['peak_rss_mib']['ray 2'] / m['peak_rss_mib']['process pool 2']:.2f})")
    if d:
        print(f"torchrun, gloo, {args.ddp_shapes} shapes, {args.ddp_steps} steps, one global batch:")
    for kind, v in d.items():
        print(f"  {kind:17s} steps/s 1 proc {v['steps_per_s'][1]:.2f}, 2 procs {v['steps_per_s'][2]:.2f} (x{v['ratio']:.2f}); "
              f"max relative loss difference {v['max_rel_loss_diff']:.1e}")
    if args.json:
        args.json.write_text(json.dumps({"members": m, "ddp": d}, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark: latent diffusion sampling at 32^3, 16 DDIM steps (with guidance), batch 16; seconds per shape.

Target (issue 4): <= 0.5 s per shape on the project's 2-core CPU.

Example: .venv/bin/python benchmarks/bench_latent_diffusion.py --checkpoint default --threads 1
On a CUDA machine, `--devices cpu,cuda` times both in one run and prints the speed-up of each
device over the first (the baseline).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from weightspace.generators import load_generator
from weightspace.runtime.device import pick_device

TARGET_SECONDS_PER_SHAPE = 0.5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(checkpoint: str, *, batch: int, steps: int, repeats: int, device: str = "cpu") -> dict:
    dev = pick_device(device)
    gen = load_generator(checkpoint, dev)
    families = gen.cfg.families
    names = [families[i % len(families)] for i in range(batch)]
    timings = []
    with torch.no_grad():
        gen.sdf_grid(gen.condition(family=names[:2]), [0, 1], steps=steps)  # warm-up
        _sync(dev)
        for r in range(repeats):
            t0 = time.perf_counter()
            cond = gen.condition(family=names)
            grids = gen.sdf_grid(cond, [r * batch + i for i in range(batch)], steps=steps)  # (B, R, R, R)
            _sync(dev)
            timings.append((time.perf_counter() - t0) / batch)
    return {
        "benchmark": "latent_diffusion_sampling",
        "checkpoint": checkpoint,
        "device": str(dev) if dev.type == "cpu" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "resolution": int(grids.shape[-1]),
        "batch": batch,
        "ddim_steps": steps,
        "guidance": gen.cfg.guidance,
        "threads": torch.get_num_threads(),
        "seconds_per_shape_median": statistics.median(timings),
        "seconds_per_shape_all": timings,
        "target_seconds_per_shape": TARGET_SECONDS_PER_SHAPE,
        "meets_target": statistics.median(timings) <= TARGET_SECONDS_PER_SHAPE,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="default")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--devices", default="cpu", help="comma-separated devices to time, the first being the baseline (e.g. cpu,cuda)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [bench(args.checkpoint, batch=args.batch, steps=args.steps, repeats=args.repeats, device=d)
               for d in args.devices.split(",")]
    base = results[0]["seconds_per_shape_median"]
    for r in results:
        r["speedup_vs_" + results[0]["device"].split()[0]] = base / r["seconds_per_shape_median"]
    print(json.dumps(results[0] if len(results) == 1 else results, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark: latent diffusion sampling at 32^3, 16 DDIM steps (with guidance), batch 16; seconds per shape.

Target (issue 4): <= 0.5 s per shape on the project's 2-core CPU.

Example: .venv/bin/python benchmarks/bench_latent_diffusion.py --checkpoint default --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from weightspace.generators import load_generator

TARGET_SECONDS_PER_SHAPE = 0.5


def bench(checkpoint: str, *, batch: int, steps: int, repeats: int) -> dict:
    gen = load_generator(checkpoint)
    families = gen.cfg.families
    names = [families[i % len(families)] for i in range(batch)]
    timings = []
    with torch.no_grad():
        gen.sdf_grid(gen.condition(family=names[:2]), [0, 1], steps=steps)  # warm-up
        for r in range(repeats):
            t0 = time.perf_counter()
            cond = gen.condition(family=names)
            grids = gen.sdf_grid(cond, [r * batch + i for i in range(batch)], steps=steps)  # (B, R, R, R)
            timings.append((time.perf_counter() - t0) / batch)
    return {
        "benchmark": "latent_diffusion_sampling",
        "checkpoint": checkpoint,
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
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(bench(args.checkpoint, batch=args.batch, steps=args.steps, repeats=args.repeats), indent=2))


if __name__ == "__main__":
    main()

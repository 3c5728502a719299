"""Benchmark: neural-field grid decoding (64^3, seconds) and K weight sets decoded batched vs a loop (throughput ratio).

Targets (issue 5): a 64^3 grid in <= 0.5 s on the project's CPU; the batched-vs-loop ratio is
reported (grouped `baddbmm` and `vmap` of `functional_call`, each against a loop of `sdf_grid`,
which decodes coarse to fine under no_grad, and against the same loop decoding densely).
Every figure is the median of `--repeats` timings.

Example: .venv/bin/python benchmarks/bench_neural_field.py --checkpoint default-field --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from weightspace.generators import load_generator
from weightspace.generators.neural_field.batched import batched_sdf_grid

TARGET_GRID64_SECONDS = 0.5


def _median_time(fn, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def bench(checkpoint: str, *, k: int, resolution: int, repeats: int) -> dict:
    gen = load_generator(checkpoint)
    families = gen.cfg.families or ["all"]
    z = gen.condition(family=[families[0]], seeds=[0])  # (1, d_z)
    with torch.no_grad():
        grid64, grid64_all = _median_time(lambda: gen.sdf_grid(z, [0], resolution=64), repeats)
    # K weight sets: every Linear weight of the field perturbed per set (the layers parameterisation)
    g = torch.Generator().manual_seed(0)
    params = {n: p.detach() + 0.01 * torch.randn((k, *p.shape), generator=g)
              for n, p in gen.net.named_parameters() if n.startswith(("layers.", "out."))}
    zs = gen.condition(family=[families[i % len(families)] for i in range(k)], seeds=list(range(k)))  # (K, d_z)
    out = {}
    with torch.no_grad():
        for method in ("loop", "loop_dense", "grouped", "vmap"):
            out[method], _ = _median_time(lambda m=method: batched_sdf_grid(gen, params, zs, resolution, method=m), repeats)
        ref = batched_sdf_grid(gen, params, zs, resolution, method="loop")
        max_diff = max(float((batched_sdf_grid(gen, params, zs, resolution, method=m) - ref).abs().max())
                       for m in ("grouped", "vmap"))
    return {
        "benchmark": "neural_field_decoding",
        "checkpoint": checkpoint,
        "threads": torch.get_num_threads(),
        "grid64_seconds_median": grid64,
        "grid64_seconds_all": grid64_all,
        "target_grid64_seconds": TARGET_GRID64_SECONDS,
        "meets_target": grid64 <= TARGET_GRID64_SECONDS,
        "k": k,
        "batched_resolution": resolution,
        "k_seconds_loop": out["loop"],
        "k_seconds_loop_dense": out["loop_dense"],
        "k_seconds_grouped": out["grouped"],
        "k_seconds_vmap": out["vmap"],
        "throughput_ratio_grouped_vs_loop": out["loop"] / out["grouped"],
        "throughput_ratio_vmap_vs_loop": out["loop"] / out["vmap"],
        "throughput_ratio_grouped_vs_dense_loop": out["loop_dense"] / out["grouped"],
        "throughput_ratio_vmap_vs_dense_loop": out["loop_dense"] / out["vmap"],
        "max_abs_diff_vs_loop": max_diff,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="default-field")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(bench(args.checkpoint, k=args.k, resolution=args.resolution, repeats=args.repeats), indent=2))


if __name__ == "__main__":
    main()

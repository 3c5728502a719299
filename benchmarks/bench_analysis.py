"""Benchmark of the analysis instruments: exact Betti numbers vs GUDHI, Chamfer vs brute force, GUDHI agreement corpus.

Prints one table per figure; every time is the median over repeats, measured side by side in one run.

Example: .venv/bin/python benchmarks/bench_analysis.py            (full: about 3-5 minutes on 2 cores)
         .venv/bin/python benchmarks/bench_analysis.py --quick    (no 128^3 GUDHI run, small corpus)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import gudhi
import numpy as np
from rich.console import Console
from rich.table import Table

from weightspace.analysis import persistence, topology
from weightspace.analysis import shapes as S
from weightspace.analysis.geometry import chamfer


def median_ms(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def gudhi_betti(solid: np.ndarray) -> tuple[int, int, int]:
    """Betti numbers of the same complex by GUDHI: binary filtration (0 solid, 1 background), the
    cheapest way to ask GUDHI for the Betti numbers of one solid."""
    cc = gudhi.CubicalComplex(top_dimensional_cells=np.where(solid, 0.0, 1.0))
    cc.compute_persistence()
    b = cc.persistent_betti_numbers(0.0, 0.0)
    return (int(b[0]), int(b[1]), int(b[2]))


def brute_chamfer(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> dict[str, float]:
    """Reference Chamfer by full pairwise distances (|x|^2 + |y|^2 - 2 x.y, one BLAS matmul per
    row chunk, the fastest exact O(n m) form), chunked to bound memory."""

    def directed(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        yy = (y**2).sum(1)  # (m,)
        for s in range(0, len(x), chunk):
            xs = x[s : s + chunk]
            d2 = (xs**2).sum(1)[:, None] + yy[None, :] - 2.0 * xs @ y.T  # (chunk, m)
            out[s : s + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
        return out

    d_ab, d_ba = directed(a, b), directed(b, a)
    return {"chamfer_l1": (d_ab.mean() + d_ba.mean()) / 2, "chamfer_l2": ((d_ab**2).mean() + (d_ba**2).mean()) / 2}


def bench_betti(resolutions: list[int], repeats: int, gudhi_repeats: int, console: Console) -> None:
    rng = np.random.default_rng(7)
    # One CSG solid (with handles and a cavity), sampled at every resolution.
    f = S.union(S.known_shapes()["double_torus"][0], S.shell((0.0, 0.0, 0.55), 0.3, 0.1), S.ball((0.6, 0.6, -0.6), 0.2))
    f = S.rotated(f, S.random_rotation(rng))
    table = Table(title="Betti numbers of one solid: exact (ours) vs GUDHI cubical persistence, same complex")
    for col in ("grid", "ours ms", "GUDHI ms", "ratio", "GUDHI sdf-filtration ms", "ours betti", "GUDHI betti"):
        table.add_column(col)
    for r in resolutions:
        grid = S.sdf_grid(f, r)
        solid = grid < 0
        t_ours, ours = median_ms(lambda solid=solid: topology(solid).betti, repeats)
        t_gudhi, theirs = median_ms(lambda solid=solid: gudhi_betti(solid), gudhi_repeats)
        t_sdf, _ = median_ms(lambda grid=grid: persistence.diagrams(grid), 1)
        table.add_row(
            f"{r}^3", f"{t_ours:.1f}", f"{t_gudhi:.0f}", f"{t_gudhi / t_ours:.0f}x", f"{t_sdf:.0f}", str(ours), str(theirs)
        )
    console.print(table)


def bench_robust(repeats: int, console: Console) -> None:
    table = Table(title="Persistence at 32^3 (truncated SDF, +-0.2)")
    for col in ("what", "ms"):
        table.add_column(col)
    grid = np.clip(S.sdf_grid(S.known_shapes()["linked_rings"][0], 32), -0.2, 0.2)
    t_rb, _ = median_ms(lambda: persistence.robust_betti(grid), repeats)
    t_d, _ = median_ms(lambda: persistence.diagrams(grid), repeats)
    t_t, _ = median_ms(lambda: topology(grid), repeats)
    table.add_row("robust_betti (quantised, cropped)", f"{t_rb:.1f}")
    table.add_row("diagrams (full SDF filtration)", f"{t_d:.1f}")
    table.add_row("topology (exact, for scale)", f"{t_t:.2f}")
    console.print(table)


def bench_chamfer(repeats: int, console: Console) -> None:
    rng = np.random.default_rng(0)
    table = Table(title="Chamfer distance (KD-tree, ours) vs brute force")
    for col in ("points", "ours ms", "brute ms", "ratio", "|diff| l1"):
        table.add_column(col)
    for n, brute in ((2_000, True), (10_000, False)):
        a, b = rng.uniform(-1, 1, (n, 3)), rng.uniform(-1, 1, (n, 3))
        t_ours, ours = median_ms(lambda a=a, b=b: chamfer(a, b), repeats)
        if brute:
            t_brute, ref = median_ms(lambda a=a, b=b: brute_chamfer(a, b), max(1, repeats // 2))
            diff = abs(ours["chamfer_l1"] - ref["chamfer_l1"])
            table.add_row(f"{n} vs {n}", f"{t_ours:.1f}", f"{t_brute:.0f}", f"{t_brute / t_ours:.1f}x", f"{diff:.1e}")
        else:
            table.add_row(f"{n} vs {n}", f"{t_ours:.1f}", "-", "-", "-")
    console.print(table)


def bench_corpus(n32: int, n64: int, console: Console) -> None:
    rng = np.random.default_rng(1)
    table = Table(title="Agreement with GUDHI on random CSG solids (unions/differences of balls, boxes, tori, shells)")
    for col in ("grid", "solids", "agree", "distinct betti", "with b1>0", "with b2>0"):
        table.add_column(col)
    for r, count in ((32, n32), (64, n64)):
        agree, seen, handles, cavities = 0, set(), 0, 0
        for _ in range(count):
            solid = S.random_solid(rng, r) < 0
            b = topology(solid).betti
            agree += b == gudhi_betti(solid)
            seen.add(b)
            handles += b[1] > 0
            cavities += b[2] > 0
        table.add_row(f"{r}^3", str(count), str(agree), str(len(seen)), str(handles), str(cavities))
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip 128^3 GUDHI and shrink the corpus")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    console = Console()
    resolutions = [64] if args.quick else [64, 128]
    bench_betti(resolutions, args.repeats, 1 if args.quick else 3, console)
    bench_robust(args.repeats, console)
    bench_chamfer(args.repeats, console)
    bench_corpus(*((20, 4) if args.quick else (170, 30)), console)


if __name__ == "__main__":
    main()

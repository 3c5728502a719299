"""Decode a straight path in Delta W between two LoRA population members at a few t and render it in one row.

Blue: the robust Betti numbers of the start; red: others. The decode seed is 0 (the weight-path study's).
Example (docs/figures/issue17/weight-path-default-pretzel.png):
  .venv/bin/python benchmarks/weight_path_sheet.py default results/findings/default/subspace-weight/population \\
      pretzel-00003 pretzel-00001 path.png --t 0,0.25,0.4,0.5,0.6,0.75,1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from weightspace.analysis.measure import measure
from weightspace.decode.points import decode_points
from weightspace.generators.registry import load_generator
from weightspace.report.gallery import render_gallery
from weightspace.space.store import Population


def main(checkpoint: str, population: Path, a: str, b: str, out: Path, ts: list[float]) -> None:
    gen = load_generator(checkpoint)
    pop = Population(population)
    param = pop.frame.build(gen, what="population")
    index = {str(r["id"]): i for i, r in enumerate(pop.rows)}
    with torch.no_grad():
        pa, pb = (param.to_delta(pop.point(index[i])) for i in (a, b))  # (D_delta,) each
    delta = param.delta_parameterisation()
    points = torch.stack([(1 - t) * pa + t * pb for t in ts])  # (T, D_delta)
    grids = decode_points(gen, delta, points, [0] * len(ts)).numpy()  # (T, R, R, R)
    shapes = [measure(g, seed=0) for g in grids]
    render_gallery([list(grids)], out, row_labels=["Delta W path"], titles=[[f"t={t:.2f} {s.robust}" for t, s in zip(ts, shapes)]],
                   ok=[[s.robust == shapes[0].robust for s in shapes]], title=f"{a} -> {b} (lerp of Delta W, decode seed 0)")
    print([s.robust for s in shapes])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("population", type=Path)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("out", type=Path)
    ap.add_argument("--t", default="0,0.25,0.5,0.75,1", help="comma-separated t")
    args = ap.parse_args()
    torch.set_num_threads(1)
    main(args.checkpoint, args.population, args.a, args.b, args.out, [float(t) for t in args.t.split(",")])

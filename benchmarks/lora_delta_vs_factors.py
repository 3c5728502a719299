"""LoRA subspaces in factor form (A, B) against delta form (Delta W = s B A) on one population (issue 15).

The factors are not identifiable (BA = (BR)(R^-1 A)) and every member starts from its own random A,
so a PCA of factor points may spend its components on the starts rather than on the shapes.
(1) Variance: explained-variance ratios of the first 4 components of the whole population's PCA
    and of each family's, in both forms, and the share of the factor-form variance that sits in
    the A coordinates (against B).
(2) Sample fidelity: per family, a k-component subspace of its members in each form; S Gaussian
    samples per seed (z_i ~ N(0, sigma_i^2)) are decoded and measured: robust Betti numbers equal
    to the examples' (their mode), validity (not empty, not cut by the box), both, and Chamfer-L1 to
    the nearest decoded example and to the base shape (Delta W = 0), and the share of samples nearer
    an example than the base shape; Wilson 95% intervals over all seeds, and the rate per seed. The
    subspace mean is decoded too (in factor form it is B_bar A_bar, not the mean Delta W).
Writes results.json and one PNG gallery per family (examples; per form the mean, then samples).

Example (the figures in docs/lora-delta.md; about 8.5 minutes for the population, 1.5 for this, one thread):
  weightspace data make --family torus,pretzel,pair --count 24 --seed 4242 --split 1,0,0 --out runs/delta-study/data
  OMP_NUM_THREADS=1 weightspace population build --checkpoint default-field --parameterisation lora \\
      --data runs/delta-study/data --out runs/delta-study/pop
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lora_delta_vs_factors.py --population runs/delta-study/pop \\
      --out runs/delta-study/bench
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightspace.analysis.measure import chamfer, finite_mean, measure
from weightspace.analysis.rates import format_rate, rate
from weightspace.decode.points import decode_points
from weightspace.generators.registry import load_generator
from weightspace.report.gallery import render_gallery
from weightspace.runtime.io import atomic_write_json
from weightspace.runtime.seeding import point_seeds
from weightspace.space.lora import LORA_FORMS, factors_to_delta
from weightspace.space.store import Population
from weightspace.space.subspace import delta_frame, fit_subspace_matrix

VARIANCE_K = 4


def variance_part(pop: Population, points: dict[str, torch.Tensor], families: dict[str, list[int]]) -> dict[str, Any]:
    """Explained-variance ratios (first VARIANCE_K components) per form, whole and per family; A vs B share."""
    var = points["factors"].double().var(dim=0)  # (D_factors,) per-coordinate variance
    layout = pop.frame.layout
    a_mask = layout.mask([e.name for e in layout.entries if e.name.endswith(".lora_A")])
    out: dict[str, Any] = {"factor_variance_share_A": float(var[a_mask].sum() / var.sum()),
                           "factor_variance_share_B": float(var[~a_mask].sum() / var.sum()), "explained": {}}
    groups = {"all": list(range(len(pop))), **families}
    for group, idx in groups.items():
        k = min(VARIANCE_K, len(idx) - 1)
        out["explained"][group] = {}
        for form in LORA_FORMS:
            sub = _fit(pop, points[form][idx], k, form)
            out["explained"][group][form] = [float(v) for v in sub.explained_variance_ratio]
    return out


def _fit(pop: Population, x: torch.Tensor, k: int, form: str):
    return fit_subspace_matrix(x, k, frame=delta_frame(pop.frame) if form == "delta" else pop.frame, solver="exact")


def fidelity_part(pop: Population, gen, points: dict[str, torch.Tensor], families: dict[str, list[int]], *, k: int,
                  samples: int, seeds: list[int], out: Path) -> dict[str, Any]:
    """Per family and form: decode subspace samples and measure them against the family's decoded examples."""
    factor_param = pop.frame.build(gen, what="population")
    base = measure(decode_points(gen, factor_param, factor_param.base_point()[None], point_seeds(0, 1))[0].numpy(), seed=0)
    result: dict[str, Any] = {"base_robust": list(base.robust)}
    for family, idx in families.items():
        ex_seeds = point_seeds(0, len(idx))
        ex_grids = decode_points(gen, factor_param, points["factors"][idx], ex_seeds).numpy()  # (K, R, R, R)
        examples = [measure(g, seed=0) for g in ex_grids]
        target = Counter(s.robust for s in examples).most_common(1)[0][0]
        ex_pts = [s.points for s in examples]
        result[family] = {"K": len(idx), "k": k, "examples_robust": [list(s.robust) for s in examples],
                          "target_robust": list(target), "forms": {}}
        gallery = {"examples": (list(ex_grids), [str(s.robust) for s in examples], [s.robust == target for s in examples])}
        for form in LORA_FORMS:
            sub = _fit(pop, points[form][idx], k, form)
            param = sub.frame.build(gen, what="subspace")
            mean_grid = decode_points(gen, param, sub.mean[None], point_seeds(0, 1))[0].numpy()  # (R, R, R)
            mean_shape = measure(mean_grid, seed=0)
            gallery[form] = ([mean_grid], [f"mean {mean_shape.robust}"], [mean_shape.robust == target and mean_shape.valid])
            rows = []
            for s in seeds:
                pts = sub.sample(samples, seed=s)  # (S, D)
                grids = decode_points(gen, param, pts, point_seeds(s, samples)).numpy()  # (S, R, R, R)
                for i, g in enumerate(grids):
                    m = measure(g, seed=s)
                    near, to_base = min(chamfer(m.points, e) for e in ex_pts), chamfer(m.points, base.points)
                    rows.append({"seed": s, "robust": list(m.robust), "kept": m.robust == target, "valid": m.valid,
                                 "chamfer_nearest": near if np.isfinite(near) else None,  # None: empty
                                 "chamfer_base": to_base if np.isfinite(to_base) else None,
                                 "nearer_example_than_base": bool(near < to_base)})
                    if s == seeds[0] and i < len(idx) - 1:
                        gallery[form][0].append(g)
                        gallery[form][1].append(str(m.robust))
                        gallery[form][2].append(m.robust == target and m.valid)
            result[family]["forms"][form] = {
                "dimension": sub.frame.layout.size,
                "explained_variance_ratio": [float(v) for v in sub.explained_variance_ratio],
                "kept": rate(r["kept"] for r in rows), "valid": rate(r["valid"] for r in rows),
                "kept_and_valid": rate(r["kept"] and r["valid"] for r in rows),
                "kept_per_seed": {str(s): rate(r["kept"] for r in rows if r["seed"] == s)["rate"] for s in seeds},
                "chamfer_nearest_mean": finite_mean([r["chamfer_nearest"] for r in rows]),
                "chamfer_base_mean": finite_mean([r["chamfer_base"] for r in rows]),
                "nearer_example_than_base": rate(r["nearer_example_than_base"] for r in rows),
                "mean_point": {"robust": list(mean_shape.robust), "kept": mean_shape.robust == target,
                               "valid": mean_shape.valid},
                "samples": rows,
            }
        labels = list(gallery)
        render_gallery([gallery[n][0] for n in labels], out / f"gallery-{family}.png", row_labels=labels,
                       titles=[gallery[n][1] for n in labels], ok=[gallery[n][2] for n in labels],
                       title=f"{family}: decoded examples; each {k}-d subspace's mean, then seed-{seeds[0]} samples "
                             f"(blue: robust Betti = {tuple(target)} and valid)")
    return result


def print_tables(res: dict[str, Any]) -> None:
    v = res["variance"]
    print(f"factor-form variance in A: {v['factor_variance_share_A']:.3f}, in B: {v['factor_variance_share_B']:.3f}")
    print(f"{'group':<8} {'form':<8} explained variance ratio of components 1..{VARIANCE_K} (cumulative)")
    for group, forms in v["explained"].items():
        for form, ratios in forms.items():
            cum = np.cumsum(ratios)
            print(f"{group:<8} {form:<8} " + " ".join(f"{r:.3f}" for r in ratios) + "   (" + " ".join(f"{c:.3f}" for c in cum) + ")")
    print()
    fid = res["fidelity"]
    print(f"base point (Delta W = 0) decodes to robust Betti {tuple(fid['base_robust'])}")
    print(f"{'family':<8} {'form':<8} {'D':>6}  {'robust Betti = examples [95%]':<28} {'valid [95%]':<28} "
          f"{'both [95%]':<28} {'CD nn':>6} {'CD base':>7} {'nearer example than base':<28} {'kept per seed':<26} mean")
    for family, f in fid.items():
        if family == "base_robust":
            continue
        for form, r in f["forms"].items():
            per_seed = " ".join(f"{x:.2f}" for x in r["kept_per_seed"].values())
            mp = r["mean_point"]
            print(f"{family:<8} {form:<8} {r['dimension']:>6}  {format_rate(r['kept']):<28} {format_rate(r['valid']):<28} "
                  f"{format_rate(r['kept_and_valid']):<28} {r['chamfer_nearest_mean']:>6.3f} {r['chamfer_base_mean']:>7.3f} "
                  f"{format_rate(r['nearer_example_than_base']):<28} {per_seed:<26} "
                  f"{tuple(mp['robust'])} {'ok' if mp['kept'] and mp['valid'] else 'lost'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--population", default="runs/delta-study/pop", help="a LoRA population in factor form")
    ap.add_argument("--out", default="runs/delta-study/bench")
    ap.add_argument("--k", type=int, default=3, help="components of each family's subspace (< members per family)")
    ap.add_argument("--samples", type=int, default=16, help="samples per seed, family and form")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pop = Population(args.population)
    gen = load_generator(pop.frame.checkpoint)
    factors = pop.matrix()  # (N, D_factors)
    points = {"factors": factors, "delta": factors_to_delta(factors, pop.frame.layout)}  # delta: (N, D_delta), exact
    families: dict[str, list[int]] = {}
    for i, row in enumerate(pop.rows):
        families.setdefault(row["source"]["family"], []).append(i)
    res: dict[str, Any] = {"population": str(args.population), "checkpoint": pop.frame.checkpoint, "n": len(pop),
                           "parameterisation": pop.frame.parameterisation, "k": args.k, "samples_per_seed": args.samples,
                           "seeds": [int(s) for s in args.seeds.split(",")], "threads": args.threads}
    res["variance"] = variance_part(pop, points, families)
    res["fidelity"] = fidelity_part(pop, gen, points, families, k=args.k, samples=args.samples, seeds=res["seeds"], out=out)
    res["wall_seconds"] = time.perf_counter() - t0
    res["cpu_seconds"] = time.process_time()
    print_tables(res)
    atomic_write_json(out / "results.json", res)
    print(f"\n{out / 'results.json'}; galleries {out}/gallery-*.png; {res['wall_seconds']:.0f} s wall, "
          f"{res['cpu_seconds']:.0f} s CPU")


if __name__ == "__main__":
    main()

"""One cell of the subspace study: K example points of one family, one seed -> decoded kinds of points, measured.

Kinds of point, each decoded under one noise seed and measured against the decoded examples:

- `examples`: the K members (LoRA delta points of population members, or encoded conditions);
- `subspace`: S samples of the PCA subspace's Gaussian, z_i ~ N(0, (temperature sigma_i)^2), i < k;
- `random`: a uniformly random direction in the full point space, at the subspace sample's distance;
- `full_gaussian`: a direction drawn from the full-rank diagonal Gaussian fitted to the members
  (per-coordinate variance: the same mean and total variance as the members), at the same distance;
- `condition_noise`: isotropic noise on an example's condition, at the same distance relative to the
  examples' spread (the conditions' spread against the points').

Sample i of every baseline sits at the distance of subspace sample i from the mean, so the kinds
differ only in direction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightspace.analysis.geometry import iou
from weightspace.analysis.measure import Shape, chamfer, measure
from weightspace.analysis.rates import rate
from weightspace.decode.mesh import save_mesh
from weightspace.decode.points import decode_points
from weightspace.experiments.common import mismatches, topology_check
from weightspace.experiments.subspace_figures import gate_thresholds, kind_summary, precision_recall, support_score
from weightspace.generators.protocol import Generator
from weightspace.runtime.results import write_csv, write_results
from weightspace.runtime.seeding import derive_seed, item_generator, item_rng
from weightspace.space.frame import Frame
from weightspace.space.parameterisation import Parameterisation
from weightspace.space.subspace import fit_subspace_matrix

KINDS = ("subspace", "random", "full_gaussian", "condition_noise")


@dataclass
class Cell:
    """What one cell stands on: its examples as points in two spaces, and the shapes they stand for."""

    family: str
    K: int
    k: int
    seed: int
    ids: list[str]
    targets: list[np.ndarray]  # the K examples' SDF grids, (R, R, R) each
    param: Parameterisation  # the space the subspace is learned in (lora delta, or condition)
    x: torch.Tensor  # (K, D) the examples in `param`
    cond_param: Parameterisation
    cond_x: torch.Tensor  # (K, D_c) the examples' encoded conditions

    @property
    def name(self) -> str:
        return f"{self.family}-K{self.K}-s{self.seed}"


def _unit(d: int, seed: int, *keys: Any) -> torch.Tensor:
    g = torch.randn(d, generator=item_generator(seed, *keys), dtype=torch.float64)
    return (g / g.norm()).float()


def baseline_points(cell: Cell, sub: Any, x: torch.Tensor, cond_x: torch.Tensor, samples: torch.Tensor,
                    seed: int) -> dict[str, torch.Tensor]:
    """The three baselines, sample i at subspace sample i's distance from the mean ((S, D) each; (S, D_c) for noise)."""
    S, D = samples.shape
    radius = (samples - sub.mean).double().norm(dim=1)  # (S,)
    mean = sub.mean.float()
    rand = torch.stack([mean + radius[i].float() * _unit(D, seed, "random-direction", i) for i in range(S)])  # (S, D)
    # full-rank diagonal Gaussian of the members: z ~ N(0, diag(var_j)), E|z|^2 = the members' total variance
    std = x.double().var(dim=0, unbiased=True).sqrt()  # (D,)
    gauss = []
    for i in range(S):
        z = torch.randn(D, generator=item_generator(seed, "full-gaussian", i), dtype=torch.float64) * std
        gauss.append(mean + (radius[i] * z / z.norm().clamp_min(1e-30)).float())
    spread = float((x - sub.mean).double().norm(dim=1).mean())
    c_mean = cond_x.mean(0)
    c_spread = float((cond_x - c_mean).double().norm(dim=1).mean())
    pick = item_rng(seed, "noise-example").integers(0, cond_x.shape[0], size=S)
    noisy = torch.stack([cond_x[pick[i]] + float(radius[i] / max(spread, 1e-12) * c_spread)
                         * _unit(cond_x.shape[1], seed, "condition-noise", i) for i in range(S)])  # (S, D_c)
    return {"random": rand, "full_gaussian": torch.stack(gauss), "condition_noise": noisy}


def run_cell(gen: Generator, cell: Cell, folder: Path, *, samples: int, temperature: float, gate_factor: float,
             volume_threshold: float, checkpoint: str, meshes: bool) -> dict[str, Any]:
    """Decode and measure one cell into `folder` (results.json, samples.csv, meshes); returns its results.

    A cell whose examples do not reproduce their shapes (fewer than k + 1 decode to their own
    grid's robust Betti numbers) is recorded as refused, with the check behind it.
    """
    seed, param, cond_param = cell.seed, cell.param, cell.cond_param
    folder.mkdir(parents=True, exist_ok=True)
    dseed = derive_seed(seed, "decode") % 2**31
    R = int(cell.targets[0].shape[-1])  # decode at the shapes' resolution, which may not be the generator's
    ex_all = decode_points(gen, param, cell.x, [dseed] * cell.x.shape[0], resolution=R).numpy()  # (K, R, R, R)
    ex_shapes_all = [measure(g, seed=seed, volume_threshold=volume_threshold) for g in ex_all]
    clean_all = [measure(t, seed=seed) for t in cell.targets]
    check = topology_check(cell.ids, [s.robust for s in ex_shapes_all], [c.robust for c in clean_all])
    for c, g, t in zip(check, ex_all, cell.targets):
        c["iou"] = float(iou(g, t))
    head = {"checkpoint": checkpoint, "generator": gen.kind, "family": cell.family, "K": cell.K, "k": cell.k,
            "seed": seed, "samples": samples, "parameterisation": param.name, "examples_check": check,
            "member_fidelity": {"mean_iou": float(np.mean([c["iou"] for c in check])),
                                "betti_match": _ci(rate(c["ok"] for c in check))}}
    keep = [i for i, c in enumerate(check) if c["ok"]]
    if len(keep) < cell.k + 1:
        why = (f"only {len(keep)} of {len(check)} examples decode to their own shape's robust Betti numbers "
               f"({mismatches(check)}); a {cell.k}-dimensional subspace needs {cell.k + 1}")
        res = {**head, "refused": why}
        write_results(folder, res)
        return res
    ids = [cell.ids[i] for i in keep]
    x, cond_x, ex_grids = cell.x[keep], cell.cond_x[keep], ex_all[keep]
    sub = fit_subspace_matrix(x, cell.k, frame=Frame.of(param, checkpoint))
    sub.save(folder / "subspace")
    cond_sub = sub if param is cond_param else fit_subspace_matrix(cond_x, cell.k, frame=Frame.of(cond_param))

    smp = sub.sample(samples, seed=seed, temperature=temperature).float()  # (S, D)
    groups = {"examples": (param, x), "subspace": (param, smp),
              **{name: (cond_param if name == "condition_noise" else param, pts)
                 for name, pts in baseline_points(cell, sub, x, cond_x, smp, seed).items()}}
    shapes: dict[str, list[Shape]] = {}
    grids: dict[str, np.ndarray] = {}
    for name, (p, pts) in groups.items():
        g = ex_grids if name == "examples" else decode_points(gen, p, pts, [dseed] * pts.shape[0], resolution=R).numpy()  # (n, R, R, R)
        grids[name] = g
        shapes[name] = [measure(gi, seed=seed, volume_threshold=volume_threshold) for gi in g]

    examples = shapes["examples"]
    target_robust = Counter(s.robust for s in examples).most_common(1)[0][0]
    target_exact = Counter(s.betti for s in examples).most_common(1)[0][0]
    ex_pts = [s.points for s in examples]
    ex_w, ex_c = x.double(), cond_x.double()
    w_scale = float(torch.cdist(ex_w, ex_w).fill_diagonal_(float("inf")).min(dim=1).values.median())

    support = {name: support_score(cond_sub if name == "condition_noise" else sub, pts) for name, (_, pts) in groups.items()}
    thr_support, thr_eik = gate_thresholds(support["examples"], support_score(cond_sub, cond_x), examples, k=cell.k,
                                           temperature=temperature, factor=gate_factor)
    rows: list[dict[str, Any]] = []
    for name, (_, pts) in groups.items():
        noise = name == "condition_noise"
        centre, ref = (ex_c.mean(0), ex_c) if noise else (sub.mean.double(), ex_w)
        for i, s in enumerate(shapes[name]):
            near = [chamfer(s.points, e) for e in ex_pts]
            j = int(np.argmin(near))
            dw = (ref - pts[i].double()).norm(dim=1)
            flag_support = bool(support[name][i] > thr_support["condition" if noise and param is not cond_param else "own"])
            flag_eik = bool(s.eikonal > thr_eik)
            rows.append({
                "family": cell.family, "K": cell.K, "seed": seed, "kind": name, "index": i,
                "radius": float((pts[i].double() - centre).norm()), **s.row(),
                "kept_exact": s.betti == target_exact, "kept_robust": s.robust == target_robust,
                "empty": s.empty, "touches_box": s.touches_box, "chamfer_nearest_example": near[j], "nearest_example": ids[j],
                "weight_nearest_example": float(dw.min()),
                "weight_novelty_ratio": float(dw.min()) / w_scale if w_scale > 0 and not noise else float("nan"),
                "support_score": float(support[name][i]), "gate_support": flag_support, "gate_eikonal": flag_eik,
                "gate": flag_support or flag_eik, "failed": (not s.valid) or s.robust != target_robust,
            })
    write_csv(folder / "samples.csv", rows)
    summary = {name: kind_summary([r for r in rows if r["kind"] == name], shapes[name], ex_pts) for name in groups}
    evaluated = [r for r in rows if r["kind"] != "examples"]
    gate = {key: precision_recall([r[key] for r in evaluated], [r["failed"] for r in evaluated])
            for key in ("gate_support", "gate_eikonal", "gate")}
    gate["thresholds"] = {"support": thr_support, "eikonal": thr_eik, "factor": gate_factor}
    if meshes:
        for name in groups:
            for i, gi in enumerate(grids[name]):
                save_mesh(gi, folder / "meshes" / f"{name}-{i:03d}.ply")
    res = {**head, "dimension": int(x.shape[1]), "K_used": len(ids),
           "explained_variance_ratio": [float(v) for v in sub.explained_variance_ratio],
           "examples_topology": {"robust": list(target_robust), "exact": list(target_exact),
                                 "per_example_robust": [list(s.robust) for s in examples],
                                 "clean_robust": [list(clean_all[i].robust) for i in keep]},
           "counts": {name: counts([r for r in rows if r["kind"] == name]) for name in groups},
           "topology_kept": {name: _ci(rate(r["kept_robust"] for r in rows if r["kind"] == name)) for name in groups},
           "summary": summary, "gate": gate, "examples_dropped": [c["id"] for c in check if not c["ok"]],
           "decodes": len(check) + len(KINDS) * samples}
    write_results(folder, res)
    return res


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Successes behind a kind's rates (pooled over cells by adding)."""
    return {"n": len(rows), "kept": sum(bool(r["kept_robust"]) for r in rows), "valid": sum(bool(r["valid"]) for r in rows),
            "kept_and_valid": sum(bool(r["kept_robust"]) and bool(r["valid"]) for r in rows),
            "gate_tp": sum(r["gate"] and r["failed"] for r in rows), "gate_fp": sum(r["gate"] and not r["failed"] for r in rows),
            "gate_fn": sum(r["failed"] and not r["gate"] for r in rows)}


def _ci(r: dict[str, Any]) -> dict[str, Any]:
    """A rate of analysis.rates.rate in the results' form {rate, ci_low, ci_high, n, successes}."""
    return {"rate": r["rate"], "ci_low": r["low"], "ci_high": r["high"], "n": r["n"], "successes": r["successes"]}

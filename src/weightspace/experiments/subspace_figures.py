"""The subspace study's figures: the validity gate, per-kind summaries, pooling cells into rates with Wilson intervals, the claim-2 plot."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import chi2

from weightspace.analysis.measure import Shape, chamfer, finite_mean
from weightspace.analysis.sets import novelty
from weightspace.space.subspace import Subspace


def support_score(sub: Subspace, points: torch.Tensor) -> np.ndarray:
    """Distance from a subspace's support in units of its spread: sqrt(mean_i (z_i / sigma_i)^2 + (|residual| / sigma_k)^2).

    z = projection coordinates, residual = the part of the point off the subspace. (B,) float64.
    """
    z = sub.project(points.to(sub.mean.dtype))  # (B, k)
    resid = (points.to(sub.mean.dtype) - sub.reconstruct(z)).double().norm(dim=1)  # (B,)
    sigma = sub.sigma.double().clamp_min(1e-12)
    inside = ((z.double() / sigma) ** 2).mean(dim=1)
    return torch.sqrt(inside + (resid / sigma.min()) ** 2).numpy()


def gate_thresholds(support_examples: np.ndarray, cond_support_examples: np.ndarray, examples: list[Shape], *, k: int,
                    temperature: float, factor: float) -> tuple[dict[str, float], float]:
    """The gate's thresholds, calibrated on the examples: support score ({"own": the study's space,
    "condition": condition space}) and SDF eikonal residual, each `factor` x the examples' largest."""
    # a subspace sample at temperature 1 has score^2 ~ chi2_k / k: its 99th percentile is a floor, so
    # ordinary samples pass even when K examples happen to sit close to the mean
    floor = float(np.sqrt(chi2.ppf(0.99, k) / k)) * max(temperature, 1.0)
    thr_support = {"own": max(factor * float(support_examples.max()), floor),
                   "condition": max(factor * float(cond_support_examples.max()), floor)}
    thr_eik = factor * max(s.eikonal for s in examples if np.isfinite(s.eikonal)) if any(
        np.isfinite(s.eikonal) for s in examples) else float("inf")
    return thr_support, thr_eik


def kind_summary(rows: list[dict[str, Any]], shapes: list[Shape], ex_pts: list[np.ndarray | None]) -> dict[str, Any]:
    n = len(rows)
    pts = [s.points for s in shapes]
    pair = [chamfer(pts[i], pts[j]) for i in range(n) for j in range(i + 1, n)]
    valid_pts = [p for p in pts if p is not None]
    ref = [p for p in ex_pts if p is not None]
    shape_novelty = float("nan")
    if valid_pts and len(ref) >= 2:
        nov = novelty(valid_pts, ref, metric="chamfer_l1")
        ratio = np.asarray(nov["ratio"], dtype=np.float64)
        shape_novelty = float(np.nanmean(ratio)) if np.isfinite(ratio).any() else float("nan")
    return {
        "n": n,
        "topology_kept_exact": float(np.mean([r["kept_exact"] for r in rows])),
        "topology_kept_robust": float(np.mean([r["kept_robust"] for r in rows])),
        "validity": float(np.mean([r["valid"] for r in rows])),
        "kept_and_valid": float(np.mean([r["kept_robust"] and r["valid"] for r in rows])),
        "empty": float(np.mean([r["empty"] for r in rows])),
        "local_variation": finite_mean([r["chamfer_nearest_example"] for r in rows]),
        "diversity": finite_mean(pair),
        "novelty_shape_ratio": shape_novelty,
        "novelty_weight_ratio": finite_mean([r["weight_novelty_ratio"] for r in rows]),
        "mean_radius": finite_mean([r["radius"] for r in rows]),
        "failed": float(np.mean([r["failed"] for r in rows])),
    }


def precision_recall(pred: list[bool], truth: list[bool]) -> dict[str, float]:
    tp = sum(p and t for p, t in zip(pred, truth))
    fp = sum(p and not t for p, t in zip(pred, truth))
    fn = sum(t and not p for p, t in zip(pred, truth))
    return {"precision": tp / (tp + fp) if tp + fp else float("nan"), "recall": tp / (tp + fn) if tp + fn else float("nan"),
            "flagged": int(tp + fp), "failures": int(tp + fn), "n": len(pred)}


# --- pooling cells (families x K x seeds) into rates with intervals ---------------------------------------
POOLED_MEANS = ("topology_kept_exact", "empty", "local_variation", "diversity", "novelty_shape_ratio", "novelty_weight_ratio",
                "mean_radius")
CLAIM2_RULE = ("on kept-and-valid rates with Wilson 95% intervals: supported when the subspace's interval lies above 0.5 "
               "and above a random direction's at the same distance; 'kept, not specific' when it lies above 0.5 but "
               "overlaps the random direction's; not supported when it lies below 0.5 or below the random direction's; "
               "otherwise unclear at this size")


def ci_of(successes: int, n: int) -> dict[str, Any]:
    """{rate, ci_low, ci_high, n, successes}: a Wilson 95% interval (analysis.rates)."""
    from weightspace.analysis.rates import wilson_interval

    low, high = wilson_interval(int(successes), int(n))
    return {"rate": successes / n if n else 0.0, "ci_low": low, "ci_high": high, "n": int(n), "successes": int(successes)}


def _weighted(cells: list[dict[str, Any]], kind: str, key: str) -> float:
    num = den = 0.0
    for c in cells:
        s = c["summary"][kind]
        v = s.get(key)
        if v is not None and np.isfinite(v):
            num, den = num + v * s["n"], den + s["n"]
    return num / den if den else float("nan")


def _kind_block(cells: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    tot = {key: sum(c["counts"][kind][key] for c in cells) for key in ("n", "kept", "valid", "kept_and_valid")}
    return {"kept": ci_of(tot["kept"], tot["n"]), "valid": ci_of(tot["valid"], tot["n"]),
            "kept_and_valid": ci_of(tot["kept_and_valid"], tot["n"]), "cells": len(cells),
            **{key: _weighted(cells, kind, key) for key in ("local_variation", "diversity", "novelty_shape_ratio")}}


def claim2_verdict(blocks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The verdict on claim 2 from one group's kind blocks (see CLAIM2_RULE)."""
    sub, rnd = blocks["subspace"]["kept_and_valid"], blocks["random"]["kept_and_valid"]
    if sub["ci_high"] < 0.5 or sub["ci_high"] < rnd["ci_low"]:
        verdict = "not supported"
    elif sub["ci_low"] >= 0.5:
        verdict = "supported" if sub["ci_low"] > rnd["ci_high"] else "kept, not specific"
    else:
        verdict = "unclear at this size"
    return {"verdict": verdict, **{k: b["kept_and_valid"] for k, b in blocks.items()}}


def pool_cells(cells: list[dict[str, Any]], kinds: tuple[str, ...]) -> dict[str, Any]:
    """The study's pooled figures from its finished cells (refused ones are counted in `cells_refused` only)."""
    done = [c for c in cells if "refused" not in c]
    names = ("examples", *kinds)
    summary = {}
    for kind in names:
        tot = {key: sum(c["counts"][kind][key] for c in done) for key in ("n", "kept", "valid", "kept_and_valid")}
        summary[kind] = {"n": tot["n"], "topology_kept_robust": tot["kept"] / tot["n"], "validity": tot["valid"] / tot["n"],
                         "kept_and_valid": tot["kept_and_valid"] / tot["n"],
                         "failed": 1 - tot["kept_and_valid"] / tot["n"], **{k: _weighted(done, kind, k) for k in POOLED_MEANS}}
    families = list(dict.fromkeys(c["family"] for c in done))
    by_family = {f: {kind: _kind_block([c for c in done if c["family"] == f], kind) for kind in names} for f in families}
    table = []
    for f in families:
        for K in sorted({c["K"] for c in done if c["family"] == f}):
            group = [c for c in done if c["family"] == f and c["K"] == K]
            for kind in names:
                table.append({"family": f, "K": K, "k": group[0]["k"], "seeds": [c["seed"] for c in group], "kind": kind,
                              **_kind_block(group, kind)})
    gate_n = {key: sum(c["counts"][k][key] for c in done for k in kinds) for key in ("gate_tp", "gate_fp", "gate_fn")}
    tp, fp, fn = gate_n["gate_tp"], gate_n["gate_fp"], gate_n["gate_fn"]
    all_blocks = {kind: _kind_block(done, kind) for kind in names}
    return {
        "topology_kept": {kind: all_blocks[kind]["kept"] for kind in names},
        "validity": {kind: all_blocks[kind]["valid"] for kind in names},
        "kept_and_valid": {kind: all_blocks[kind]["kept_and_valid"] for kind in names},
        "summary": summary, "by_family": by_family, "table": table,
        "claim2": {"rule": CLAIM2_RULE, "all": claim2_verdict(all_blocks),
                   "by_family": {f: claim2_verdict(b) for f, b in by_family.items()}},
        "gate": {"gate": {"precision": tp / (tp + fp) if tp + fp else float("nan"),
                          "recall": tp / (tp + fn) if tp + fn else float("nan"), "flagged": tp + fp, "failures": tp + fn}},
    }


def fidelity_of_population(pop: Any, ids: list[str]) -> dict[str, Any]:
    """member_fidelity of the population members standing for `ids`: mean decode IoU and robust Betti match
    (Wilson 95%) against their targets, as the build recorded them; overall and per source family."""
    want = {str(i) for i in ids}
    rows = [r for r in pop.rows if str(r["id"]) in want and "fidelity_iou" in r.get("metrics", {})]

    def block(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"mean_iou": float(np.mean([r["metrics"]["fidelity_iou"] for r in rs])) if rs else float("nan"),
                "betti_match": ci_of(sum(bool(r["metrics"]["fidelity_betti"]) for r in rs), len(rs)),
                "seconds_per_member": float(np.mean([r["seconds"] for r in rs])) if rs else float("nan")}

    fams = sorted({str(r.get("source", {}).get("family", "")) for r in rows})
    return {**block(rows), "source": "population build (each member decoded against its target grid)",
            "unchecked": len(want) - len(rows),
            "per_family": {f: block([r for r in rows if str(r.get("source", {}).get("family", "")) == f]) for f in fams}}


def fidelity_of_checks(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """member_fidelity of condition examples: their decode under each cell's seed against their own grids."""
    return {"mean_iou": float(np.mean([c["iou"] for c in checks])), "betti_match": ci_of(sum(c["ok"] for c in checks), len(checks)),
            "source": "the examples' decode under each cell's seed against their own grids"}


def plot_claim2(path: Any, by_family: dict[str, dict[str, Any]], *, title: str) -> None:
    """Topology kept (robust Betti = the examples') per family and kind, with Wilson 95% intervals."""
    from weightspace.runtime.results import pyplot, save_figure

    plt = pyplot()
    fams = list(by_family)
    kinds = [k for k in next(iter(by_family.values()))] if fams else []
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(fams) + 2), 3.5))
    w = 0.8 / max(len(kinds), 1)
    for j, kind in enumerate(kinds):
        r = [by_family[f][kind]["kept"] for f in fams]
        x = np.arange(len(fams)) + j * w
        ax.bar(x, [v["rate"] for v in r], width=w, label=kind.replace("_", " "),
               yerr=[[v["rate"] - v["ci_low"] for v in r], [v["ci_high"] - v["rate"] for v in r]], capsize=2)
    ax.set_xticks(np.arange(len(fams)) + w * (len(kinds) - 1) / 2, fams)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("topology kept")
    ax.legend(fontsize=7, ncol=3)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)

"""The subspace study's figures: distance from a subspace's support (the validity gate), per-kind summaries, gate precision and recall."""

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

"""Forgetting: a held-out set decoded under base and fitted weights, how far its shapes moved, and family samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightspace.analysis.measure import finite_mean, geometry, measure
from weightspace.analysis.persistence import robust_betti
from weightspace.data.families import FAMILIES, FAMILY_NAMES
from weightspace.decode.points import decode_conditions
from weightspace.experiments.common import clean_surface, encode_points, study_data
from weightspace.generators.protocol import Generator, families_of
from weightspace.runtime.seeding import derive_seed, item_rng


def forget_shapes(folder: Path, *, data: str | None, family: str, known: list[str], count: int, seed: int, resolution: int,
                  pose: str) -> list[dict[str, Any]]:
    """Up to `count` held-out shapes, one per family other than `family`: from `data` when given (any
    shape of it), else procedural shapes made in `folder` of the generator's `known` families, or of
    every procedural family when it knows none (its held-out conditions are encoded from points)."""
    if data is not None:
        rows = study_data(folder, data=data, families=[], count=1, seed=0, resolution=resolution, pose=pose)[1]
        others = [r for r in rows if r.get("family") != family]
    else:
        others_f = [f for f in (known or FAMILY_NAMES) if f != family][:count]
        others = study_data(folder, data=None, families=others_f, count=1, seed=seed, resolution=resolution,
                            pose=pose)[1] if others_f else []
    by_fam: dict[str, dict[str, Any]] = {}
    for r in others:
        by_fam.setdefault(str(r.get("family")), r)
    return list(by_fam.values())[:count]


def forget_set(gen: Generator, root: Path, rows: list[dict[str, Any]], *, seed: int) -> tuple[torch.Tensor | None, list[np.ndarray]]:
    """The held-out shapes' conditions (N, *condition_shape), encoded once with the base generator from
    1,024 clean surface points each (None without shapes), and 2,048 reference points (P, 3) of each."""
    f_refs: list[np.ndarray] = []
    if not rows:
        return None, f_refs
    clouds = []
    for i, r in enumerate(rows):
        p, _ = clean_surface(root, r)
        clouds.append(p[item_rng(seed, "forget", i).choice(len(p), size=min(1024, len(p)), replace=False)])
        f_refs.append(p[item_rng(seed, "forget-ref", i).choice(len(p), size=min(2048, len(p)), replace=False)])
    return encode_points(gen, clouds, seed=seed), f_refs


def forget_figures(gen: Generator, conds: torch.Tensor | None, refs: list[np.ndarray], params, dseed: int, seed: int) -> dict[str, Any]:
    """Decode the forgetting set under `params` (None = base weights): mean Chamfer to the clean shapes."""
    if conds is None:
        return {"chamfer": float("nan"), "kept": float("nan"), "grids": None, "per_shape": [], "fscore": float("nan"), "robust": []}
    grids = decode_conditions(gen, conds, dseed, params=params)
    shapes = [measure(g, seed=seed) for g in grids]
    geo = [geometry(s.points, r) for s, r in zip(shapes, refs)]
    return {"chamfer": finite_mean([g["chamfer_l1"] for g in geo]), "per_shape": [g["chamfer_l1"] for g in geo],
            "fscore": float(np.mean([g["fscore"] for g in geo])), "robust": [s.robust for s in shapes],
            "kept": float(np.mean([s.valid for s in shapes])), "grids": grids}


def forgetting(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Forgetting figures: mean Chamfer change over shapes finite before and after, the shapes lost (a surface
    before, none after: outside that mean, so counted on their own), F-score drop, shapes whose robust topology
    changed, and the largest / mean change of any decoded SDF value."""
    if before["grids"] is None:
        nan = float("nan")
        return {"forgetting": nan, "forget_shapes_lost": nan, "forget_fscore_drop": nan, "forget_topology_changed": nan,
                "forget_max_grid_change": nan, "forget_mean_grid_change": nan}
    pairs = [(a, b) for a, b in zip(before["per_shape"], after["per_shape"]) if np.isfinite(a) and np.isfinite(b)]
    lost = sum(1 for a, b in zip(before["per_shape"], after["per_shape"]) if np.isfinite(a) and not np.isfinite(b))
    diff = np.abs(before["grids"] - after["grids"])
    return {"forgetting": float(np.mean([b - a for a, b in pairs])) if pairs else float("nan"), "forget_shapes_lost": lost,
            "forget_fscore_drop": before["fscore"] - after["fscore"],
            "forget_topology_changed": int(sum(a != b for a, b in zip(before["robust"], after["robust"]))),
            "forget_max_grid_change": float(diff.max()), "forget_mean_grid_change": float(diff.mean())}


@torch.no_grad()
def family_quality(gen: Generator, params, *, per_family: int, seed: int) -> dict[str, Any] | None:
    """Family samples under `params` (None = base weights): `per_family` seeded samples of every family
    the generator knows and declares a topology for, each matching when its robust (b0, b1) equals the
    family's declared one. None for a generator without families. Returns {"rate", "matches"}."""
    fams = [f for f in families_of(gen) if f in FAMILIES]
    if not fams or per_family < 1:
        return None
    names = [f for f in fams for _ in range(per_family)]
    seeds = [derive_seed(seed, "family-sample", f, k) % 2**31 for f in fams for k in range(per_family)]
    conds = gen.condition(family=names, seeds=seeds)  # (F * S, *condition_shape)
    grids = np.concatenate([gen.grids(conds[i : i + 8], seeds[i : i + 8], params=params).cpu().numpy()
                            for i in range(0, len(names), 8)])  # (F * S, R, R, R): sampler noise from each sample's seed
    matches = [tuple(int(v) for v in robust_betti(g))[:2] == tuple(FAMILIES[f].betti[:2]) for f, g in zip(names, grids)]
    return {"rate": float(np.mean(matches)), "matches": matches}

"""The fit study's two family subspaces: PCAs of a condition population and of a LoRA population of N members.

Both populations are built (or resumed) with `space.population.build_population` from the same N
shapes of the target's family, with the generator's measured fit defaults, into the results folder.
Only members whose decode keeps their own shape's robust Betti numbers span a subspace; the fidelity
of every member is recorded. The LoRA subspace is learned on Delta W = s B A (delta form).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from weightspace.experiments.common import refuse, row_root
from weightspace.experiments.subspace_figures import ci_of
from weightspace.generators.protocol import Generator
from weightspace.space.lora import factors_to_delta
from weightspace.space.population import PopulationConfig, build_population, fidelity_summary
from weightspace.space.subspace import Subspace, converts_to_delta, delta_frame, fit_subspace_matrix


def member_data(folder: Path, root: Path, members: list[dict[str, Any]]) -> tuple[Path, int]:
    """A data folder whose first len(members) shapes are `members`, and that count: the family's own
    procedural folder when they are its first rows, else a copy of their files under `folder`."""
    src = row_root(root, members[0])
    manifest = src / "manifest.jsonl"
    first = [json.loads(line)["id"] for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()][: len(members)]
    if first == [r["id"] for r in members] and all(row_root(root, r) == src for r in members):
        return src, len(members)
    out = folder / "members"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in members:
        row = {k: v for k, v in r.items() if k != "_root"}
        for key in ("grid", "points"):
            if key in r:
                dst = out / key / Path(r[key]).name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(row_root(root, r) / r[key], dst)
                row[key] = f"{key}/{dst.name}"
        rows.append(row)
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out, len(rows)


def reproduces(row: dict[str, Any]) -> bool:
    """Whether a population member may span a subspace: its decode keeps its own shape's robust Betti numbers."""
    return bool(row.get("metrics", {}).get("fidelity_betti"))


def family_subspaces(gen: Generator, cfg: Any, folder: Path, root: Path, members: list[dict[str, Any]],
                     kinds: list[str]) -> tuple[dict[str, tuple[Subspace, torch.Tensor]], dict[str, dict[str, Any]]]:
    """For each kind (`condition`, `lora`): build or resume the population of `members`, check its members'
    fidelity, and fit a k = cfg.subspace_k PCA to those that keep their shape's robust Betti numbers.

    Returns {kind: (Subspace, the members' coordinates (N_kept, k))} and {kind: fidelity} (mean_iou, betti_match with its Wilson interval, the
    members used and dropped)."""
    data, count = member_data(folder / "data", root, members)
    subs, fidelity = {}, {}
    for kind in kinds:
        pcfg = PopulationConfig(checkpoint=cfg.checkpoint, parameterisation=kind, data=str(data), members=count,
                                out=str(folder / f"population-{cfg.family}-{kind}"), seed=cfg.seed,
                                options=dict(cfg.population_options) if kind == "lora" else {},
                                steps=cfg.population_steps if kind == "lora" else None, executor=cfg.executor,
                                workers=cfg.pool_workers(), batch_members=cfg.batch_members if kind == "lora" else 1)
        pop = build_population(pcfg, generator=gen)
        summary = fidelity_summary(pop)["all"]
        keep = [i for i, r in enumerate(pop.rows) if reproduces(r)]
        dropped = [str(r["id"]) for i, r in enumerate(pop.rows) if i not in keep]
        fidelity[kind] = {"mean_iou": summary["iou"], "betti_match": ci_of(summary["betti"]["successes"], summary["n"]),
                          "n": summary["n"], "used": len(keep), "dropped": dropped, "population": pop.folder.name}
        if len(keep) < cfg.subspace_k + 1:
            refuse(folder, cfg.checkpoint, (
                f"{kind} population: only {len(keep)} of {len(pop)} members decode to their own shape's robust Betti numbers "
                f"(dropped {', '.join(dropped)[:300]}); a {cfg.subspace_k}-dimensional subspace needs {cfg.subspace_k + 1}. "
                "Use more --members, a smaller --k, or leave out the subspace methods"), member_fidelity=fidelity)
        x = pop.matrix()[keep]  # (N_kept, D)
        frame = pop.frame
        if converts_to_delta(frame.parameterisation, None):
            x, frame = factors_to_delta(x, frame.layout), delta_frame(frame)  # (N_kept, D_delta)
        sub = fit_subspace_matrix(x, cfg.subspace_k, frame=frame)
        subs[kind] = (sub, sub.project(x))
    return subs, fidelity

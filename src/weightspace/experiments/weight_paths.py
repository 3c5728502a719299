"""Weight interpolation against condition interpolation (issue 17, part 3): paths between population members.

Each pair of members of one LoRA population is joined twice, by the same search (uniform steps
plus bisection on the robust Betti numbers, `PathStudy`): in weight space (the members' Delta W,
so the path is linear in the decoder's weights, decoded under the population's anchor condition) and in condition space (the generator's own
encodings of the same two source shapes, decoded with the base weights). Both ends are checked
in both spaces first; a pair whose ends do not reproduce their shapes in either space is dropped
and listed. Per space: how many paths change topology, where, how narrowly and how sharply
(sharpness = Chamfer jump / width in t / the path's start-to-end Chamfer, as for pairs).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from weightspace.analysis.measure import chamfer, finite_mean, finite_median
from weightspace.analysis.persistence import robust_betti
from weightspace.data.dataset import load_grid, load_points, read_manifest
from weightspace.experiments.common import encode_points, mismatches, refuse
from weightspace.experiments.endpoints import Endpoints_, check_endpoints, resolve_endpoints
from weightspace.experiments.pairs import make_pairs
from weightspace.experiments.path_study import KEPT_MEANS, PathStudy, topology_kept, transition_rows
from weightspace.experiments.subspace_figures import ci_of
from weightspace.generators.protocol import Generator
from weightspace.runtime.errors import InputError
from weightspace.runtime.results import pyplot, save_figure, write_csv, write_results
from weightspace.runtime.seeding import item_rng
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.store import Population

if TYPE_CHECKING:
    from weightspace.experiments.interpolate import InterpolateConfig

SPACES = ("weight", "condition")


def condition_twins(gen: Generator, pop: Population, ids: list[str], *, seed: int, observations: int) -> Endpoints_:
    """The encoded conditions of the shapes behind population members `ids` (from the population's data
    folder), each standing for its own grid's robust topology."""
    data = Path(str(pop.config.get("data", "")))
    by_id = {str(r["id"]): r for r in read_manifest(data)}
    source = {str(r["id"]): str(r.get("source", {}).get("id", r["id"])) for r in pop.rows}
    missing = [i for i in ids if source.get(i) not in by_id]
    if missing:
        raise InputError(f"population {pop.folder}: the shapes of members {missing[:3]} are not in its data folder {data}")
    clouds = []
    for i in ids:
        pts, _ = load_points(data, by_id[source[i]])
        take = item_rng(seed, "observe", i).choice(len(pts), size=min(observations, len(pts)), replace=False)
        clouds.append(pts[take])
    conds = encode_points(gen, clouds, seed=seed)  # (N, *condition_shape)
    intended = {i: tuple(int(v) for v in robust_betti(load_grid(data, by_id[source[i]]))) for i in ids}
    return Endpoints_(make_parameterisation(gen, "condition"), {i: conds[j].reshape(-1) for j, i in enumerate(ids)},
                      {i: str(by_id[source[i]].get("family", "")) for i in ids}, intended)


def delta_form(ends: Endpoints_) -> Endpoints_:
    """LoRA factor endpoints as Delta W = s B A (exact), so a weight path is linear in the weights the decoder
    uses; a lerp of the factors would add the cross terms B_a A_b and B_b A_a in between."""
    if ends.param.name != "lora" or getattr(ends.param, "form", "delta") != "factors":
        return ends
    ids = list(ends.points)
    with torch.no_grad():
        delta = ends.param.to_delta(torch.stack([ends.points[i] for i in ids])).cpu()  # (N, D_delta)
    return Endpoints_(ends.param.delta_parameterisation(), dict(zip(ids, delta)), ends.families, ends.intended)


def _path(gen: Generator, ends: Endpoints_, grids: dict[str, np.ndarray], a: str, b: str, config: InterpolateConfig) -> tuple:
    study = PathStudy(gen, ends.param, ends.points[a], ends.points[b], kind=config.path, seed=config.seed,
                      volume_threshold=config.volume_threshold)
    study.known = {0.0: grids[a], 1.0: grids[b]}  # decoded (and counted) by the endpoint check
    run = study.search(config.steps, config.tolerance)
    span = chamfer(run.shapes[0.0].points, run.shapes[1.0].points)
    trs = transition_rows(run)
    for tr in trs:
        ok = span and np.isfinite(span) and span > 0
        tr["sharpness"] = tr["chamfer_jump"] / tr["width"] / span if ok else float("nan")
    return run, trs, span, study.decodes


def run_weight_paths(config: InterpolateConfig, gen: Generator, folder: Path, clock: Callable[[], float]) -> Path:
    """The paths of `config` (a -> b, or `pairs` pairs) between members of `config.population`, in weight
    space and again in condition space between the same two shapes; results into `folder`."""
    pop = Population(config.population)
    ends_w = delta_form(resolve_endpoints(gen, config, folder, ids=None if config.pairs else [config.a, config.b]))
    ids = list(ends_w.points)
    ends_c = condition_twins(gen, pop, ids, seed=config.seed, observations=config.observations)
    check_w, grids_w = check_endpoints(gen, ends_w, seed=config.seed, volume_threshold=config.volume_threshold)
    check_c, grids_c = check_endpoints(gen, ends_c, seed=config.seed, volume_threshold=config.volume_threshold)
    ok = {c["id"] for c in check_w if c["ok"]} & {c["id"] for c in check_c if c["ok"]}
    checks = {"weight": check_w, "condition": check_c}
    if len(ok) < 2 or (not config.pairs and ok != set(ids)):
        refuse(folder, config.checkpoint, (
            f"{len(ok)} of {len(ids)} endpoints reproduce their shapes in both spaces (weight: {mismatches(check_w)}; "
            f"condition: {mismatches(check_c)}); a path from a broken shape measures nothing. Choose members whose "
            f"fidelity check passed and shapes the generator's encoder reproduces"), endpoint_check=checks)
    keep = [i for i in ids if i in ok]
    sub = Endpoints_(ends_w.param, {i: ends_w.points[i] for i in keep}, {i: ends_w.families[i] for i in keep})
    pairs = make_pairs(sub, config.pairs, config.seed) if config.pairs else \
        [(config.a, config.b, ends_w.families[config.a] == ends_w.families[config.b])]
    pair_rows, transitions, decodes = [], [], len(check_w) + len(check_c)
    by_space = {"weight": (ends_w, grids_w), "condition": (ends_c, grids_c)}
    for k, (a, b, within) in enumerate(pairs):
        for space, (ends, grids) in by_space.items():
            run, trs, span, n = _path(gen, ends, grids, a, b, config)
            decodes += n
            transitions += [{"pair": k, "space": space, "a": a, "b": b, "within_family": within, **tr} for tr in trs]
            pair_rows.append({"pair": k, "space": space, "a": a, "b": b, "family_a": ends.families[a], "family_b": ends.families[b],
                              "within_family": within, "start": list(run.shapes[0.0].robust), "end": list(run.shapes[1.0].robust),
                              "transitions": len(trs), "decodes": n, "seconds": run.seconds, "chamfer_start_end": span,
                              "dist_param_total": run.dist_param[1.0], "dist_effective_total": run.dist_effective[1.0],
                              "min_width": min((t["width"] for t in trs), default=float("nan")),
                              "max_sharpness": max((t["sharpness"] for t in trs), default=float("nan"))})
    write_csv(folder / "pairs.csv", pair_rows)
    write_csv(folder / "transitions.csv", transitions)
    summary = {space: {group: space_summary([r for r in pair_rows if r["space"] == space and sel(r)],
                                            [t for t in transitions if t["space"] == space and sel(t)])
                       for group, sel in (("all", lambda r: True), ("within", lambda r: r["within_family"]),
                                          ("across", lambda r: not r["within_family"]))}
               for space in SPACES}
    # a path "keeps topology" when no robust change is located along it (within-family paths are the test)
    kept = topology_kept({space: [r["transitions"] for r in pair_rows if r["space"] == space and r["within_family"]]
                          for space in SPACES})
    fid = [r.get("metrics", {}) for r in pop.rows if str(r["id"]) in set(keep)]
    plot_weight_paths(folder / "weight_paths.png", pair_rows, transitions, title=f"{gen.kind}: {len(pairs)} member pairs, "
                      "weight space vs condition space")
    write_results(folder, {
        "checkpoint": config.checkpoint, "generator": gen.kind, "parameterisation": ends_w.param.name,
        "weight_form": getattr(ends_w.param, "form", None),
        "population": str(pop.folder), "endpoints": "population", "path": config.path, "pairs": len(pairs),
        "member_fidelity": {"mean_iou": float(np.mean([m["fidelity_iou"] for m in fid])) if fid else float("nan"),
                            "betti_match": ci_of(sum(bool(m.get("fidelity_betti")) for m in fid), len(fid))},
        "topology_kept": kept, "topology_kept_means": KEPT_MEANS,
        "summary": summary, "paired": paired(pair_rows), "transitions": transitions, "decodes": decodes,
        "tolerance": config.tolerance, "uniform_sweep_decodes_per_path": math.ceil(1 / config.tolerance) + 1,
        "endpoint_check": checks, "endpoints_dropped": sorted(set(ids) - ok), "wall_seconds": clock(),
    })
    return folder


def space_summary(pairs: list[dict[str, Any]], transitions: list[dict[str, Any]]) -> dict[str, Any]:
    """Per space and group: paths with a change (Wilson 95%), changes per path, widths, jumps and sharpness."""
    n = len(pairs)
    return {"paths": n, "paths_with_transition": ci_of(sum(r["transitions"] > 0 for r in pairs), n),
            "transitions_per_path": float(np.mean([r["transitions"] for r in pairs])) if n else float("nan"),
            "mean_decodes_per_path": float(np.mean([r["decodes"] for r in pairs])) if n else float("nan"),
            "median_width": float(np.median([t["width"] for t in transitions])) if transitions else float("nan"),
            "mean_chamfer_jump": finite_mean([t["chamfer_jump"] for t in transitions]),
            "median_sharpness": finite_median([t["sharpness"] for t in transitions]),
            "changes": {"b0": sum(t["before"][0] != t["after"][0] for t in transitions),
                        "b1": sum(t["before"][1] != t["after"][1] for t in transitions)}}


def paired(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The same pairs in both spaces: how often the weight path changes topology more, less or as often,
    and the median ratio of their sharpest transitions (pairs with a transition in both)."""
    by = {(r["pair"], r["space"]): r for r in rows}
    ks = sorted({r["pair"] for r in rows})
    diff = [by[(k, "weight")]["transitions"] - by[(k, "condition")]["transitions"] for k in ks]
    ratio = [by[(k, "weight")]["max_sharpness"] / by[(k, "condition")]["max_sharpness"] for k in ks
             if by[(k, "weight")]["transitions"] and by[(k, "condition")]["transitions"]]
    return {"pairs": len(ks), "weight_more": sum(d > 0 for d in diff), "weight_fewer": sum(d < 0 for d in diff),
            "same": sum(d == 0 for d in diff), "median_sharpness_ratio_weight_over_condition":
            float(np.median(ratio)) if ratio else float("nan"), "pairs_with_both": len(ratio)}


def plot_weight_paths(path: Path, pairs: list[dict[str, Any]], transitions: list[dict[str, Any]], *, title: str) -> None:
    """Left: where each pair's path changes topology, weight space above condition space. Right: sharpness per space."""
    plt = pyplot()
    ks = sorted({r["pair"] for r in pairs})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.45 * len(ks) + 2.5), gridspec_kw={"width_ratios": [3, 1]})
    colours = {"weight": "tab:blue", "condition": "tab:orange"}
    for k in ks:
        for space in SPACES:
            y = k + (0.15 if space == "weight" else -0.15)
            ax1.plot([0, 1], [y, y], color=colours[space], lw=0.8, alpha=0.5, label=space if k == ks[0] else None)
            ts = [0.5 * (t["t_lo"] + t["t_hi"]) for t in transitions if t["pair"] == k and t["space"] == space]
            ax1.plot(ts, [y] * len(ts), "|", color=colours[space], ms=10, mew=2)
    row = {(r["pair"], r["space"]): r for r in pairs}
    ax1.set_yticks(ks, [f"{row[(k, 'weight')]['a']} → {row[(k, 'weight')]['b']}" for k in ks], fontsize=7)
    ax1.set_xlabel("t (marks: located topology changes)")
    ax1.legend(fontsize=7, loc="upper right")
    ax1.set_title(title, fontsize=9)
    sharp = {space: [t["sharpness"] for t in transitions if t["space"] == space and np.isfinite(t["sharpness"])
                     and t["sharpness"] > 0] for space in SPACES}
    for j, space in enumerate(SPACES):
        ax2.scatter([j] * len(sharp[space]), sharp[space], color=colours[space], alpha=0.7, s=14)
    ax2.set_xticks(range(len(SPACES)), SPACES)
    if any(sharp.values()):
        ax2.set_yscale("log")
    ax2.set_xlim(-0.5, 1.5)
    ax2.set_title("sharpness: jump / width / path Chamfer", fontsize=8)
    save_figure(fig, path)


__all__ = ["condition_twins", "paired", "run_weight_paths", "space_summary"]

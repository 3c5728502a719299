"""What a study folder found: its claim, headline numbers (for results.json) and a one-line verdict (for the page).

Verdicts are one of VERDICTS. The rules, also in docs/results.md:

- claim 1 (interpolate): supported when the path has at least one located topology change (pairs: at
  least one path of the pairs has one); inconclusive when none was found (one path cannot refute "can").
- claim 2 (subspace): on the subspace samples' rate of keeping the examples' robust topology while valid,
  with its Wilson 95% interval: supported when the interval's low end is >= 0.5, not supported when its
  high end is < 0.5, inconclusive otherwise.
- claim 3 (fit): on each method's median Chamfer-L1 over its fits, an empty fit (no surface decoded) counting
  as infinite: supported when the subspace method's is within 1.25x the best method's, it leaves no more fits
  empty than that method and it forgets no more than full fine-tuning (Chamfer change on held-out shapes, and
  held-out shapes decoded to nothing where both record them); not supported when its median is over
  2x the best's (or infinite: half or more of its fits empty); inconclusive otherwise (and when the subspace
  method did not run, or every method left half or more of its fits empty).
- any study that refused (broken endpoints or examples) is "refused", with the reason.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightspace.analysis.measure import failed_count, median_counting_failures
from weightspace.analysis.rates import rate
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import read_json
from weightspace.runtime.results import read_results

VERDICTS = ("supported", "not supported", "inconclusive", "refused")  # a study that states its own verdict may add others
STUDIES = {"InterpolateConfig": "interpolate", "SubspaceConfig": "subspace", "FitConfig": "fit"}
CLAIMS = {
    "interpolate": (1, "Interpolating in weight space can flip global topology sharply: one component becomes "
                       "several within a small step."),
    "subspace": (2, "A low-dimensional PCA subspace of a few examples varies the geometry locally while the global "
                    "topology stays the same."),
    "fit": (3, "A generator adapts to scarce, noisy data by moving in such a subspace, without full fine-tuning "
               "and without forgetting."),
}
FIT_GAP_OK, FIT_GAP_BAD = 1.25, 2.0  # subspace Chamfer over the best method's: supported at or below, refuted above


@dataclass
class Finding:
    """One study folder, read: which study on which generator, its verdict and its headline numbers."""

    folder: Path
    study: str  # interpolate | subspace | fit
    checkpoint: str  # the generator's checkpoint name ("default", a folder name, ...)
    generator: str  # its kind ("latent-diffusion", ...)
    verdict: str  # one of VERDICTS
    line: str  # the verdict in one line, with the numbers and intervals
    headline: dict[str, Any] = field(default_factory=dict)  # numbers only (and ids); the demo's results.json
    results: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def claim(self) -> tuple[int, str]:
        return CLAIMS[self.study]


def study_of(folder: Path) -> str | None:
    """'interpolate', 'subspace' or 'fit' for a study's results folder, None for any other folder."""
    path = Path(folder) / "config.json"
    if not path.is_file() or not (Path(folder) / "results.json").is_file():
        return None
    return STUDIES.get(read_json(path).get("study", ""))


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts of strings (an empty list for a missing file)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def betti(b: Any) -> str:
    """'(1, 0, 0)' for [1, 0, 0]; '?' for None."""
    return "?" if b is None else "(" + ", ".join(str(int(x)) for x in b) + ")"


def num(v: Any, digits: int = 3) -> str:
    """A number for a sentence: 3 significant digits, 'n/a' for None or NaN."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def ci(r: dict[str, Any]) -> str:
    """'8/8 = 1.00 [0.68, 1.00]' for a rate dict of analysis.rates.rate."""
    return f"{r['successes']}/{r['n']} = {r['rate']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"


def rate_of(value: float | None, n: int) -> dict[str, Any]:
    """A rate dict (rate, n, successes, Wilson low/high) from a mean of n booleans."""
    k = 0 if value is None else int(round(value * n))
    return rate([True] * k + [False] * (n - k))


def read_finding(folder: str | Path) -> Finding:
    """Read a study's results folder into its Finding."""
    folder = Path(folder)
    study = study_of(folder)
    if study is None:
        raise InputError(f"{folder}: not a study's results folder (needs config.json of an interpolate, subspace or fit "
                         "study and its results.json)")
    cfg, res = read_json(folder / "config.json"), read_results(folder / "results.json")
    f = Finding(folder, study, str(res.get("checkpoint", cfg.get("checkpoint", "?"))), str(res.get("generator", "?")),
                "refused", "", results=res, config=cfg)
    if "refused" in res:
        # the line stands after the verdict's badge, which says "refused" already
        f.line, f.headline = str(res["refused"]), {"verdict": "refused", "refused": res["refused"]}
        return f
    try:
        f.verdict, f.line, numbers = {"interpolate": _interpolate, "subspace": _subspace, "fit": _fit}[study](folder, res, cfg)
    except (KeyError, TypeError, IndexError) as e:  # a results.json of another version: say so, and keep the page
        f.verdict, f.line = "inconclusive", (f"this page does not read this {study} study's results.json (no {e}); its "
                                             "figures are in the files below")
        numbers = {"unread": str(e)}
    f.headline = {"verdict": f.verdict, **numbers}
    return f


def _interpolate(folder: Path, res: dict, cfg: dict) -> tuple[str, str, dict]:
    if "paired" in res:  # --condition-paths: the same member pairs in weight space and in condition space
        rates = {space: _rate(g["all"]["paths_with_transition"]) for space, g in res["summary"].items()}
        p = res["paired"]
        numbers = {"pairs": res["pairs"], "paths_with_transition": rates,
                   "transitions_per_path": {space: g["all"]["transitions_per_path"] for space, g in res["summary"].items()},
                   "paired": p, "decodes": res["decodes"], "seconds": res.get("wall_seconds")}
        verdict = "supported" if rates["weight"]["successes"] else "inconclusive"
        line = (f"member pairs with a topology change along the weight path: {ci(rates['weight'])}; along the condition "
                f"path between the same shapes: {ci(rates['condition'])}; the weight path changes more often on "
                f"{p['weight_more']} pairs, less on {p['weight_fewer']}, as often on {p['same']}; {res['decodes']} decodes")
        return verdict, line, numbers
    if "summary" in res:  # pairs: many paths
        s = res["summary"]["all"]
        r = rate_of(s["rate"], s["paths"])
        numbers = {"paths": s["paths"], "paths_with_transition": rate_of(s["rate"], s["paths"]),
                   "transitions_per_path": s["transitions_per_path"], "median_width": s["median_width"],
                   "mean_chamfer_jump": s["mean_chamfer_jump"], "decodes": res["decodes"], "seconds": res.get("wall_seconds")}
        verdict = "supported" if r["successes"] else "inconclusive"
        line = (f"paths with a topology change: {ci(r)}; {num(s['transitions_per_path'])} changes per path, median width "
                f"{num(s['median_width'])} in t; {res['decodes']} decodes")
        return verdict, line, numbers
    trs = res["transitions"]
    located = [{k: t[k] for k in ("t_lo", "t_hi", "before", "after", "width", "chamfer_jump")} for t in trs]
    numbers = {"a": res["a"], "b": res["b"], "endpoints": res["endpoints"], "path": res["path"], "start": res["start"],
               "end": res["end"], "transitions": len(trs), "located": located, "tolerance": res["tolerance"],
               "decodes": res["decodes"], "uniform_sweep_decodes": res["uniform_sweep_decodes"],
               "chamfer_start_end": res["chamfer_start_end"], "seconds": res.get("wall_seconds")}
    where = "; ".join(f"{betti(t['before'])} → {betti(t['after'])} at t ∈ [{t['t_lo']:.4f}, {t['t_hi']:.4f}]" for t in trs[:3])
    more = f" and {len(trs) - 3} more" if len(trs) > 3 else ""
    if not trs:
        return "inconclusive", (f"no topology change along {res['a']} → {res['b']}: {betti(res['start'])} throughout, "
                                f"{res['decodes']} decodes (one path cannot rule the claim out)"), numbers
    jump = max((t["chamfer_jump"] or 0.0) for t in trs)
    line = (f"{len(trs)} topology change(s) along {res['a']} → {res['b']}: {where}{more}, each located to Δt ≤ "
            f"{res['tolerance']:g}; largest Chamfer-L1 jump {num(jump)} vs {num(res['chamfer_start_end'])} between the "
            f"ends; {res['decodes']} decodes (a uniform sweep: {res['uniform_sweep_decodes']})")
    return "supported", line, numbers


def _rate(d: dict[str, Any]) -> dict[str, Any]:
    """A rate dict with low/high, from either analysis.rates' keys (low, high) or the pooled studies' (ci_low, ci_high)."""
    return {"rate": d["rate"], "low": d.get("low", d.get("ci_low")), "high": d.get("high", d.get("ci_high")), "n": d["n"],
            "successes": d["successes"]}


def _subspace(folder: Path, res: dict, cfg: dict) -> tuple[str, str, dict]:
    s = res["summary"]
    if isinstance(res.get("kept_and_valid"), dict):  # pooled over cells: the study's own counts and intervals
        kept = {k: _rate(v) for k, v in res["topology_kept"].items()}
        kept_valid = {k: _rate(v) for k, v in res["kept_and_valid"].items()}
    else:
        kept = {k: rate_of(v["topology_kept_robust"], v["n"]) for k, v in s.items()}
        kept_valid = {k: rate_of(v.get("kept_and_valid", v["topology_kept_robust"]), v["n"]) for k, v in s.items()}
    g = res["gate"]["gate"]
    numbers = {"family": res.get("family"), "K": res.get("K"), "K_used": res.get("K_used", res.get("K")), "k": res.get("k"),
               "parameterisation": res.get("parameterisation"), "examples_topology": res["examples_topology"]["robust"],
               "kept": kept, "kept_and_valid": kept_valid, "validity": {k: v["validity"] for k, v in s.items()},
               "local_variation": {k: v.get("local_variation") for k, v in s.items()},
               "gate": {"precision": g["precision"], "recall": g["recall"]}, "decodes": res.get("decodes"),
               "seconds": res.get("wall_seconds")}
    sub = kept_valid["subspace"]
    if isinstance(res.get("claim2"), dict):  # the study states its own verdict and rule
        verdict = res["claim2"]["all"]["verdict"]
        numbers["rule"] = res["claim2"].get("rule")
    else:
        verdict = "supported" if sub["low"] >= 0.5 else "not supported" if sub["high"] < 0.5 else "inconclusive"
    base = ", ".join(f"{k.replace('_', ' ')} {ci(v)}" for k, v in kept_valid.items() if k not in ("examples", "subspace"))
    target = numbers["examples_topology"]
    # K_used counts the examples of every pooled cell: against those cells' K summed, not one cell's K
    drawn = sum(int(c["K"]) for c in res.get("cells", []) if not c.get("refused")) or numbers["K"]
    used = f" ({numbers['K_used']} of {drawn} examples used)" if numbers["K_used"] != drawn else ""
    line = (f"subspace samples ({numbers['family']}, K={numbers['K']}{used}, k={numbers['k']}, {numbers['parameterisation']}) keep "
            f"their examples' topology{' ' + betti(target) if target else ''} and stay valid in {ci(sub)}; at the same "
            f"distance: {base}; local variation (Chamfer-L1 to the nearest example) {num(s['subspace'].get('local_variation'))}")
    if "random" in kept_valid and kept_valid["random"]["rate"] >= sub["rate"]:
        line += " — random directions keep it as often, so distance alone may explain it"
    return verdict, line + _cells_left_out(res), numbers


def _cells_left_out(res: dict[str, Any]) -> str:
    """What a subspace study's pooled figures leave out of the families its line names, as '; not pooled:
    4 cells refused (torus K=2 s0, ...), ...', or '' when every cell of its grid is in them."""
    refused = [f"{c['family']} K={c['K']} s{c['seed']}" for c in res.get("cells", []) if c.get("refused")]
    waiting = [f"{w['family']} K={w['K']} ({w['members']} of {w['needs']} members)" for w in res.get("cells_waiting", [])]
    parts = [f"{len(names)} {what} ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
             for what, names in (("cells refused", refused), ("waiting for members", waiting)) if names]
    return "; not pooled: " + ", ".join(parts) if parts else ""


SUBSPACE_METHODS = ("weight_subspace", "subspace", "condition_subspace")  # the fit study's subspace methods, preferred first


def _lost(sub: float | None, full: float | None) -> str:
    """The held-out shapes the fits lost (mean per fit), when either method lost any."""
    if not any(v is not None and math.isfinite(v) and v > 0 for v in (sub, full)):
        return ""
    return f" (held-out shapes decoded to nothing, per fit: {num(sub)} vs {num(full)})"


def _fit(folder: Path, res: dict, cfg: dict) -> tuple[str, str, dict]:
    by = res["by_method"]
    n = {m: sum(1 for r in res["table"] if r["method"] == m) for m in by}
    topo = {m: rate_of(by[m].get("topology_correct"), n[m]) for m in by}
    numbers = {"target": res["target"], "views": cfg.get("views"), "sigmas": cfg.get("sigmas"),
               "by_method": {m: {**{k: v for k, v in s.items()}, "topology_correct": topo[m]} for m, s in by.items()},
               "seconds": res.get("wall_seconds")}
    # the table, not by_method's means: a fit that decoded no surface (Chamfer-L1 inf, null in the file) counts
    # against its method instead of leaving the mean
    cd = {m: [r["chamfer_l1"] for r in res["table"] if r["method"] == m] for m in by}
    cds = {m: median_counting_failures(v) for m, v in cd.items() if v}  # inf: half or more of its fits empty
    empty = {m: failed_count(v) for m, v in cd.items()}
    numbers["chamfer_l1_median"] = {m: v if math.isfinite(v) else None for m, v in cds.items()}  # the demo's file is strict JSON
    numbers["empty_fits"] = {m: {"empty": empty[m], "n": n[m]} for m in by}
    sm = next((m for m in SUBSPACE_METHODS if m in cds), None)
    if sm is None:
        return "inconclusive", "no subspace method ran: nothing to compare", numbers
    best = min(cds, key=lambda m: (cds[m], empty[m]))
    failed = ", ".join(f"{m} {empty[m]}/{n[m]}" for m in by if empty[m])
    failed = f"; fits that decoded no surface: {failed}" if failed else ""
    if not math.isfinite(cds[best]):
        return "inconclusive", f"every method decoded no surface in half or more of its fits: nothing to compare{failed}", numbers
    gap = cds[sm] / max(cds[best], 1e-12)  # inf when half or more of the subspace method's fits are empty
    f_sub = by[sm].get("forgetting") or 0.0
    f_full = by.get("full", {}).get("forgetting")
    forgets_less = f_full is None or f_sub <= max(f_full, 0.0) + 1e-12
    # a held-out shape decoded to nothing after the fit is outside the Chamfer change: counted apart (older files lack it)
    lost_sub, lost_full = by[sm].get("forget_shapes_lost"), by.get("full", {}).get("forget_shapes_lost")
    if lost_sub is not None and lost_full is not None and math.isfinite(lost_sub) and math.isfinite(lost_full):
        forgets_less = forgets_less and lost_sub <= lost_full + 1e-12
    fails_no_more = empty[sm] <= empty[best]
    verdict = ("supported" if gap <= FIT_GAP_OK and forgets_less and fails_no_more else
               "not supported" if gap > FIT_GAP_BAD else "inconclusive")
    numbers["subspace_method"], numbers["subspace_over_best_chamfer"] = sm, gap if math.isfinite(gap) else None
    line = (f"{sm.replace('_', ' ')} inversion fits {res['target']['id']} to Chamfer-L1 {num(cds[sm]) if gap < math.inf else '∞'} "
            f"({gap:.2f}× the best, {best} {num(cds[best])}; medians over views × σ, an empty fit counting as infinite)"
            f"{failed}; forgetting (ΔChamfer on held-out shapes) {num(f_sub)} vs full fine-tuning {num(f_full)}"
            f"{_lost(lost_sub, lost_full)}; "
            f"topology correct {ci(topo[sm])}")
    return verdict, line, numbers

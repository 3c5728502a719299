"""One-line summaries of a study's results folder (for `make demo` and the CLI)."""

from __future__ import annotations

from pathlib import Path

from weightspace.runtime.errors import InputError
from weightspace.runtime.io import read_json
from weightspace.runtime.results import read_results


def _f(v: object) -> str:
    return "n/a" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def summarize(folder: str | Path) -> str:
    """The headline of a results folder written by any study (reads config.json and results.json)."""
    folder = Path(folder)
    if not (folder / "results.json").is_file() or not (folder / "config.json").is_file():
        raise InputError(f"{folder}: not a finished results folder (config.json / results.json missing)")
    study = read_json(folder / "config.json").get("study", "")
    res = read_results(folder / "results.json")
    head = f"[{res.get('generator', '?')}]"
    if study == "InterpolateConfig":
        if "paired" in res:  # --condition-paths: the same member pairs in weight space and in condition space
            spaces = "; ".join(
                f"{space} {g['all']['paths_with_transition']['successes']}/{g['all']['paths']} paths with a transition "
                f"({_f(g['all']['transitions_per_path'])} per path)" for space, g in res["summary"].items())
            p = res["paired"]
            return (f"{head} interpolate: {res['pairs']} member pairs: {spaces}; the weight path changes topology more "
                    f"often on {p['weight_more']}, less on {p['weight_fewer']}, as often on {p['same']}; {res['decodes']} decodes")
        if "summary" in res:
            s = res["summary"]["all"]
            return (f"{head} interpolate: {res['pairs']} pairs, {s['paths_with_transition']} with a transition "
                    f"({_f(s['transitions_per_path'])} per path, median width {_f(s['median_width'])}), {res['decodes']} decodes")
        trs = res["transitions"]
        where = "; ".join(f"t in [{t['t_lo']:.4f}, {t['t_hi']:.4f}] {t['before']} -> {t['after']}" for t in trs) or "none"
        return (f"{head} interpolate {res['a']} -> {res['b']}: {len(trs)} transition(s) ({where}), {res['decodes']} decodes "
                f"({res['search_decodes']} in the search; a uniform sweep at this tolerance: {res['uniform_sweep_decodes']}), "
                f"{_f(res['wall_seconds'])} s")
    if study == "SubspaceConfig":
        kept = ", ".join(f"{k} {_f(v['rate'])} [{_f(v['ci_low'])}, {_f(v['ci_high'])}] (n={v['n']})"
                         for k, v in res["topology_kept"].items())
        g = res["gate"]["gate"]
        # the pooled figures leave out refused cells and those waiting for a population's members
        refused, waiting = res.get("cells_refused", 0), len(res.get("cells_waiting", []))
        left_out = (f"; not pooled: {refused} cell(s) refused, {waiting} (family, K) waiting for members (results.json "
                    f"cells)" if refused or waiting else "")
        return (f"{head} subspace ({res['parameterisation']}) {res['family']} K={res['Ks']} k={res['k']} seeds={res['seeds']}: "
                f"topology kept: {kept}; claim 2: {res['claim2']['all']['verdict']}; gate precision {_f(g['precision'])} "
                f"recall {_f(g['recall'])}{left_out}, {_f(res['wall_seconds'])} s")
    if study == "FitConfig":
        def empty(s: dict) -> str:  # CD is the mean of the fits that decoded a surface: the empty ones beside it
            return f" ({s['empty']}/{s['n']} fits empty)" if s.get("empty") else ""

        parts = [f"{m} CD {_f(s['chamfer_l1'])}{empty(s)} F {_f(s['fscore'])} topo {_f(s['topology_correct'])} "
                 f"forget dCD {_f(s['forgetting'])} max|dSDF| {_f(s.get('forget_max_grid_change'))}"
                 for m, s in res["by_method"].items()]
        return f"{head} fit {res['target']['id']}: " + "; ".join(parts) + f", {_f(res['wall_seconds'])} s"
    if study == "CompareConfig":
        return f"compare: {', '.join(res['checkpoints'])} -> {folder / 'compare.md'}"
    raise InputError(f"{folder / 'config.json'}: unknown study {study!r}")

"""What a page shows of one study folder: its key figures (plotly figure dicts), mesh cards and detail tables."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from weightspace.report.meshviews import MeshCard
from weightspace.report.verdicts import Finding, betti, read_rows
from weightspace.runtime.results import read_results

KIND_COLOURS = {"examples": "#555555", "subspace": "#1f77b4", "random": "#ff7f0e", "condition_noise": "#2ca02c"}
METHOD_COLOURS = {"encode": "#7f7f7f", "optimise": "#2ca02c", "subspace": "#1f77b4", "weight_subspace": "#1f77b4",
                  "condition_subspace": "#17becf", "lora": "#ff7f0e", "full": "#d62728"}
MAX_ROWS = 60  # rows of a detail table shown on the page; the CSV has them all


@dataclass
class Column:
    """One column of a detail table: the row's key, a readable header (with its unit) and a formatter."""

    key: str
    header: str
    fmt: Callable[[Any], str] = str


@dataclass
class Section:
    """One study on the page: the finding, key figures, meshes and detail tables."""

    finding: Finding
    figures: list[dict[str, Any]] = field(default_factory=list)  # plotly {"data", "layout"}
    pairs: list[tuple[str, MeshCard, MeshCard]] = field(default_factory=list)  # (caption, before, after) of transitions
    cards: list[MeshCard] = field(default_factory=list)  # gallery, in display order
    tables: list[tuple[str, str]] = field(default_factory=list)  # (title, table HTML)
    files: list[Path] = field(default_factory=list)  # CSV / JSON / PNG files to link


def _f(v: Any, digits: int = 4) -> str:
    if v is None:  # a figure not measured for this row (a baseline without weights): an empty cell
        return "–"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    return "" if not math.isfinite(x) else f"{x:.{digits}g}"


def _b(row: dict, prefix: str = "rb") -> tuple[int, int, int] | None:
    try:
        return tuple(int(float(row[f"{prefix}{i}"])) for i in range(3))  # type: ignore[return-value]
    except (KeyError, ValueError):
        return None


def _yes(v: Any) -> str:
    return {"True": "yes", "False": "no", "1": "yes", "0": "no", True: "yes", False: "no"}.get(v, html.escape(str(v)))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], *, source: str = "") -> str:
    """An HTML table of `rows` under readable headers, cut at MAX_ROWS (the rest is in `source`)."""
    head = "".join(f"<th>{html.escape(c.header)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{c.fmt(r.get(c.key, ''))}</td>" for c in columns) + "</tr>" for r in rows[:MAX_ROWS])
    more = f"<p class=more>{len(rows) - MAX_ROWS} more rows in {html.escape(source)}</p>" if len(rows) > MAX_ROWS else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def room_for_ticks(layout: dict[str, Any]) -> dict[str, Any]:
    """`layout` with every axis's automargin on: plotly turns long tick labels of a narrow figure on end, and its fixed
    margins then cut them off ('condition nois'); automargin grows the margin to fit them."""
    axes = {k: {"automargin": True, **layout.get(k, {})} for k in ("xaxis", "yaxis", *layout) if k.startswith(("xaxis", "yaxis"))}
    return {**layout, **axes}


def _layout(title: str, **kw: Any) -> dict[str, Any]:
    return room_for_ticks({"title": {"text": title, "font": {"size": 13}}, "margin": {"l": 55, "r": 15, "t": 40, "b": 45},
                           "height": 330, "legend": {"font": {"size": 10}}, "template": None, **kw})


def _files(folder: Path) -> list[Path]:
    names = ["results.json", "config.json"]
    return [folder / n for n in names if (folder / n).is_file()] + sorted(folder.glob("*.csv")) + sorted(folder.glob("*.png"))


# --- interpolation -------------------------------------------------------------------------------------------
STEP_COLUMNS = [Column("t", "t"), Column("phase", "phase"),
                Column("rb0", "robust (b0, b1, b2)"), Column("b0", "exact (b0, b1, b2)"),
                Column("components_above", "components above threshold"), Column("volume", "volume (world units³)", _f),
                Column("chamfer_start", "Chamfer-L1 to start (world units)", _f),
                Column("chamfer_end", "Chamfer-L1 to end (world units)", _f),
                Column("dist_param", "distance from start in weight space", _f)]
TRANSITION_COLUMNS = [Column("t_lo", "t before", _f), Column("t_hi", "t after", _f),
                      Column("before", "robust before (b0, b1, b2)", betti), Column("after", "robust after (b0, b1, b2)", betti),
                      Column("width", "width in t", _f), Column("chamfer_jump", "Chamfer-L1 jump (world units)", _f),
                      Column("components_before", "components above threshold before"),
                      Column("components_after", "components above threshold after")]


def _steps_view(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        out.append({**r, "t": _f(r["t"], 6), "rb0": betti(_b(r)), "b0": betti(_b(r, "b"))})
    return out


def interpolate_section(f: Finding) -> Section:
    res, folder = f.results, f.folder
    s = Section(f, files=_files(folder))
    if "summary" in res:  # pairs: tables of the pairs, no single path to draw
        pairs = read_rows(folder / "pairs.csv")
        spaces = list(dict.fromkeys(p.get("space", "") for p in pairs))  # weight and condition paths: one series each
        groups = [(w, sp, lab if len(spaces) < 2 else f"{lab}, {sp} space")
                  for sp in spaces for w, lab in (("True", "within family"), ("False", "across families"))]
        s.figures.append({"data": [{"type": "histogram", "x": [int(p["transitions"]) for p in pairs
                                                               if p["within_family"] == w and p.get("space", "") == sp],
                                    "name": lab, "opacity": 0.7} for w, sp, lab in groups],
                          "layout": _layout("topology changes per path", barmode="overlay",
                                            xaxis={"title": {"text": "changes per path"}}, yaxis={"title": {"text": "paths"}})})
        cols = [Column("space", "space")] if len(spaces) > 1 else []
        cols += [Column("a", "start"), Column("b", "end"), Column("within_family", "within family", _yes),
                Column("start", "robust at start"), Column("end", "robust at end"), Column("transitions", "changes"),
                Column("min_width", "narrowest width in t", _f), Column("chamfer_start_end", "Chamfer-L1 start-end", _f)]
        s.tables.append(("paths", table(pairs, cols, source="pairs.csv")))
        return s
    steps = read_rows(folder / "steps.csv")
    t = [float(r["t"]) for r in steps]
    data: list[dict[str, Any]] = []
    for i, colour in zip(range(3), ("#1f77b4", "#ff7f0e", "#2ca02c")):
        data.append({"type": "scatter", "mode": "lines+markers", "line": {"shape": "hv", "color": colour}, "marker": {"size": 4},
                     "x": t, "y": [int(float(r[f"rb{i}"])) for r in steps], "name": f"robust b{i}", "xaxis": "x", "yaxis": "y"})
    for key, name, colour in (("chamfer_start", "Chamfer-L1 to start", "#9467bd"), ("chamfer_end", "Chamfer-L1 to end", "#8c564b")):
        data.append({"type": "scatter", "mode": "lines+markers", "marker": {"size": 4}, "line": {"color": colour}, "x": t,
                     "y": [float(r[key]) if r[key] not in ("", "nan") else None for r in steps], "name": name,
                     "xaxis": "x", "yaxis": "y2"})
    shapes, notes = [], []
    for k, tr in enumerate(res["transitions"]):
        mid = 0.5 * (tr["t_lo"] + tr["t_hi"])
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": mid, "x1": mid, "y0": 0, "y1": 1,
                       "line": {"color": "red", "width": 1.5, "dash": "dot"}})
        notes.append({"x": mid, "y": 1.0, "xref": "x", "yref": "paper", "yanchor": "bottom", "showarrow": False,
                      "text": f"{k + 1}", "font": {"color": "red", "size": 11}})
    s.figures.append({"data": data, "layout": _layout(
        f"{res['a']} → {res['b']}: robust Betti numbers and Chamfer along t (red: located changes)", height=430,
        shapes=shapes, annotations=notes, xaxis={"title": {"text": "t"}, "range": [0, 1], "anchor": "y2"},
        yaxis={"title": {"text": "Betti number"}, "domain": [0.45, 1.0], "dtick": 1, "rangemode": "tozero"},
        yaxis2={"title": {"text": "Chamfer-L1"}, "domain": [0.0, 0.37], "anchor": "x", "rangemode": "tozero"})})
    s.cards, by_t = _path_cards(f, steps)
    for k, tr in enumerate(res["transitions"]):
        lo, hi = by_t.get(round(tr["t_lo"], 6)), by_t.get(round(tr["t_hi"], 6))
        if lo is not None and hi is not None:
            s.pairs.append((f"change {k + 1}: {betti(tr['before'])} → {betti(tr['after'])} within Δt = {tr['width']:.2g}",
                            _large(lo), _large(hi)))
    s.tables.append(("located topology changes", table(res["transitions"], TRANSITION_COLUMNS, source="transitions.csv")))
    s.tables.append(("every decoded t", table(_steps_view(steps), STEP_COLUMNS, source="steps.csv")))
    return s


def _large(card: MeshCard) -> MeshCard:
    return MeshCard(card.path, card.generator, card.study, card.kind, card.index, card.robust, card.intended, large=True)


def _path_cards(f: Finding, steps: list[dict[str, str]]) -> tuple[list[MeshCard], dict[float, MeshCard]]:
    res = f.results
    check = {i: c for i, c in enumerate(res.get("endpoint_check", [])[:2])}
    ends = [tuple(check[i]["intended"]) if i in check and check[i].get("intended") else tuple(b)
            for i, b in enumerate((res["start"], res["end"]))]
    robust = {round(float(r["t"]), 6): _b(r) for r in steps}
    cards, by_t = [], {}
    for path in sorted((f.folder / "meshes").glob("t*.ply")):
        m = re.fullmatch(r"t([0-9.]+)", path.stem)
        if not m:
            continue
        t = round(float(m.group(1)), 6)
        intended = [ends[0]] if t == 0 else [ends[1]] if t == 1 else ends
        card = MeshCard(path, f.checkpoint, "interpolate", "path", f"t = {t:.4f}", robust.get(t), list(intended))
        cards.append(card)
        by_t[t] = card
    cards.sort(key=lambda c: float(c.index.split("= ")[1]))
    return cards, by_t


# --- subspace ---------------------------------------------------------------------------------------------------
KIND_COLUMNS = [Column("kind", "kind of point"), Column("n", "samples"),
                Column("kept", "topology kept (robust), 95% CI"), Column("kept_and_valid", "kept and valid, 95% CI"),
                Column("validity", "valid", _f), Column("local_variation", "local variation: Chamfer-L1 to nearest example", _f),
                Column("diversity", "diversity: mean pairwise Chamfer-L1", _f),
                Column("novelty_weight_ratio", "weight distance to nearest example / examples' spacing", _f),
                Column("mean_radius", "mean distance from the mean (weight units)", _f)]
SAMPLE_COLUMNS = [Column("kind", "kind"), Column("index", "#"), Column("robust", "robust (b0, b1, b2)"),
                  Column("kept_robust", "kept", _yes), Column("valid", "valid", _yes),
                  Column("chamfer_nearest_example", "Chamfer-L1 to nearest example", _f),
                  Column("nearest_example", "nearest example"), Column("radius", "distance from the mean (weight units)", _f),
                  Column("gate", "flagged by the gate", _yes)]


def _ci_text(r: dict[str, Any]) -> str:
    return f"{r['rate']:.2f} [{r['low']:.2f}, {r['high']:.2f}] ({r['successes']}/{r['n']})"


def subspace_section(f: Finding) -> Section:
    res, h, folder = f.results, f.headline, f.folder
    s = Section(f, files=_files(folder))
    kinds = list(h["kept"])
    data = []
    for key, name, colour in (("kept", "topology kept (robust)", "#9ecae1"), ("kept_and_valid", "kept and valid", "#1f77b4")):
        r = [h[key][k] for k in kinds]
        data.append({"type": "bar", "name": name, "x": [k.replace("_", " ") for k in kinds], "y": [x["rate"] for x in r],
                     "marker": {"color": colour},
                     "error_y": {"type": "data", "symmetric": False, "array": [x["high"] - x["rate"] for x in r],
                                 "arrayminus": [x["rate"] - x["low"] for x in r], "thickness": 1.2, "width": 4},
                     "text": [f"{x['successes']}/{x['n']}" for x in r], "textposition": "inside"})
    s.figures.append({"data": data, "layout": _layout(
        "kept rates by kind, Wilson 95% intervals" + (f" (examples' topology {betti(h['examples_topology'])})"
                                                       if h["examples_topology"] else ""), barmode="group",
        yaxis={"title": {"text": "rate"}, "range": [0, 1.05]})})
    rows = read_rows(folder / "samples.csv")
    s.cards = _sample_cards(f, folder, kinds, None, h["examples_topology"])
    for cell in sorted((folder / "cells").glob("*/")) if (folder / "cells").is_dir() else []:
        res_cell = read_results(cell / "results.json") if (cell / "results.json").is_file() else {}
        s.cards += _sample_cards(f, cell, kinds, cell.name, (res_cell.get("examples_topology") or {}).get("robust"))
    summary = res["summary"]
    s.tables.append(("by kind of point", table(
        [{"kind": k.replace("_", " "), "n": summary.get(k, {}).get("n"), "kept": _ci_text(h["kept"][k]),
          "kept_and_valid": _ci_text(h["kept_and_valid"][k]), **{c: summary.get(k, {}).get(c) for c in
                                                                 ("validity", "local_variation", "diversity",
                                                                  "novelty_weight_ratio", "mean_radius")}} for k in kinds],
        KIND_COLUMNS)))
    s.tables.append(("every sample", table([{**r, "kind": r["kind"].replace("_", " "), "robust": betti(_b(r))} for r in rows],
                                           SAMPLE_COLUMNS, source="samples.csv")))
    return s


def _sample_cards(f: Finding, folder: Path, kinds: list[str], cell: str | None, target: Any) -> list[MeshCard]:
    """Cards of the meshes in folder/meshes (one cell's, or the study's own), labelled from its samples.csv."""
    robust = {(r["kind"], int(r["index"])): _b(r) for r in read_rows(folder / "samples.csv")}
    cards = []
    for path in sorted((folder / "meshes").glob("*.ply"), key=lambda p: (_kind_order(p.stem, kinds), p.stem)):
        m = re.fullmatch(r"(.+)-(\d+)", path.stem)
        if m:
            kind, i = m.group(1), int(m.group(2))
            index = f"#{i}" if cell is None else f"#{i} ({cell})"
            cards.append(MeshCard(path, f.checkpoint, "subspace", kind, index, robust.get((kind, i)),
                                  [tuple(target)] if target else []))
    return cards


def _kind_order(stem: str, kinds: list[str]) -> int:
    for i, k in enumerate(kinds):
        if stem.startswith(k + "-"):
            return i
    return len(kinds)


# --- fit -------------------------------------------------------------------------------------------------------------
METHOD_COLUMNS = [Column("method", "method"),
                  Column("chamfer_l1", "Chamfer-L1 to the clean shape (world units; mean of the fits with a surface)", _f),
                  Column("chamfer_l1_median", "Chamfer-L1 median, an empty fit counting as ∞", _f),
                  Column("empty_fits", "fits with no surface"),
                  Column("fscore", "F-score", _f), Column("topology", "topology correct, 95% CI"),
                  Column("forgetting", "forgetting: ΔChamfer-L1 on held-out shapes", _f),
                  Column("forget_fscore_drop", "forgetting: F-score drop", _f),
                  Column("forget_max_grid_change", "max |ΔSDF| on held-out shapes", _f),
                  Column("fit_seconds", "seconds", _f)]
FIT_ROW_COLUMNS = [Column("views", "views"), Column("sigma", "noise σ (world units)", _f), Column("method", "method"),
                   Column("chamfer_l1", "Chamfer-L1", _f), Column("fscore", "F-score", _f), Column("robust", "robust (b0, b1, b2)"),
                   Column("topology_correct", "topology correct", _yes), Column("forgetting", "forgetting ΔChamfer-L1", _f),
                   Column("trainable", "trained numbers"), Column("fit_seconds", "seconds", _f)]


def fit_section(f: Finding) -> Section:
    res, h, folder = f.results, f.headline, f.folder
    s = Section(f, files=_files(folder))
    by = h["by_method"]
    methods = list(by)
    data = [{"type": "scatter", "mode": "markers", "name": f"{m} (each views × σ)", "showlegend": False, "opacity": 0.45,
             "marker": {"size": 7, "color": METHOD_COLOURS.get(m, "#333")},
             "x": [r["chamfer_l1"] for r in res["table"] if r["method"] == m],
             "y": [r["forgetting"] for r in res["table"] if r["method"] == m]} for m in methods]
    data += [{"type": "scatter", "mode": "markers+text", "name": m, "text": [m], "textposition": "top center",
              "marker": {"size": 13, "color": METHOD_COLOURS.get(m, "#333"), "symbol": "diamond"},
              "x": [by[m]["chamfer_l1"]], "y": [by[m]["forgetting"]]} for m in methods]
    s.figures.append({"data": data, "layout": _layout(
        f"fit versus forgetting on {res['target']['id']} (lower left is better; diamonds: means)",
        xaxis={"title": {"text": "Chamfer-L1 to the clean shape (world units)"}, "rangemode": "tozero"},
        yaxis={"title": {"text": "forgetting: ΔChamfer-L1 on held-out shapes"}})})
    empty, median = h.get("empty_fits", {}), h.get("chamfer_l1_median", {})
    s.tables.append(("methods (means over views × σ)", table(
        [{"method": m, **by[m], "topology": _ci_text(by[m]["topology_correct"]),
          "chamfer_l1_median": "∞" if m in median and median[m] is None else median.get(m),  # None: half or more empty
          "empty_fits": f"{empty[m]['empty']}/{empty[m]['n']}" if m in empty else ""} for m in methods], METHOD_COLUMNS)))
    target = tuple(res["target"]["robust"])
    rows = {f"v{r['views']}-s{r['sigma']:g}-{r['method']}": r for r in res["table"]}
    for path in sorted((folder / "meshes").glob("*.ply"), key=lambda p: (_method_order(p.stem, methods), p.stem)):
        r = rows.get(path.stem)
        if r is not None:
            s.cards.append(MeshCard(path, f.checkpoint, "fit", r["method"], f"{r['views']} view(s), σ = {r['sigma']:g}",
                                    tuple(r["robust"]), [target]))
    s.tables.append(("every fit", table([{**r, "robust": betti(r["robust"])} for r in res["table"]], FIT_ROW_COLUMNS,
                                        source="table.csv")))
    return s


def _method_order(stem: str, methods: list[str]) -> int:
    for i, m in enumerate(methods):
        if stem.endswith("-" + m):
            return i
    return len(methods)


SECTIONS = {"interpolate": interpolate_section, "subspace": subspace_section, "fit": fit_section}


def section(f: Finding) -> Section:
    """The page section of a finding (a refused study: its verdict and files only)."""
    if f.verdict == "refused" or "unread" in f.headline:
        return Section(f, files=_files(f.folder))
    return SECTIONS[f.study](f)

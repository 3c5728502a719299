"""One self-contained HTML page from one or more results folders: what was found, its figures, its shapes, its tables.

`write_page(folders, out)` is the one builder: `weightspace report`, `make demo` and every study call it.
The page works offline: plotly.js is inlined once, images are data URLs, and nothing is fetched.
"""

from __future__ import annotations

import hashlib
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from weightspace.report import page_assets
from weightspace.report.meshviews import (
    MAX_FACES,
    MAX_FACES_LARGE,
    MeshCard,
    decimate,
    ensure_render,
    load_mesh,
    thumbnail,
    view_data,
    view_settings,
)
from weightspace.report.sections import Section, room_for_ticks, section
from weightspace.report.verdicts import CLAIMS, Finding, betti, read_finding, study_of
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_write_text

STUDY_ORDER = ("interpolate", "subspace", "fit")
MAX_DEPTH = 3  # how deep below a given folder study folders are looked for


@dataclass
class Decimation:
    """Faces of the meshes on a page: in the files, and in the page's 3D views."""

    meshes: int = 0
    faces_files: int = 0
    faces_views: int = 0

    def text(self) -> str:
        if not self.meshes:
            return "no meshes"
        return (f"{self.meshes} mesh views: {self.faces_files:,} faces in the mesh files, {self.faces_views:,} in the page's 3D "
                f"views ({self.faces_views / max(self.faces_files, 1):.0%}; vertex clustering to at most {MAX_FACES:,} faces "
                f"per view, {MAX_FACES_LARGE:,} for the shapes either side of a transition)")


@dataclass
class Page:
    """What a page is built from, and what building it measured."""

    findings: list[Finding]
    extra: list[str] = field(default_factory=list)  # HTML sections placed after "What was found" (the demo's shapes)
    decimation: Decimation = field(default_factory=Decimation)


def discover(paths: Sequence[str | Path]) -> list[Path]:
    """Study folders (interpolate, subspace, fit) in or below `paths`, in a stable order, each once (a folder
    given twice, or given and found below another, was shown twice); dot folders (the demo's `.previous`
    studies of replaced checkpoints) are skipped."""
    found: list[Path] = []

    def walk(p: Path, depth: int) -> None:
        if study_of(p) is not None:
            if all(p.resolve() != q.resolve() for q in found):
                found.append(p)
            return
        if depth < MAX_DEPTH:
            for child in sorted(q for q in p.iterdir()
                                if q.is_dir() and q.name not in ("meshes", "renders", "data") and not q.name.startswith(".")):
                walk(child, depth + 1)

    for path in paths:
        p = Path(path)
        if not p.is_dir():
            raise InputError(f"{p}: results folder not found")
        walk(p, 0)
    return found


def write_page(results: Sequence[str | Path], out: str | Path, *, title: str | None = None, extra: Sequence[str] = (),
               notes: dict[str, str] | None = None) -> tuple[Path, Decimation]:
    """Write one page at `out` from the study folders in or below `results`; returns its path and what was decimated.

    extra : HTML sections placed after the verdicts (the demo's shapes); notes : folder (as given) -> a note shown
    under that study's verdict (the demo says when family endpoints were refused and encoded shapes used instead).
    Mesh renders are written to each study's `renders/` folder (PNG files for papers) and reused while fresh.
    """
    from weightspace.report.scans import is_scan_folder, scan_sections

    out = Path(out)
    if out.is_file() and out.suffix.lower() not in (".html", ".htm"):  # a slip like --out runs/ck/config.json
        raise InputError(f"{out}: exists and is not an HTML page (.html); the report would replace it. "
                         f"Give a .html path or a folder for --out")
    scans = [p for p in results if is_scan_folder(p)]  # subspace invert / edit: a section each, after the studies' verdicts
    extra = [*extra, *scan_sections(scans)]
    folders = discover([p for p in results if p not in scans])
    if not folders and not extra:
        raise InputError(f"no study results (interpolate, subspace or fit folders) in {', '.join(map(str, results))}")
    # a folder given beside others that holds no study (a decode, a population) was left off the page in silence
    empty = [str(p) for p in results if p not in scans and not discover([p]) and not (Path(p) / "shapes.csv").is_file()]
    if empty:
        raise InputError(f"no study results (interpolate, subspace or fit folders, or a subspace invert or edit) in or below "
                         f"{', '.join(empty)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    findings = [read_finding(f) for f in folders]
    findings.sort(key=lambda f: (STUDY_ORDER.index(f.study), folders.index(f.folder)))
    notes = {str(Path(k)): v for k, v in (notes or {}).items()}
    page = Page(findings, list(extra))
    body = _body(page, out, title or _default_title(findings), notes)
    atomic_write_text(out, body)
    return out, page.decimation


def write_report(folder: str | Path, *, title: str | None = None) -> Path:
    """A study folder's own page: `report.html` inside it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: results folder not found")
    return write_page([folder], folder / "report.html", title=title)[0]


def _default_title(findings: list[Finding]) -> str:
    if not findings:
        return "weightspace: scans inverted into subspaces and edits along attributes"
    if len(findings) == 1:
        f = findings[0]
        return f"{f.study} study on {f.checkpoint} ({f.generator})"
    return "weightspace: " + ", ".join(sorted({f.study for f in findings}, key=STUDY_ORDER.index)) + " on " + \
        ", ".join(dict.fromkeys(f.checkpoint for f in findings))


def _rel(path: Path, page: Path) -> str:
    return Path(os.path.relpath(path.resolve(), page.parent.resolve())).as_posix()


def _badge(verdict: str) -> str:
    style = verdict if verdict in ("supported", "not supported", "refused") else "inconclusive"
    return f'<span class="verdict v-{style.replace(" ", "-")}">{html.escape(verdict)}</span>'


def _anchor(f: Finding) -> str:
    """The section id of a finding: readable, and unique on a page that holds two folders of one name
    (a short hash of the folder's full path)."""
    readable = "-".join("".join(c if c.isalnum() else "-" for c in x) for x in (f.study, f.checkpoint, f.folder.name))
    return f"s-{readable}-{hashlib.sha1(str(f.folder.resolve()).encode()).hexdigest()[:6]}"


def _body(page: Page, out: Path, title: str, notes: dict[str, str]) -> str:
    figs: dict[str, Any] = {}
    meshes: dict[str, Any] = {}
    generators = list(dict.fromkeys(f.checkpoint for f in page.findings))
    kinds: dict[str, str] = {}
    for f in page.findings:  # a refused study may not name its generator's kind; another study of it does
        if kinds.get(f.checkpoint, "?") == "?":
            kinds[f.checkpoint] = f.generator
    for f in page.findings:
        f.generator = kinds[f.checkpoint]
    kinds = {g: ("kind not recorded" if k == "?" else k) for g, k in kinds.items()}  # a study refused before loading it
    for f in page.findings:
        f.generator = kinds[f.checkpoint]
    gens = ", ".join(f"<b>{html.escape(g)}</b> ({html.escape(kinds[g])})" for g in generators)
    parts = [f"<header><h1>{html.escape(title)}</h1>" + (f"<p class=sub>generators: {gens}</p>" if gens else "") + "</header>"]
    parts.append(_found(page.findings, generators))
    parts += page.extra
    if len(generators) > 1:
        parts.append(_side_by_side(page.findings, generators, figs))
    label = _labels(page.findings)
    for f in page.findings:
        parts.append(_study(section(f), out, figs, meshes, page.decimation, notes.get(str(f.folder)), alone=len(page.findings) == 1,
                            label=label.get(f.folder)))
    parts.append(_about(page.decimation))
    return page_assets.document(title, "\n".join(parts), figs, meshes, view_settings())


def _labels(findings: list[Finding]) -> dict[Path, str]:
    """Labels that tell apart several studies of one kind on one generator: each folder's path below
    the folders' common parent (results-a/subspace, results-b/subspace), so the label differs even
    where the folders share their last name. A study alone of its kind needs none."""
    groups: dict[tuple[str, str], list[Path]] = {}
    for f in findings:
        groups.setdefault((f.study, f.checkpoint), []).append(f.folder)
    labels = {}
    for folders in groups.values():
        if len(folders) > 1:
            common = Path(os.path.commonpath([str(p.resolve()) for p in folders]))
            labels.update({p: str(p.resolve().relative_to(common)) or p.name for p in folders})
    return labels


def _found(findings: list[Finding], generators: list[str]) -> str:
    if not findings:  # a page of subspace inversions or edits alone: they have no claim to check
        return ""
    claims = "".join(f"<li><b>Claim {n}</b> ({html.escape(study)}): {html.escape(text)}</li>"
                     for study, (n, text) in CLAIMS.items() if any(f.study == study for f in findings))
    label = _labels(findings)

    def which(f: Finding) -> str:
        return f" · {html.escape(label[f.folder])}" if f.folder in label else ""

    lines = "".join(
        f'<p class="verdict-line" data-verdict="{html.escape(f.verdict)}">{_badge(f.verdict)} '
        f'<a href="#{_anchor(f)}"><b>Claim {f.claim[0]} · {html.escape(f.study)} · {html.escape(f.checkpoint)}{which(f)}</b></a> '
        f'({html.escape(f.generator)}): {html.escape(f.line)}</p>' for f in findings)
    grid = ""
    if len(generators) > 1:
        studies = [s for s in STUDY_ORDER if any(f.study == s for f in findings)]
        head = "".join(f"<th>{html.escape(g)}</th>" for g in generators)
        rows = ""
        for s in studies:
            cells = ""
            for g in generators:
                fs = [f for f in findings if f.study == s and f.checkpoint == g]
                cells += "<td>" + (" ".join(f'<a href="#{_anchor(f)}">{_badge(f.verdict)}'
                                            + (f" <small>{html.escape(label[f.folder])}</small>" if f.folder in label else "") + "</a>"
                                            for f in fs) or "–") + "</td>"
            rows += f"<tr><th>Claim {CLAIMS[s][0]} · {s}</th>{cells}</tr>"
        grid = f"<table class=glance><thead><tr><th></th>{head}</tr></thead><tbody>{rows}</tbody></table>"
    return f"<section id=found><h2>What was found</h2><ul class=claims>{claims}</ul>{grid}{lines}</section>"


def _side_by_side(findings: list[Finding], generators: list[str], figs: dict[str, Any]) -> str:
    """The generators next to each other: the subspace kept rates and the interpolation changes, one trace each."""
    html_parts = []
    label = _labels(findings)

    def name(f: Finding) -> str:  # two studies of one kind on one generator: a trace (or row) each, told apart
        return f.checkpoint + (f" · {label[f.folder]}" if f.folder in label else "")

    sub = [f for f in findings if f.study == "subspace" and f.verdict != "refused"]
    if sub:
        data = []
        for f in sub:
            r = f.headline["kept_and_valid"]
            data.append({"type": "bar", "name": name(f), "x": [k.replace("_", " ") for k in r], "y": [v["rate"] for v in r.values()],
                         "error_y": {"type": "data", "symmetric": False, "array": [v["high"] - v["rate"] for v in r.values()],
                                     "arrayminus": [v["rate"] - v["low"] for v in r.values()], "thickness": 1.2, "width": 3}})
        figs["cmp-subspace"] = {"data": data, "layout": _cmp_layout("claim 2: kept and valid by kind, per generator (95% intervals)",
                                                                    {"title": {"text": "rate"}, "range": [0, 1.05]}, barmode="group")}
        html_parts.append('<div class="plot" data-fig="cmp-subspace"></div>')
    itp = [f for f in findings if f.study == "interpolate" and f.verdict != "refused" and "located" in f.headline]
    if itp:
        data = [{"type": "scatter", "mode": "markers", "name": name(f),
                 "x": [0.5 * (t["t_lo"] + t["t_hi"]) for t in f.headline["located"]], "y": [name(f)] * len(f.headline["located"]),
                 "text": [f"{betti(t['before'])} → {betti(t['after'])}" for t in f.headline["located"]],
                 "marker": {"size": 11, "symbol": "line-ns-open", "line": {"width": 3}}} for f in itp]
        figs["cmp-interpolate"] = {"data": data, "layout": _cmp_layout(
            "claim 1: where along t each generator's path changes topology", {"type": "category"},
            xaxis={"title": {"text": "t"}, "range": [0, 1]}, showlegend=False, height=90 + 40 * len(itp))}
        html_parts.append('<div class="plot" data-fig="cmp-interpolate"></div>')
    if not html_parts:
        return ""
    return "<section id=side-by-side><h2>Generators side by side</h2><div class=figures>" + "".join(html_parts) + "</div></section>"


def _cmp_layout(title: str, yaxis: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return room_for_ticks({"title": {"text": title, "font": {"size": 13}}, "margin": {"l": 110, "r": 15, "t": 40, "b": 45},
                           "height": kw.pop("height", 330), "yaxis": yaxis, **kw})


def _study(s: Section, out: Path, figs: dict[str, Any], meshes: dict[str, Any], dec: Decimation, note: str | None,
           *, alone: bool, label: str | None = None) -> str:
    """One study's section; `label` (`_labels`) tells its heading from another study's of one kind on one generator."""
    f = s.finding
    n, claim = f.claim
    which = f" · {html.escape(label)}" if label else ""
    parts = [f'<section class=study id="{_anchor(f)}"><h2>Claim {n} · {html.escape(f.study)} · {html.escape(f.checkpoint)}{which} '
             f'<small>({html.escape(f.generator)})</small></h2>']
    if not alone:  # a page of one study says its claim and verdict once, under "What was found"
        parts += [f"<p class=claim>{html.escape(claim)}</p>",
                  f'<p class="verdict-line" data-verdict="{html.escape(f.verdict)}">{_badge(f.verdict)} {html.escape(f.line)}</p>']
    if note:
        parts.append(f"<p class=note>{html.escape(note)}</p>")
    if s.figures:
        divs = ""
        for fig in s.figures:
            key = f"fig{len(figs)}"
            figs[key] = fig
            divs += f'<div class="plot" data-fig="{key}"></div>'
        parts.append(f"<div class=figures>{divs}</div>")
    if s.pairs:
        parts.append("<h3>Either side of each change</h3><div class=pairs>" + "".join(
            f"<div class=pair><p>{html.escape(cap)}</p><div class=pair-cards>{_card(a, f.folder, meshes, dec)}"
            f"{_card(b, f.folder, meshes, dec)}</div></div>" for cap, a, b in s.pairs) + "</div>")
    if s.cards:
        title = {"interpolate": "Shapes along the path", "subspace": "Samples by kind", "fit": "Fits by method"}[f.study]
        parts.append(f"<h3>{title}</h3><div class=gallery>" + "".join(_card(c, f.folder, meshes, dec) for c in s.cards) + "</div>")
    details = "".join(f"<h4>{html.escape(t)}</h4>{tab}" for t, tab in s.tables)
    links = " · ".join(f'<a href="{html.escape(_rel(p, out))}">{html.escape(p.name)}</a>' for p in s.files)
    folders = " · ".join(f'<a href="{html.escape(_rel(f.folder / d, out))}/">{d}/</a>' for d in ("meshes", "renders")
                         if (f.folder / d).is_dir())
    parts.append(f"<details{' open' if alone else ''}><summary>Details: tables and files</summary>{details}"
                 f"<p class=files>files: {links}{' · ' + folders if folders else ''}</p></details></section>")
    return "".join(parts)


def _card(card: MeshCard, root: Path, meshes: dict[str, Any], dec: Decimation) -> str:
    """A labelled mesh view: its static render first, its 3D view (decimated) mounted by the page's script."""
    v, faces = load_mesh(card.path)
    png = ensure_render(card, root, v, faces)
    vd, fd = decimate(v, faces, MAX_FACES_LARGE if card.large else MAX_FACES)
    key = f"m{len(meshes)}"
    meshes[key] = view_data(vd, fd, card.colour)
    dec.meshes += 1
    dec.faces_files += len(faces)
    dec.faces_views += len(fd)
    label = f"{card.generator} · {card.study} · {card.kind.replace('_', ' ')} {card.index}"  # as the figures name it
    badge = ""
    if card.differs:
        want = " or ".join(betti(b) for b in card.intended)
        badge = f' <span class="badge bad" title="intended {html.escape(want)}">≠ {html.escape(want)}</span>'
    elif card.intended and card.robust is not None:
        badge = ' <span class="badge ok" title="as intended">as intended</span>'
    size = f"{len(faces):,} faces in the file, {len(fd):,} in this view"
    return (f'<figure class="mesh-view{" large" if card.large else ""}" data-mesh="{key}" '
            f'title="{html.escape(card.path.name)}: {size}; drag to turn it">'
            f'<div class=mv-box><img class=mv-png alt="{html.escape(label)}" src="{thumbnail(png, 240 if card.large else 160)}">'
            f'<div class=mv-3d></div></div><figcaption><span class=mv-label>{html.escape(label)}</span><br>'
            f'<span class=betti>robust {betti(card.robust)}</span>{badge}</figcaption></figure>')


def _about(dec: Decimation) -> str:
    return ("<section id=about><h2>Reading this page</h2><ul>"
            "<li>Each shape is shown first as a static render (also a PNG file in the study's <code>renders/</code> folder), "
            "then, as it scrolls into sight, as a 3D view (WebGL) you can drag to turn.</li>"
            "<li>Robust (b0, b1, b2): connected components, tunnels and cavities of the decoded solid, ignoring specks below the "
            "volume threshold. A red badge marks a shape whose topology differs from the one it is meant to have (the "
            "examples', the target's, or either end's on a path); blue shapes have it, grey ones state none.</li>"
            f"<li>Decimated for the page: {html.escape(dec.text())}. The full meshes are the PLY files in each "
            "study's <code>meshes/</code> folder.</li>"
            "<li>Intervals are Wilson 95% intervals of a rate over the stated number of samples.</li></ul></section>")

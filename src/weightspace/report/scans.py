"""Page sections for the weight-space commands that are not studies: `subspace invert` (scans inverted into a
subspace) and `subspace edit` (edits along an attribute). Each shows its own gallery.png, its figures and one
table row per scan or step, read from the folder's invert.json / edit.json and manifest.jsonl."""

from __future__ import annotations

import base64
import hashlib
import html
from pathlib import Path
from typing import Any, Sequence

from weightspace.report.sections import Column, table
from weightspace.runtime.errors import InputError
from weightspace.runtime.folders import folder_kind
from weightspace.runtime.io import read_json, read_jsonl

KINDS = ("inversion", "edit")


def scan_sections(folders: Sequence[str | Path]) -> list[str]:
    """The sections of the given folders that hold a finished `subspace invert` or `subspace edit`, in order."""
    out = []
    for folder in map(Path, folders):
        kind = folder_kind(folder)
        if kind == "inversion":
            out.append(inversion_section(folder))
        elif kind == "edit":
            out.append(edit_section(folder))
    return out


def _read(folder: Path, record: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if not (folder / record).is_file():
        raise InputError(f"{folder}: no {record}: the run there did not finish; rerun it to finish it")
    result = read_json(folder / record)
    if not isinstance(result, dict):
        raise InputError(f"{folder / record}: expected a JSON object")
    return result, [row for _, row in read_jsonl(folder / "manifest.jsonl")]


def _img(folder: Path, name: Any, alt: str) -> str:
    png = folder / str(name or "gallery.png")
    if not png.is_file():
        return f"<p class=files>{html.escape(str(png))} is missing</p>"
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img class=families alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _text(v: Any) -> str:
    return html.escape(str(v))


def _flag(v: Any) -> str:
    """A flag a row carries only when it is set (absent: no)."""
    return _num(bool(v))


def _betti(v: Any) -> str:
    return html.escape(str(tuple(v))) if isinstance(v, list) else "?"


def _id(kind: str, folder: Path) -> str:
    return f"{kind}-{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]}"


def _median(fig: dict[str, Any] | None) -> str:
    return _num((fig or {}).get("median"))


def inversion_section(folder: Path) -> str:
    """A `subspace invert` folder: how far the seen points lie from the shapes, before and after, and the shapes."""
    result, rows = _read(folder, "invert.json")
    s = result.get("summary", {})
    subspace = str(result.get("config", {}).get("subspace", "?"))
    parts = [f"{s.get('scans', len(rows))} scan(s) inverted into {subspace}; {s.get('empty', 0)} decode empty; seen points to the "
             f"surface, median {_median(s.get('seen_distance'))} (at the start {_median(s.get('seen_distance_start'))})"]
    if "iou" in s:
        parts.append(f"IoU with the observed shape {_median(s.get('iou'))} (start {_median(s.get('iou_start'))})")
    topo = s.get("topology_correct")
    if isinstance(topo, dict):
        parts.append(f"robust Betti of the observed shape {topo.get('successes')}/{topo.get('n')} "
                     f"[{_num(topo.get('low'), 2)}, {_num(topo.get('high'), 2)}]")
    if s.get("members_of_subspace"):
        parts.append(f"{s['members_of_subspace']} of the observed shapes are the subspace's own (recall, not generalisation)")
    columns = [Column("id", "scan", _text), Column("robust", "robust Betti", _betti),
               Column("seen_distance_start", "seen distance: start", _num), Column("seen_distance", "after", _num),
               Column("iou_start", "IoU: start", _num), Column("iou", "after", _num),
               Column("topology_correct", "Betti as the shape", _num), Column("member_of_subspace", "member", _flag)]
    return (f"<section id={_id('inversion', folder)}><h2>Scans inverted into a subspace: {html.escape(folder.name)}</h2>"
            f"<p class=verdict-line>{html.escape('; '.join(parts))}</p>"
            + _img(folder, result.get("gallery"), "points seen, the observed shape and its inversion, per scan")
            + table(rows, columns, source=str(folder / "manifest.jsonl"))
            + f"<p class=files>files: {html.escape(str(folder))} (invert.json, manifest.jsonl, points/, grids/, meshes/)</p></section>")


def edit_section(folder: Path) -> str:
    """A `subspace edit` folder: how well the direction explains the attribute, and the shapes along it."""
    result, rows = _read(folder, "edit.json")
    fit = result.get("fit", {})
    attribute = str(result.get("attribute", "?"))
    line = (f"direction of {attribute} over {fit.get('n')} members: R^2 {_num(fit.get('r2'), 2)}, leave-one-out "
            f"{_num(fit.get('r2_leave_one_out'), 2)}; from {result.get('start')}, amounts in the members' spread along it")
    if result.get("measured_vs_amount_spearman") is not None or "measured" in result:
        line += f"; measured {attribute} against the amounts: Spearman rho {_num(result.get('measured_vs_amount_spearman'), 2)}"
    beyond = [r.get("amount") for r in rows if r.get("beyond_members")]
    if beyond:
        line += f"; amounts {', '.join(_num(a) for a in beyond)} lie beyond every member (extrapolation)"
    columns = [Column("amount", "amount", _num), Column("robust", "robust Betti", _betti), Column("volume", "volume", _num),
               Column("predicted", f"predicted {attribute}", _num), Column("measured", "measured", _num),
               Column("beyond_members", "beyond the members", _flag)]
    return (f"<section id={_id('edit', folder)}><h2>Edit along {html.escape(attribute)}: {html.escape(folder.name)}</h2>"
            f"<p class=verdict-line>{html.escape(line)}</p>"
            + _img(folder, result.get("gallery"), f"shapes along the {attribute} direction")
            + table(rows, columns, source=str(folder / "manifest.jsonl"))
            + f"<p class=files>files: {html.escape(str(folder))} (edit.json, manifest.jsonl, points/, grids/, meshes/)</p></section>")


def is_scan_folder(folder: str | Path) -> bool:
    return folder_kind(folder) in KINDS

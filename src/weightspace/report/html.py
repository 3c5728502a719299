"""One self-contained HTML page per results folder: figures, tables, plots and an interactive 3D view."""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_write_text, read_json

MAX_TABLE_ROWS = 200
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f4f4f4; } td.k { text-align: left; font-family: monospace; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.meshes { display: flex; flex-wrap: wrap; gap: 8px; } .mesh { width: 340px; }
pre { background: #f8f8f8; padding: 0.5em; overflow-x: auto; font-size: 0.8em; }
"""


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar leaves of a JSON object as (dotted key, value); lists of scalars stay whole."""
    if isinstance(obj, dict):
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return [(prefix, f"[{len(obj)} items]")]
    return [(prefix, obj)]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(json.dumps(v) if isinstance(v, list) else str(v))


def _figures_table(results: dict) -> str:
    rows = "".join(f"<tr><td class=k>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in _flatten(results))
    return f"<table><tr><th>figure</th><th>value</th></tr>{rows}</table>"


def _csv_table(path: Path) -> str:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return "<p>(empty)</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1 : MAX_TABLE_ROWS + 1]
    )
    more = f"<p>{len(rows) - 1 - MAX_TABLE_ROWS} more rows in {path.name}</p>" if len(rows) - 1 > MAX_TABLE_ROWS else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _mesh_div(path: Path, include_js: bool) -> str:
    """An interactive plotly view of one mesh (plotly.js inlined once per page)."""
    import plotly.graph_objects as go

    mesh = trimesh.load(path, force="mesh", process=False)
    v = np.asarray(mesh.vertices, dtype=np.float32)  # (V, 3) world units
    f = np.asarray(mesh.faces)  # (F, 3) int
    fig = go.Figure(
        go.Mesh3d(x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2], color="#8fb3d9", flatshading=True)
    )
    box = dict(range=[-1, 1], visible=False)
    fig.update_layout(
        title=dict(text=path.stem, font=dict(size=11)),
        scene=dict(xaxis=box, yaxis=box, zaxis=box, aspectmode="cube"),
        margin=dict(l=0, r=0, t=24, b=0),
        height=320,
    )
    div = fig.to_html(full_html=False, include_plotlyjs="inline" if include_js else False)
    return f'<div class="mesh">{div}</div>'


def write_report(folder: str | Path, *, title: str | None = None, max_meshes: int = 6, links: dict[str, str] | None = None) -> Path:
    """Write `report.html` into a results folder and return its path.

    Reads what the folder has: `config.json`, `results.json`, `*.csv` tables, `*.png` plots and
    up to `max_meshes` PLY meshes (interactive). `links` maps labels to relative paths of other
    reports (the demo's page links its studies).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: results folder not found")
    parts = [f"<h1>{html.escape(title or folder.name)}</h1>"]
    if links:
        items = "".join(f'<li><a href="{html.escape(href)}">{html.escape(label)}</a></li>' for label, href in links.items())
        parts.append(f"<h2>Studies</h2><ul>{items}</ul>")
    if (folder / "results.json").is_file():
        parts.append("<h2>Figures</h2>" + _figures_table(read_json(folder / "results.json")))
    for path in sorted(folder.glob("*.png")):
        parts.append(f"<h2>{html.escape(path.stem)}</h2>" + _png(path))
    for path in sorted(folder.glob("*.csv")):
        parts.append(f"<h2>{html.escape(path.name)}</h2>" + _csv_table(path))
    meshes = sorted(folder.rglob("*.ply"))[:max_meshes]
    if meshes:
        divs = [_mesh_div(p, include_js=(i == 0)) for i, p in enumerate(meshes)]
        parts.append("<h2>Meshes</h2><div class=meshes>" + "".join(divs) + "</div>")
    if (folder / "config.json").is_file():
        config = json.dumps(read_json(folder / "config.json"), indent=2)
        parts.append(f"<h2>Configuration</h2><pre>{html.escape(config)}</pre>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title or folder.name)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )
    out = folder / "report.html"
    atomic_write_text(out, page)
    return out

"""Gallery PNGs: a grid of rendered shapes (marching-cubes meshes), one labelled cell per SDF grid."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from weightspace.decode.mesh import grid_to_mesh
from weightspace.runtime.io import atomic_path

VIEW = (25.0, -60.0)  # matplotlib 3D view (elevation, azimuth), degrees


COLOURS = {"ok": (0.35, 0.55, 0.85), "bad": (0.85, 0.4, 0.35), "grey": (0.6, 0.6, 0.6)}  # RGB in [0, 1]
LIGHT = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])  # (3,) unit direction of the fixed light


def draw_mesh(ax, vertices: np.ndarray, faces: np.ndarray, colour: str = "grey") -> None:
    """Draw a mesh on a matplotlib 3D axis in the box [-1, 1]^3, lit by its face normals (no OpenGL).

    vertices : (V, 3) float, world units; faces : (F, 3) int; colour : "ok" (blue), "bad" (red) or "grey".
    """
    v, f = np.asarray(vertices, dtype=np.float64), np.asarray(faces)
    if len(f):
        n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # (F, 3) face normals, unnormalised
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        light = np.clip(n @ LIGHT, 0, 1)  # (F,)
        base = np.array(COLOURS.get(colour, COLOURS["grey"]))
        colours = np.clip(base[None] * (0.35 + 0.65 * light[:, None]), 0, 1)  # (F, 3)
        coll = ax.plot_trisurf(v[:, 0], v[:, 1], v[:, 2], triangles=f, linewidth=0, antialiased=False, shade=False)
        coll.set_facecolor(colours)
    else:
        ax.text(0, 0, 0, "empty", ha="center", va="center", fontsize=8)
    ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(*VIEW)
    ax.set_axis_off()


def facing_view(vertices: np.ndarray, faces: np.ndarray, flatness: float = 0.5) -> tuple[float, float]:
    """A matplotlib (elevation, azimuth) that looks at a flat shape's face, so its holes show; VIEW for a round one.

    A ladder yawed edge-on to VIEW showed as a line, and a ring lying flat as an ellipse with no visible hole.
    The face's normal is the surface's axis of least spread (area-weighted PCA of the faces' centres); a shape
    counts as flat when that spread is under `flatness` times the next. The camera keeps VIEW's elevation of
    a horizontal normal's side view, tilted up to 65 degrees as the normal stands up.
    vertices : (V, 3) float, world units; faces : (F, 3) int.
    """
    v, f = np.asarray(vertices, dtype=np.float64), np.asarray(faces)
    if len(f) < 4:
        return VIEW
    tri = v[f]  # (F, 3, 3)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)  # (F,)
    centre = tri.mean(axis=1)  # (F, 3)
    mean = (area[:, None] * centre).sum(0) / max(area.sum(), 1e-12)
    d = centre - mean
    cov = (area[:, None, None] * d[:, :, None] * d[:, None, :]).sum(0) / max(area.sum(), 1e-12)  # (3, 3)
    spread, axes = np.linalg.eigh(cov)  # ascending
    if spread[0] >= flatness * spread[1]:
        return VIEW
    n = axes[:, 0] * (1 if axes[2, 0] >= 0 else -1)  # (3,) the face's normal, towards +z (the camera stays above)
    elev = float(np.clip(np.degrees(np.arcsin(np.clip(n[2], -1, 1))), VIEW[0], 65.0))
    azim = float(np.degrees(np.arctan2(n[1], n[0]))) if np.hypot(n[0], n[1]) > 1e-6 else VIEW[1]
    return elev, azim


def _draw(ax, grid: np.ndarray, title: str, colour: str, facing: bool = False) -> None:
    mesh = grid_to_mesh(grid)
    draw_mesh(ax, mesh.vertices, mesh.faces, colour)
    if facing:
        ax.view_init(*facing_view(mesh.vertices, mesh.faces))
    ax.set_title(title, fontsize=7, pad=0)


def render_gallery(rows: Sequence[Sequence[np.ndarray]], path: str | Path, *, row_labels: Sequence[str],
                   titles: Sequence[Sequence[str]] | None = None, ok: Sequence[Sequence[bool]] | None = None,
                   title: str = "", cell: float = 1.5, facing: bool = False) -> Path:
    """Render `rows` of SDF grids (each (R, R, R), world units) into one PNG at `path`.

    row_labels : one label per row (e.g. the family); titles : one caption per cell (e.g. the
    seed and Betti numbers); ok : per cell, blue when True, red when False (grey when omitted);
    facing : each shape seen from its own `facing_view` (one shape per family) instead of VIEW for all.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max((len(r) for r in rows), default=0)
    width = cell * n_cols + 0.8  # inches
    title = textwrap.fill(title, width=max(30, int(width / 0.075)))  # about 0.075 in per character at 9 pt
    header = 0.25 + (0.08 + 0.16 * (title.count("\n") + 1) if title else 0.0)  # the cells' captions, then the title's lines
    height = cell * n_rows + header
    fig = plt.figure(figsize=(width, height))
    for i, row in enumerate(rows):
        for j, grid in enumerate(row):
            ax = fig.add_subplot(n_rows, n_cols, i * n_cols + j + 1, projection="3d")
            colour = "grey" if ok is None else ("ok" if ok[i][j] else "bad")
            _draw(ax, np.asarray(grid), titles[i][j] if titles else "", colour, facing)
            if j == 0:
                ax.text2D(-0.15, 0.5, row_labels[i], transform=ax.transAxes, rotation=90, va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.06 / height, va="top")
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.01, top=1 - header / height, wspace=0.0, hspace=0.15)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path

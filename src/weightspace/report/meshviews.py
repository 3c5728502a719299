"""Mesh views of a report page: decimation for the page, static PNG renders (also files) and the 3D view's data."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from weightspace.report.gallery import COLOURS, VIEW, draw_mesh
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_path

Betti = tuple[int, int, int]
RENDER_PX = 320  # side of a render written for papers, pixels
THUMB_PX = 160  # side of the render shown on the page, pixels
MAX_FACES = 1200  # faces of a gallery view on the page (the full mesh stays a file)
MAX_FACES_LARGE = 3000  # faces of a large view (the shapes either side of a transition)
BOX = 1.1  # vertices are quantised over [-BOX, BOX]^3 (meshes live in [-1, 1]^3, with a margin)


@dataclass
class MeshCard:
    """One mesh on a page: where it is, what it is, its measured and intended topology."""

    path: Path  # the full mesh (PLY), world units
    generator: str  # checkpoint name, e.g. "default"
    study: str  # "interpolate", "subspace", "fit"
    kind: str  # "path", a sample kind or a fit method
    index: str  # "#3", "t = 0.5176", "2 views, sigma 0.01"
    robust: Betti | None  # measured robust (b0, b1, b2)
    intended: list[Betti] = field(default_factory=list)  # topologies this mesh is meant to have (empty: none stated)
    large: bool = False

    @property
    def differs(self) -> bool:
        return bool(self.intended) and self.robust is not None and tuple(self.robust) not in [tuple(b) for b in self.intended]

    @property
    def colour(self) -> str:
        return "grey" if not self.intended or self.robust is None else ("bad" if self.differs else "ok")


def load_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """vertices (V, 3) float64, faces (F, 3) int64 of a mesh file (empty arrays for an empty mesh)."""
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as e:  # trimesh's loaders raise many exception types on a damaged file
        raise InputError(f"{path}: not a readable mesh ({type(e).__name__}: {e}); rerun the study that wrote it, "
                         "or delete the file to leave it off the page") from None
    v = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)  # (V, 3)
    f = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)  # (F, 3)
    return v, f


def cluster_vertices(vertices: np.ndarray, faces: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertex clustering (Rossignac & Borrel 1993): snap vertices to a grid of `cells` per unit box side,
    replace each occupied cell's vertices by their mean, drop faces that collapse and duplicate faces.

    vertices : (V, 3) float in [-1, 1]^3; faces : (F, 3) int. Returns (V', 3), (F', 3) with F' <= F.
    """
    key = np.floor((vertices + BOX) / (2 * BOX) * cells).astype(np.int64)  # (V, 3) cell of each vertex
    _, cluster, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    cluster = cluster.reshape(-1)  # (V,) cluster index of each vertex
    v_new = np.zeros((len(counts), 3))
    np.add.at(v_new, cluster, vertices)
    v_new /= counts[:, None]  # (V', 3) cluster means
    f_new = cluster[faces]  # (F, 3)
    keep = (f_new[:, 0] != f_new[:, 1]) & (f_new[:, 1] != f_new[:, 2]) & (f_new[:, 0] != f_new[:, 2])
    f_new = f_new[keep]
    _, first = np.unique(np.sort(f_new, axis=1), axis=0, return_index=True)
    return v_new, f_new[np.sort(first)]


def decimate(vertices: np.ndarray, faces: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """The mesh with at most `max_faces` faces, by vertex clustering on ever coarser grids (the mesh itself when
    it is small enough). Shapes (V, 3), (F, 3) in, (V', 3), (F', 3) out."""
    cells = 96
    v, f = vertices, faces
    while len(f) > max_faces and cells >= 4:
        v, f = cluster_vertices(vertices, faces, cells)
        cells = int(cells * 0.8)
    return v, f


def render_png(vertices: np.ndarray, faces: np.ndarray, path: Path, colour: str = "grey", px: int = RENDER_PX) -> Path:
    """A static render (matplotlib, no OpenGL) of a mesh, `px` pixels square, written atomically to `path`."""
    from weightspace.runtime.results import pyplot

    plt = pyplot()
    dpi = 100
    fig = plt.figure(figsize=(px / dpi, px / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1), projection="3d")
    draw_mesh(ax, vertices, faces, colour)
    ax.set_proj_type("persp", focal_length=1.2)
    ax.set_box_aspect((1, 1, 1), zoom=1.6)  # the shapes fill about [-0.8, 0.8]^3 of the box
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, transparent=True, metadata={"Description": colour})
    plt.close(fig)
    return path


def render_path(card: MeshCard, root: Path) -> Path:
    """Where the render of a card's mesh is written: `.../renders/<stem>.png` beside its `.../meshes/` folder."""
    folder = card.path.parent
    return (folder.parent if folder.name == "meshes" else root) / "renders" / f"{card.path.stem}.png"


def ensure_render(card: MeshCard, root: Path, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """The card's render file, drawn again only when missing, older than the mesh or of another colour
    (the colour is kept in the PNG's Description field)."""
    from PIL import Image

    out = render_path(card, root)
    if out.is_file() and out.stat().st_mtime >= card.path.stat().st_mtime:
        with Image.open(out) as im:
            if im.info.get("Description") == card.colour:
                return out
    return render_png(vertices, faces, out, card.colour)


def thumbnail(path: Path, px: int = THUMB_PX) -> str:
    """A render shrunk to `px` pixels and reduced to 96 colours, as a base64 PNG data URL."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGBA").resize((px, px), Image.LANCZOS)
        small = im.quantize(colors=96, method=Image.Quantize.FASTOCTREE)
        buf = io.BytesIO()
        small.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def view_data(vertices: np.ndarray, faces: np.ndarray, colour: str = "grey") -> dict[str, object]:
    """The 3D view's data: vertices quantised to uint16 over [-BOX, BOX] and faces as uint16 (uint32 past 65,535
    vertices), both little-endian and base64, decoded by the page's script: 6 bytes per vertex, 6 per face."""
    q = np.clip(np.round((vertices + BOX) / (2 * BOX) * 65535), 0, 65535).astype("<u2")  # (V, 3) uint16
    wide = len(vertices) > 65535
    f = faces.astype("<u4" if wide else "<u2")  # (F, 3)
    return {"v": base64.b64encode(q.tobytes()).decode("ascii"), "f": base64.b64encode(f.tobytes()).decode("ascii"),
            "f32": wide, "box": BOX, "colour": "#%02x%02x%02x" % tuple(int(255 * c) for c in COLOURS[colour])}


def view_settings() -> dict[str, Any]:
    """How the page's 3D views open: matplotlib's VIEW, the renders' light and a zoom that matches their framing."""
    from weightspace.report.gallery import LIGHT

    return {"elev": VIEW[0], "azim": VIEW[1], "light": [float(x) for x in LIGHT], "zoom": 0.95}

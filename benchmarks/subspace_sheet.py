"""Contact sheet of one subspace-study cell: a row per kind of point, its first N decoded meshes, robust Betti in each title.

Blue: the robust Betti numbers equal the examples' (the cell's `kept_robust`); red: they do not.
Example (the sheets in docs/figures/issue17):
  .venv/bin/python benchmarks/subspace_sheet.py results/findings/default/subspace-weight/cells/torus-K4-s0 torus.png --n 6
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import trimesh

from weightspace.runtime.results import pyplot, save_figure


def sheet(cell: Path, out: Path, n: int) -> None:
    with open(cell / "samples.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not (cell / "meshes").is_dir():
        raise SystemExit(f"{cell}: no meshes/ folder (the study ran with --no-meshes); rerun the cell with meshes to draw it")
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    plt = pyplot()
    fig = plt.figure(figsize=(2.0 * n, 2.0 * len(kinds)))
    for i, kind in enumerate(kinds):
        for j, r in enumerate([r for r in rows if r["kind"] == kind][:n]):
            ax = fig.add_subplot(len(kinds), n, i * n + j + 1, projection="3d")
            path = cell / "meshes" / f"{kind}-{int(r['index']):03d}.ply"
            mesh = trimesh.load(path, force="mesh", process=False) if path.is_file() else None
            if mesh is not None and len(mesh.faces):
                v = mesh.vertices  # (V, 3) world units
                ax.plot_trisurf(v[:, 0], v[:, 1], mesh.faces, v[:, 2], lw=0, alpha=0.9,
                                color="tab:blue" if r["kept_robust"] == "True" else "tab:red")
            ax.set_xlim(-1, 1)
            ax.set_ylim(-1, 1)
            ax.set_zlim(-1, 1)
            ax.set_axis_off()
            ax.set_title(f"{kind} {j}: ({r['rb0']},{r['rb1']},{r['rb2']})" + ("" if path.is_file() else " (no mesh file)") + ("" if mesh is None or len(mesh.faces) else " empty"), fontsize=7)
    fig.suptitle(f"{cell.name} (blue: robust Betti = the examples' mode)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cell", type=Path, help="a cell folder of a subspace study run with meshes")
    ap.add_argument("out", type=Path, help="PNG to write")
    ap.add_argument("--n", type=int, default=8, help="meshes per kind")
    args = ap.parse_args()
    sheet(args.cell, args.out, args.n)

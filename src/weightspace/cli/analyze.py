"""CLI commands of the analysis stage: `weightspace analyze topology | compare`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

analyze_app = typer.Typer(help="Measure shapes: topology of grids and meshes, geometry between two shapes.", no_args_is_help=True)


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


@analyze_app.command("topology")
def topology_cmd(
    files: list[Path] = typer.Argument(..., help="Grid files (.npy: bool, only 0 and 1, or integers of 0 and one value = occupancy; other numbers = SDF; .binvox), meshes (.obj .ply .stl .off .glb), or folders of them."),
    level: float = typer.Option(0.0, "--level", help="Iso level for SDF grids: solid where value < level."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list (keys path, b0, b1, b2, euler, genus, empty, ...; error for a file that failed)."),
) -> None:
    """Betti numbers (b0 components, b1 tunnels, b2 cavities), Euler characteristic and genus, one row per file.

    Grids use 26-connected solid / 6-connected background (union of closed voxel cubes). A folder
    stands for the grid and mesh files under it. A grid with nothing solid, or a mesh file with no
    vertices and no faces, is the empty shape (0, 0, 0). A file that cannot be measured is named
    with its reason on stderr (and has an entry with "error" in --json) while the others are still
    measured; the exit status is then 2.

    Example: weightspace analyze topology runs/data32/grids/*.npy --json
    """
    from weightspace.analysis.files import analyze_files

    rows = analyze_files(files, level=level)
    failed = [r for r in rows if "error" in r]
    for r in failed:
        typer.echo(f"error: {r['error']}", err=True)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif len(failed) < len(rows):
        _topology_table([r for r in rows if "error" not in r])
    if failed:
        raise typer.Exit(code=2)


def _topology_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("kind", "b0", "b1", "b2", "euler", "genus", "note")
    table.add_column("path", overflow="fold")
    for r in rows:
        if r["empty"]:
            note = "empty (nothing solid)" if r["kind"] == "grid" else "empty (no surface)"
        elif r["kind"] == "grid":
            units = " voxels" if r.get("volume_units") == "voxels" else ""
            note = f"max vol {max(r['component_volumes'], default=0.0):.3g}{units}"
        elif r["crossing"]:
            note = "watertight, surfaces cross"
        else:
            note = "watertight" if r["watertight"] else "not watertight"
        table.add_row(r["kind"], *(_fmt(r[k]) for k in ("b0", "b1", "b2", "euler", "genus")), note, r["path"])
    Console().print(table)


@analyze_app.command("compare")
def compare_cmd(
    a: Path = typer.Argument(..., help="First shape: mesh file, .npy grid (0/1 or bool = occupancy) or .binvox."),
    b: Path = typer.Argument(..., help="Second shape: mesh file, .npy grid (0/1 or bool = occupancy) or .binvox."),
    n: int = typer.Option(10_000, "--n", help="Surface samples per shape."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    tau: float = typer.Option(0.02, "--tau", help="F-score threshold in world units (0.02 = 1% of the [-1, 1] box side)."),
    level: float = typer.Option(0.0, "--level", help="Iso level used to mesh SDF grids."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list holding one object of metrics."),
) -> None:
    """Chamfer (L1, squared L2), Hausdorff, F-score at tau, normal consistency, and IoU for two grids.

    A grid solid everywhere at --level is the solid box: its surface is the box's boundary, as
    `analyze topology` counts it (1, 0, 0). A grid with nothing solid at --level has no surface
    and never scores as a match: against a shape with one, the distances are inf and the scores
    (F-score, precision, recall, normal consistency, IoU) 0; two such grids give NaN distances, zero
    scores and IoU 1 (the same empty solid, voxel for voxel, as everywhere IoU is reported). Such files are listed under no_surface, grids that are the whole box under solid_everywhere,
    and both are named on stderr; --json writes inf and NaN as null.

    Nothing is rescaled: a mesh or .binvox file is compared in its own frame and units, a .npy grid in
    the [-1, 1]^3 box it samples; the distances and --tau are in those units.

    The distances come from --n random surface samples of each shape, so a shape compared with itself
    does not score 0 / 1: at the default 10,000 samples of a shape in the unit box, Chamfer L1 is about
    0.01 and the F-score about 0.96 (two independent samplings). Read differences against that floor,
    or raise --n.

    Example: weightspace analyze compare a.npy b.obj --n 20000 --json
    """
    from weightspace.analysis.files import compare_files

    m = compare_files(a, b, n=n, seed=seed, tau=tau, level=level)
    for path in m["no_surface"]:
        what = ("its surface metrics are undefined; IoU 1: the other is empty too" if len(m["no_surface"]) == 2
                else "it matches nothing")
        typer.echo(f"note: {path} has no surface at level {level:g} (nothing is solid): {what}", err=True)
    for path in m["solid_everywhere"]:
        typer.echo(f"note: {path} is solid everywhere at level {level:g}: its surface is the grid's box", err=True)
    if "iou" not in m and a.suffix.lower() == b.suffix.lower() == ".npy":
        typer.echo("note: no IoU: the two grids differ in resolution (IoU compares voxel by voxel)", err=True)
    if as_json:
        # inf (one shape empty) and NaN (both empty) are written as null so the output stays valid JSON.
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in m.items()}
        typer.echo(json.dumps([clean], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("metric", "value")
    for k, v in m.items():
        table.add_row(k, _fmt(v))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(analyze_app, name="analyze")

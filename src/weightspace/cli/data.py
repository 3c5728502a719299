"""CLI commands of the data stage: `weightspace data families | make | import | observe`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

data_app = typer.Typer(help="Shape data: procedural families, dataset making, mesh import, observations.", no_args_is_help=True)


@data_app.command("families")
def families(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the procedural shape families with their declared topology (b0, b1, b2).

    Example: weightspace data families --json
    """
    from weightspace.data.families import FAMILIES, FAMILY_NAMES

    rows = [
        dict(label=i, name=n, betti=list(FAMILIES[n].betti), description=FAMILIES[n].description)
        for i, n in enumerate(FAMILY_NAMES)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("label", "family", "b0", "b1", "b2", "description")
    for r in rows:
        table.add_row(str(r["label"]), r["name"], *(str(b) for b in r["betti"]), r["description"])
    Console().print(table)


@data_app.command("make")
def make(
    out: Path = typer.Option(..., "--out", help="Output folder (manifest.jsonl, grids/, points/, summary.json)."),
    family: str = typer.Option("all", "--family", help="A family name (see `data families`), a comma-separated list of names, or `all` for a balanced mix."),
    count: int = typer.Option(640, "--count", help="Number of shapes in total, spread evenly over the families; at least one per family (10 for --family all)."),
    resolution: int = typer.Option(32, "--resolution", help="Grid resolution R (R^3 samples of [-1, 1]^3)."),
    seed: int = typer.Option(0, "--seed", help="Base seed; the same seed gives byte-identical files."),
    truncation: float = typer.Option(0.2, "--truncation", help="SDF values are clipped to [-t, t] (world units)."),
    points: int = typer.Option(4096, "--points", help="Surface points (with normals) per shape."),
    split: str = typer.Option("0.8,0.1,0.1", "--split", help="train,val,test fractions, stratified by family."),
    max_redraws: int = typer.Option(200, "--max-redraws", help="Give up on a shape after this many topology mismatches."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in --out."),
    workers: int = typer.Option(1, "--workers", help="Processes making shapes in parallel (the files do not depend on it)."),
    pose: str = typer.Option("random", "--pose", help="random: each family's own rotations | aligned: canonical frame with +-15 degree jitter | canonical: aligned, and a scatter's layout in one frame too."),
) -> None:
    """Make procedural shapes: truncated SDF grids, surface points, parameters and a manifest.

    Every sample's grid topology is measured and must equal its family's declaration; samples
    that differ are redrawn and counted (summary.json, per family). A run stopped part-way (Ctrl-C,
    a kill) is resumed by the same command: the shapes it finished are kept, the rest are made, and
    the folder ends as an uninterrupted run's; with other settings it starts afresh and says so.

    Example: weightspace data make --family all --count 640 --resolution 32 --seed 0 --out runs/data32
    """
    from weightspace.data.make import make_dataset
    from weightspace.runtime.errors import InputError

    try:
        fractions = tuple(float(v) for v in split.split(","))
    except ValueError:
        raise InputError(f"--split must be three comma-separated numbers like 0.8,0.1,0.1, got {split!r}") from None
    s = make_dataset(
        out, family=family, count=count, resolution=resolution, seed=seed, truncation=truncation,
        n_points=points, split=fractions, max_redraws=max_redraws, overwrite=overwrite, workers=workers, pose=pose,
    )  # fmt: skip
    resumed = f"; {s['resumed']} made by the stopped run it resumed" if s["resumed"] else ""
    typer.echo(
        f"wrote {s['count']} shapes to {out} in {s['seconds']:.1f} s ({s['shapes_per_second']:.1f} shapes/s{resumed}); "
        f"split {s['split']}; redrawn for topology: {s['redraws_total']} {s['redraws']}"
    )


@data_app.command("import")
def import_(
    paths: list[Path] = typer.Argument(..., help="Mesh files (OBJ, PLY, STL, OFF, GLB, GLTF), binvox occupancy grids (imported through their surface), or folders holding them."),
    out: Path = typer.Option(..., "--out", help="Output folder (manifest.jsonl, grids/, points/, summary.json)."),
    resolution: int = typer.Option(64, "--resolution", help="Grid resolution R."),
    truncation: float = typer.Option(0.2, "--truncation", help="SDF values are clipped to [-t, t] (world units)."),
    points: int = typer.Option(4096, "--points", help="Surface points (with normals) per mesh."),
    margin: float = typer.Option(0.1, "--margin", help="The longest side is scaled to 2 (1 - margin)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the surface samples and the split."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in --out."),
    keep_non_solid: bool = typer.Option(False, "--keep-non-solid", help="Import meshes that bound no volume (sheets, triangle soups) too, marked solid: false."),
    workers: int = typer.Option(1, "--workers", help="Processes importing files in parallel (the files do not depend on it)."),
) -> None:
    """Import meshes: normalise into [-1, 1]^3, orient each body, check solidity, signed distance grid, surface points.

    Each body is rewound consistently and oriented outward, or inward where it lies inside an
    odd number of closed bodies (a shell's inner wall), so cavities stay cavities. A mesh that
    bounds no volume (an open sheet, a triangle soup: its generalised winding number leaves a
    wide ambiguous band) is skipped by name unless --keep-non-solid. Watertight meshes get the
    exact (pseudonormal) sign, others the fast winding number sign; the repair, the solidity
    figure and the sign method are recorded per shape. A bad file is reported by name and
    reason (console and manifest) and the import goes on. Exit status: 0 when no file failed
    (each imported, or skipped as not solid), 3 when some failed and at least one was imported,
    2 (bad input, with an error: line) when some failed and none was imported. An import stopped
    part-way (Ctrl-C, a kill) is resumed by the same command: files done and unchanged since are
    kept, the rest imported; with other files or options it starts afresh and says so.

    Example: weightspace data import meshes/ chair.obj --resolution 64 --out runs/imported
    """
    from weightspace.data.importer import import_meshes
    from weightspace.runtime.errors import InputError

    def report(path, message):
        typer.echo(f"failed: {message}", err=True)

    def skip(path, message):
        typer.echo(f"skipped: {message}", err=True)

    s = import_meshes(
        paths, out, resolution=resolution, truncation=truncation, n_points=points, margin=margin,
        seed=seed, overwrite=overwrite, on_failure=report, keep_non_solid=keep_non_solid, on_skip=skip, workers=workers,
    )  # fmt: skip
    per = f" ({s['seconds_per_mesh']:.2f} s per mesh)" if s["seconds_per_mesh"] is not None else ""
    per += f" ({s['resumed']} files done by the stopped run it resumed)" if s["resumed"] else ""
    kept = f" (of them {s['non_solid_kept']} not solid, kept by --keep-non-solid)" if s["non_solid_kept"] else ""
    typer.echo(
        f"imported {s['imported']} of {s['count']} files into {out}{kept}{per}; sign: {s['sign_methods']}; "
        f"skipped as not solid: {s['skipped']}; failed: {s['failed']}"
    )
    if s["empty_at_resolution"]:
        empty = s["empty_at_resolution"]
        typer.echo(f"warning: {len(empty)} imported shape(s) have no inside voxel at {resolution}^3, thinner than a voxel "
                   f"everywhere ({', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''}): their grids are empty; a higher "
                   f"--resolution captures them, or leave them out of training", err=True)
    if s["failed"] and not s["imported"]:
        skipped = f", {s['skipped']} skipped as not solid" if s["skipped"] else ""
        raise InputError(f"none of the {s['count']} files could be imported: {s['failed']} failed{skipped} "
                         f"(reasons above and in {out / 'manifest.jsonl'})")
    if s["failed"]:
        from weightspace.cli import SOME_FAILED

        raise typer.Exit(code=SOME_FAILED)


@data_app.command("observe")
def observe_(
    folder: Path = typer.Argument(..., help="A data folder (from `data make` or `data import`)."),
    out: Path = typer.Option(..., "--out", help="Output folder: observations.npy (N, n, 3) float32, manifest.jsonl and config.json (the options)."),
    kind: str = typer.Option("clean", "--kind", help="clean | noisy | partial | subsampled."),
    n: int = typer.Option(2048, "--n", help="Points per observation."),
    sigma: float = typer.Option(0.0, "--sigma", help="Gaussian noise standard deviation, world units (noisy: > 0)."),
    partial_mode: Optional[str] = typer.Option(None, "--partial-mode", help="partial: cut (random half-space; the default) | view (one side)."),
    split: str = typer.Option(None, "--split", help="Only this split (train | val | test); default all."),
    seed: int = typer.Option(0, "--seed", help="Base seed; each shape's observation uses a seed derived from it and the id."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an observation set already in --out."),
) -> None:
    """Sample one observation point cloud per shape: clean, noisy, partial or subsampled.

    Example: weightspace data observe runs/data32 --kind partial --n 1024 --split test --out runs/obs-partial
    """
    from weightspace.data.observe import observe_folder
    from weightspace.runtime.errors import InputError

    if partial_mode is not None and kind != "partial":
        raise InputError(f"--partial-mode chooses how a partial observation is cut; --kind is {kind!r}, not partial")
    partial_mode = partial_mode or "cut"
    s = observe_folder(folder, out, kind=kind, n=n, sigma=sigma, partial_mode=partial_mode, split=split, seed=seed,
                      overwrite=overwrite)
    typer.echo(f"wrote {s['count']} {kind} observations of {n} points to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")

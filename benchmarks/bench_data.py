"""Benchmark of the data stage: `data make` throughput and redraws per family at R = 32 and 64, `data import` time per mesh.

Prints one table per figure (importable: `run(...)` returns the numbers as a dict).

Example: .venv/bin/python benchmarks/bench_data.py                (20 / 10 shapes per family at R = 32 / 64)
         .venv/bin/python benchmarks/bench_data.py --quick        (4 / 2 shapes per family)
         .venv/bin/python benchmarks/bench_data.py --json runs/bench_data.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh
from rich.console import Console
from rich.table import Table

from weightspace.data.families import FAMILY_NAMES
from weightspace.data.importer import import_meshes
from weightspace.data.make import make_dataset


def bench_make(resolution: int, per_family: int, work: Path, seed: int = 0) -> dict:
    """Make `per_family` shapes of every family at `resolution`: shapes/s and redraws per family."""
    n = per_family * len(FAMILY_NAMES)
    c0 = time.process_time()  # CPU time too: the wall clock of a shared machine depends on its load
    s = make_dataset(work / f"make{resolution}", family="all", count=n, resolution=resolution, seed=seed, progress=False)
    cpu = time.process_time() - c0
    return dict(
        resolution=resolution, count=n, seconds=s["seconds"], shapes_per_second=s["shapes_per_second"],
        cpu_seconds=cpu, shapes_per_cpu_second=n / cpu, redraws=s["redraws"],
    )  # fmt: skip


def test_meshes(work: Path) -> dict[str, Path]:
    """A ~20k-face watertight mesh (icosphere, 20,480 faces) and the same with 2% of faces removed (open)."""
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
    sphere.vertices *= np.array([1.0, 0.7, 0.5])  # an ellipsoid: not a trivial grid pattern
    rng = np.random.default_rng(0)
    keep = rng.random(len(sphere.faces)) > 0.02
    holed = trimesh.Trimesh(sphere.vertices, sphere.faces[keep], process=False)
    paths = {"watertight": work / "watertight.obj", "open": work / "open.obj"}
    sphere.export(paths["watertight"])
    holed.export(paths["open"])
    return paths


def bench_import(resolution: int, work: Path, repeats: int = 3) -> list[dict]:
    """Seconds per mesh of `import_meshes` (load, normalise, signed distance grid, 4096 points), median of repeats."""
    rows = []
    for kind, path in test_meshes(work).items():
        times, cpus, method = [], [], None
        for r in range(repeats):
            out = work / f"import-{kind}-{r}"
            t0, c0 = time.perf_counter(), time.process_time()
            s = import_meshes([path], out, resolution=resolution, progress=False)
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            method = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])["sign_method"]
            assert s["imported"] == 1
        faces = len(trimesh.load(path, process=False).faces)
        rows.append(dict(mesh=kind, faces=faces, resolution=resolution, sign_method=method, seconds=statistics.median(times), cpu_seconds=statistics.median(cpus)))
    return rows


def run(per_family_32: int = 20, per_family_64: int = 10, import_repeats: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make = [bench_make(32, per_family_32, work), bench_make(64, per_family_64, work)]
        imports = bench_import(64, work, import_repeats)
    return dict(make=make, imports=imports)


def print_tables(results: dict, console: Console | None = None) -> None:
    console = console or Console()
    t = Table(title="data make: throughput (one process)")
    for c in ("R", "shapes", "wall s", "shapes/s (wall)", "CPU s", "shapes/CPU s"):
        t.add_column(c, justify="right")
    for m in results["make"]:
        t.add_row(
            str(m["resolution"]), str(m["count"]), f"{m['seconds']:.1f}", f"{m['shapes_per_second']:.2f}",
            f"{m['cpu_seconds']:.1f}", f"{m['shapes_per_cpu_second']:.2f}",
        )  # fmt: skip
    console.print(t)
    t = Table(title="data make: samples redrawn for topology (per family)")
    t.add_column("family")
    for m in results["make"]:
        t.add_column(f"R={m['resolution']} ({m['count'] // len(FAMILY_NAMES)} each)", justify="right")
    for name in FAMILY_NAMES:
        t.add_row(name, *(str(m["redraws"][name]) for m in results["make"]))
    console.print(t)
    t = Table(title="data import: seconds per mesh (median)")
    for c in ("mesh", "faces", "R", "sign", "wall s", "CPU s"):
        t.add_column(c)
    for r in results["imports"]:
        t.add_row(r["mesh"], str(r["faces"]), str(r["resolution"]), r["sign_method"], f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.2f}")
    console.print(t)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 / 2 shapes per family, one import repeat")
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    results = run(4, 2, 1) if args.quick else run()
    print_tables(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

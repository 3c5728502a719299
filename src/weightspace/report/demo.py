"""The main job behind `make demo`: shapes with known topology, measured, then the studies on the shipped generators."""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from weightspace.analysis.persistence import robust_betti
from weightspace.analysis.topology import topology
from weightspace.data.dataset import load_grid, read_manifest
from weightspace.data.families import FAMILY_NAMES
from weightspace.data.grid import voxel_size
from weightspace.data.make import make_dataset
from weightspace.generators.registry import SHIPPED, SHIPPED_DIR
from weightspace.report.html import write_report
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_write_json, atomic_write_text


@dataclass
class DemoConfig:
    """Options of `weightspace demo`."""

    out: Path = Path("results/demo")
    per_family: int = 3  # shapes made per procedural family
    resolution: int = 32
    seed: int = 0
    studies: bool = True  # run the studies on the shipped generators after the shapes


def shape_rows(shapes_dir: Path) -> list[dict]:
    """Measure every shape of a data folder: declared vs exact vs robust Betti numbers."""
    rows = []
    for row in read_manifest(shapes_dir):
        grid = load_grid(shapes_dir, row)  # (R, R, R) float32 truncated SDF
        topo = topology(grid, level=0.0)
        robust = robust_betti(grid, level=0.0)
        rows.append(
            dict(
                id=row["id"],
                family=row["family"],
                declared=list(row["betti_declared"]),
                exact=list(topo.betti),
                robust=list(robust),
                euler=topo.euler,
                genus=topo.genus,
                volume=float((grid < 0).sum() * voxel_size(grid.shape[0]) ** 3),
                match=list(topo.betti) == list(row["betti_declared"]),
            )
        )
    return rows


def shapes_table(rows: list[dict]) -> Table:
    table = Table(title="procedural shapes: declared vs measured topology (b0, b1, b2)")
    for col in ("family", "shapes", "declared", "exact (all)", "robust (all)", "match"):
        table.add_column(col)
    for fam in FAMILY_NAMES:
        fam_rows = [r for r in rows if r["family"] == fam]
        if not fam_rows:
            continue
        exact = sorted({tuple(r["exact"]) for r in fam_rows})
        robust = sorted({tuple(r["robust"]) for r in fam_rows})
        matched = sum(r["match"] for r in fam_rows)
        table.add_row(fam, str(len(fam_rows)), str(tuple(fam_rows[0]["declared"])), str(exact), str(robust), f"{matched}/{len(fam_rows)}")
    return table


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict:
    """Run the demo into `cfg.out`; returns the summary also written to `results.json`."""
    console = console or Console()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    console.rule("1. shapes with known topology")
    shapes_dir = out / "shapes"
    made = make_dataset(
        shapes_dir,
        family="all",
        count=cfg.per_family * len(FAMILY_NAMES),
        resolution=cfg.resolution,
        seed=cfg.seed,
        overwrite=True,
    )
    rows = shape_rows(shapes_dir)
    write_csv(out / "shapes.csv", [{**r, "declared": r["declared"], "exact": r["exact"]} for r in rows])
    console.print(shapes_table(rows))
    summary: dict = dict(
        shapes=dict(
            count=len(rows),
            resolution=cfg.resolution,
            matched=sum(r["match"] for r in rows),
            redraws=made["redraws"],
            robust_equals_exact=sum(r["robust"] == r["exact"] for r in rows),
        )
    )
    links = {}
    for name in SHIPPED if cfg.studies else ():
        console.rule(f"2. studies on the shipped generator {name!r}")
        if not (SHIPPED_DIR / SHIPPED[name]).is_dir():
            console.print(f"[yellow]shipped checkpoint {name!r} is not in this installation; its studies are skipped[/]")
            summary[name] = None
            continue
        summary[name] = run_studies(name, out / name, console)
        links.update({f"{name}: {study}": f"{name}/{study}/report.html" for study in summary[name]})

    summary["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / "results.json", summary)
    report = write_report(out, title="weightspace demo", links=links)
    console.print(f"wrote {out / 'results.json'} and {report} in {summary['seconds']} s")
    return summary


def run_studies(checkpoint: str, out: Path, console: Console) -> dict[str, str]:
    """The demo-sized interpolation and subspace studies on one generator: study -> headline."""
    from weightspace.experiments import InterpolateConfig, SubspaceConfig, run_interpolate, run_subspace, summarize
    from weightspace.experiments.common import refusal

    interpolate = InterpolateConfig.small(checkpoint, out=str(out / "interpolate"))
    studies = (
        # when the family conditions do not decode to their families, the same families' shapes, encoded
        ("interpolate", run_interpolate, [interpolate, dataclasses.replace(
            interpolate, endpoints="data", a=f"{interpolate.a}-00000", b=f"{interpolate.b}-00000")]),
        ("subspace", run_subspace, [SubspaceConfig.small(checkpoint, out=str(out / "subspace"))]),
    )
    headlines = {}
    for study, run, configs in studies:
        t0 = time.perf_counter()
        folder, refusals = Path(configs[0].out), []
        for config in configs:
            try:
                run(config)
                break
            except InputError as e:  # a study refuses broken endpoints or examples; it recorded why in results.json
                if refusal(folder) is None:
                    raise
                refusals.append(str(e))
        if len(refusals) == len(configs):
            headlines[study] = f"[{checkpoint}] {study} refused: {refusals[-1]}"
            console.print(headlines[study], highlight=False, markup=False)
            continue
        note = f" (family endpoints refused: {refusals[0]}; ran between encoded shapes instead)" if refusals else ""
        write_report(folder, title=f"{study} study on {checkpoint}")
        headlines[study] = summarize(folder) + note
        console.print(f"{headlines[study]}  ({time.perf_counter() - t0:.0f} s)", highlight=False, markup=False)
    return headlines

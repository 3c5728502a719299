"""The main job behind `make demo`: shapes with known topology, measured, then the studies on the shipped generators."""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
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
from weightspace.report.gallery import render_gallery
from weightspace.report.html import discover, write_page, write_report
from weightspace.report.verdicts import read_finding
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_write_json, atomic_write_text, read_json
from weightspace.runtime.results import read_results

SCHEMA = "weightspace-demo/1"  # results.json's format, documented in docs/results.md


@dataclass
class DemoConfig:
    """Options of `weightspace demo`."""

    out: Path = Path("results/demo")
    per_family: int = 3  # shapes made per procedural family
    resolution: int = 32
    seed: int = 0
    studies: bool = True  # run the studies on the shipped generators after the shapes
    fresh: bool = False  # measure the studies again even where an earlier demo run finished them (same weights)


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
    """Run the demo into `cfg.out`; returns the numbers also written to `results.json` (schema: docs/results.md)."""
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
    shapes = dict(
        count=len(rows),
        resolution=cfg.resolution,
        matched=sum(r["match"] for r in rows),
        redraws=made["redraws"],
        robust_equals_exact=sum(r["robust"] == r["exact"] for r in rows),
    )
    skipped, notes = {}, {}
    for name in SHIPPED if cfg.studies else ():
        console.rule(f"2. studies on the shipped generator {name!r}")
        if not (SHIPPED_DIR / SHIPPED[name]).is_dir():
            console.print(f"[yellow]shipped checkpoint {name!r} is not in this installation; its studies are skipped[/]")
            skipped[name] = "shipped checkpoint not in this installation"
            continue
        set_aside_stale_studies(out / name, SHIPPED_DIR / SHIPPED[name], console)
        notes.update(run_studies(name, out / name, console, fresh=cfg.fresh))

    summary = finish_demo(out, shapes=shapes, seconds=round(time.perf_counter() - t0, 1), notes=notes, skipped=skipped)
    console.print(f"wrote {out / 'results.json'} and {out / 'report.html'} in {summary['seconds']} s")
    return summary


def set_aside_stale_studies(folder: Path, checkpoint: Path, console: Console) -> Path | None:
    """Studies resume from their folders and refuse one built on other weights. When the shipped checkpoint
    changed since the last demo (another weights_hash in its config.json, or a folder from before the demo
    stamped it), the old studies move to `.previous/<name>-<old hash>[-n]` beside it (kept, not deleted;
    a report skips dot folders), so `make demo` after an update runs afresh. Returns where they went."""
    stamp = folder / "weights_hash.txt"
    current = str(read_json(checkpoint / "config.json").get("weights_hash", ""))
    moved = None
    if folder.is_dir() and any(folder.iterdir()):
        old = stamp.read_text().strip() if stamp.is_file() else "unstamped"
        if old != current:
            aside = folder.parent / ".previous"
            aside.mkdir(exist_ok=True)
            moved, n = aside / f"{folder.name}-{old}", 1
            while moved.exists():
                n += 1
                moved = aside / f"{folder.name}-{old}-{n}"
            folder.rename(moved)
            console.print(f"[yellow]the shipped {folder.name!r} changed since the last demo: its old studies moved to {moved}[/]")
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(current + "\n")
    return moved


def demo_numbers(out: Path, *, shapes: dict, seconds: float, notes: dict[str, str], skipped: dict[str, str]) -> dict:
    """The demo's results.json: numbers, one object per generator and study (schema: docs/results.md)."""
    generators: dict[str, dict] = {name: {"kind": None, "skipped": why} for name, why in skipped.items()}
    for folder in discover([out]):
        f = read_finding(folder)
        rel = folder.relative_to(out).as_posix()
        kind = None if f.generator == "?" else f.generator  # a study refused before loading names no kind
        gen = generators.setdefault(f.checkpoint, {"kind": kind})
        gen["kind"] = kind or gen["kind"]
        gen[f.study] = {**f.headline, "folder": rel, "endpoints_refused": notes.get(str(folder))}
    return {"schema": SCHEMA, "seconds": seconds, "shapes": shapes, "generators": generators}


def finish_demo(out: Path, *, shapes: dict, seconds: float, notes: dict[str, str] | None = None,
                skipped: dict[str, str] | None = None) -> dict:
    """Write the demo's results.json (numbers) and its page (report.html) from what is in `out`; returns the numbers.

    notes : study folder -> why its family endpoints were refused (the study ran between encoded shapes instead).
    """
    notes, skipped = notes or {}, skipped or {}
    summary = demo_numbers(out, shapes=shapes, seconds=seconds, notes=notes, skipped=skipped)
    atomic_write_json(out / "results.json", summary)
    write_demo_page(out, notes=demo_extras([out])[1])
    return summary


def write_demo_page(out: Path, notes: dict[str, str] | None = None) -> Path:
    """The demo's page: the studies' findings, the procedural shapes, generators side by side."""
    extra = [shapes_section(out)] if (out / "shapes.csv").is_file() else []
    return write_page([out], out / "report.html", title="weightspace demo", extra=extra, notes=notes)[0]


def demo_extras(folders: list[Path]) -> tuple[list[str], dict[str, str]]:
    """For `weightspace report`: the shapes section and the endpoint notes of any demo folder among `folders`."""
    extra, notes = [], {}
    for out in map(Path, folders):
        if (out / "shapes.csv").is_file():
            extra.append(shapes_section(out))
        res = read_results(out / "results.json") if (out / "results.json").is_file() else {}
        if res.get("schema") == SCHEMA:
            for gen in res["generators"].values():
                for study in gen.values():
                    if isinstance(study, dict) and study.get("endpoints_refused"):
                        notes[str(out / study["folder"])] = (f"family endpoints refused ({study['endpoints_refused']}); this "
                                                             "path runs between encoded shapes instead")
    return extra, notes


def shapes_section(out: Path) -> str:
    """The demo's shapes with known topology: one render per family and the declared-vs-measured table."""
    with open(out / "shapes.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    shapes_dir = out / "shapes"
    by_family = {r["family"]: r for r in reversed(read_manifest(shapes_dir))} if (shapes_dir / "manifest.jsonl").is_file() else {}
    img = ""
    if by_family:
        fams = [f for f in FAMILY_NAMES if f in by_family]
        png = out / "renders" / "families.png"
        if not png.is_file() or png.stat().st_mtime < (shapes_dir / "manifest.jsonl").stat().st_mtime:
            render_gallery([[load_grid(shapes_dir, by_family[f]) for f in fams]], png, row_labels=[""],
                           titles=[[f"{f} {tuple(by_family[f]['betti_declared'])}" for f in fams]], ok=[[True] * len(fams)],
                           facing=True)
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        img = f'<img class=families alt="one shape per family" src="data:image/png;base64,{data}">'
    body = ""
    matched = 0
    for fam in FAMILY_NAMES:
        fr = [r for r in rows if r["family"] == fam]
        if not fr:
            continue
        ok = sum(r["match"] == "True" for r in fr)
        matched += ok
        robust = ", ".join(sorted({_tuple(r["robust"]) for r in fr}))
        body += (f"<tr><td>{html.escape(fam)}</td><td>{len(fr)}</td><td>{html.escape(_tuple(fr[0]['declared']))}</td>"
                 f"<td>{html.escape(robust)}</td><td>{ok}/{len(fr)}</td></tr>")
    line = (f"{matched}/{len(rows)} procedural shapes measure to their declared topology (exact Betti numbers of the "
            "voxel solid); the studies below stand on these families")
    return ("<section id=shapes><h2>Shapes with known topology</h2>"
            f'<p class="verdict-line" data-verdict="{"supported" if matched == len(rows) else "inconclusive"}">{html.escape(line)}</p>'
            f"{img}<table><thead><tr><th>family</th><th>shapes</th><th>declared (b0, b1, b2)</th><th>robust, measured</th>"
            f"<th>exact = declared</th></tr></thead><tbody>{body}</tbody></table>"
            '<p class=files>files: <a href="shapes.csv">shapes.csv</a> · <a href="shapes/">shapes/</a></p></section>')


def _tuple(cell: str) -> str:
    """'(1, 0, 0)' for a CSV cell '[1, 0, 0]'."""
    return cell.replace("[", "(").replace("]", ")")


def run_studies(checkpoint: str, out: Path, console: Console, *, fresh: bool = False) -> dict[str, str]:
    """The demo-sized interpolation and subspace studies on one generator, each with its own page; returns
    {study folder: why its family endpoints were refused} for the studies that fell back to encoded shapes."""
    from weightspace.experiments import InterpolateConfig, SubspaceConfig, run_interpolate, run_subspace

    # overwrite: the demo owns this folder; whichever of the two configs ran last may be replaced by the other
    interpolate = dataclasses.replace(InterpolateConfig.small(checkpoint, out=str(out / "interpolate")), overwrite=True)
    studies = (
        # when the family conditions do not decode to their families, the same families' shapes, encoded
        ("interpolate", run_interpolate, [interpolate, dataclasses.replace(
            interpolate, endpoints="data", a=f"{interpolate.a}-00000", b=f"{interpolate.b}-00000")]),
        # the members on a process per usable core: most of the demo's time on a latent diffusion generator
        ("subspace", run_subspace, [SubspaceConfig.small(checkpoint, out=str(out / "subspace"), executor="process")]),
    )
    notes = {}
    for study, run, configs in studies:
        folder, refusals = run_in_turn(out, study, run, configs, console, fresh=fresh, label=checkpoint)
        if refusals and len(refusals) < len(configs):
            notes[str(folder)] = refusals[0]
    return notes


DEMO_RUNS = "demo_runs.json"  # per generator folder: the package version and each study's refused configs


def run_in_turn(out: Path, study: str, run, configs: list, console: Console, *, fresh: bool = False,
                label: str = "") -> tuple[Path, list[str]]:
    """Run `configs` of one study into one folder in turn until one is not refused (a study refuses broken
    endpoints or examples and records why in its results.json); write its page; return (folder, the refusals).

    A rerun of the demo reuses a finished run instead of measuring it again (the interpolation studies are
    most of a rerun's time and do not resume) when the folder holds a finished run of the config that ran
    last time, after the same refusals, by the same package version; the weights are the same, as
    `set_aside_stale_studies` moved the studies of other weights away. `fresh` runs them again anyway.
    """
    from weightspace import __version__
    from weightspace.experiments import summarize
    from weightspace.experiments.common import finished_with, refusal

    folder = Path(configs[0].out)
    state_path = out / DEMO_RUNS
    state = read_json(state_path) if state_path.is_file() else {}
    state = state if isinstance(state, dict) and state.get("version") == __version__ else {}
    earlier = state.get("studies", {}).get(study, {}).get("refused")
    ran = None if fresh or not isinstance(earlier, list) or len(earlier) >= len(configs) else len(earlier)
    t0 = time.perf_counter()
    if ran is not None and finished_with(folder, configs[ran]):
        refusals, reused = [str(r) for r in earlier], True
    else:
        refusals, reused = [], False
        for config in configs:
            try:
                run(config)
                break
            except InputError as e:
                if refusal(folder) is None:
                    raise
                refusals.append(str(e))
    atomic_write_json(state_path, {"version": __version__, "studies": {
        **state.get("studies", {}), study: {"refused": refusals}}})
    write_report(folder, title=f"{study} study on {label}")
    if len(refusals) == len(configs):
        console.print(f"[{label}] {study} refused: {refusals[-1]}", highlight=False, markup=False)
        return folder, refusals
    note = f" (family endpoints refused: {refusals[0]}; ran between encoded shapes instead)" if refusals else ""
    when = "measured by an earlier demo run, reused; --fresh measures again" if reused else f"{time.perf_counter() - t0:.0f} s"
    console.print(f"{summarize(folder)}{note}  ({when})", highlight=False, markup=False)
    return folder, refusals

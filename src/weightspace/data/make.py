"""Making procedural datasets: truncated SDF grids, surface points, parameters and a manifest, topology-checked."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from weightspace.data.families import FAMILIES, FAMILY_NAMES, POSES, Family, get_family
from weightspace.data.grid import check_resolution, grid_points
from weightspace.runtime import folders
from weightspace.runtime.errors import InputError, Interrupted, WeightspaceError
from weightspace.runtime.executors import spawn_pool
from weightspace.runtime.folders import check_out_folder, listed_files, named_files
from weightspace.runtime.io import atomic_path, atomic_write_json, atomic_write_text, read_npy, read_npz, remove_stale_temps
from weightspace.runtime.progress import log_line, track
from weightspace.runtime.resume import PROGRESS, ProgressFile
from weightspace.runtime.seeding import derive_seed, item_rng

SPLITS = ("train", "val", "test")
BOUND = 0.9  # every sample must be outside (sdf > 0) wherever a coordinate exceeds this


@dataclass
class MakeConfig:
    """Options of `weightspace data make` (see `make_dataset`)."""

    out: Path
    family: str = "all"
    count: int = 640
    resolution: int = 32
    seed: int = 0
    truncation: float = 0.2
    n_points: int = 4096
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    max_redraws: int = 200
    overwrite: bool = False
    pose: str = "random"  # random (each family's own rotations) | aligned (canonical frame, +-15 degree jitter) | canonical (aligned, scatter layouts too)


# ---------------------------------------------------------------- topology of a sampled grid


def measure_betti(sdf: np.ndarray) -> tuple[int, int, int]:
    """(b0, b1, b2) of the solid `sdf < 0` of a grid (R, R, R): 26-connected solid, 6-connected background.

    Uses `weightspace.analysis.topology` (exact, via the Euler characteristic of the voxel complex).
    """
    from weightspace.analysis.topology import topology  # the one topology convention of the project

    return topology(sdf, level=0.0).betti


# ---------------------------------------------------------------- surface samples


def _gradient(f: Callable[[np.ndarray], np.ndarray], p: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Central-difference gradient of f at p (N, 3): (N, 3) float64."""
    g = np.empty_like(p)
    for i in range(3):
        dp = np.zeros(3)
        dp[i] = eps
        g[:, i] = (f(p + dp) - f(p - dp)) / (2 * eps)
    return g


def surface_samples(
    f: Callable[[np.ndarray], np.ndarray],
    n: int,
    rng: np.random.Generator,
    grid: np.ndarray | None = None,
    steps: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Points on the zero level set of an SDF, about uniform by area, with unit outward normals.

    Candidates are uniform in the voxel cells (side h) around grid samples with |sdf| < 1.5 h;
    those cells cover the whole band |f| < h / 2 (a point of the band is within h sqrt(3) / 2 of
    a sample), so the candidates kept in that band are uniform in it, i.e. about uniform by area.
    They are projected onto the surface by Newton steps along the gradient,
    p <- p - f(p) grad f / |grad f|^2; points that do not converge (|f| > 1e-5) are dropped.

    Parameters
    ----------
    f : SDF, (M, 3) float64 -> (M,) float64
    grid : (R, R, R) samples of f on the grid of `data.grid`; computed at R = 64 when omitted.

    Returns
    -------
    points : (n, 3) float32, normals : (n, 3) float32 (normalised gradient)
    """
    if grid is None:
        grid = f(grid_points(64).reshape(-1, 3).astype(np.float64)).reshape(64, 64, 64)
    res = grid.shape[0]
    h = 2.0 / (res - 1)
    coords = np.linspace(-1.0, 1.0, res)
    near = np.argwhere(np.abs(grid) < 1.5 * h)  # (K, 3) index
    if len(near) == 0:
        raise WeightspaceError("cannot sample surface points: the shape has no surface inside the grid")
    kept: list[np.ndarray] = []
    total = 0
    for _ in range(200):
        pick = near[rng.integers(len(near), size=max(4 * n, 4096))]
        cand = coords[pick] + rng.uniform(-h / 2, h / 2, size=pick.shape)  # (M, 3) world units
        fv = f(cand)
        cand, fv = cand[np.abs(fv) < 0.5 * h], fv[np.abs(fv) < 0.5 * h]
        for _ in range(steps):  # exact distances converge in one or two steps; bounds take a few more
            if len(fv) == 0 or np.abs(fv).max() < 1e-7:
                break
            g = _gradient(f, cand)
            cand = cand - (fv / np.maximum((g * g).sum(1), 1e-12))[:, None] * g
            fv = f(cand)
        cand = cand[np.abs(fv) < 1e-5]
        kept.append(cand)
        total += len(cand)
        if total >= n:
            break
    else:
        raise WeightspaceError(f"could not sample {n} surface points (found {total})")
    pts = np.concatenate(kept)
    pts = pts[rng.choice(len(pts), size=n, replace=False)]
    g = _gradient(f, pts)
    normals = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return pts.astype(np.float32), normals.astype(np.float32)


# ---------------------------------------------------------------- deterministic files


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write one array as .npy atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays as an uncompressed .npz atomically with fixed zip timestamps.

    `np.savez` stamps each member with the current time, so the same data would give
    different bytes a minute later; this writes the same format with a constant date.
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def write_manifest(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in rows))


DATA_FILES = {"grid": "grids", "points": "points"}  # the manifest fields that name a shape's files, and their folders


def start_replacing(out: Path, overwrite: bool, writes: set[str]) -> set[str]:
    """Before a dataset is written into `out`: with `overwrite`, remove the earlier dataset's
    manifest.jsonl and summary.json first, so that a run killed part-way leaves a folder no command
    takes for a dataset (it used to leave the earlier manifest describing a mix of old and new shape
    files), and the progress file a finished run may have left (`runtime.resume`), so the new run
    starts afresh. Returns the files the earlier manifest listed and those this run `writes`, kept on
    record until the new dataset is complete (`runtime.folders.start_replacing`), so a rerun after a
    kill still knows them, even when this run is the first in `out` or the rerun asks for fewer
    shapes; `finish_replacing` removes those the new dataset does not rewrite."""
    path = out / "manifest.jsonl"
    replace = overwrite and path.is_file()
    earlier = folders.start_replacing(out, (listed_files(path, DATA_FILES) if replace else set()) | writes, DATA_FILES)
    if replace:
        path.unlink()
        (out / "summary.json").unlink(missing_ok=True)
        (out / PROGRESS).unlink(missing_ok=True)
    return earlier


def finish_replacing(out: Path, earlier: set[str], rows: list[dict], progress: ProgressFile) -> None:
    """Once the new manifest is written: remove the earlier dataset's files (`start_replacing`) that
    the new rows do not name, and the progress file of the run."""
    folders.finish_replacing(out, earlier, rows, DATA_FILES)
    progress.remove()


def files_readable(out: Path, row: dict, resolution: int, n_points: int) -> bool:
    """Whether the grid and points a progress row names (`runtime.resume`) read back whole with the
    shapes this run writes, so the row can be taken up instead of the shape made again. The files are
    written atomically before their row, so only a file damaged or removed since fails."""
    try:
        grid = read_npy(out / row["grid"], what="grid")
        arrays = read_npz(out / row["points"], ("points", "normals"), what="surface points")
    except (InputError, OSError, ValueError, KeyError, TypeError):
        return False
    return grid.shape == (resolution,) * 3 and all(a.shape == (n_points, 3) for a in arrays.values())


# ---------------------------------------------------------------- one sample


def inside_bound(sdf: np.ndarray, resolution: int) -> bool:
    """True when the solid stays within [-BOUND, BOUND]^3 at the grid samples."""
    c = np.abs(np.linspace(-1.0, 1.0, resolution)) > BOUND
    outer = c[:, None, None] | c[None, :, None] | c[None, None, :]  # (R, R, R) bool
    return bool((sdf[outer] > 0).all())


def draw_sample(family: Family, rng: np.random.Generator, resolution: int, max_redraws: int, pose: str = "random"):
    """Draw parameters until the grid's topology equals the family's declaration.

    Returns (params, sdf grid (R, R, R) float64, measured betti, number of redraws).
    """
    xyz = grid_points(resolution).reshape(-1, 3).astype(np.float64)  # (R^3, 3)
    for attempt in range(max_redraws + 1):
        params = family.draw(rng, pose)
        sdf = family.sdf(xyz, params).reshape(resolution, resolution, resolution)  # (R, R, R) world units
        betti = measure_betti(sdf)
        if betti == family.betti and inside_bound(sdf, resolution):
            return params, sdf, betti, attempt
    raise WeightspaceError(
        f"family {family.name!r}: no sample with topology {family.betti} inside the box after "
        f"{max_redraws} redraws at resolution {resolution} (last measured {betti})"
    )


def assign_splits(per_family: dict[str, int], seed: int, fractions: tuple[float, float, float]) -> dict[tuple[str, int], str]:
    """Seeded train/val/test labels for items (family, i), stratified by family.

    Each family's items are ranked by a seeded shuffle; the items are then dealt round-robin by
    rank (family order reshuffled each round) and position k of N gets train while
    (k + 1/2) / N < f_train, then val, then test. So every split draws from every family as
    evenly as the counts allow, even with one or two items per family.
    """
    ranked = {f: list(item_rng(seed, "split", f).permutation(n)) for f, n in per_family.items()}
    order: list[tuple[str, int]] = []
    for r in range(max(per_family.values(), default=0)):
        fams = [f for f in per_family if r < per_family[f]]
        for j in item_rng(seed, "split-round", r).permutation(len(fams)):
            order.append((fams[j], int(ranked[fams[j]][r])))
    n = len(order)
    edges = np.cumsum(fractions)
    out = {}
    for k, item in enumerate(order):
        q = (k + 0.5) / n
        out[item] = SPLITS[0] if q < edges[0] else SPLITS[1] if q < edges[1] else SPLITS[2]
    return out


def _make_item(cfg: MakeConfig, job: tuple[str, int]) -> dict:
    """Draw, sample and write item `job` = (family, i) of a dataset; its manifest row without the split."""
    name, i = job
    fam = FAMILIES[name]
    item_seed = derive_seed(cfg.seed, name, i)
    rng = np.random.default_rng(item_seed)
    params, sdf, betti, n_redrawn = draw_sample(fam, rng, cfg.resolution, cfg.max_redraws, cfg.pose)
    grid = np.clip(sdf, -cfg.truncation, cfg.truncation).astype(np.float32)  # (R, R, R) truncated SDF
    points, normals = surface_samples(lambda p: fam.sdf(p, params), cfg.n_points, rng, grid=sdf)
    item_id = f"{name}-{i:05d}"
    save_npy(cfg.out / "grids" / f"{item_id}.npy", grid)
    save_npz(cfg.out / "points" / f"{item_id}.npz", points=points, normals=normals)
    return dict(
        id=item_id,
        family=name,
        label=FAMILY_NAMES.index(name),
        params=params,
        betti_declared=list(fam.betti),
        betti_measured=list(betti),
        redraws=n_redrawn,
        grid=f"grids/{item_id}.npy",
        points=f"points/{item_id}.npz",
        resolution=cfg.resolution,
        truncation=cfg.truncation,
        seed=item_seed,
        pose=cfg.pose,
    )


def _check(cfg: MakeConfig) -> None:
    if cfg.family != "all":
        names = cfg.family.split(",")
        for name in names:
            get_family(name.strip())
        if len(set(names)) != len(names):
            raise InputError(f"--family names a family twice: {cfg.family!r}")
    if cfg.count < 1:
        raise InputError(f"--count must be at least 1, got {cfg.count}")
    names = FAMILY_NAMES if cfg.family == "all" else [name.strip() for name in cfg.family.split(",")]
    if cfg.count < len(names):  # spread evenly, the last families would get no shape at all
        missed = ", ".join(names[cfg.count :])
        raise InputError(f"--count {cfg.count} is fewer than the {len(names)} families of --family {cfg.family}, so "
                         f"{missed} would get no shapes; ask for --count {len(names)} or more, or name fewer families")
    check_resolution(cfg.resolution)
    if not cfg.truncation > 0:
        raise InputError(f"--truncation must be positive (world units), got {cfg.truncation}")
    if cfg.pose not in POSES:
        raise InputError(f"--pose must be one of {', '.join(POSES)}, got {cfg.pose!r}")
    if cfg.n_points < 1:
        raise InputError(f"--points must be at least 1, got {cfg.n_points}")
    if len(cfg.split) != 3 or min(cfg.split) < 0 or abs(sum(cfg.split) - 1.0) > 1e-6:
        raise InputError(f"--split must be three non-negative fractions summing to 1, got {cfg.split}")
    check_out_folder(cfg.out, "data", writes="manifest.jsonl, summary.json, grids/ and points/")  # a file, a population, a decode...
    if (Path(cfg.out) / "manifest.jsonl").exists() and not cfg.overwrite:
        raise InputError(f"{cfg.out}: already holds a dataset (manifest.jsonl); pass --overwrite to replace it")



def take_up(record: ProgressFile, jobs: dict[str, Any], usable: Callable[[dict, Any], bool], done: str,
            log: Callable[[str], None]) -> dict[str, dict]:
    """The rows an unfinished earlier run in the folder of `record` left (`runtime.resume`) that this
    run takes up instead of making their items again, by id: those whose id is one of `jobs` (id ->
    job) and that are `usable(row, job)` (their files read back). With other settings none are, and
    `log` hears why; otherwise it hears how many of the items are `done` ("shapes already made")."""
    rows, why_not = record.earlier()
    where = record.path.parent
    if why_not is not None:
        log(f"not resuming the unfinished run in {where}: {why_not}; starting afresh")
        return {}
    taken, redo = {}, 0
    for row in rows:
        key = row.get("id")
        if isinstance(key, str) and key in jobs and key not in taken:
            if usable(row, jobs[key]):
                taken[key] = row
            else:
                redo += 1
    if rows:
        again = f"; {redo} recorded are done again (a file missing, damaged or changed since)" if redo else ""
        log(f"resuming: {len(taken)} of {len(jobs)} {done} in {where}{again}")
    return taken


def item_files(name: str, i: int) -> dict[str, str]:
    """The id and files of item i of family `name` (`_make_item` writes them)."""
    item_id = f"{name}-{i:05d}"
    return dict(id=item_id, grid=f"grids/{item_id}.npy", points=f"points/{item_id}.npz")


def make_dataset(
    out: str | Path,
    family: str = "all",
    count: int = 640,
    resolution: int = 32,
    seed: int = 0,
    truncation: float = 0.2,
    n_points: int = 4096,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    max_redraws: int = 200,
    overwrite: bool = False,
    progress: bool | None = None,
    workers: int = 1,
    pose: str = "random",
    log: Callable[[str], None] = log_line,
) -> dict:
    """Make a procedural dataset in `out`; returns the summary (also written to `out/summary.json`).

    `family="all"` makes `count` shapes spread evenly over every family (the first families get
    one more when `count` does not divide); a family name makes `count` shapes of that family, and
    a comma-separated list of names spreads them over those families. A `count` below the number
    of families asked for is refused: the last ones would get no shape.
    Item i of family F is drawn from its own generator `derive_seed(seed, F, i)`, so the files
    do not depend on which other families or how many items were asked for.
    `workers` > 1 makes items in that many processes; the files are the same byte for byte.
    `pose` is `random` (each family's own rotations), `aligned` (the same shapes in their
    canonical frame with a +-15 degree jitter; see `Family.draw`) or `canonical` (aligned, with a
    scatter's layout in one frame too: the same files as `aligned` for every other family).
    A run killed part-way is taken up by a rerun with the same settings: each finished shape's row
    is recorded in a progress file (`runtime.resume`) as it is made, and the rerun makes only the
    shapes not recorded there (or whose files no longer read back), so the folder ends byte for byte
    as an uninterrupted run's; `log` hears how many were taken up, or why none were (other settings:
    the earlier shapes are then replaced). Ctrl-C raises `Interrupted`, whose message counts the
    shapes saved. The returned timing and `resumed` (shapes taken up) are not in summary.json.
    """
    cfg = MakeConfig(Path(out), family, count, resolution, seed, truncation, n_points, tuple(split), max_redraws, overwrite, pose)
    _check(cfg)
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    names = FAMILY_NAMES if family == "all" else [name.strip() for name in family.split(",")]
    per = {name: count // len(names) + (1 if i < count % len(names) else 0) for i, name in enumerate(names)}
    jobs = [(name, i) for name in names for i in range(per[name])]
    splits = assign_splits(per, seed, cfg.split)

    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # left by a writer killed in an earlier run; nothing else writes here now
    files = {job: item_files(*job) for job in jobs}
    earlier = start_replacing(out, overwrite, named_files(files.values(), DATA_FILES))
    # everything a row or a file depends on (the split is dealt to the rows at the end, over all of them)
    settings = dict(per_family=per, resolution=resolution, seed=seed, truncation=truncation, n_points=n_points,
                    max_redraws=max_redraws, pose=pose)
    record = ProgressFile(out, "data make", settings)

    def usable(row: dict, job: tuple[str, int]) -> bool:
        named = {k: row.get(k) for k in files[job]}
        return named == files[job] and isinstance(row.get("redraws"), int) and files_readable(out, row, resolution, n_points)

    taken = take_up(record, {files[job]["id"]: job for job in jobs}, usable, "shapes already made", log)
    made = {job: taken[files[job]["id"]] for job in jobs if files[job]["id"] in taken}
    todo = [job for job in jobs if job not in made]
    item = functools.partial(_make_item, cfg)
    t0 = time.perf_counter()
    label = f"making {family} at {resolution}^3"
    record.start([made[job] for job in jobs if job in made])
    try:
        with record, contextlib.ExitStack() as stack:
            if workers == 1 or len(todo) <= 1:
                fresh = map(item, todo)
            else:
                fresh = stack.enter_context(spawn_pool(min(workers, len(todo)))).map(item, todo, chunksize=4)  # in job order
            for job, row in track(zip(todo, fresh), label, enabled=progress, total=len(todo)):
                record.add(row)  # only this process writes the record
                made[job] = row
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {len(made)} of {len(jobs)} shapes are saved in {out}; "
                          f"run the same command again to resume") from None
    rows = [made[job] for job in jobs]
    redraws = Counter()
    for (name, i), row in zip(jobs, rows):  # rows come back in job order
        row["split"] = splits[(name, i)]
        redraws[name] += row["redraws"]
    seconds = time.perf_counter() - t0
    summary = dict(
        family=family,
        count=len(rows),
        per_family=per,
        resolution=resolution,
        truncation=truncation,
        seed=seed,
        pose=pose,
        n_points=n_points,
        split={s: sum(r["split"] == s for r in rows) for s in SPLITS},
        redraws={name: redraws[name] for name in names},
        redraws_total=sum(redraws.values()),
        topology_method="weightspace.analysis.topology (26-connected solid, 6-connected background)",
    )
    write_manifest(out / "manifest.jsonl", rows)
    atomic_write_json(out / "summary.json", summary)
    finish_replacing(out, earlier, rows, record)
    # timing goes to the caller only: summary.json stays byte-identical for the same seed, resumed or not
    return dict(summary, seconds=seconds, shapes_per_second=len(todo) / max(seconds, 1e-9), resumed=len(taken))

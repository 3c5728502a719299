"""Inverting a user's scans into a learned subspace (`weightspace subspace invert`): each scan, a mesh or a
point cloud at any scale and position, or each observation of a `data observe` set, becomes the subspace
point whose shape fits it best, as weights2weights inverts an image into its space.

The fit is the fit study's (`fit_methods`): Adam on the coordinates u = z / sigma of mean + z B with the
Gaussian prior of the subspace's members, on the observation loss with its free-space term (a
surface-only loss is met by a field that is zero everywhere). A share of each scan's points is held out
and early stopping keeps the point of the lowest held-out loss. The start is the best, by the fit loss, of
the subspace mean and seeded draws from the prior: the loss is not convex in z.

Each scan gives its weight-space point (points/ID.safetensors, which `weightspace decode` reads), the
decoded grid and mesh (and a row of gallery.png), and its figures in manifest.jsonl: robust Betti numbers, the distance from the
observed points to the decoded surface (how well it fits what was seen) before and after the fit, and,
for a `data observe` set whose source dataset is at hand, IoU, Chamfer and Betti match against the
shape that was observed. Each finished scan is recorded as it is done, so a rerun after a kill resumes.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

from weightspace.analysis.geometry import iou
from weightspace.analysis.measure import failed_count, finite_mean, geometry, measure, median_counting_failures
from weightspace.analysis.rates import rate
from weightspace.data.make import save_npy
from weightspace.decode.mesh import write_mesh
from weightspace.experiments.fit_methods import Objective, fit_method, subspace_method
from weightspace.runtime.errors import InputError, Interrupted
from weightspace.runtime.io import atomic_path, atomic_write_json
from weightspace.runtime.progress import log_line, track
from weightspace.runtime.resume import ProgressFile
from weightspace.runtime.seeding import decode_seed, derive_seed, item_rng

INVERT_FILE = "invert.json"  # the record of a finished inversion (what marks the folder)
INVERT_PROGRESS = ".invert-progress.jsonl"
MIN_POINTS = 16  # fewer observed points than this fit nothing that can be checked
GALLERY = "gallery.png"
GALLERY_ROWS = 16
FILES = {"grid": "grids", "point": "points", "mesh": "meshes"}  # a row's fields naming its files, and their folders


@dataclass
class InvertConfig:
    """One `weightspace subspace invert` run."""

    subspace: str
    out: str
    scans: list[str] = field(default_factory=list)  # mesh or point-cloud files, any scale and position (not turned)
    observations: str | None = None  # a `data observe` folder (already in the normalised frame)
    checkpoint: str | None = None  # the generator (default: the one the subspace records)
    steps: int = 300  # the most Adam steps per scan
    lr: float = 0.05  # Adam step on the coordinates, in units of sigma
    prior: float = 1e-2  # weight of the Gaussian prior on the coordinates
    free_weight: float = 0.5  # weight of the free-space term of the objective
    holdout: float = 0.2  # share of each scan's points held out for early stopping
    eval_every: int = 5
    patience: int = 10
    starts: int = 16  # draws from the prior scored as starts, beside the mean
    scan_points: int = 2048  # surface points drawn from a scan that is a mesh
    margin: float = 0.1  # normalisation margin, as `data import`
    resolution: int | None = None  # decode resolution (default: the generator's)
    seed: int = 0
    meshes: bool = True
    overwrite: bool = False

    def validate(self) -> None:
        if bool(self.scans) == (self.observations is not None):
            raise InputError("give scans (mesh or point-cloud files) or --observations FOLDER, one of the two")
        if self.steps < 0 or self.starts < 0 or self.scan_points < MIN_POINTS:
            raise InputError(f"--steps and --starts must be >= 0 and scan points >= {MIN_POINTS}, got {self.steps}, "
                             f"{self.starts} and {self.scan_points}")
        if not (self.lr > 0 and self.prior >= 0 and self.free_weight >= 0):
            raise InputError(f"--lr must be > 0 and --prior, --free-weight >= 0, got {self.lr}, {self.prior}, {self.free_weight}")
        if not 0 < self.holdout < 1:
            raise InputError(f"--holdout must be in (0, 1): a share of each scan's points, got {self.holdout}")
        if self.eval_every < 1 or self.patience < 1:
            raise InputError(f"eval_every and patience must be >= 1, got {self.eval_every} and {self.patience}")


@dataclass
class Scan:
    """One observation to invert: id, points (P, 3) in the normalised frame, and what it came from."""

    id: str
    points: np.ndarray
    source: str
    truth: dict[str, Any] | None = None  # {"grid": (R, R, R), "robust": (b0, b1, b2), "points": (n, 3)} when known
    member: bool = False  # the observed shape is one the subspace's population was fitted to
    transform: dict[str, Any] | None = None  # a scan file's normalisation (`data.normalise.transform_record`)


def read_scans(cfg: InvertConfig, log: Callable[[str], None], members: dict[str, Any] | None = None) -> list[Scan]:
    """The scans of `cfg`: files normalised as `data import` normalises meshes, or a `data observe` set's
    observations with their source shapes as the truth when the source dataset can be read (marked as
    members where that dataset is the one the subspace's population was fitted to, `Subspace.members`)."""
    if cfg.observations is None:
        from weightspace.data.importer import file_id
        from weightspace.data.normalise import normalise_scan, read_scan, transform_record

        scans = []
        for i, name in enumerate(cfg.scans):
            points, mesh = read_scan(name, n_points=cfg.scan_points, seed=cfg.seed)
            _check_size(len(points), name)  # before any scan is inverted, not when the run reaches it
            normal, norm = normalise_scan(points, mesh, margin=cfg.margin)
            scans.append(Scan(file_id(i, Path(name)), normal, str(name), transform=transform_record(norm, cfg.margin, name)))
        return scans
    return _observation_scans(Path(cfg.observations), log, members)


def _observation_scans(folder: Path, log: Callable[[str], None], members: dict[str, Any] | None = None) -> list[Scan]:
    from weightspace.analysis.persistence import robust_betti
    from weightspace.data.dataset import load_grid, load_points, manifest_hash
    from weightspace.runtime.folders import folder_kind
    from weightspace.runtime.io import read_jsonl, read_npy

    if folder_kind(folder) != "observations":
        raise InputError(f"--observations: {folder} is not a `weightspace data observe` folder (no observations.npy)")
    obs = read_npy(folder / "observations.npy", what="observations")
    rows = [row for _, row in read_jsonl(folder / "manifest.jsonl")]
    if obs.ndim != 3 or obs.shape[-1] != 3 or len(rows) != len(obs):
        raise InputError(f"{folder}: observations.npy {obs.shape} does not hold one (n, 3) cloud per manifest row ({len(rows)})")
    if not np.isfinite(obs).all():
        raise InputError(f"{folder / 'observations.npy'}: NaN or infinite points")
    _check_size(obs.shape[1], folder / "observations.npy")
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    # written as given to `data observe` (relative to where it ran), and resolved since 2026-12-07
    given = Path(str(config.get("source", "")))
    candidates = [given, folder.parent / given] + ([Path(str(config["source_resolved"]))] if config.get("source_resolved") else [])
    source = next((c for c in candidates if (c / "manifest.jsonl").is_file()), given)
    by_id: dict[str, dict] = {}
    source_hash = manifest_hash(source) if config.get("source") and (source / "manifest.jsonl").is_file() else None
    recorded = config.get("source_hash")  # `data observe` since 2026-12-07: the source manifest's hash
    if source_hash is None:
        log(f"{folder}: its source dataset {config.get('source')!r} is not at hand; the shapes are fitted without "
            f"figures against the shapes they observe")
    elif recorded and source_hash != recorded:
        log(f"{folder}: its source dataset {source} has changed since the observations were made (another manifest); "
            f"the shapes are fitted without figures against the shapes they observe")
    else:
        by_id = {str(r.get("id")): r for _, r in read_jsonl(source / "manifest.jsonl")}
    # the subspace's own shapes, when the observed dataset is the one its population was fitted to (by content:
    # every `data make` names its shapes torus-00000, ...)
    own = set()
    if by_id and members is not None and members.get("data_hash") == source_hash:
        own = {str(i) for i in members.get("shapes", [])}
    scans = []
    for row, points in zip(rows, obs):
        truth = None
        shape = by_id.get(str(row.get("id")))
        if shape is not None:
            grid = load_grid(source, shape)
            truth = {"grid": grid, "robust": tuple(int(v) for v in robust_betti(grid)), "points": load_points(source, shape)[0]}
        scans.append(Scan(_file_safe(str(row.get("id"))), points.astype(np.float32), f"{folder}#{row.get('index')}", truth=truth,
                          member=str(row.get("id")) in own))
    return scans


def _check_size(n: int, source: str | Path) -> None:
    if n < MIN_POINTS:
        raise InputError(f"{source}: {n} points; an inversion needs at least {MIN_POINTS}")


def _file_safe(name: str) -> str:
    """A scan's id as it names its files (grids/ID.npy, ...): letters, digits, '_', '.', '-' only, so an id from a
    hand-edited manifest cannot name a path outside the output folder."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip(".")[:64] or "scan"


def _split(points: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit points, held-out points) of one scan, a seeded share `holdout` held out."""
    order = item_rng(seed, "holdout").permutation(len(points))
    cut = max(1, int(round(holdout * len(points))))
    return points[order[cut:]], points[order[:cut]]


def _seen_distance(observed: np.ndarray, surface: np.ndarray | None) -> float | None:
    """Mean distance from the observed points (P, 3) to the decoded surface's samples: how well the shape
    covers what was seen (one-sided: a partial scan says nothing of the sides it did not see); None for no surface."""
    if surface is None:
        return None
    return float(cKDTree(surface).query(observed)[0].mean())


def _finite_or_none(value: float) -> float | None:
    """A distance for JSON: None where there is no surface to measure (inf)."""
    return float(value) if np.isfinite(value) else None


def invert_scan(gen: Any, sub: Any, scan: Scan, cfg: InvertConfig) -> tuple[dict[str, Any], np.ndarray, torch.Tensor]:
    """Invert one scan: (its manifest row, its decoded grid (R, R, R), its point (D,))."""
    _check_size(len(scan.points), scan.source)
    seed = derive_seed(cfg.seed, "invert", scan.id) % 2**31
    fit_pts, held = _split(scan.points, cfg.holdout, seed)
    fit_obj = Objective(gen, fit_pts, free_weight=cfg.free_weight, seed=seed)
    val_obj = Objective(gen, held, free_weight=cfg.free_weight, seed=derive_seed(seed, "validation") % 2**31)
    starts = torch.zeros(1, sub.k)
    if cfg.starts:
        starts = torch.cat([starts, sub.sample_coords(cfg.starts, seed=seed)])  # (1 + M, k)
    method = subspace_method(gen, "invert", sub, lr=cfg.lr, prior=cfg.prior, starts=starts, objective=fit_obj)
    run = fit_method(method, fit_obj, val_obj, max_steps=cfg.steps, eval_every=cfg.eval_every, patience=cfg.patience,
                     min_rel=1e-3, budgets=[], on_budget=lambda *_: None)
    sigma = sub.sigma.clamp_min(1e-12)

    # decoded under the seed `weightspace decode POINT --seed cfg.seed` gives a point file, so it redraws this grid
    sampler_seed = decode_seed(cfg.seed, 0)

    def decoded(u: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            cond, params = method.model(u.to(gen.device))
            grid = gen.grids(cond, [sampler_seed], params=params, resolution=cfg.resolution)  # checked against the protocol
        return grid[0].float().cpu().numpy()

    start_grid, grid = decoded(method.x0), decoded(run.best)
    start, shape = measure(start_grid, seed=cfg.seed), measure(grid, seed=cfg.seed)
    coords = (run.best.detach().cpu() * sigma.cpu()).float()  # (k,)
    row: dict[str, Any] = {
        "id": scan.id, "source": scan.source, "points_seen": len(scan.points), "robust": list(shape.robust), "betti": list(shape.betti),
        "empty": shape.points is None, "seen_distance": _seen_distance(scan.points, shape.points),
        "seen_distance_start": _seen_distance(scan.points, start.points), "start_is_mean": bool((method.x0 == 0).all()),
        "best_step": run.best_step, "stopped_at": run.stopped_at, "coords": [round(float(v), 6) for v in coords],
        "prior_distance": float((coords / sigma.cpu()).pow(2).mean().sqrt()),  # RMS of z / sigma: 1 is a typical member
        "validation_best": min(v for _, v in run.validation), "seed": seed, "decode_seed": cfg.seed,
    }  # fmt: skip
    if scan.transform is not None:
        row["transform"] = scan.transform
    if scan.member:
        row["member_of_subspace"] = True
    if scan.truth is not None:
        truth = scan.truth
        row.update(truth_robust=list(truth["robust"]), topology_correct=shape.robust == truth["robust"],
                   chamfer_l1=_finite_or_none(geometry(shape.points, truth["points"])["chamfer_l1"]),
                   chamfer_l1_start=_finite_or_none(geometry(start.points, truth["points"])["chamfer_l1"]),
                   iou=iou(grid, truth["grid"]) if grid.shape == truth["grid"].shape else None,
                   iou_start=iou(start_grid, truth["grid"]) if grid.shape == truth["grid"].shape else None)
    point = sub.reconstruct(coords[None].to(sub.mean.device))[0].detach().cpu()  # (D,)
    return row, grid, point


def _write_item(out: Path, row: dict[str, Any], grid: np.ndarray, point: torch.Tensor, frame: Any, meshes: bool) -> dict[str, Any]:
    from weightspace.space.store import save_point

    files = {"grid": f"grids/{row['id']}.npy", "point": f"points/{row['id']}.safetensors"}
    save_npy(out / files["grid"], grid.astype(np.float32))
    (out / "points").mkdir(parents=True, exist_ok=True)
    save_point(out / files["point"], point, frame)
    row = {**row, **files}
    return _write_mesh(out, row, grid) if meshes else row


def _write_mesh(out: Path, row: dict[str, Any], grid: np.ndarray) -> dict[str, Any]:
    """`row` with its mesh written: meshes/ID.ply of the decoded grid (R, R, R)."""
    row = {**row, "mesh": f"meshes/{row['id']}.ply"}
    write_mesh(grid, out / row["mesh"])
    return row


def _points_grid(points: np.ndarray, resolution: int) -> np.ndarray:
    """The voxels (R, R, R) a scan's points (P, 3) fall in, grown by one voxel, as a grid the gallery draws (negative
    inside): what was seen, in the frame it was inverted in."""
    from scipy.ndimage import binary_dilation

    idx = np.clip(np.round((np.asarray(points) + 1.0) / 2.0 * (resolution - 1)).astype(np.int64), 0, resolution - 1)  # (P, 3)
    seen = np.zeros((resolution,) * 3, bool)
    seen[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return np.where(binary_dilation(seen), -1.0, 1.0).astype(np.float32) / resolution


def _gallery(out: Path, rows: list[dict[str, Any]], scans: dict[str, Scan]) -> None:
    """gallery.png: one row per scan (the first GALLERY_ROWS): the points seen (voxelised), the observed shape
    where it is known, and the inversion, blue when its robust Betti numbers are the shape's, red when not."""
    from weightspace.report.gallery import render_gallery
    from weightspace.runtime.io import read_npy

    shown = rows[:GALLERY_ROWS]
    cells, titles, ok = [], [], []
    for r in shown:
        scan = scans[r["id"]]
        grid = read_npy(out / r["grid"], what="grid")
        seen = f"seen {r['seen_distance']:.3f}" if r["seen_distance"] is not None else "no surface"
        cell_title = f"{tuple(r['robust'])} {seen}" + (f" IoU {r['iou']:.2f}" if r.get("iou") is not None else "")
        points = _points_grid(scan.points, grid.shape[0])
        if scan.truth is None:
            cells.append([points, grid]), titles.append([f"{len(scan.points)} points seen", cell_title])
            ok.append([True, not r["empty"]])
        else:
            cells.append([points, scan.truth["grid"], grid])
            titles.append([f"{len(scan.points)} points seen", f"observed shape {tuple(scan.truth['robust'])}", cell_title])
            ok.append([True, True, bool(r["topology_correct"])])
    more = f" (the first {GALLERY_ROWS} of {len(rows)})" if len(rows) > GALLERY_ROWS else ""
    render_gallery(cells, out / GALLERY, row_labels=[r["id"] for r in shown], titles=titles, ok=ok,
                   title=f"scans inverted into the subspace{more}: robust Betti numbers, mean distance of the seen points")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's figures over its scans: medians and means of the distances, the topology rate with its interval."""
    out: dict[str, Any] = {"scans": len(rows), "empty": sum(bool(r["empty"]) for r in rows)}
    for key in ("seen_distance", "seen_distance_start", "chamfer_l1", "chamfer_l1_start", "iou", "iou_start"):
        values = [r[key] for r in rows if key in r]
        if key.startswith("iou"):  # None only where the grids differ in size: not measured, left out
            values = [v for v in values if v is not None]
        if values:  # a distance of no surface (None) counts in the median as infinitely far, a failure, not left out
            median, mean = median_counting_failures(values), finite_mean(values)
            out[key] = {"median": median if np.isfinite(median) else None, "mean_finite": mean if np.isfinite(mean) else None,
                        "n": len(values), "no_surface": failed_count(values)}
    known = [r for r in rows if "topology_correct" in r]
    if known:
        out["topology_correct"] = rate(bool(r["topology_correct"]) for r in known)
    return out


def invert_scans(cfg: InvertConfig, *, generator: Any = None, log: Callable[[str], None] = log_line,
                 progress: bool | None = None) -> dict[str, Any]:
    """Run `cfg`: invert every scan into the subspace, write the folder (module docstring), return invert.json's content."""
    from weightspace.runtime.folders import check_out_folder, finish_replacing, listed_files, named_files, start_replacing
    from weightspace.runtime.io import read_npy
    from weightspace.space.subspace import Subspace

    cfg.validate()
    out = Path(cfg.out)
    check_out_folder(out, "inversion", writes="grids/, meshes/, points/, manifest.jsonl and invert.json",
                     overwrite=cfg.overwrite, finished=INVERT_FILE)
    sub = Subspace.load(cfg.subspace)
    if generator is None:
        from weightspace.generators.registry import load_generator

        name = cfg.checkpoint or sub.frame.checkpoint
        if not name:
            raise InputError(f"{cfg.subspace}: records no checkpoint; pass --checkpoint")
        generator = load_generator(name)
    scans = read_scans(cfg, log, sub.members)
    own = [s.id for s in scans if s.member]
    if own:
        log(f"warning: {len(own)} of {len(scans)} observed shapes ({', '.join(own[:4])}{', ...' if len(own) > 4 else ''}) are "
            f"shapes the subspace's population was fitted to: their figures measure recall, not the inversion of unseen "
            f"shapes; the summary gives the others apart as `unseen`")
    ids = [s.id for s in scans]
    if len(set(ids)) != len(ids):
        raise InputError(f"two scans share the id {next(i for i in ids if ids.count(i) > 1)!r}; give each file once")
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("out", "overwrite", "meshes")}
    out.mkdir(parents=True, exist_ok=True)
    (out / INVERT_FILE).unlink(missing_ok=True)  # a rerun replaces a finished run's record last
    # the files of an earlier run here (its manifest's, a killed run's progress rows) and this run's, on record until
    # this run's manifest is written: those it does not name are then removed, not left to pass as its own
    planned = [{"grid": f"grids/{i}.npy", "point": f"points/{i}.safetensors", "mesh": f"meshes/{i}.ply"} for i in ids]
    recorded = start_replacing(out, listed_files(out / "manifest.jsonl", FILES) | listed_files(out / INVERT_PROGRESS, FILES)
                               | named_files(planned, FILES), FILES)
    record = ProgressFile(out, "subspace invert", {**settings, "subspace_mean": float(sub.mean.sum()), "ids": ids},
                          name=INVERT_PROGRESS, allow_nan=True)
    earlier, why = record.earlier()
    done = {r["id"]: r for r in earlier if isinstance(r.get("id"), str) and all((out / r[f]).is_file() for f in ("grid", "point"))}
    if done:
        log(f"taking up {len(done)} scan(s) inverted by an earlier run in {out}")
    elif why:
        log(f"not taking up the earlier run in {out}: {why}")
    rows: dict[str, dict[str, Any]] = {}
    record.start([done[i] for i in ids if i in done])
    with record:
        try:
            for scan in track(scans, "inverting", enabled=progress):
                if scan.id in done:
                    rows[scan.id] = done[scan.id]
                    if cfg.meshes and "mesh" not in rows[scan.id]:  # taken up from a run with --no-meshes
                        rows[scan.id] = _write_mesh(out, rows[scan.id], read_npy(out / rows[scan.id]["grid"], what="grid"))
                    continue
                row, grid, point = invert_scan(generator, sub, scan, cfg)
                rows[scan.id] = _write_item(out, row, grid, point, sub.frame, cfg.meshes)
                record.add(rows[scan.id])
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted: {len(rows)} of {len(scans)} scans are inverted in {out}; "
                              f"run the same command again to resume") from None
    ordered = [rows[i] for i in ids]
    with atomic_path(out / "manifest.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in ordered))
    finish_replacing(out, recorded, ordered, FILES)
    _gallery(out, ordered, {s.id: s for s in scans})
    result = {"config": settings, "checkpoint": cfg.checkpoint or sub.frame.checkpoint, "summary": summarise(ordered),
              "gallery": GALLERY}
    if own:
        unseen = [r for r in ordered if not r.get("member_of_subspace")]
        result["summary"]["members_of_subspace"] = len(own)
        result["summary"]["unseen"] = summarise(unseen) if unseen else None
    atomic_write_json(out / INVERT_FILE, result)
    record.remove()
    return result

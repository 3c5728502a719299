"""What every study shares: results folders, generator and data set-up, decoding, and per-shape measurements.

A results folder holds `config.json` (the study's config), `results.json` (summary figures),
per-item CSV tables, meshes and PNG plots; every file is written atomically. A *measurement* of
one decoded grid is everything the studies compare: exact and robust Betti numbers, volume,
components above a volume threshold, validity flags, an SDF eikonal residual and seeded
surface samples (for Chamfer and F-score).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage

from weightspace.analysis import topology
from weightspace.analysis.geometry import compare_points, sample_surface
from weightspace.analysis.persistence import robust_betti
from weightspace.data.dataset import load_points, read_manifest
from weightspace.decode.mesh import grid_to_mesh
from weightspace.generators.protocol import Generator, families_of
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_path, atomic_write_json, atomic_write_text, safe_child
from weightspace.runtime.seeding import derive_seed

DEFAULT_VOLUME_THRESHOLD = 0.002  # world units^3 (about 7 voxels at R = 32): smaller parts are floaters
SURFACE_POINTS = 2048  # surface samples per decoded shape for Chamfer / F-score


# --- results folders ---------------------------------------------------------------------------------
def start_results(out: str | Path, config: Any) -> Path:
    """Create the results folder and write `config.json` (the dataclass config, as given)."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"out: {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    body = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    atomic_write_json(folder / "config.json", {"study": type(config).__name__, **body})
    return folder


def write_results(folder: Path, results: dict[str, Any]) -> Path:
    """`results.json` (summary figures); NaN / inf become null so the file is strict JSON."""
    atomic_write_text(folder / "results.json", json.dumps(_clean(results), indent=2, sort_keys=False) + "\n")
    return folder / "results.json"


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    return x


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """One row per item; the columns are the union of the rows' keys in first-seen order."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())
    return path


def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return " ".join(str(_cell(x)) for x in v)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return v


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_mesh(grid: np.ndarray, path: Path) -> None:
    """Marching-cubes mesh of a grid as PLY (an empty grid writes nothing)."""
    mesh = grid_to_mesh(grid)
    if len(mesh.faces):
        with atomic_path(path) as tmp:
            mesh.export(str(tmp), file_type="ply")


class Clock:
    """Wall time since creation, in seconds."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


# --- generators and data -------------------------------------------------------------------------
def load_study_generator(checkpoint: str, generator: Generator | None = None) -> Generator:
    """The generator a study runs on: `generator` when given (tests), else `load_generator(checkpoint)`."""
    if generator is not None:
        return generator
    from weightspace.generators.registry import load_generator

    torch.manual_seed(0)
    return load_generator(checkpoint)


def native_resolution(gen: Generator) -> int:
    """The grid resolution a generator decodes (and trains) at."""
    return int(gen.resolution)


def generator_families(gen: Generator) -> list[str]:
    """Family names the generator was trained with (empty when it takes no family condition)."""
    return families_of(gen)


def generator_pose(gen: Generator) -> str:
    """The pose distribution of the procedural shapes the generator was trained on (`data make --pose`);
    `random` for checkpoints that predate the option."""
    data = gen.config.get("data") if isinstance(gen.config.get("data"), dict) else {}
    pose = str(data.get("pose", "random"))
    return pose if pose in ("random", "aligned") else "random"


def study_data(folder: Path, *, data: str | None, families: Sequence[str], count: int, seed: int,
               resolution: int, pose: str = "random") -> tuple[Path, list[dict[str, Any]]]:
    """Shapes for a study: rows of `data` (when given) of the named families (all when empty), else a
    procedural set made into `folder` (`count` shapes per family, `seed` unseen by training when it
    differs from the training data's seed, in the generator's training `pose`)."""
    if data is not None:
        root = Path(data)
        rows = read_manifest(root)
        if families:
            rows = [r for r in rows if r.get("family") in set(families)]
        if not rows:
            raise InputError(f"data: {root} has no shapes of families {list(families)}")
        return root, rows
    from weightspace.data.make import make_dataset

    if not families:
        raise InputError("data: this generator knows no family names; pass a data folder (--data)")
    root = folder
    rows: list[dict[str, Any]] = []
    for fam in families:
        sub = root / fam
        if not (sub / "manifest.jsonl").is_file():
            make_dataset(sub, family=fam, count=count, resolution=resolution, seed=seed, progress=False, pose=pose)
        rows += [{**r, "_root": fam} for r in read_manifest(sub)]  # relative: resolved under root
    return root, rows


def row_root(root: Path, row: dict[str, Any]) -> Path:
    """The folder a row's files are relative to: a subfolder of `root` named by `_root`, never outside it
    (a user's manifest could carry a `_root` key of its own)."""
    return safe_child(root, str(row["_root"])) if "_root" in row else root


def clean_surface(root: Path, row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The shape's stored surface samples and normals, (P, 3) float32 each."""
    return load_points(row_root(root, row), row)


def encode_points(gen: Generator, points: Sequence[np.ndarray], *, seed: int) -> torch.Tensor:
    """Conditions (B, *condition_shape) of point clouds (each (P, 3)) through the generator's own encoder."""
    out = []
    for i, p in enumerate(points):
        x = torch.as_tensor(np.asarray(p, dtype=np.float32))[None]  # (1, P, 3)
        with torch.no_grad():
            out.append(gen.condition(points=x, seeds=[derive_seed(seed, "encode", i) % 2**31]).detach().cpu())
    return torch.cat(out)


def decode_conditions(gen: Generator, conditions: torch.Tensor, seed: int, *, params: dict[str, torch.Tensor] | None = None,
                      batch: int = 8) -> np.ndarray:
    """Grids (B, R, R, R) float32 of conditions, every item under the same sampler seed (noise fixed)."""
    out = []
    with torch.no_grad():
        for i in range(0, conditions.shape[0], batch):
            c = conditions[i : i + batch].to(gen.device, torch.float32)
            out.append(gen.sdf_grid(c, [seed] * c.shape[0], params=params).float().cpu().numpy())
    return np.concatenate(out)


# --- measurements ----------------------------------------------------------------------------------
@dataclass
class Shape:
    """One decoded grid, measured (see the module docstring)."""

    betti: tuple[int, int, int]
    robust: tuple[int, int, int]
    volume: float
    components_above: int
    inside_fraction: float
    touches_box: bool
    eikonal: float
    points: np.ndarray | None  # (n, 3) surface samples, None for an empty or full grid

    @property
    def empty(self) -> bool:
        return self.points is None

    @property
    def valid(self) -> bool:
        """Non-empty, not filling the box, and not cut by the box (no solid on its faces)."""
        return not self.empty and not self.touches_box

    def row(self, prefix: str = "") -> dict[str, Any]:
        b, r = self.betti, self.robust
        return {f"{prefix}b0": b[0], f"{prefix}b1": b[1], f"{prefix}b2": b[2], f"{prefix}rb0": r[0], f"{prefix}rb1": r[1],
                f"{prefix}rb2": r[2], f"{prefix}components_above": self.components_above, f"{prefix}volume": self.volume,
                f"{prefix}valid": int(self.valid), f"{prefix}eikonal": self.eikonal}


def eikonal_residual(grid: np.ndarray, band: float | None = None) -> float:
    """Mean | |grad sdf| - 1 | over voxels near the surface (|sdf| < band), by central differences.

    A signed distance has unit gradient; a decoded field far from it (flat, noisy, exploded) is a
    cheap sign of a failed decode. Voxels whose stencil reads a truncated value are skipped.
    Returns inf when no voxel is near the surface.
    """
    R = grid.shape[0]
    h = 2.0 / (R - 1)
    band = 2.5 * h if band is None else band
    g = np.gradient(grid.astype(np.float64), h)  # 3 x (R, R, R)
    norm = np.sqrt(sum(c**2 for c in g))  # (R, R, R)
    a = np.abs(grid)
    # skip stencils that read a truncated value: the clamp flattens the field there, not the decode
    clamped = ndimage.maximum_filter(a, footprint=ndimage.generate_binary_structure(3, 1)) >= 0.98 * a.max()
    near = (a < band) & ~clamped
    near[[0, -1], :, :] = near[:, [0, -1], :] = near[:, :, [0, -1]] = False
    if not near.any():
        return float("inf")
    return float(np.abs(norm[near] - 1.0).mean())


def measure(grid: np.ndarray, *, seed: int = 0, volume_threshold: float = DEFAULT_VOLUME_THRESHOLD,
            n_points: int = SURFACE_POINTS) -> Shape:
    """Measure one SDF grid (R, R, R) (solid where < 0)."""
    grid = np.asarray(grid, dtype=np.float32)
    t = topology(grid)
    solid = grid < 0
    touches = bool(solid[[0, -1]].any() or solid[:, [0, -1]].any() or solid[:, :, [0, -1]].any())
    frac = float(solid.mean())
    pts = None
    if 0.0 < frac < 1.0:
        mesh = grid_to_mesh(grid)
        if len(mesh.faces) and mesh.area > 0:
            pts, _ = sample_surface(mesh, n_points, seed=seed)
    return Shape(betti=t.betti, robust=tuple(int(v) for v in robust_betti(grid)), volume=float(t.component_volumes.sum()),
                 components_above=t.components_above(volume_threshold), inside_fraction=frac, touches_box=touches,
                 eikonal=eikonal_residual(grid), points=pts)


def geometry(a: np.ndarray | None, b: np.ndarray | None) -> dict[str, float]:
    """Chamfer-L1 / L2 and F-score between two point sets; inf / 0 when exactly one is missing."""
    if a is None or b is None:
        same = a is None and b is None
        return {"chamfer_l1": 0.0 if same else float("inf"), "chamfer_l2": 0.0 if same else float("inf"),
                "fscore": 1.0 if same else 0.0}
    m = compare_points(a, b)
    return {"chamfer_l1": m["chamfer_l1"], "chamfer_l2": m["chamfer_l2"], "fscore": m["fscore"]}


def chamfer(a: np.ndarray | None, b: np.ndarray | None) -> float:
    return geometry(a, b)["chamfer_l1"]


def finite_mean(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise InputError(f"{name} must be one of {', '.join(valid)}, got {value!r}")


# --- checking what a study stands on ---------------------------------------------------------------
def topology_check(ids: Sequence[str], decoded: Sequence[tuple[int, int, int]],
                   intended: Sequence[tuple[int, int, int] | None]) -> list[dict[str, Any]]:
    """One row per endpoint or example: id, its decoded robust Betti numbers, the ones it stands for
    (None: nothing to check against) and whether they agree."""
    return [{"id": i, "decoded": list(got), "intended": None if want is None else list(want),
             "ok": want is None or tuple(got) == tuple(want)} for i, got, want in zip(ids, decoded, intended)]


def mismatches(check: Sequence[dict[str, Any]], limit: int = 300) -> str:
    """'id: (decoded) vs (intended), ...' for the rows of a topology check that failed, cut at `limit` characters."""
    return ", ".join(f"{c['id']}: {tuple(c['decoded'])} vs {tuple(c['intended'])}" for c in check if not c["ok"])[:limit]


def refuse(folder: Path, checkpoint: str, why: str, **records: Any) -> None:
    """Record a refusal (and the checks behind it) as the study's results.json, then raise it:
    a study never reports figures measured on broken endpoints or examples."""
    write_results(folder, {"checkpoint": checkpoint, "refused": why, **records})
    raise InputError(why)


def refusal(folder: Path) -> str | None:
    """The reason a study in `folder` refused, or None when it did not (or wrote no results)."""
    path = Path(folder) / "results.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("refused")

"""Importing user meshes (OBJ, PLY, STL, OFF, GLB/GLTF) and binvox occupancy grids: validation, normalisation, signed distance grids, surface points."""

from __future__ import annotations

import contextlib
import functools
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import trimesh

from weightspace.data.families import AS_GIVEN
from weightspace.data.grid import check_resolution, grid_points
from weightspace.data.make import (
    DATA_FILES,
    assign_splits,
    files_readable,
    finish_replacing,
    measure_betti,
    save_npy,
    save_npz,
    start_replacing,
    take_up,
    write_manifest,
)
from weightspace.data.repair import SOLIDITY_RESOLUTION, repair_orientation, solidity, solidity_points, winding_number
from weightspace.data.voxels import VOXEL_FORMATS, occupancy_surface, read_binvox
from weightspace.runtime.errors import InputError, Interrupted
from weightspace.runtime.executors import spawn_pool
from weightspace.runtime.folders import check_out_folder, named_files
from weightspace.runtime.io import atomic_write_json, remove_stale_temps
from weightspace.runtime.progress import log_line, track
from weightspace.runtime.resume import ProgressFile
from weightspace.runtime.seeding import derive_seed

MESH_FORMATS = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
FORMATS = MESH_FORMATS + VOXEL_FORMATS  # an occupancy grid (binvox) is imported through its surface

# reason codes a failed file is reported with (manifest `error`, console)
REASONS = {
    "not-found": "file not found",
    "unsupported-format": "not a supported mesh format",
    "empty": "empty file",
    "unreadable": "cannot be parsed as a mesh",
    "no-faces": "no triangle faces",
    "bad-face-index": "faces index past the vertex list",
    "non-finite": "NaN or infinite vertex coordinates",
    "zero-extent": "all vertices coincide (zero extent)",
}


_FACE_INDEX_MESSAGE = re.compile(r"out of bounds for axis|face index", re.IGNORECASE)


class MeshImportError(InputError):
    """A mesh file that cannot be imported; `code` is one of REASONS."""

    def __init__(self, path: Path, code: str, detail: str = ""):
        self.path, self.code = path, code
        super().__init__(f"{path}: {REASONS[code]}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class Normalisation:
    """world = (v - center) * scale puts the mesh's bounding box centred in [-(1 - margin), 1 - margin]^3."""

    center: tuple[float, float, float]
    scale: float


def expand_paths(paths: list[str | Path], suffixes: tuple[str, ...] = FORMATS) -> list[Path]:
    """Files as given, and the files under any folder (sorted) whose suffix is one of `suffixes`
    (default: the supported mesh formats), in order; a file reached twice (named and in a named folder,
    or in two nested folders) once, where it is first reached."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes))
        else:
            out.append(p)
    seen: set[Path] = set()
    return [f for f in out if not (f.resolve() in seen or seen.add(f.resolve()))]


def _holds_nothing(loaded: object) -> bool:
    """trimesh read no geometry at all: a scene without any, or a mesh or point cloud without vertices."""
    if isinstance(loaded, trimesh.Scene):
        return len(loaded.geometry) == 0
    return np.asarray(getattr(loaded, "vertices", np.zeros((1, 3)))).size == 0


_OBJ_NAMING = {"o", "g", "s", "usemtl", "mtllib"}  # OBJ lines that may carry words and still hold no geometry
_OBJ_DATA = {"v", "vt", "vn", "vp", "f", "l", "p"}  # trimesh writes an empty mesh's as bare "v" and "f" lines


def declares_nothing(path: Path) -> bool:
    """The file is a well-formed mesh file of its format that declares no vertices and no faces (what
    trimesh writes for an empty mesh), as opposed to garbage that trimesh also reads as nothing.

    PLY: a header whose every element count is 0. OBJ: only bare data keywords and naming lines.
    STL: a binary file of 0 triangles (84 bytes) or ASCII ``solid ... endsolid`` without facets.
    OFF: ``OFF 0 0 ...``. GLB/GLTF: trimesh parsed the container, whose header it checks.
    """
    suffix = path.suffix.lower()
    if suffix in (".glb", ".gltf"):
        return True
    size = path.stat().st_size
    data = path.read_bytes()[:65536]
    if suffix == ".ply":
        header, found, _ = data.partition(b"end_header")
        words = [ln.split() for ln in header.decode("ascii", errors="replace").splitlines()]
        counts = [w[2] for w in words if len(w) == 3 and w[0] == "element"]
        return bool(found) and header.startswith(b"ply") and bool(counts) and all(c == "0" for c in counts)
    if suffix == ".stl" and size == 84:
        return int.from_bytes(data[80:84], "little") == 0
    if size > len(data):
        return False  # an empty OBJ, STL or OFF is a few lines
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    words = text.split()
    if suffix == ".obj":
        lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        return bool(lines) and all(w[0] in _OBJ_NAMING or (w[0] in _OBJ_DATA and len(w) == 1) for w in lines)
    if suffix == ".stl":
        return bool(words) and words[0] == "solid" and "endsolid" in words and "facet" not in words
    if suffix == ".off":
        return len(words) >= 3 and words[0] == "OFF" and words[1] == words[2] == "0"
    return False


def load_mesh(path: str | Path, *, allow_empty: bool = False) -> trimesh.Trimesh:
    """Read one mesh file (scenes are concatenated with their transforms) and validate it.

    Raises MeshImportError with a reason code for every bad-input case of REASONS. With
    `allow_empty`, a well-formed file that declares no vertices and no faces (`declares_nothing`:
    what `weightspace generate` writes for a decode with nothing solid) is the empty surface, a
    Trimesh of (0, 3) vertices and faces; without it, it is refused as "no-faces" (nothing to import).
    """
    path = Path(path)
    if not path.is_file():
        raise MeshImportError(path, "not-found")
    if path.suffix.lower() not in FORMATS:
        raise MeshImportError(path, "unsupported-format", f"{path.suffix or 'no extension'}; supported: {', '.join(FORMATS)}")
    if path.stat().st_size == 0:
        raise MeshImportError(path, "empty")
    if path.suffix.lower() in VOXEL_FORMATS:
        return _voxel_surface(path)
    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as e:  # trimesh's loaders raise many exception types on malformed input
        msg = str(e)
        # loaders index the vertex array with the faces (numpy: "out of bounds for axis 0") or
        # check it ("face index outside the range"); a parser's own "list index out of range"
        # on garbage is not a face problem
        if _FACE_INDEX_MESSAGE.search(msg):
            raise MeshImportError(path, "bad-face-index", msg) from None
        raise MeshImportError(path, "unreadable", f"{type(e).__name__}: {msg}"[:200]) from None
    if allow_empty and _holds_nothing(loaded) and declares_nothing(path):
        return trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=np.int64), process=False)
    if isinstance(loaded, trimesh.Scene):
        meshes = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)]  # transforms applied
        if not meshes:
            raise MeshImportError(path, "no-faces", "the scene holds no triangle mesh")
        loaded = trimesh.util.concatenate(meshes) if len(meshes) > 1 else meshes[0]
    if not isinstance(loaded, trimesh.Trimesh):
        raise MeshImportError(path, "no-faces", f"read a {type(loaded).__name__}, not a triangle mesh")
    vertices = np.asarray(loaded.vertices, dtype=np.float64)  # (V, 3)
    faces = np.asarray(loaded.faces, dtype=np.int64)  # (F, 3)
    # trimesh returns (V, 2) vertices when an OBJ line holds two coordinates; libigl would then read
    # past the array and corrupt the heap (a native abort, found by fuzzing): check the shapes first
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise MeshImportError(path, "unreadable", f"vertices {vertices.shape} and faces {faces.shape}; expected (V, 3) and (F, 3)")
    if len(faces) == 0 or len(vertices) == 0:
        raise MeshImportError(path, "no-faces", f"{len(vertices)} vertices, {len(faces)} faces")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshImportError(path, "bad-face-index", f"indices {faces.min()}..{faces.max()} for {len(vertices)} vertices")
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise MeshImportError(path, "non-finite", f"{bad} of {len(vertices)} vertices")
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)  # (3,), (3,)
    with np.errstate(over="ignore"):
        extent = float((hi - lo).max())
    if not np.isfinite(extent):
        raise MeshImportError(path, "non-finite", f"coordinates up to {np.abs(vertices).max():.3g} overflow their extent")
    if extent <= 0:
        raise MeshImportError(path, "zero-extent")
    # Merge duplicated vertices (STL) in a unit frame: trimesh rounds coordinates to int64 at an
    # absolute tolerance, which overflows beyond ~1e10 units (OverflowError, found by fuzzing) and
    # would be the wrong tolerance for a mesh in microns or kilometres anyway.
    center = (lo + hi) / 2  # (3,)
    unit = trimesh.Trimesh(vertices=(vertices - center) / extent, faces=faces, process=True)
    # a face naming one vertex twice (after the merge) is an edge or a point, not a triangle: kept,
    # its edges are used three times and a closed mesh (STL exports often hold some) reads as open
    f = unit.faces  # (F, 3)
    triangle = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])  # (F,) bool
    if not triangle.any():
        raise MeshImportError(path, "no-faces", "every face is degenerate")
    if not unit.area_faces[triangle].sum() > 0:
        raise MeshImportError(path, "no-faces", "every face has zero area")
    mesh = trimesh.Trimesh(vertices=unit.vertices * extent + center, faces=f[triangle], process=False)
    if not np.ptp(mesh.vertices, axis=0).max() > 0:
        raise MeshImportError(path, "zero-extent", "after merging duplicated vertices")
    return mesh


def _voxel_surface(path: Path) -> trimesh.Trimesh:
    """The surface of a binvox occupancy grid, in the file's world frame, for the import to treat as a mesh."""
    try:
        occupancy, transform = read_binvox(path)
    except InputError as e:
        raise MeshImportError(path, "unreadable", str(e).removeprefix(f"{path}: ")) from None
    if not occupancy.any():
        raise MeshImportError(path, "no-faces", f"no voxel of its {'x'.join(map(str, occupancy.shape))} grid is set")
    return occupancy_surface(occupancy, transform)


def normalise(mesh: trimesh.Trimesh, margin: float = 0.1) -> tuple[trimesh.Trimesh, Normalisation]:
    """Centre the bounding box on the origin and scale its longest side to 2 (1 - margin)."""
    norm = box_normalisation(*mesh.bounds, margin)
    out = trimesh.Trimesh(vertices=(mesh.vertices - np.asarray(norm.center)) * norm.scale, faces=mesh.faces, process=False)
    return out, norm


def box_normalisation(lo: np.ndarray, hi: np.ndarray, margin: float = 0.1) -> Normalisation:
    """The Normalisation of a bounding box lo, hi : (3,): its centre to the origin, its longest side to 2 (1 - margin)."""
    center = (np.asarray(lo, dtype=np.float64) + hi) / 2  # (3,)
    scale = (1.0 - margin) / (0.5 * float((np.asarray(hi) - lo).max()))
    return Normalisation(tuple(float(c) for c in center), float(scale))


def mesh_sdf_grid(mesh: trimesh.Trimesh, resolution: int, truncation: float, *, exact_sign: bool = True) -> tuple[np.ndarray, str]:
    """Truncated signed distance of a normalised mesh on the R^3 grid: ((R, R, R) float32, sign method).

    Watertight, consistently wound meshes get the exact sign from libigl's pseudonormal test
    (unless `exact_sign` is False: bodies that overlap, whose union only the winding number
    gives); others get the fast generalised winding number (Barill et al. 2018), robust to holes
    and flipped faces. Bodies are taken as oriented (see `repair.repair_orientation`).
    Distances are computed only within +-truncation (libigl's bounds, ~3x faster); points beyond
    get +-truncation with the sign of the winding number, which is exact for a closed mesh and
    the robust sign otherwise.
    """
    import igl

    watertight = bool(mesh.is_watertight and mesh.is_winding_consistent) and exact_sign
    method = "pseudonormal" if watertight else "fast_winding_number"
    sign_type = igl.SIGNED_DISTANCE_TYPE_PSEUDONORMAL if watertight else igl.SIGNED_DISTANCE_TYPE_FAST_WINDING_NUMBER
    V = np.ascontiguousarray(mesh.vertices, dtype=np.float64)  # (V, 3)
    F = np.ascontiguousarray(mesh.faces, dtype=np.int64)  # (F, 3)
    # libigl trusts these shapes and indices (a wrong one corrupts memory): never call it without them
    assert V.ndim == 2 and V.shape[1] == 3 and F.ndim == 2 and F.shape[1] == 3 and len(F) and 0 <= F.min() and F.max() < len(V)
    P = grid_points(resolution).reshape(-1, 3).astype(np.float64)  # (R^3, 3)
    S = igl.signed_distance(P, V, F, sign_type=sign_type, lower_bound=-truncation, upper_bound=truncation)[0]  # (R^3,)
    far = ~np.isfinite(S)
    if far.any():
        w = winding_number(V, F, P[far])
        S[far] = np.where(w > 0.5, -truncation, truncation)
    grid = np.clip(S, -truncation, truncation).reshape(resolution, resolution, resolution).astype(np.float32)
    return grid, method


def _without_voxelisations_beside_meshes(given: list[str | Path], files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(files to import, .binvox files left out): a folder scan's binvox file in the same folder as a mesh file.
    ShapeNet keeps model_normalized.solid.binvox and .surface.binvox beside model_normalized.obj; importing
    all three would list one model three times, one as a hollow shell. A file named on the command line is kept."""
    named = {Path(p) for p in given}
    mesh_folders = {f.parent for f in files if f.suffix.lower() in MESH_FORMATS}
    beside = [f for f in files if f.suffix.lower() in VOXEL_FORMATS and f not in named and f.parent in mesh_folders]
    return [f for f in files if f not in beside], beside


def file_id(i: int, path: Path) -> str:
    """The id of the i-th file given to a command (`data import`, `subspace invert`): its index and its stem, in the
    characters a file name may safely hold (it names the item's files)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:60] or "mesh"
    return f"{i:04d}-{stem}"



def _stamp(path: Path) -> list[int] | None:
    """The size and modification time (ns) of a source file, or None when it cannot be read: what tells
    a rerun that the file it imported before is still the same one (`import_meshes`)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


@dataclass(frozen=True)
class ImportConfig:
    """What every file of one import is made with (picklable: sent to worker processes)."""

    out: Path
    resolution: int
    truncation: float
    n_points: int
    margin: float
    seed: int
    keep_non_solid: bool


def _import_one(cfg: ImportConfig, job: tuple[int, Path]) -> tuple[str, dict, dict | None, float | None]:
    """Import file `job` = (index, path): writes its grid and points and returns (status, manifest
    row, failure or skip record, seconds). Depends on nothing but `cfg` and `job`, so any worker
    may run it and the files are the same."""
    i, path = job
    item_id = file_id(i, path)
    t0 = time.perf_counter()
    try:
        raw = load_mesh(path)
    except MeshImportError as e:
        failure = dict(source=str(path), error=e.code, reason=str(e))
        return "failed", dict(id=item_id, source=str(path), status="failed", error=e.code, reason=str(e)), failure, None
    mesh, norm = normalise(raw, cfg.margin)
    mesh, repair = repair_orientation(mesh)
    P = solidity_points(min(cfg.resolution, SOLIDITY_RESOLUTION))  # (r^3, 3) world units
    solid = solidity(winding_number(mesh.vertices, mesh.faces, P), closed=repair["closed_bodies"] == repair["bodies"])
    checked = dict(solid=solid["solid"], solid_reason=solid["reason"], ambiguous=solid["ambiguous"], repair=repair)
    if not solid["solid"] and not cfg.keep_non_solid:
        reason = f"{path}: not solid, skipped ({solid['reason']}; --keep-non-solid imports it)"
        skip = dict(source=str(path), reason=reason, ambiguous=solid["ambiguous"])
        return "skipped", dict(id=item_id, source=str(path), status="skipped", error="not-solid", reason=reason, **checked), skip, None
    grid, method = mesh_sdf_grid(mesh, cfg.resolution, cfg.truncation, exact_sign=repair["overlapping"] == 0)
    points, face_idx = trimesh.sample.sample_surface(mesh, cfg.n_points, seed=derive_seed(cfg.seed, "import", item_id) % 2**32)
    normals = mesh.face_normals[face_idx]  # (P, 3) unit
    save_npy(cfg.out / "grids" / f"{item_id}.npy", grid)
    save_npz(cfg.out / "points" / f"{item_id}.npz", points=points.astype(np.float32), normals=normals.astype(np.float32))
    took = time.perf_counter() - t0
    row = dict(
        id=item_id,
        source=str(path),
        status="ok",
        family="imported",
        pose=AS_GIVEN,  # centred and scaled, never turned
        label=-1,
        format=path.suffix.lower().lstrip("."),
        n_vertices=int(len(raw.vertices)),
        n_faces=int(len(raw.faces)),
        watertight=repair["closed_bodies"] == repair["bodies"],
        sign_method=method,
        **checked,
        center=list(norm.center),
        scale=norm.scale,
        betti_declared=None,
        betti_measured=list(measure_betti(grid)),
        grid=f"grids/{item_id}.npy",
        points=f"points/{item_id}.npz",
        resolution=cfg.resolution,
        truncation=cfg.truncation,
    )
    return "ok", row, None, took


def import_meshes(
    paths: list[str | Path],
    out: str | Path,
    resolution: int = 64,
    truncation: float = 0.2,
    n_points: int = 4096,
    margin: float = 0.1,
    seed: int = 0,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    overwrite: bool = False,
    progress: bool | None = None,
    on_failure=None,
    keep_non_solid: bool = False,
    on_skip=None,
    workers: int = 1,
    log: Callable[[str], None] = log_line,
) -> dict:
    """Import mesh files into a data folder like `make_dataset` writes (family "imported", label -1).

    Each mesh is normalised, its bodies rewound and oriented by containment depth
    (`repair.repair_orientation`, recorded as `repair`), and checked for solidity
    (`repair.solidity`, recorded as `solid`, `solid_reason`, `ambiguous`). A mesh that bounds no
    volume gets status "skipped" (error "not-solid"), no files, and `on_skip(path, message)`,
    unless `keep_non_solid`: then it is imported with `solid: false`.
    A bad file never stops the import: it gets a manifest row with status "failed", its reason
    code and message, and `on_failure(path, message)` is called. Returns the summary (also in
    `out/summary.json`) with the failures, the skipped non-solids and timing.
    `workers` > 1 imports files in that many processes; the files are the same byte for byte, and
    the callbacks still come in file order.
    An import killed part-way is taken up by a rerun with the same files and options: each file's
    result is recorded in a progress file (`runtime.resume`) as it is done, and the rerun imports
    only the files not recorded there, changed since (size or modification time) or whose output no
    longer reads back, so the folder ends byte for byte as an uninterrupted import's. The callbacks
    hear every file's failure or skip again, in file order. `log` hears how many files were taken up,
    or why none were (other files or options: the earlier output is then replaced). Ctrl-C raises
    `Interrupted`, whose message counts the files done.
    """
    out = Path(out)
    check_resolution(resolution)
    if not truncation > 0:
        raise InputError(f"--truncation must be positive (world units), got {truncation}")
    if not 0 <= margin < 1:
        raise InputError(f"--margin must be in [0, 1), got {margin}")
    if n_points < 1:
        raise InputError(f"--points must be at least 1, got {n_points}")
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    check_out_folder(out, "data", writes="manifest.jsonl, summary.json, grids/ and points/")  # a file, a population, a decode...
    if (out / "manifest.jsonl").exists() and not overwrite:
        raise InputError(f"{out}: already holds a dataset (manifest.jsonl); pass --overwrite to replace it")
    files, beside = _without_voxelisations_beside_meshes(paths, expand_paths(paths))
    if beside:
        log(f"left out {len(beside)} .binvox file(s) found in a folder beside a mesh file (e.g. {beside[0]}): a voxelisation "
            f"of that mesh, as ShapeNet ships them, would import the shape again; name them to import them")
    if not files:
        raise InputError(f"no mesh files found in {', '.join(map(str, paths))} (supported: {', '.join(FORMATS)})")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # left by a writer killed in an earlier run; nothing else writes here now
    jobs = list(enumerate(files))
    ids = {i: file_id(i, path) for i, path in jobs}
    writes = [dict(grid=f"grids/{ids[i]}.npy", points=f"points/{ids[i]}.npz") for i, _ in jobs]
    earlier = start_replacing(out, overwrite, named_files(writes, DATA_FILES))
    # everything a row or a file depends on; each file's own stamp is checked with its row
    settings = dict(files=[str(path) for path in files], resolution=resolution, truncation=truncation, n_points=n_points,
                    margin=margin, seed=seed, keep_non_solid=keep_non_solid)
    record = ProgressFile(out, "data import", settings)
    stamps = {i: _stamp(path) for i, path in jobs}  # before any file is read: one changed later is imported again

    def usable(entry: dict, job: tuple[int, Path]) -> bool:
        i, path = job
        row = entry.get("row")
        if entry.get("stamp") != stamps[i] or not isinstance(row, dict) or row.get("id") != ids[i] or row.get("source") != str(path):
            return False
        if row.get("status") == "ok":
            return {k: row.get(k) for k in writes[i]} == writes[i] and files_readable(out, row, resolution, n_points)
        return row.get("status") in ("failed", "skipped") and isinstance(entry.get("record"), dict)

    taken = take_up(record, {ids[i]: (i, path) for i, path in jobs}, usable, "files already imported", log)
    todo = [job for job in jobs if ids[job[0]] not in taken]
    cfg = ImportConfig(out, resolution, truncation, n_points, margin, seed, keep_non_solid)
    item = functools.partial(_import_one, cfg)
    label = f"importing at {resolution}^3"
    rows, failures, skipped, seconds = [], [], [], []
    record.start([taken[ids[i]] for i, _ in jobs if ids[i] in taken])
    try:
        with record, contextlib.ExitStack() as stack:
            if workers == 1 or len(todo) <= 1:
                fresh = map(item, todo)
            else:
                fresh = stack.enter_context(spawn_pool(min(workers, len(todo)))).map(item, todo)  # in job order

            def results():
                """Every file's result in file order: taken up, or imported now and recorded."""
                for i, path in jobs:
                    if ids[i] in taken:
                        entry = taken[ids[i]]
                        yield path, (entry["row"]["status"], entry["row"], entry["record"], None)
                    else:
                        status, row, failure, took = next(fresh)
                        record.add(dict(id=ids[i], row=row, record=failure, stamp=stamps[i]))  # only this process writes it
                        yield path, (status, row, failure, took)

            # failed and skipped files count as done; the bar wraps the generator, so it takes its last step too
            for path, (status, row, failure, took) in track(results(), label, enabled=progress, total=len(jobs)):
                rows.append(row)
                if status == "failed":
                    failures.append(failure)
                    if on_failure is not None:
                        on_failure(path, failure["reason"])
                elif status == "skipped":
                    skipped.append(failure)
                    if on_skip is not None:
                        on_skip(path, failure["reason"])
                elif took is not None:
                    seconds.append(took)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {len(rows)} of {len(jobs)} files are done in {out}; "
                          f"run the same command again to resume") from None
    ok = [r for r in rows if r["status"] == "ok"]
    splits = assign_splits({"imported": len(ok)}, seed, split)
    for i, r in enumerate(ok):
        r["split"] = splits[("imported", i)]
    write_manifest(out / "manifest.jsonl", rows)
    summary = dict(
        count=len(files),
        pose=AS_GIVEN,
        imported=len(ok),
        failed=len(failures),
        failures=failures,
        skipped=len(skipped),
        skipped_non_solid=skipped,
        non_solid_kept=sum(not r["solid"] for r in ok),
        # thinner than a voxel everywhere (a plate, a sheet): imported, but its grid holds no inside voxel
        empty_at_resolution=[r["id"] for r in ok if r["betti_measured"][0] == 0],
        voxelisations_left_out=[str(f) for f in beside],  # .binvox beside a mesh in a scanned folder
        resolution=resolution,
        truncation=truncation,
        margin=margin,
        seed=seed,
        sign_methods={m: sum(r["sign_method"] == m for r in ok) for m in ("pseudonormal", "fast_winding_number")},
    )
    atomic_write_json(out / "summary.json", summary)
    finish_replacing(out, earlier, rows, record)
    # timing goes to the caller only: summary.json stays byte-identical, resumed or not
    return dict(summary, seconds_per_mesh=float(np.mean(seconds)) if seconds else None, resumed=len(taken))

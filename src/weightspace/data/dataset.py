"""The PyTorch dataset over a data folder: grids from one memory-mapped stacked cache, points, labels, observations."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from weightspace.data.make import SPLITS, save_npy
from weightspace.data.voxels import saved_occupancy
from weightspace.runtime.errors import InputError
from weightspace.runtime.folders import folder_kind
from weightspace.runtime.io import file_digest, read_jsonl, read_npy, read_npz, safe_child
from weightspace.runtime.resume import PROGRESS
from weightspace.runtime.seeding import derive_seed

MANIFEST = "manifest.jsonl"
CACHE = ".cache"


def read_manifest(folder: str | Path) -> list[dict]:
    """Rows of `folder/manifest.jsonl`; a missing file or a malformed line raises InputError naming it."""
    path = Path(folder) / MANIFEST
    if not path.is_file() and (Path(folder) / PROGRESS).is_file():
        raise InputError(f"{path}: not found: the `weightspace data make` or `data import` into {folder} was stopped "
                         f"before it finished; run the same command again to finish it")
    if not path.is_file():
        raise InputError(f"{path}: not found; make a dataset with `weightspace data make` or `weightspace data import`")
    return [row for _, row in read_jsonl(path)]


def manifest_hash(folder: str | Path) -> str:
    """The data folder's identity as checkpoints and populations record it: the first 16 hex digits of
    the SHA-256 of its manifest.jsonl (a missing manifest raises InputError naming it)."""
    digest = file_digest(Path(folder) / MANIFEST)
    if digest is None:
        raise InputError(f"{Path(folder) / MANIFEST}: not found or unreadable")
    return digest


def read_shapes(folder: str | Path, *, split: str | None = None, require: tuple[str, ...] = ("id", "grid")) -> list[dict]:
    """The usable shapes of a data folder: its manifest rows whose `status` is "ok" (`data import`
    writes rows for the files it failed on or skipped, with no shape), each holding the fields
    `require`, in split `split` (None: every split). A row lacking a field, or no shape at all,
    raises InputError naming the manifest."""
    path = Path(folder) / MANIFEST
    rows, seen = [], set()
    for row in read_manifest(folder):
        if row.get("status", "ok") != "ok":
            continue
        missing = [k for k in require if k not in row]
        if missing:
            raise InputError(f"{path}: shape {row.get('id', '(no id)')!r} lacks field(s) {missing}")
        if "id" in row:  # an id names a shape's member, grid and decode: two shapes cannot share one
            if str(row["id"]) in seen:
                raise InputError(f"{path}: shape id {row['id']!r} appears twice; every shape needs its own id")
            seen.add(str(row["id"]))
        if split is None or row.get("split") == split:
            rows.append(row)
    if not rows:
        raise InputError(f"{path}: no shapes{f' in split {split!r}' if split is not None else ''}")
    return rows


def check_shape_folder(folder: str | Path, option: str = "--data", *, population_option: str | None = None) -> None:
    """Refuse, by name, a folder handed in as a shape dataset that is a population, a subspace or a
    set of observations (each has a manifest.jsonl or files a study would otherwise misread: read as
    shapes, it failed on a row lacking 'grid'). `option` names where the folder came in; `population_option`,
    the caller's own option that takes a population, if it has one (the message offers it)."""
    folder = Path(folder)
    kind = folder_kind(folder)
    if kind == "population":
        raise InputError(f"{option}: {folder} is a population folder (fitted members), not a shape dataset; "
                         f"give the data folder it was built from (its config.json names it as 'data')"
                         + (f", or pass the population with {population_option}" if population_option else ""))
    if kind == "subspace":
        raise InputError(f"{option}: {folder} is a subspace folder, not a shape dataset")
    if kind == "observations":
        raise InputError(f"{option}: {folder} is an observations folder (`weightspace data observe`), not a shape "
                         f"dataset; give the dataset it was made from (its config.json names it as source)")


def _where(folder: str | Path, row: dict) -> str:
    return f"{Path(folder) / MANIFEST} (shape {row.get('id')!r})"


def load_grid(folder: str | Path, row: dict) -> np.ndarray:
    """The grid of one manifest row: (R, R, R) float32."""
    path = safe_child(folder, row.get("grid"), where=_where(folder, row))
    grid = read_npy(path, what="grid")  # refuses pickles and headers that claim more than the file holds
    if grid.ndim != 3 or len(set(grid.shape)) != 1:
        raise InputError(f"{path}: expected a cubic grid (R, R, R), got shape {grid.shape}")
    _check_row_size(path, grid.shape, folder, row)
    if not np.issubdtype(grid.dtype, np.floating) and not np.issubdtype(grid.dtype, np.integer):
        raise InputError(f"{path}: expected a grid of real numbers (signed distances), got dtype {grid.dtype}")
    if not np.isfinite(grid).all():
        raise InputError(f"{path}: grid holds NaN or infinite values")
    if saved_occupancy(grid):
        raise InputError(f"{path}: grid holds only 0 and 1, an occupancy grid; a dataset's grids are signed distances "
                         f"(negative inside). Import the shapes with `weightspace data import` (meshes or .binvox grids)")
    return grid.astype(np.float32, copy=False)


def check_grid_sizes(folder: str | Path, rows: list[dict]) -> None:
    """Refuse, before any is used, a row whose grid file's shape (read from the .npy header alone) is not its
    `resolution`: `load_grid` refuses it too, but a command fitting one shape after another met it only at that
    shape, after fitting the ones before it."""
    for row in rows:
        if "resolution" not in row or not row.get("grid"):
            continue
        path = safe_child(folder, row.get("grid"), where=_where(folder, row))
        _check_row_size(path, read_npy(path, what="grid", mmap=True).shape, folder, row)  # the header: no data read


def _check_row_size(path: Path, shape: tuple[int, ...], folder: str | Path, row: dict) -> None:
    """A population or study reads the row's resolution and the grid as one: they must agree."""
    if "resolution" not in row:
        return
    R = row["resolution"]
    if isinstance(R, bool) or not isinstance(R, (int, float)) or tuple(shape) != (R, R, R):
        raise InputError(f"{path}: grid of shape {tuple(shape)}, but its row in {_where(folder, row)} says resolution {R!r}; "
                         f"make or import the shape again, or correct the row's resolution")


def load_points(folder: str | Path, row: dict) -> tuple[np.ndarray, np.ndarray]:
    """Surface points and normals of one manifest row: (P, 3) float32 each."""
    path = safe_child(folder, row.get("points"), where=_where(folder, row))
    arrays = read_npz(path, ("points", "normals"), what="surface points")
    points, normals = arrays["points"], arrays["normals"]
    if points.ndim != 2 or points.shape[1] != 3 or normals.shape != points.shape:
        raise InputError(f"{path}: expected points and normals of shape (P, 3), got {points.shape} and {normals.shape}")
    if not (np.isfinite(points).all() and np.isfinite(normals).all()):
        raise InputError(f"{path}: points or normals hold NaN or infinite values")
    return points.astype(np.float32, copy=False), normals.astype(np.float32, copy=False)


class ShapeDataset(Dataset):
    """Shapes of a data folder (`data make` or `data import`), optionally one split.

    `ds[i]` is a dict: grid (R, R, R) float32 tensor, points (P, 3), normals (P, 3) float32
    tensors, label int, family str, id str, and, when `observation` is given, `observation`
    (n, 3) float32 drawn by `data.observe.observe` with a seed derived from (seed, id).

    Grids (and points, when every shape has the same count) are stacked once into
    `folder/.cache/` (written atomically, named by a hash of the manifest rows so a changed
    manifest never reads a stale cache) and memory-mapped: an epoch reads each byte once.
    """

    def __init__(
        self,
        folder: str | Path,
        split: str | None = None,
        *,
        observation: str | None = None,
        obs_points: int = 2048,
        obs_sigma: float = 0.01,
        seed: int = 0,
    ):
        self.folder = Path(folder)
        if split is not None and split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)} (or None for all), got {split!r}")
        check_shape_folder(self.folder, "data")  # a population, subspace or observation set is named as such
        rows = read_shapes(self.folder, split=split)
        if observation is not None:
            from weightspace.data.observe import check_kind

            check_kind(observation)
        self.rows = rows
        self.split = split
        self.observation, self.obs_points, self.obs_sigma, self.seed = observation, obs_points, obs_sigma, seed
        self.labels = np.array([int(r.get("label", -1)) for r in rows], dtype=np.int64)  # (N,)
        key = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:12]
        self._key = f"{split or 'all'}-{key}"
        self._grids: np.ndarray | None = None
        self._points: tuple[np.ndarray, np.ndarray] | tuple[()] | None = None  # () = not stackable

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn get the dataset pickled: send the paths, not the
        # mapped arrays (pickling a memmap copies it whole); each worker maps the cache again.
        state = dict(self.__dict__)
        state["_grids"] = state["_points"] = None
        return state

    def __len__(self) -> int:
        return len(self.rows)

    def _cache(self, name: str, build) -> np.ndarray:
        path = self.folder / CACHE / f"{name}-{self._key}.npy"
        if not path.is_file():
            save_npy(path, build())
            split = self._key.rsplit("-", 1)[0]
            for stale in path.parent.glob(f"{name}-{split}-*.npy"):  # caches of an older manifest
                if stale != path:
                    stale.unlink(missing_ok=True)  # a reader that still maps it keeps its pages
        return read_npy(path, what="cache", mmap=True)

    @property
    def grids(self) -> np.ndarray:
        """All grids of this dataset: (N, R, R, R) float32, memory-mapped from the cache."""
        if self._grids is None:
            shapes = {int(r["resolution"]) for r in self.rows if "resolution" in r}
            if len(shapes) > 1:
                raise InputError(f"{self.folder}: grids of several resolutions {sorted(shapes)}; make one dataset per resolution")
            self._grids = self._cache("grids", lambda: np.stack([load_grid(self.folder, r) for r in self.rows]))
        return self._grids

    def _point_cache(self) -> tuple[np.ndarray, np.ndarray] | tuple[()]:
        if self._points is None:
            try:
                both = self._cache("points", lambda: np.stack([np.stack(load_points(self.folder, r)) for r in self.rows]))
                self._points = (both[:, 0], both[:, 1])  # (N, P, 3) each
            except ValueError:  # shapes with different point counts cannot be stacked
                self._points = ()
        return self._points

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        cached = self._point_cache()
        points, normals = (cached[0][i], cached[1][i]) if cached else load_points(self.folder, row)
        item = dict(
            grid=torch.from_numpy(np.array(self.grids[i])),  # (R, R, R) float32, copied out of the map
            points=torch.from_numpy(np.array(points)),  # (P, 3)
            normals=torch.from_numpy(np.array(normals)),  # (P, 3)
            label=int(self.labels[i]),
            family=str(row.get("family", "")),
            id=str(row["id"]),
        )
        if self.observation is not None:
            from weightspace.data.observe import observe

            obs = observe(
                np.asarray(points),
                np.asarray(normals),
                self.observation,
                n=self.obs_points,
                sigma=self.obs_sigma,
                seed=derive_seed(self.seed, "observe", row["id"]),
            )
            item["observation"] = torch.from_numpy(obs)  # (n, 3) float32
        return item

"""Observations of a shape for conditioning and fitting: clean, noisy, partial or subsampled point clouds, seeded."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import numpy as np

from weightspace.runtime.errors import InputError

ObservationKind = Literal["clean", "noisy", "partial", "subsampled"]
KINDS: tuple[str, ...] = get_args(ObservationKind)
PartialMode = Literal["cut", "view"]
PARTIAL_MODES: tuple[str, ...] = get_args(PartialMode)


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InputError(f"observation kind must be one of {', '.join(KINDS)}, got {kind!r}")


def _take(rng: np.random.Generator, points: np.ndarray, n: int, replace_if_short: bool = True) -> np.ndarray:
    """n rows of `points` drawn without replacement (with replacement only when there are fewer)."""
    replace = len(points) < n
    if replace and not replace_if_short:
        raise InputError(f"cannot subsample {n} points from a cloud of {len(points)}; ask for n <= {len(points)}")
    return points[rng.choice(len(points), size=n, replace=replace)]


def observe(
    points: np.ndarray,
    normals: np.ndarray | None,
    kind: ObservationKind,
    *,
    n: int = 2048,
    sigma: float = 0.0,
    seed: int = 0,
    partial_mode: PartialMode = "cut",
    keep: tuple[float, float] = (0.3, 0.7),
) -> np.ndarray:
    """One observation of a shape's surface samples.

    Parameters
    ----------
    points : (P, 3) float, surface samples (uniform by area, as `data make` writes them)
    normals : (P, 3) float, unit outward normals; needed only by partial_mode "view"
    kind : "clean"      n points drawn from the cloud (repeats only when P < n);
           "noisy"      clean plus isotropic Gaussian noise of standard deviation `sigma` (> 0);
           "partial"    the points on one side of a random plane ("cut": the plane is normal to
                        a uniform random direction and keeps a fraction in `keep` of the cloud), or
                        the points facing a random view direction ("view": normal . d > 0, a
                        one-sided view without occlusion), then resampled to n;
           "subsampled" a sparse subset of n distinct points (n <= P).
    sigma : noise standard deviation in world units (noisy only; added to any kind when > 0)
    seed : the observation's seed: the same inputs and seed give the same output

    Returns
    -------
    observation : (n, 3) float32
    """
    check_kind(kind)
    if partial_mode not in PARTIAL_MODES:
        raise InputError(f"partial_mode must be one of {', '.join(PARTIAL_MODES)}, got {partial_mode!r}")
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise InputError(f"points must be a non-empty (P, 3) array, got shape {pts.shape}")
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    if sigma < 0 or not np.isfinite(sigma):
        raise InputError(f"sigma must be a finite non-negative number, got {sigma}")
    if kind == "noisy" and sigma == 0:
        raise InputError("a noisy observation needs sigma > 0 (world units, e.g. 0.01)")
    if not 0 < keep[0] <= keep[1] <= 1:
        raise InputError(f"keep must be fractions 0 < lo <= hi <= 1, got {keep}")
    rng = np.random.default_rng(seed)

    if kind == "partial":
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)  # (3,) unit
        if partial_mode == "cut":
            s = pts @ direction  # (P,) height along the direction
            fraction = rng.uniform(*keep)
            pts = pts[s >= np.quantile(s, 1.0 - fraction)]
        else:
            if normals is None:
                raise InputError('partial_mode "view" needs the normals of the points')
            nrm = np.asarray(normals, dtype=np.float64)
            if nrm.shape != np.asarray(points).shape:
                raise InputError(f"normals must have the shape of points {np.shape(points)}, got {nrm.shape}")
            facing = nrm @ direction > 0
            if not facing.any():
                raise InputError("no point faces the view direction; the normals look degenerate")
            pts = pts[facing]

    obs = _take(rng, pts, n, replace_if_short=kind != "subsampled")  # (n, 3)
    if sigma > 0:
        obs = obs + rng.normal(scale=sigma, size=obs.shape)
    return obs.astype(np.float32)


def observe_folder(
    folder: str | Path,
    out: str | Path,
    *,
    kind: ObservationKind = "clean",
    n: int = 2048,
    sigma: float = 0.0,
    partial_mode: PartialMode = "cut",
    split: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """One observation per shape of a data folder, into `out/observations.npy` (N, n, 3) float32
    (an earlier observation set there is replaced only with `overwrite`).

    `out/manifest.jsonl` lists, row by row, the shape id, its family and label, and the seed of
    its observation, derive_seed(seed, "observe", id) (the seed `ShapeDataset` uses too).
    """
    out_dir = Path(out)
    from weightspace.runtime.folders import check_out_folder

    # config.json is written last: an observe killed before it is taken up again without --overwrite
    check_out_folder(out_dir, "observations", writes="observations.npy, manifest.jsonl and config.json",
                     overwrite=overwrite, finished="config.json")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "observations.npy").is_file():
        raise InputError(f"--out: {out_dir} holds files that are not an earlier observation set; observing there "
                         f"would replace its manifest.jsonl and config.json. Choose a new or empty folder")
    from weightspace.data.dataset import check_shape_folder, load_points, read_shapes
    from weightspace.data.make import save_npy, write_manifest
    from weightspace.runtime.io import atomic_write_json
    from weightspace.runtime.seeding import derive_seed

    check_kind(kind)
    if kind == "clean" and sigma > 0:  # the folder's config would call noisy points clean
        raise InputError(f"a clean observation has no noise, got sigma {sigma}; use kind noisy for noise on the whole cloud")
    from weightspace.data.make import SPLITS

    if split is not None and split not in SPLITS:
        raise InputError(f"--split must be one of {' | '.join(SPLITS)} (or left out for all), got {split!r}")
    check_shape_folder(folder, "folder")  # an observation set or a population is named as such
    rows = read_shapes(folder, split=split)
    obs, out_rows = [], []
    for r in rows:
        points, normals = load_points(folder, r)
        s = derive_seed(seed, "observe", r["id"])
        obs.append(observe(points, normals, kind, n=n, sigma=sigma, seed=s, partial_mode=partial_mode))
        out_rows.append(dict(id=r["id"], family=r.get("family"), label=r.get("label"), seed=s, index=len(out_rows)))
    out = Path(out)
    save_npy(out / "observations.npy", np.stack(obs))  # (N, n, 3) float32
    write_manifest(out / "manifest.jsonl", out_rows)
    from weightspace.data.dataset import manifest_hash

    # the source's manifest hash: a dataset remade under the same name (every `data make` names its shapes torus-00000,
    # ...) is not taken for the one observed
    # and where it was, resolved, for a reader running from another folder than this command did
    config = dict(source=str(folder), source_resolved=str(Path(folder).resolve()), source_hash=manifest_hash(folder), kind=kind,
                  n=n, sigma=sigma, partial_mode=partial_mode, split=split, seed=seed)
    atomic_write_json(out / "config.json", config)
    return dict(config, count=len(rows))

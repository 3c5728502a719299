"""SDF sample banks for auto-decoder training: fixed points per shape near the surface and in the box.

Values are exact where the shape has an analytic family (`FAMILIES[family].sdf`) and trilinear
reads of the shape's grid otherwise (imported meshes), as DeepSDF precomputes its SDF samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from weightspace.data.dataset import load_grid, read_shapes
from weightspace.data.families import FAMILIES, FAMILY_NAMES
from weightspace.data.grid import grid_coords
from weightspace.generators.neural_field.losses import sample_grid
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import safe_child
from weightspace.runtime.seeding import item_rng

REQUIRED = ("id", "split", "grid", "points")


def read_manifest(folder: str | Path, split: str | None = "train") -> list[dict[str, Any]]:
    """The shapes of `folder` in `split` (None: all) that a field trains on: `data.dataset.read_shapes`
    with the fields a sample bank needs."""
    return read_shapes(folder, split=split, require=REQUIRED)


def load_surface(folder: str | Path, row: dict[str, Any]) -> np.ndarray:
    """The row's surface samples (P, 3) float32."""
    path = safe_child(folder, row["points"])
    try:
        with np.load(path, allow_pickle=False) as z:
            pts = z["points"]
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: cannot read surface points ({e})") from None
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
        raise InputError(f"{path}: points must be (P, 3) with P >= 1, got {pts.shape}")
    return pts.astype(np.float32)


def family_label(row: dict[str, Any]) -> int:
    """Integer family label (index in FAMILY_NAMES), or -1 for a shape without a family."""
    return FAMILY_NAMES.index(row["family"]) if row.get("family") in FAMILIES else -1


def exact_sdf(row: dict[str, Any], points: np.ndarray) -> np.ndarray | None:
    """Analytic signed distance of the row's family shape at points (n, 3): (n,) float32, or None."""
    if row.get("family") not in FAMILIES or not isinstance(row.get("params"), dict):
        return None
    return FAMILIES[row["family"]].sdf(points, row["params"]).astype(np.float32)


@dataclass
class SampleBank:
    """Fixed SDF samples of N shapes: points (N, S, 3) float32 world units, sdf (N, S) float32."""

    points: torch.Tensor
    sdf: torch.Tensor
    labels: torch.Tensor  # (N,) int64, -1 for shapes without a family
    ids: list[str]
    exact: int  # how many shapes got analytic values (the rest: grid reads)


def bank_points(
    surface: np.ndarray,
    n: int,
    sigmas: Sequence[float],
    uniform_fraction: float,
    rng: np.random.Generator,
    *,
    band: np.ndarray | None = None,
    grid_fraction: float = 0.0,
) -> np.ndarray:
    """n points: a `uniform_fraction` share uniform in [-1, 1]^3, a `grid_fraction` share drawn from
    `band` (grid vertices near the surface, (m, 3)), the rest surface samples plus N(0, sigma^2) offsets."""
    n_uniform = int(round(n * uniform_fraction))
    n_grid = int(round(n * grid_fraction)) if band is not None and len(band) else 0
    per = np.array_split(np.arange(n - n_uniform - n_grid), len(sigmas))
    parts = [rng.uniform(-1, 1, size=(n_uniform, 3))]  # (n_u, 3)
    if n_grid:
        parts.append(band[rng.integers(0, len(band), size=n_grid)])  # (n_g, 3)
    for sigma, idx in zip(sigmas, per):
        base = surface[rng.integers(0, surface.shape[0], size=len(idx))]  # (n_s, 3)
        parts.append(base + rng.normal(scale=sigma, size=base.shape))
    return np.clip(np.concatenate(parts), -1.0, 1.0).astype(np.float32)  # (n, 3)


def build_bank(
    folder: str | Path,
    rows: list[dict[str, Any]],
    *,
    size: int,
    sigmas: Sequence[float],
    uniform_fraction: float,
    seed: int,
    grid_fraction: float = 0.0,
    band_width: float = 0.1,
) -> SampleBank:
    """Draw `size` samples per row (seeded per shape id) and evaluate their signed distance.

    A `grid_fraction` share of each bank is drawn from the vertices of the shape's own training
    grid where |sdf| < band_width: the grid is the training data, and its vertices near the
    surface are where a decoded grid's inside/outside must be right.
    """
    pts_all, sdf_all, exact = [], [], 0
    for row in rows:
        rng = item_rng(seed, "nf-bank", row["id"])
        grid = load_grid(folder, row)  # (R, R, R)
        band = None
        if grid_fraction > 0:
            c = grid_coords(grid.shape[0]).astype(np.float32)
            band = np.stack([c[i] for i in np.nonzero(np.abs(grid) < band_width)], axis=-1)  # (m, 3)
        pts = bank_points(load_surface(folder, row), size, sigmas, uniform_fraction, rng, band=band,
                          grid_fraction=grid_fraction)
        values = exact_sdf(row, pts)
        if values is None:
            values = sample_grid(torch.from_numpy(grid)[None], torch.from_numpy(pts)[None])[0].numpy()
        else:
            exact += 1
        pts_all.append(pts)
        sdf_all.append(values)
    return SampleBank(
        points=torch.from_numpy(np.stack(pts_all)),  # (N, S, 3)
        sdf=torch.from_numpy(np.stack(sdf_all)),  # (N, S)
        labels=torch.tensor([family_label(r) for r in rows], dtype=torch.long),
        ids=[str(r["id"]) for r in rows],
        exact=exact,
    )

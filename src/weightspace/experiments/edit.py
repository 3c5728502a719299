"""Editing shapes along an attribute's direction in a subspace (`weightspace subspace edit`), as weights2weights
edits identities, and measuring whether the edit does what it says.

The direction: each member of the subspace's population is labelled by an attribute of the shape it was fitted
to (a generation parameter of the data row, `params.NAME`; its robust Betti number b0, b1 or b2; its volume; or
`family:NAME`, 1 for that family and 0 for the others), and `subspace.fit_direction` fits the unit direction of
the subspace coordinates along which the label grows by least squares. How much of the label that direction
explains is reported in-sample and by leave-one-out (few members and many coordinates overfit).

The edit: from a start (the subspace mean, a member, or a point file), points at `amounts` x the members' spread
along the direction, decoded under one sampler seed and measured: robust Betti numbers, volume, components, and
the label the linear fit predicts there. Where the attribute is measurable on a shape (b0, b1, b2, volume), the
measured values along the path are set against the amounts (Spearman's rho): an edit whose measured attribute
does not follow is a direction the labels fit but the decoder does not express.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from weightspace.analysis.measure import measure
from weightspace.data.make import save_npy, write_manifest
from weightspace.decode.mesh import write_mesh
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_write_json
from weightspace.runtime.progress import log_line
from weightspace.runtime.seeding import decode_seed

EDIT_FILE = "edit.json"
FILES = {"grid": "grids", "point": "points", "mesh": "meshes"}  # a row's fields naming its files, and their folders
MEASURABLE = ("b0", "b1", "b2", "volume")  # attributes a decoded shape can be measured for


def member_labels(pop: Any, attribute: str) -> tuple[np.ndarray, str]:
    """(labels (N,) float64 of the population's members, in its row order; the data folder they came from)."""
    from weightspace.data.dataset import load_grid
    from weightspace.runtime.io import read_jsonl

    data = Path(str(pop.config.get("data", "")))
    by_id: dict[str, dict] = {}
    if (data / "manifest.jsonl").is_file():
        by_id = {str(r.get("id")): r for _, r in read_jsonl(data / "manifest.jsonl")}
    labels = []
    for row, shape_id in zip(pop.rows, pop.shape_ids()):
        source = row.get("source") or {}
        shape = by_id.get(shape_id)
        if row.get("imported"):  # `population import`: fine-tuned elsewhere, from no shape of ours
            raise InputError(f"--by {attribute}: member {row.get('id')!r} of {pop.folder} was imported (`population import`) "
                             "and has no shape to label it by; edit a subspace of members built from data "
                             "(`population build --data`)")
        if attribute.startswith("family:"):
            labels.append(float(source.get("family", (shape or {}).get("family")) == attribute.split(":", 1)[1]))
            continue
        if shape is None:
            raise InputError(f"--by {attribute}: member {row.get('id')!r}'s shape is not in {data / 'manifest.jsonl'} "
                             f"(the population's data folder, as its config.json names it); run from where it was built")
        if attribute.startswith("params."):
            value = (shape.get("params") or {}).get(attribute.split(".", 1)[1])
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                have = sorted(k for k, v in (shape.get("params") or {}).items() if isinstance(v, (int, float)))
                raise InputError(f"--by {attribute}: shape {shape.get('id')!r} has no number under that name; its numeric "
                                 f"params are {', '.join(have) or 'none'}")
            labels.append(float(value))
        elif attribute in MEASURABLE:
            labels.append(_attribute(load_grid(data, shape), attribute))
        else:
            raise InputError(f"--by must be params.NAME, family:NAME, or one of {', '.join(MEASURABLE)}; got {attribute!r}")
    return np.asarray(labels, dtype=np.float64), str(data)


def _attribute(grid: np.ndarray, attribute: str) -> float:
    """A measurable attribute (MEASURABLE) of a grid: its solid volume, as `measure` gives it, or a robust Betti number."""
    from weightspace.analysis.persistence import robust_betti
    from weightspace.analysis.topology import topology

    if attribute == "volume":
        return float(topology(grid).component_volumes.sum())
    return float(robust_betti(grid)[MEASURABLE.index(attribute)])


def _measured(shape: Any, attribute: str) -> float:
    """The attribute of a decoded shape `measure` has measured already (its volume, its robust Betti numbers)."""
    return float(shape.volume) if attribute == "volume" else float(shape.robust[MEASURABLE.index(attribute)])


def _in_subspace(sub: Any, x: torch.Tensor, frame: Any, what: str) -> torch.Tensor:
    """Coordinates (B, k) of points x (B, D) stored in `frame`: LoRA factor points are taken to delta form when the
    subspace is in delta form, as `fit_subspace` learned it; a frame of another layout is an error naming `what`."""
    from weightspace.space.lora import factors_to_delta
    from weightspace.space.subspace import converts_to_delta, delta_frame

    if converts_to_delta(frame.parameterisation, sub.frame.parameterisation.get("form")):
        x, frame = factors_to_delta(x, frame.layout), delta_frame(frame)
    sub.frame.layout.check_same(frame.layout, what=what)
    return sub.project(x.to(sub.mean.dtype))


def member_coords(sub: Any, pop: Any) -> torch.Tensor:
    """Coordinates (N, k) of the population's members in the subspace."""
    return _in_subspace(sub, pop.matrix(), pop.frame, "population vs subspace")


def _check_members(sub: Any, pop: Any, subspace: str | Path, log: Callable[[str], None]) -> None:
    """Warn when `pop` is not the population the subspace records it was fitted to (`Subspace.members`): its members
    are then projections into a subspace they did not shape, and the direction is fitted to those."""
    members = sub.members
    shapes = pop.shape_ids()
    if members is None or (shapes == members.get("shapes") and pop.config.get("data_hash") == members.get("data_hash")):
        return
    log(f"warning: --population {pop.folder} is not the population {subspace} was fitted to ({members.get('population')}: "
        f"{len(members.get('shapes', []))} shapes of data {members.get('data')}); the direction is fitted to the projections "
        f"of its {len(shapes)} members")


def _start_coords(sub: Any, path: str) -> torch.Tensor:
    """Coordinates (k,) float64 of the point file `path` (--start) in the subspace, taken as the members are
    (`_in_subspace`). A file of another frame is an error naming it."""
    from weightspace.space.store import load_point

    try:
        p = load_point(path)
        return _in_subspace(sub, p.point[None], p.frame, f"{path} vs the subspace")[0].double()
    except InputError as e:
        raise InputError(f"--start: {e}") from None


def fit_quality(coords: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """R^2 of the labels' least-squares fit on [coords, 1], in-sample and leave-one-out (None below k + 3 members)."""
    n, k = coords.shape
    a = np.hstack([coords, np.ones((n, 1))])  # (N, k + 1)
    total = float(((labels - labels.mean()) ** 2).sum())
    fit = a @ np.linalg.lstsq(a, labels, rcond=None)[0]
    out: dict[str, Any] = {"n": n, "r2": 1 - float(((labels - fit) ** 2).sum()) / total if total > 0 else None}
    if n >= k + 3 and total > 0:
        loo = np.empty(n)
        for i in range(n):
            keep = np.arange(n) != i
            loo[i] = a[i] @ np.linalg.lstsq(a[keep], labels[keep], rcond=None)[0]
        out["r2_leave_one_out"] = 1 - float(((labels - loo) ** 2).sum()) / total
    else:
        out["r2_leave_one_out"] = None
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho of two sequences (None when either is constant)."""
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def edit_subspace(subspace: str | Path, out: str | Path, *, attribute: str, population: str | Path | None = None,
                  start: str = "mean", amounts: Sequence[float] = (-2, -1, 0, 1, 2), seed: int = 0, resolution: int | None = None,
                  meshes: bool = True, overwrite: bool = False, generator: Any = None, log: Callable[[str], None] = log_line) -> dict[str, Any]:
    """Edit along the attribute's direction (module docstring); writes `out` and returns edit.json's content."""
    from weightspace.decode.points import decode_points
    from weightspace.report.gallery import render_gallery
    from weightspace.runtime.folders import check_out_folder, finish_replacing, listed_files, named_files, start_replacing
    from weightspace.space.store import Population, save_point
    from weightspace.space.subspace import Subspace, fit_direction

    amounts = [float(a) for a in amounts]
    if not amounts or not all(np.isfinite(amounts)):
        raise InputError(f"--amounts must be finite numbers, got {amounts}")
    out = Path(out)
    check_out_folder(out, "edit", writes="grids/, meshes/, points/, manifest.jsonl and edit.json", overwrite=overwrite,
                     finished=EDIT_FILE)
    sub = Subspace.load(subspace)
    if population is None:
        population = (sub.members or {}).get("population")
        if not population:
            raise InputError(f"{subspace}: records no population (a subspace fitted before they were recorded); pass --population")
        if not Path(population).is_dir():  # recorded as named where `subspace fit` ran
            raise InputError(f"{subspace}: the population it was fitted to, {population}, is not found from here (moved, or "
                             f"named relative to where `subspace fit` ran); pass --population")
    pop = Population(population)
    _check_members(sub, pop, subspace, log)
    labels, data = member_labels(pop, attribute)
    if len(set(labels.tolist())) < 2:
        present = sorted({str((r.get("source") or {}).get("family")) for r in pop.rows})
        families = f" (its members' families: {', '.join(present)})" if attribute.startswith("family:") else ""
        raise InputError(f"--by {attribute}: every member of {pop.folder} has the same value ({labels[0]:g}){families}; "
                         f"no direction to fit")
    coords = member_coords(sub, pop).double()  # (N, k)
    direction = fit_direction(coords, labels).double()  # (k,) unit
    along = (coords @ direction).numpy()  # (N,)
    spread = float(along.std(ddof=1)) if len(along) > 1 else 0.0
    if not spread > 0:
        raise InputError(f"--by {attribute}: the members do not spread along the fitted direction")
    quality = fit_quality(coords.numpy(), labels)
    a = np.hstack([coords.numpy(), np.ones((len(labels), 1))])
    weights = np.linalg.lstsq(a, labels, rcond=None)[0]  # (k + 1,): the label's linear model, for predictions

    ids = [str(r.get("id")) for r in pop.rows]
    if start == "mean":
        z0 = torch.zeros(sub.k, dtype=torch.float64)
    elif start in ids:
        z0 = coords[ids.index(start)]
    elif Path(start).is_file():
        z0 = _start_coords(sub, start)
    else:
        raise InputError(f"--start must be mean, a member id of {pop.folder} ({', '.join(ids[:4])}, ...) or a point file; got {start!r}")
    z = torch.stack([z0 + a_i * spread * direction for a_i in amounts])  # (A, k)
    # where each step lies along the direction against the members: past all of them, the edit extrapolates
    position = (z @ direction).numpy()  # (A,)
    beyond = [bool(v < along.min() or v > along.max()) for v in position]
    if any(beyond):
        log(f"note: --amounts {', '.join(f'{a:g}' for a, b in zip(amounts, beyond) if b)} lie beyond every member along the "
            f"direction (members span {(along.min() - along.mean()) / spread:+.2f} to {(along.max() - along.mean()) / spread:+.2f} "
            f"spreads about their mean): those shapes extrapolate the population")
    points = sub.reconstruct(z.float())  # (A, D)
    overflow = [a for a, finite in zip(amounts, torch.isfinite(points).all(dim=1).tolist()) if not finite]
    if overflow:  # a point file of inf that `decode` refuses, and a grid of nothing
        raise InputError(f"--amounts {', '.join(f'{a:g}' for a in overflow)}: the point that far along the direction overflows "
                         f"float32 weights (amounts are in the members' spread along it, {spread:.3g} in coordinates)")
    if generator is None:
        from weightspace.generators.registry import load_generator

        generator = load_generator(sub.frame.checkpoint)
    param = sub.frame.build(generator, what="subspace edit")
    sampler = decode_seed(seed, 0)
    grids = decode_points(generator, param, points, [sampler] * len(amounts), resolution=resolution).numpy()  # (A, R, R, R)

    out.mkdir(parents=True, exist_ok=True)
    names = [f"edit-{i:02d}" for i in range(len(amounts))]
    planned = [{"grid": f"grids/{n}.npy", "point": f"points/{n}.safetensors", "mesh": f"meshes/{n}.ply"} for n in names]
    # an earlier edit's files and this one's, on record until this one's manifest is written: those it does not name are
    # then removed. The earlier record goes first, so a folder killed part-way passes for no finished edit of mixed files
    recorded = start_replacing(out, listed_files(out / "manifest.jsonl", FILES) | named_files(planned, FILES), FILES)
    for done in (EDIT_FILE, "manifest.jsonl"):
        (out / done).unlink(missing_ok=True)
    (out / "points").mkdir(exist_ok=True)
    rows = []
    for i, (name, amount, grid) in enumerate(zip(names, amounts, grids)):
        shape = measure(grid, seed=seed)
        row = {"id": name, "amount": amount, "beyond_members": beyond[i], "robust": list(shape.robust), "volume": shape.volume,
               "components_above": shape.components_above, "empty": shape.points is None,
               "predicted": float(np.append(z[i].numpy(), 1.0) @ weights), "grid": f"grids/{name}.npy",
               "point": f"points/{name}.safetensors"}
        if attribute in MEASURABLE:
            row["measured"] = _measured(shape, attribute)
        save_npy(out / row["grid"], grid.astype(np.float32))
        save_point(out / row["point"], points[i].detach(), sub.frame)
        if meshes:
            row["mesh"] = f"meshes/{name}.ply"
            write_mesh(grid, out / row["mesh"])
        rows.append(row)
    write_manifest(out / "manifest.jsonl", rows)
    finish_replacing(out, recorded, rows, FILES)
    titles = [[f"{a:+g}: {tuple(r['robust'])} vol {r['volume']:.2f}" for a, r in zip(amounts, rows)]]
    render_gallery([list(grids)], out / "gallery.png", row_labels=[start], titles=titles,
                   title=f"edit along {attribute} (R^2 {_r2(quality['r2'])}, leave-one-out {_r2(quality['r2_leave_one_out'])}, "
                         f"n = {quality['n']}); amounts in the members' spread along it")
    result = {
        "subspace": str(subspace), "population": str(pop.folder), "data": data, "attribute": attribute, "start": start,
        "amounts": amounts, "spread": spread, "direction": [float(v) for v in direction], "fit": quality,
        "labels": {"min": float(labels.min()), "max": float(labels.max()), "mean": float(labels.mean())},
        "predicted": [r["predicted"] for r in rows], "seed": seed, "decode_seed": seed, "gallery": "gallery.png",
        "volume_vs_amount_spearman": spearman(amounts, [r["volume"] for r in rows]),
    }  # fmt: skip
    if attribute in MEASURABLE:
        result["measured"] = [r["measured"] for r in rows]
        result["measured_vs_amount_spearman"] = spearman(amounts, result["measured"])
    atomic_write_json(out / EDIT_FILE, result)
    return result


def _r2(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"

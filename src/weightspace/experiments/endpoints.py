"""Interpolation endpoints: a table of resolvers (family, data, population, points) to weight-space points, and their check."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from weightspace.analysis.measure import measure
from weightspace.analysis.persistence import robust_betti
from weightspace.data.dataset import load_grid
from weightspace.data.families import FAMILY_NAMES
from weightspace.decode.points import decode_points
from weightspace.experiments.common import (
    clean_surface,
    encode_points,
    generator_pose,
    left_out_reason,
    row_root,
    study_data,
    topology_check,
)
from weightspace.experiments.subspace_figures import fidelity_of_population
from weightspace.generators.protocol import Generator, HasFamilies, families_of, require
from weightspace.runtime.errors import InputError
from weightspace.runtime.seeding import derive_seed, item_rng
from weightspace.space.parameterisation import Parameterisation
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.store import Population, load_point

if TYPE_CHECKING:
    from weightspace.experiments.interpolate import InterpolateConfig


@dataclass
class Endpoints_:
    param: Parameterisation
    points: dict[str, torch.Tensor]  # id -> point (D,)
    families: dict[str, str]  # id -> family ("" when unknown)
    intended: dict[str, tuple[int, int, int] | None] = field(default_factory=dict)  # id -> the topology it stands for


def _declared(family: str) -> tuple[int, int, int] | None:
    """A procedural family's declared (b0, b1, b2); None for a family name this project does not define."""
    from weightspace.data.families import FAMILIES

    return tuple(FAMILIES[family].betti) if family in FAMILIES else None


def check_endpoints(gen: Generator, ends: Endpoints_, *, seed: int,
                    volume_threshold: float) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Decode every endpoint once (under the paths' seed) and compare its robust Betti numbers with the
    topology it stands for (a family's declaration, an encoded shape's own grid, a member's target).

    Returns one row per endpoint (id, family, decoded, intended (None: nothing to check against), ok)
    and the decoded grids by id, which the paths reuse as their t = 0 and t = 1 decodes."""
    ids = list(ends.points)
    grids = decode_points(gen, ends.param, torch.stack([ends.points[i] for i in ids]), [seed] * len(ids)).numpy()
    rows = topology_check(ids, [measure(g, seed=seed, volume_threshold=volume_threshold).robust for g in grids],
                          [ends.intended.get(i) for i in ids])
    return [{**r, "family": ends.families.get(r["id"], "")} for r in rows], dict(zip(ids, grids))


def _population_ends(gen: Generator, cfg: InterpolateConfig, folder: Path, ids: list[str] | None) -> Endpoints_:
    """Members of `cfg.population`, each standing for the target its build's fidelity check recorded."""
    pop = Population(cfg.population)
    param = pop.frame.build(gen, what=f"population {pop.folder.name}")
    index = {str(r["id"]): i for i, r in enumerate(pop.rows)}
    want = ids if ids is not None else (list(index) if cfg.pairs else [cfg.a, cfg.b])
    missing = [i for i in want if i not in index]
    if missing:
        if not index:
            raise InputError(f"population {pop.folder}: no finished members (manifest.jsonl missing or empty)")
        raise InputError(f"population {pop.folder}: no member with id {missing[0]!r}; ids: {', '.join(list(index)[:20])}")
    rows = {i: pop.rows[index[i]] for i in want}
    targets = {i: r.get("metrics", {}).get("target_robust_betti") for i, r in rows.items()}
    return Endpoints_(param, {i: pop.point(index[i]) for i in want},
                      {i: str(r.get("source", {}).get("family", "")) for i, r in rows.items()},
                      {i: tuple(t) if t is not None else None for i, t in targets.items()})


def _point_file_ends(gen: Generator, cfg: InterpolateConfig, folder: Path, ids: list[str] | None) -> Endpoints_:
    """Two point files `cfg.a`, `cfg.b` of one frame (nothing recorded to check them against)."""
    files = [load_point(p) for p in (cfg.a, cfg.b)]
    a, b = files[0].frame, files[1].frame
    param = a.build(gen, what=f"point file {cfg.a} (checkpoint {cfg.checkpoint})")
    b.layout.check_same(a.layout, what=f"point file {cfg.b} vs {cfg.a}")
    if not torch.equal(a.anchor, b.anchor):
        raise InputError(f"point files {cfg.a} and {cfg.b} decode under different anchor conditions; "
                         "a path between them needs points of one frame (e.g. members of one population)")
    return Endpoints_(param, {"a": files[0].point, "b": files[1].point}, {"a": "", "b": ""})


def _family_ends(gen: Generator, cfg: InterpolateConfig, folder: Path, ids: list[str] | None) -> Endpoints_:
    """Seeded family conditions: `cfg.a` and `cfg.b`, or for pairs `shapes_per_family` draws per family,
    each standing for its family's declared topology."""
    require(gen, HasFamilies, "endpoints=family (use --endpoints data with --data otherwise)")
    known = families_of(gen)
    if cfg.pairs:
        if not known:
            raise InputError("endpoints=family: this generator knows no family names; use --endpoints data with --data")
        names = [f"{f}#{i}" for f in known for i in range(cfg.shapes_per_family)]
    else:
        bad = [f for f in (cfg.a, cfg.b) if f not in known]
        if bad:
            raise InputError(f"a/b: unknown family {bad[0]!r}; this generator knows {known}")
        names = [cfg.a, cfg.b]
    family = {n: n.split("#")[0] for n in names}
    seeds = [derive_seed(cfg.seed, "family", n) % 2**31 for n in names]
    with torch.no_grad():
        c = gen.condition(family=[family[n] for n in names], seeds=seeds).cpu()  # (N, *condition_shape)
    if cfg.pairs and cfg.shapes_per_family > 1 and torch.equal(c[0], c[1]):
        # deterministic family conditions (latent diffusion's family tokens): within-family pairs need shapes
        return _data_ends(gen, cfg, folder, ids)
    if cfg.data is not None:  # else the pairs ran between seeded draws and the folder was silently unused
        raise InputError(f"data (--data) is not read by these pairs: they run between {gen.kind}'s seeded family conditions "
                         "(shapes are encoded only where a family's draws are all one condition, as latent diffusion's "
                         "tokens); drop --data, or use --endpoints data to encode its shapes")
    return Endpoints_(make_parameterisation(gen, "condition"), {n: c[i].reshape(-1) for i, n in enumerate(names)}, family,
                      {n: _declared(family[n]) for n in names})


def _data_ends(gen: Generator, cfg: InterpolateConfig, folder: Path, ids: list[str] | None) -> Endpoints_:
    """Encoded clean surface samples of shapes in `cfg.data` (without it, procedural shapes of the
    generator's families), each standing for its own grid's robust topology."""
    families = families_of(gen) if cfg.pairs or cfg.data is None else []
    if cfg.data is None and not families and not cfg.pairs:
        # a generator without families (a WaLa point-cloud model): make the procedural families that
        # the endpoints' ids name (family-00000), so `--a dumbbell-00000 --b pair-00000` needs no --data
        families = sorted({i.rsplit("-", 1)[0] for i in (cfg.a, cfg.b)} & set(FAMILY_NAMES))
    root, rows = study_data(folder / "data", data=cfg.data, families=families, count=cfg.shapes_per_family,
                            seed=cfg.data_seed, resolution=gen.resolution, pose=generator_pose(gen))
    by_id = {str(r["id"]): r for r in rows}
    want = ids if ids is not None else (list(by_id) if cfg.pairs else [cfg.a, cfg.b])
    missing = [i for i in want if i not in by_id]
    if missing:
        why = left_out_reason(root, missing[0])
        if why:
            raise InputError(f"a/b: shape {missing[0]!r} of {root} is not usable: it was {why}")
        raise InputError(f"a/b: no shape with id {missing[0]!r} in the data; ids: {', '.join(list(by_id)[:20])}")
    clouds = []
    for i in want:
        pts, _ = clean_surface(root, by_id[i])
        take = item_rng(cfg.seed, "observe", i).choice(len(pts), size=min(cfg.observations, len(pts)), replace=False)
        clouds.append(pts[take])
    conds = encode_points(gen, clouds, seed=cfg.seed)
    intended = {i: tuple(int(v) for v in robust_betti(load_grid(row_root(root, by_id[i]), by_id[i]))) for i in want}
    return Endpoints_(make_parameterisation(gen, "condition"), {i: conds[j].reshape(-1) for j, i in enumerate(want)},
                      {i: str(by_id[i].get("family", "")) for i in want}, intended)


Resolver = Callable[[Generator, "InterpolateConfig", Path, "list[str] | None"], Endpoints_]
RESOLVERS: dict[str, Resolver] = {"family": _family_ends, "data": _data_ends, "population": _population_ends,
                                  "points": _point_file_ends}


def resolve_endpoints(gen: Generator, cfg: InterpolateConfig, folder: Path, ids: list[str] | None = None) -> Endpoints_:
    """The points named by the config (`ids` overrides a/b; for pairs, None with data means all shapes)."""
    return RESOLVERS[cfg.endpoints](gen, cfg, folder, ids)


NOT_MEMBERS = {"family": "seeded family conditions", "data": "encoded shapes", "points": "point files"}


def endpoint_fidelity(cfg: InterpolateConfig, ids: list[str]) -> dict[str, Any]:
    """results.json `member_fidelity` of the endpoints `ids`: the population build's record of those members
    (mean decode IoU, robust Betti match with its Wilson 95% interval), or nulls with the reason when the
    endpoints are not fitted members (their decode check is `endpoint_check`)."""
    if cfg.endpoints == "population":
        return fidelity_of_population(Population(cfg.population), ids)
    return {"mean_iou": None, "betti_match": None,
            "reason": f"no population members: the endpoints are {NOT_MEMBERS[cfg.endpoints]} (their decode check is endpoint_check)"}

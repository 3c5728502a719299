"""Evaluation of a latent diffusion generator on any data folder: autoencoder fidelity, point-cloud
conditioned reconstruction, family-conditioned topology, and set metrics against the held-out set.

Held out are the test split (else val) of the checkpoint's own training folder, recognised by the
hash of its training rows that the checkpoint records (`data.manifest_hash`), and every shape of
any other folder (an imported one included: rows an import failed on or skipped are left out).
Shapes of a family the checkpoint does not know (`gen.families`: where its config records its training
data's families, those only), or of one without a declared topology (`imported`, which a checkpoint
trained on imported meshes knows), are measured for the autoencoder and from points,
and left out of the family figures (family_betti_match, MMD, COV, 1-NNA, seconds_per_shape);
`family_unknown_shapes` counts them and `family_figures_note` says so. So the family figures are those of
`evaluate families` (`family_samples`), which refuses a family without a declared topology: a sample of
the `imported` label has no topology to match (it used to be scored against the held-out shape's own). A figure with nothing to
measure is None (null), never 0, and `<figure>_not_measured` says why. Every rate (the Betti
matches) comes with `<rate>_n` and its Wilson 95% interval `<rate>_low`, `<rate>_high`; MMD, COV
and 1-NNA of fewer than 8 shapes a side come with `set_metrics_caveat`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from weightspace.runtime.errors import InputError
from weightspace.runtime.executors import Executor, worker_cached
from weightspace.runtime.seeding import derive_seed

FIGURE_KEYS = ("ae_iou", "ae_betti_match", "points_iou", "points_betti_match", "family_betti_match", "mmd", "cov", "nna", "seconds_per_shape")
FAMILY_KEYS = FIGURE_KEYS[4:]  # measured on the shapes of families the checkpoint knows
SET_POINTS = 1024  # surface points per shape for MMD / COV / 1-NNA
BATCH = 16


def trained_hash(gen) -> str | None:
    """The hash of the training rows the checkpoint records (`train.rows_hash`), if any."""
    data = gen.config.get("data") if isinstance(getattr(gen, "config", None), dict) else None
    return str(data["manifest_hash"]) if isinstance(data, dict) and data.get("manifest_hash") else None


def is_training_folder(data_dir: str | Path, training_hash: str | None) -> bool:
    """Whether `data_dir`'s training rows hash to `training_hash` (the checkpoint's own data)."""
    from weightspace.data.dataset import ShapeDataset
    from weightspace.generators.latent_diffusion.train import rows_hash

    if training_hash is None:
        return False
    try:
        return rows_hash(ShapeDataset(data_dir, split="train").rows) == training_hash
    except InputError:  # no training rows: not a folder anything was trained on
        return False


def held_out_rows(data_dir: str | Path, max_shapes: int, *, own: bool = True):
    """The held-out shapes, at most `max_shapes`, spread evenly: the `test` split (else `val`) of the
    checkpoint's own training folder (`own`), every shape of any other folder. Returns (dataset, indices)."""
    from weightspace.data.dataset import ShapeDataset, read_manifest

    if not own:
        ds = ShapeDataset(data_dir)  # a missing or broken folder says so itself
    else:
        read_manifest(data_dir)  # a missing or broken folder says so itself, before its splits are tried
        for split in ("test", "val"):
            try:
                ds = ShapeDataset(data_dir, split=split)
                break
            except InputError:
                continue
        else:
            raise InputError(f"{data_dir}: the checkpoint's training folder holds no test or val shapes to evaluate on")
    n = len(ds)
    keep = np.unique(np.linspace(0, n - 1, min(n, max_shapes)).round().astype(int)) if max_shapes < n else np.arange(n)
    return ds, [int(i) for i in keep]


def surface_cloud(grid: np.ndarray, seed: int) -> np.ndarray:
    """SET_POINTS surface points of a grid's zero level set (an empty surface gives the origin repeated)."""
    from weightspace.analysis.geometry import sample_surface
    from weightspace.decode.mesh import grid_to_mesh

    mesh = grid_to_mesh(grid)
    if len(mesh.faces) == 0 or not mesh.area > 0:
        return np.zeros((SET_POINTS, 3))  # a generator that makes nothing is penalised, not skipped
    return sample_surface(mesh, SET_POINTS, seed=seed)[0]


@torch.no_grad()
def _decode(gen, mode: str, inputs: list, seeds: list[int]) -> list[np.ndarray]:
    """Grids (R, R, R) of one batch: `ae` reconstructs grids (R, R, R), `points` generates from clouds
    (n, 3), `family` from family names; one seed per item."""
    if mode == "ae":
        g = torch.from_numpy(np.stack(inputs)).to(gen.device)  # (b, R, R, R)
        return list(gen.decode_latents(gen.encode_grids(g)).cpu().numpy())
    cond = gen.condition(points=torch.from_numpy(np.stack(inputs)).to(gen.device)) if mode == "points" else gen.condition(family=inputs)
    return list(gen.sdf_grid(cond, seeds).cpu().numpy())


@dataclass
class DecodeJob:
    """One batch of evaluation decodes for an executor worker (`_decode`'s arguments and the
    generator's loader, shared once per worker; see Executor.share)."""

    loader: Callable[[], Any]
    mode: str
    inputs: list
    seeds: list[int]


def run_job(job: DecodeJob) -> list[np.ndarray]:
    def load() -> Any:
        torch.set_num_threads(1)
        return job.loader()

    return _decode(worker_cached(repr(("evaluate", job.loader)), load), job.mode, job.inputs, job.seeds)


def _decodes(gen, executor: Executor | None, loader: Any, mode: str, inputs: list, seeds: list[int]) -> list[np.ndarray]:
    """`_decode` over batches of BATCH items: here, or as tasks of `executor` (results in order)."""
    chunks = [(inputs[i : i + BATCH], seeds[i : i + BATCH]) for i in range(0, len(inputs), BATCH)]
    if executor is None:
        return [g for x, s in chunks for g in _decode(gen, mode, x, s)]
    return [g for out in executor.map(run_job, [DecodeJob(loader, mode, x, s) for x, s in chunks]) for g in out]


@torch.no_grad()
def evaluate_details(gen, data_dir: str | Path, *, max_shapes: int = 64, seed: int = 0, training_hash: str | None = None,
                     executor: Executor | None = None, loader: Callable[[], Any] | None = None) -> dict:
    """All figures plus per-shape details: {"figures": {...}, "per_shape": [...], "per_family": {...}}.

    `training_hash`: the hash of the checkpoint's training rows (default: the one its config
    records, see `trained_hash`); it decides which shapes are held out (module docstring).
    `executor`: where the decodes run, in batches of BATCH (a process pool, Ray), each worker loading
    the generator once through `loader` (default: `gen` itself, shipped to the workers); every item
    keeps its own seed, so the figures are those computed here. seconds_per_shape is then the wall
    time per family sample of the parallel run.
    """
    from weightspace.analysis import topology
    from weightspace.analysis.geometry import iou
    from weightspace.analysis.rates import rate_fields
    from weightspace.analysis.sets import set_caveat, set_metrics
    from weightspace.data.families import FAMILIES
    from weightspace.data.observe import observe

    if max_shapes < 1:
        raise InputError(f"max_shapes must be >= 1, got {max_shapes}")
    own = is_training_folder(data_dir, training_hash or trained_hash(gen))
    ds, idx = held_out_rows(data_dir, max_shapes, own=own)
    R = gen.cfg.resolution
    sizes = sorted({int(r["resolution"]) for r in ds.rows if "resolution" in r})
    if sizes and sizes != [R]:
        raise InputError(f"{data_dir}: grids are {'/'.join(map(str, sizes))}^3 but the checkpoint decodes {R}^3; "
                         f"make or import the folder with --resolution {R}")
    items = [ds[i] for i in idx]
    targets = [it["grid"].numpy() for it in items]  # each (R, R, R)
    target_betti = [topology(g).betti for g in targets]
    ids = [it["id"] for it in items]
    fams = [it["family"] for it in items]
    seeds = [derive_seed(seed, "eval", i) % (2**31) for i in ids]

    if executor is not None:
        from weightspace.generators.registry import generator_loader

        loader = executor.share(generator_loader(loader if loader is not None else gen))

    # 1. autoencoder: encode and decode the true grids.
    ae_grids = _decodes(gen, executor, loader, "ae", targets, seeds)

    # 2. point-cloud conditioned generation from 2,048 noisy surface points (sigma = 0.01).
    clouds = [observe(it["points"].numpy(), it["normals"].numpy(), "noisy", n=2048, sigma=0.01,
                      seed=derive_seed(seed, "eval-points", it["id"])).astype(np.float32) for it in items]  # each (2048, 3)
    pt_grids = _decodes(gen, executor, loader, "points", clouds, seeds)

    # 3. family-conditioned samples, one per held-out shape of a family the checkpoint knows and FAMILIES declares (timed).
    order = [k for k, f in enumerate(fams) if f in gen.families and f in FAMILIES]
    t0 = time.perf_counter()
    fam_grids = dict(zip(order, _decodes(gen, executor, loader, "family", [fams[k] for k in order], [seeds[k] for k in order])))
    seconds_per_shape = (time.perf_counter() - t0) / max(len(order), 1)

    per_shape = []
    for k, (target, tb) in enumerate(zip(targets, target_betti)):
        ae_b, pt_b = topology(ae_grids[k]).betti, topology(pt_grids[k]).betti
        row = dict(id=ids[k], family=fams[k], target_betti=list(tb), ae_iou=iou(ae_grids[k], target), ae_betti=list(ae_b),
                   points_iou=iou(pt_grids[k], target), points_betti=list(pt_b))
        if k in fam_grids:
            declared = tuple(FAMILIES[fams[k]].betti)
            fam_b = topology(fam_grids[k]).betti
            row.update(family_betti=list(fam_b), family_declared=list(declared), family_match=tuple(fam_b[:2]) == tuple(declared[:2]))
        per_shape.append(row)

    declared_known = [f for f in gen.families if f in FAMILIES]
    no_family = (f"no held-out shape is of a family the checkpoint knows with a declared topology "
                 f"({', '.join(declared_known) or 'none'})")
    rates = [rate_fields("ae_betti_match", [r["ae_betti"] == r["target_betti"] for r in per_shape], why_unmeasured="no held-out shapes"),
             rate_fields("points_betti_match", [r["points_betti"] == r["target_betti"] for r in per_shape], why_unmeasured="no held-out shapes"),
             rate_fields("family_betti_match", [per_shape[k]["family_match"] for k in order], why_unmeasured=no_family)]
    sets: dict = {}
    if order:
        gen_clouds = [surface_cloud(fam_grids[k], derive_seed(seed, "set-gen", k)) for k in order]
        ref_clouds = [surface_cloud(targets[k], derive_seed(seed, "set-ref", k)) for k in order]
        sets = {k: float(v) for k, v in set_metrics(gen_clouds, ref_clouds).items() if k in ("mmd", "cov", "nna")}
    figures = dict(  # FIGURE_KEYS first, in order
        ae_iou=float(np.mean([r["ae_iou"] for r in per_shape])), ae_betti_match=rates[0].pop("ae_betti_match"),
        points_iou=float(np.mean([r["points_iou"] for r in per_shape])), points_betti_match=rates[1].pop("points_betti_match"),
        family_betti_match=rates[2].pop("family_betti_match"), mmd=sets.get("mmd"), cov=sets.get("cov"), nna=sets.get("nna"),
        seconds_per_shape=float(seconds_per_shape) if order else None,
    )
    unknown = len(items) - len(order)
    figures["held_out_shapes"] = len(items)
    figures["held_out_from"] = f"the training folder's {ds.split} split" if own else "every shape (not the checkpoint's training folder)"
    for fields in rates:
        figures.update(fields)
    figures["set_metrics_n"] = len(order)  # generated and reference shapes alike: one sample per held-out shape
    if not order:
        figures.update({f"{k}_not_measured": no_family for k in ("mmd", "cov", "nna", "seconds_per_shape")})
    elif set_caveat(len(order), len(order)):
        figures["set_metrics_caveat"] = set_caveat(len(order), len(order))
    if unknown:
        figures["family_unknown_shapes"] = unknown
        names = sorted({fams[k] for k in range(len(items)) if k not in fam_grids})
        why = [f"{f}: no declared topology" if f in gen.families else f"{f}: not a family the checkpoint knows" for f in names]
        figures["family_figures_note"] = (f"{unknown} of {len(items)} shapes are of families it cannot sample against a "
                                          f"declared topology ({'; '.join(why)}): measured for ae/points, left out of "
                                          f"{', '.join(FAMILY_KEYS)}")
    per_family = {}
    for f in sorted(set(fams)):
        rows = [r for r in per_shape if r["family"] == f]
        per_family[f] = dict(
            n=len(rows), ae_iou=float(np.mean([r["ae_iou"] for r in rows])),
            points_iou=float(np.mean([r["points_iou"] for r in rows])),
            points_betti_match=float(np.mean([r["points_betti"] == r["target_betti"] for r in rows])),
        )
        if "family_match" in rows[0]:
            per_family[f]["family_betti_match"] = float(np.mean([r["family_match"] for r in rows]))
    return {"figures": figures, "per_family": per_family, "per_shape": per_shape, "n_shapes": len(items)}


def evaluate_generator(gen, data_dir: str | Path, *, max_shapes: int = 64, seed: int = 0, training_hash: str | None = None,
                       executor: Executor | None = None, loader: Callable[[], Any] | None = None) -> dict:
    """The figures of issue 4 (fractions in [0, 1]): the keys FIGURE_KEYS first (those of FAMILY_KEYS
    None where no held-out shape is of a family the checkpoint knows, each with `<key>_not_measured`),
    then `held_out_shapes`, `held_out_from` (which shapes: the training folder's split, or every
    shape), `<rate>_n`, `<rate>_low`, `<rate>_high` (Wilson 95%) of each Betti match, `set_metrics_n`
    (shapes a side of MMD, COV, 1-NNA), `set_metrics_caveat` when that is under 8 and, where shapes
    of unknown or undeclared families (`imported`) were left out of the family figures,
    `family_unknown_shapes` and `family_figures_note`.

    Held-out shapes: see the module docstring (at most `max_shapes`, spread evenly); `seed` fixes
    every observation and every sample; `executor` and `loader`: see `evaluate_details`.
    """
    return evaluate_details(gen, data_dir, max_shapes=max_shapes, seed=seed, training_hash=training_hash, executor=executor,
                            loader=loader)["figures"]


@torch.no_grad()
def family_samples(gen, *, families=None, per_family: int = 8, seed: int = 0, guidance: float | None = None,
                   steps: int | None = None) -> dict:
    """Sample `per_family` shapes of each family and check each against its family's declared topology.

    Any generator with families (`HasFamilies`: latent diffusion, the neural field) can be sampled;
    `guidance` and `steps` set a latent diffusion sampler and are refused for other kinds.

    A sample matches when its robust (b0, b1) (`analysis.persistence.robust_betti`: parts and holes
    that survive a quarter-voxel change of the iso level) equals the family's. Returns
    {"rate": {rate, n, successes, low, high} (Wilson 95%), "per_family": {family: rate dict},
    "samples": [{family, seed, betti, robust, match}], "grids": {family: [(R, R, R)]}, "seconds_per_shape"}.
    Item k of family F uses seed derive_seed(seed, "family-sample", F, k), so a family's samples do
    not depend on which other families are asked for.
    """
    from weightspace.analysis import topology
    from weightspace.analysis.persistence import robust_betti
    from weightspace.analysis.rates import rate
    from weightspace.data.families import FAMILIES
    from weightspace.generators.protocol import families_of

    known = families_of(gen)
    if not known:
        raise InputError(f"this {gen.kind} generator has no families to sample")
    sampler = {k: v for k, v in (("guidance", guidance), ("steps", steps)) if v is not None}
    if sampler and gen.kind != "latent-diffusion":
        raise InputError(f"guidance and steps set a latent diffusion sampler; this is a {gen.kind} generator")
    families = [f for f in known if f in FAMILIES] if families is None else list(families)
    if not families:
        raise InputError(f"this {gen.kind} generator's families ({', '.join(known)}) have no declared topology to check samples against")
    unknown = [f for f in families if f not in known]
    if unknown:
        raise InputError(f"families {unknown} are unknown to this checkpoint; it knows {known}")
    undeclared = [f for f in families if f not in FAMILIES]
    if undeclared:
        raise InputError(f"families {undeclared} have no declared topology to check samples against")
    if per_family < 1:
        raise InputError(f"per_family must be >= 1, got {per_family}")
    samples, grids, t_sample = [], {}, 0.0
    for fam in families:
        seeds = [derive_seed(seed, "family-sample", fam, k) % (2**31) for k in range(per_family)]
        t0 = time.perf_counter()
        cond = gen.condition(family=[fam] * per_family, seeds=seeds)  # a field draws each code from its seed
        out = gen.sdf_grid(cond, seeds, **sampler).cpu().numpy()
        t_sample += time.perf_counter() - t0
        grids[fam] = list(out)
        declared = tuple(FAMILIES[fam].betti[:2])
        for s, g in zip(seeds, out):
            robust = tuple(int(v) for v in robust_betti(g))
            samples.append(dict(family=fam, seed=s, betti=list(topology(g).betti), robust=list(robust),
                                match=robust[:2] == declared))
    per_family_rates = {f: rate(r["match"] for r in samples if r["family"] == f) for f in families}
    return {"rate": rate(r["match"] for r in samples), "per_family": per_family_rates, "samples": samples,
            "grids": grids, "seconds_per_shape": t_sample / max(len(samples), 1)}

"""Evaluation of a neural-field checkpoint on any data folder: training fit, reconstruction from noisy points, family sampling.

Figures (all fractions in [0, 1]):
    train_iou           mean IoU of the decoded training codes against their training grids; only
                        on the checkpoint's own training folder, recognised by its manifest hash
                        (otherwise `train_iou_skipped` says why)
    points_iou          mean IoU of held-out shapes reconstructed by code optimisation from 2,048
                        noisy surface points (sigma = 0.01); held out are the test split (else val)
                        of the training folder, and every shape of any other folder
    points_betti_match  share of those reconstructions whose (b0, b1, b2) equal the ground truth grid's
    family_betti_match  share of codes sampled from each family's Gaussian whose decoded grid has
                        the family's declared (b0, b1), as for the latent diffusion model; None
                        (null) when the checkpoint has no family with a declared topology, and
                        `family_betti_match_not_measured` says why
    seconds_per_shape   wall seconds per held-out shape of reconstruction plus decoding
    held_out_shapes     how many held-out shapes were measured; `held_out_from` says which
Each Betti match also gives `<rate>_n` (items) and its Wilson 95% interval `<rate>_low`, `<rate>_high`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from weightspace.analysis import topology
from weightspace.analysis.geometry import iou
from weightspace.analysis.rates import rate_fields
from weightspace.data.dataset import load_grid, manifest_hash
from weightspace.data.families import FAMILIES
from weightspace.data.observe import observe
from weightspace.generators.neural_field.model import NeuralFieldGenerator
from weightspace.generators.neural_field.samples import read_manifest
from weightspace.runtime.errors import InputError
from weightspace.runtime.executors import Executor, worker_cached
from weightspace.runtime.io import safe_child
from weightspace.runtime.seeding import derive_seed, item_rng

N_POINTS = 2048
SIGMA = 0.01


def _pick(n: int, k: int, seed: int, key: str) -> list[int]:
    """k of n indices, seeded, in increasing order (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return sorted(item_rng(seed, key).choice(n, size=k, replace=False).tolist())


def _observation(folder: Path, row: dict[str, Any], seed: int) -> np.ndarray:
    path = safe_child(folder, row["points"])
    with np.load(path, allow_pickle=False) as z:
        pts, normals = z["points"], z["normals"] if "normals" in z else None
    return observe(pts, normals, "noisy", n=N_POINTS, sigma=SIGMA, seed=derive_seed(seed, "nf-eval", row["id"]))


def _truth_betti(folder: Path, row: dict[str, Any], grid: np.ndarray) -> tuple[int, int, int]:
    measured = row.get("betti_measured")
    return tuple(measured) if measured is not None else topology(grid).betti


def _reconstruct(gen: NeuralFieldGenerator, mode: str, inputs: Any, seeds: list[int], resolution: int) -> tuple[np.ndarray, float]:
    """Grids (b, R, R, R) of one batch and the seconds they took: held-out shapes from noisy points
    (`inputs` (b, P, 3): code optimisation, then decode) or samples of one family (`inputs` its name)."""
    t0 = time.perf_counter()
    if mode == "points":
        z = gen.condition(points=torch.from_numpy(inputs), seeds=seeds)
        with torch.no_grad():
            grids = gen.sdf_grid(z, seeds, resolution=resolution).cpu().numpy()
    else:
        with torch.no_grad():
            z = gen.condition(family=[inputs] * len(seeds), seeds=seeds)
            grids = gen.sdf_grid(z, seeds, resolution=resolution).cpu().numpy()
    return grids, time.perf_counter() - t0


@dataclass
class ReconstructJob:
    """One batch of `_reconstruct` for an executor worker, with the generator's loader (shared once per
    worker, see Executor.share): the code optimisations are the slow part of an evaluation."""

    loader: Callable[[], Any]
    mode: str
    inputs: Any
    seeds: list[int]
    resolution: int


def run_job(job: ReconstructJob) -> tuple[np.ndarray, float]:
    def load() -> Any:
        torch.set_num_threads(1)
        gen = job.loader()
        gen.net.eval()
        return gen

    return _reconstruct(worker_cached(repr(("nf-evaluate", job.loader)), load), job.mode, job.inputs, job.seeds, job.resolution)


def trained_hash(gen: NeuralFieldGenerator) -> str | None:
    """The manifest hash of the data the checkpoint was trained on, where its config records one."""
    data = gen.config.get("data") if isinstance(getattr(gen, "config", None), dict) else None
    return (data.get("manifest_sha256") or data.get("manifest_hash")) if isinstance(data, dict) else None


def evaluate_generator(
    gen: NeuralFieldGenerator,
    data_dir: str | Path,
    *,
    max_shapes: int = 32,
    seed: int = 0,
    samples_per_family: int = 8,
    batch: int = 4,
    training_hash: str | None = None,
    log: Callable[[str], None] | None = None,
    executor: Executor | None = None,
    loader: Callable[[], Any] | None = None,
) -> dict[str, float | str]:
    """The figures of the module docstring on any data folder.

    `training_hash`: the manifest hash of the checkpoint's training data (default: the one its
    config records, see `trained_hash`). Only when `data_dir`'s manifest has this hash are the
    training codes decoded against it (`train_iou`); otherwise `train_iou_skipped` gives the reason.
    `executor`: where the held-out reconstructions and the family samples run, one batch per task (a
    process pool, Ray), each worker loading the generator once through `loader` (default: `gen`
    itself, shipped to the workers). Every batch draws from its own seeds, so the figures are those
    computed here (`seconds_per_shape` sums the workers' own times).
    """
    folder = Path(data_dir)
    if max_shapes < 1:
        raise InputError(f"max_shapes must be >= 1, got {max_shapes}")
    all_rows = read_manifest(folder, None)
    training_hash = training_hash or trained_hash(gen)
    own = training_hash is not None and manifest_hash(folder) == training_hash
    train_rows = [r for r in all_rows if r["split"] == "train"]
    if own and len(train_rows) != gen.cfg.n_codes:
        raise InputError(f"{folder}: has the checkpoint's manifest hash but {len(train_rows)} training shapes for {gen.cfg.n_codes} codes")
    if own:
        held_split = "test" if any(r["split"] == "test" for r in all_rows) else "val"
        held = [r for r in all_rows if r["split"] == held_split]
        if not held:
            raise InputError(f"{folder}: the checkpoint's training folder holds no held-out shapes (split test or val)")
        held_from = f"the training folder's {held_split} split"
    else:
        held = all_rows  # the checkpoint has seen none of them
        held_from = "every shape (not the checkpoint's training folder)"
    R = int(all_rows[0].get("resolution", gen.cfg.resolution))
    say = log or (lambda s: None)
    gen.net.eval()
    figures: dict[str, float | str] = {}

    # training shapes: decode their codes
    if own:
        idx = _pick(len(train_rows), max_shapes, seed, "nf-eval-train")
        train_ious = []
        with torch.no_grad():
            for part in np.array_split(np.array(idx), max(1, len(idx) // 16)):
                grids = gen.sdf_grid(gen.net.codes[torch.as_tensor(part)], part.tolist(), resolution=R).cpu().numpy()
                train_ious += [iou(g, load_grid(folder, train_rows[i])) for g, i in zip(grids, part)]
        figures["train_iou"] = float(np.mean(train_ious))
        say(f"train IoU {figures['train_iou']:.3f} over {len(idx)} shapes")
    else:
        why = "the checkpoint records no training-data hash" if training_hash is None else \
            f"{folder} is not the checkpoint's training data (manifest hash {manifest_hash(folder)}, trained on {training_hash})"
        figures["train_iou_skipped"] = why
        say(f"train IoU skipped: {why}")

    if executor is not None:
        from weightspace.generators.registry import generator_loader

        shared = executor.share(generator_loader(loader if loader is not None else gen))

    def batches(jobs: list[tuple[str, Any, list[int]]]) -> Iterator[tuple[np.ndarray, float]]:
        """Each job's grids and seconds, in order, as they finish (so progress is logged as it goes)."""
        if executor is None:
            return (_reconstruct(gen, mode, x, s, R) for mode, x, s in jobs)
        return executor.map(run_job, [ReconstructJob(shared, mode, x, s, R) for mode, x, s in jobs])

    # held-out shapes from noisy points: code optimisation, then decode
    hidx = _pick(len(held), max_shapes, seed, "nf-eval-held")
    row_batches = [[held[i] for i in hidx[start : start + batch]] for start in range(0, len(hidx), batch)]
    jobs = [("points", np.stack([_observation(folder, r, seed) for r in rows]), [derive_seed(seed, "nf-eval", r["id"]) for r in rows])
            for rows in row_batches]  # each observation (b, 2048, 3)
    p_ious, p_match, seconds = [], [], 0.0
    for rows, (grids, took) in zip(row_batches, batches(jobs)):
        seconds += took
        for g, r in zip(grids, rows):
            truth = load_grid(folder, r)
            p_ious.append(iou(g, truth))
            p_match.append(topology(g).betti == _truth_betti(folder, r, truth))
        say(f"points: {len(p_ious)}/{len(hidx)} IoU {np.mean(p_ious):.3f} Betti {np.mean(p_match):.2f}")

    # sampling from each family's code Gaussian
    names = [name for name in gen.families if name in FAMILIES]
    jobs = [("family", name, [derive_seed(seed, "nf-eval-family", name, k) for k in range(samples_per_family)]) for name in names]
    f_match = [topology(g).betti[:2] == tuple(FAMILIES[name].betti)[:2]
               for name, (grids, _) in zip(names, batches(jobs)) for g in grids]
    say(f"family Betti match {np.mean(f_match) if f_match else float('nan'):.2f}")

    if not gen.families:
        no_family = "the checkpoint has no families (its training shapes had none)"
    else:
        no_family = f"none of the checkpoint's families ({', '.join(gen.families)}) has a declared topology to check samples against"
    points_rate = rate_fields("points_betti_match", p_match, why_unmeasured="no held-out shapes")
    family_rate = rate_fields("family_betti_match", f_match, why_unmeasured=no_family)
    return {
        **figures,
        "points_iou": float(np.mean(p_ious)),
        "points_betti_match": points_rate.pop("points_betti_match"),
        "family_betti_match": family_rate.pop("family_betti_match"),
        "seconds_per_shape": seconds / len(hidx),
        "held_out_shapes": len(hidx),
        "held_out_from": held_from,
        **points_rate,
        **family_rate,
    }


def record_figures(folder: str | Path, figures: dict[str, float | str], command: str) -> Path:
    """Add evaluation figures (the numbers) and the command that measured them to `folder/training_record.json`."""
    from weightspace.runtime.io import atomic_write_json, read_json

    path = Path(folder) / "training_record.json"
    record = read_json(path) if path.is_file() else {}
    if not isinstance(record, dict):
        raise InputError(f"{path}: expected a JSON object")
    record["figures"] = {k: float(v) for k, v in figures.items() if isinstance(v, (int, float))}  # None: not measured
    record["figures_command"] = command
    atomic_write_json(path, record)
    return path

"""The fitting study (paper claim 3): adapt to a held-out shape seen only as a few noisy partial point clouds.

The shape is observed as V partial views (each `points_per_view` points, Gaussian noise sigma).
Methods: encode the condition; optimise the condition; invert into a k-dimensional subspace of
other examples of the family; LoRA fine-tuning; full fine-tuning. Each result is decoded under one
fixed noise seed and compared with the clean shape (Chamfer, F-score, topology). Forgetting: the
generator's reconstructions of a held-out set of other shapes (conditions encoded once with the
base generator) are decoded again under the fitted weights, for every method, and compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from weightspace.analysis.measure import finite_mean, geometry, measure
from weightspace.data.dataset import load_grid
from weightspace.data.observe import observe
from weightspace.decode.mesh import save_mesh
from weightspace.decode.points import decode_conditions
from weightspace.experiments.common import (
    Clock,
    check_choice,
    clean_surface,
    encode_points,
    generator_pose,
    load_study_generator,
    mismatches,
    refuse,
    row_root,
    start_results,
    study_data,
    topology_check,
)
from weightspace.experiments.forgetting import forget_figures, forget_set, forget_shapes, forgetting
from weightspace.experiments.plots import plot_fit
from weightspace.generators.protocol import Generator, families_of
from weightspace.runtime.errors import InputError
from weightspace.runtime.results import write_csv, write_results
from weightspace.runtime.seeding import derive_seed, item_rng
from weightspace.space.frame import Frame
from weightspace.space.inversion import minimise_in_subspace
from weightspace.space.parameterisation import Parameterisation
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.population import minimise_point
from weightspace.space.subspace import fit_subspace_matrix

METHODS = ("encode", "optimise", "subspace", "lora", "full")


@dataclass
class FitConfig:
    """One fitting study (the CLI builds one of these)."""

    checkpoint: str = "default"
    out: str = "results/fit"
    family: str = "torus"  # family of the held-out shape
    views: list[int] = field(default_factory=lambda: [1, 4])  # number of partial views (paper regime: 1, 2, 4, 8)
    sigmas: list[float] = field(default_factory=lambda: [0.0, 0.03])  # noise (world units; 0, 0.01, 0.03)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    points_per_view: int = 256
    steps: int = 6  # optimiser steps of every optimised method
    lr_condition: float = 0.05  # optimise: Adam step as a fraction of the encoded condition's RMS; subspace: in units of sigma
    lr_lora: float = 3e-3
    lr_full: float = 1e-4
    free_weight: float = 0.5  # weight of the free-space term (|f(q)| ~ distance from q to the observed points)
    prior: float = 1e-2  # Gaussian prior on subspace coordinates (as in weightspace.inversion)
    subspace_examples: int = 6  # K other shapes of the family span the inversion subspace
    subspace_k: int = 3
    forget_shapes: int = 3  # held-out shapes of other families for forgetting
    lora_rank: int = 2
    lora_targets: str = "all"
    data: str | None = None
    data_seed: int = 1
    seed: int = 0
    meshes: bool = True

    @classmethod
    def small(cls, checkpoint: str = "default", out: str = "results/demo/fit") -> "FitConfig":
        """The demo-sized run: 2 views, sigma 0.01, every method, 5 steps."""
        return cls(checkpoint=checkpoint, out=out, views=[2], sigmas=[0.01], steps=5, subspace_examples=4,
                   subspace_k=2, forget_shapes=2)

    def validate(self) -> None:
        for m in self.methods:
            check_choice("methods", m, METHODS)
        if not self.methods or not self.views or not self.sigmas:
            raise InputError("methods, views and sigmas must each name at least one value")
        if any(v < 1 for v in self.views) or any(s < 0 for s in self.sigmas):
            raise InputError(f"views must be >= 1 and sigmas >= 0, got {self.views} and {self.sigmas}")
        if self.points_per_view < 1 or self.steps < 0 or self.forget_shapes < 0:
            raise InputError("points_per_view must be >= 1, steps and forget_shapes >= 0")
        if "subspace" in self.methods and not 1 <= self.subspace_k < self.subspace_examples:
            raise InputError(f"subspace_k must satisfy 1 <= k < subspace_examples = {self.subspace_examples}, got {self.subspace_k}")


class Objective:
    """Fitting loss: mean |f| at the observed points + free_weight * mean | |f(q)| - min(d(q, obs), trunc) |
    at seeded box points q. The second term keeps a fit from flattening the field to zero (a surface-only
    loss is minimised by f = 0 everywhere); d is the unsigned distance to the observation."""

    def __init__(self, gen: Generator, obs: np.ndarray, *, free_weight: float, seed: int, n_free: int = 512, trunc: float = 0.1):
        rng = item_rng(seed, "free-space")
        q = rng.uniform(-1, 1, size=(n_free, 3)).astype(np.float32)  # (Q, 3)
        d = np.minimum(cKDTree(obs).query(q)[0], trunc).astype(np.float32)  # (Q,)
        self.gen, self.n_obs, self.free_weight, self.seed = gen, len(obs), free_weight, seed
        self.x = torch.from_numpy(np.concatenate([obs, q]))[None].to(gen.device)  # (1, P + Q, 3)
        self.d = torch.from_numpy(d).to(gen.device)

    def __call__(self, cond: torch.Tensor, params: dict[str, torch.Tensor] | None) -> torch.Tensor:
        f = self.gen.sdf_points(self.x, cond, [self.seed], params=params)[0]  # (P + Q,)
        surface = f[: self.n_obs].abs().mean()
        free = (f[self.n_obs :].abs() - self.d).abs().mean()
        return surface + self.free_weight * free


def fit_one(gen: Generator, method: str, obs: np.ndarray, cfg: FitConfig, *, seed: int, c_enc: torch.Tensor,
            cond_sub=None) -> dict[str, Any]:
    """Fit one observation (N, 3) by `method`, given its encoded condition c_enc (1, *cs) (encoded once per
    observation and shared by the methods); returns condition (1, *cs), params (or None), losses.

    optimise, lora and full run `minimise_point` (the Adam loop of every population member) on the
    study's `Objective`; subspace runs `minimise_in_subspace` (that of `invert`) on it."""
    obj = Objective(gen, obs, free_weight=cfg.free_weight, seed=seed)
    cond_param = make_parameterisation(gen, "condition")
    if method == "encode":
        with torch.no_grad():
            loss = float(obj(c_enc.to(gen.device), None))
        return {"condition": c_enc, "params": None, "losses": [loss], "trainable": 0}
    if method == "optimise":
        lr = cfg.lr_condition * float(c_enc.pow(2).mean().sqrt().clamp_min(1e-6))  # scale-free across generators
        x, losses = minimise_point(c_enc.reshape(-1), lambda x, step: obj(cond_param.conditions(x[None]), None), steps=cfg.steps, lr=lr)
        return {"condition": cond_param.conditions(x[None]).detach(), "params": None, "losses": [float(v) for v in losses],
                "trainable": x.numel()}
    if method == "subspace":  # the encoding's projection is the start, like the other methods'
        res = minimise_in_subspace(cond_sub, lambda point, step: obj(cond_param.conditions(point[None]), None),
                                   start=cond_sub.project(c_enc.reshape(1, -1))[0], steps=cfg.steps, lr=cfg.lr_condition,
                                   prior=cfg.prior)
        return {"condition": cond_param.conditions(res.point[None]).detach(), "params": None, "losses": res.total,
                "trainable": cond_sub.k}
    param: Parameterisation
    if method == "lora":
        param = make_parameterisation(gen, "lora", rank=cfg.lora_rank, targets=cfg.lora_targets)
        lr = cfg.lr_lora
    else:
        param = make_parameterisation(gen, "layers", targets="all")
        lr = cfg.lr_full
    param.set_anchor(c_enc)
    x, losses = minimise_point(param.initial_point(seed), lambda x, step: obj(param.conditions(x[None]), param.params(x)),
                               steps=cfg.steps, lr=lr)
    params = {k: v.detach() for k, v in param.params(x).items()}
    return {"condition": c_enc, "params": params, "losses": [float(v) for v in losses], "trainable": x.numel()}


def run_fit(config: FitConfig, *, generator: Generator | None = None) -> Path:
    """Run the fitting study into `config.out`; returns the results folder.

    results.json: `table` (one row per views x sigma x method: Chamfer-L1, F-score, topology
    correct, forgetting), `by_method` means, the held-out shape, and wall time.
    """
    config.validate()
    clock = Clock()
    folder = start_results(config.out, config)
    gen = load_study_generator(config.checkpoint, generator)
    R = gen.resolution
    seed = config.seed
    dseed = derive_seed(seed, "decode") % 2**31

    # --- shapes: the target, K other examples of its family, one shape per other family ------------------------
    pose = generator_pose(gen)
    root, fam_rows = study_data(folder / "data", data=config.data, families=[config.family],
                                count=1 + config.subspace_examples, seed=config.data_seed, resolution=R, pose=pose)
    forget_rows = forget_shapes(folder / "data", data=config.data, family=config.family, known=families_of(gen),
                                count=config.forget_shapes, seed=config.data_seed, resolution=R, pose=pose)
    target, examples = fam_rows[0], fam_rows[1 : 1 + config.subspace_examples]
    if "subspace" in config.methods and len(examples) < config.subspace_examples:
        raise InputError(f"family {config.family!r}: need {1 + config.subspace_examples} shapes for the target and the subspace, found {len(fam_rows)}")

    t_pts, t_nrm = clean_surface(root, target)
    t_clean = measure(load_grid(row_root(root, target), target), seed=seed)
    t_ref = t_pts[item_rng(seed, "reference").choice(len(t_pts), size=min(2048, len(t_pts)), replace=False)]

    cond_sub, examples_check = None, []
    if "subspace" in config.methods:
        ex = [clean_surface(root, r)[0] for r in examples]
        ex = [p[item_rng(seed, "example", i).choice(len(p), size=min(1024, len(p)), replace=False)] for i, p in enumerate(ex)]
        xs = encode_points(gen, ex, seed=seed).reshape(len(ex), -1)  # (K, D)
        # every example must decode to its own shape's topology before it spans the subspace
        grids = decode_conditions(gen, xs.reshape(len(ex), *gen.condition_shape), dseed)  # (K, R, R, R)
        examples_check = topology_check([r["id"] for r in examples], [measure(g, seed=seed).robust for g in grids],
                                        [measure(load_grid(row_root(root, r), r), seed=seed).robust for r in examples])
        keep = [i for i, c in enumerate(examples_check) if c["ok"]]
        if len(keep) < config.subspace_k + 1:
            refuse(folder, config.checkpoint, (
                f"subspace method: only {len(keep)} of {len(examples_check)} examples decode to their own shape's robust Betti "
                f"numbers ({mismatches(examples_check)}); a {config.subspace_k}-dimensional subspace needs "
                f"{config.subspace_k + 1}. Use more --subspace-examples, a smaller k, or leave out the subspace method"),
                examples_check=examples_check)
        xs = xs[keep]
        cond_sub = fit_subspace_matrix(xs, config.subspace_k, frame=Frame.of(make_parameterisation(gen, "condition")))

    # --- forgetting set: conditions encoded once with the base generator, decoded before --------------------------
    f_conds, f_refs = forget_set(gen, root, forget_rows, seed=seed)
    before = forget_figures(gen, f_conds, f_refs, None, dseed, seed)

    table: list[dict[str, Any]] = []
    for V in config.views:
        for sigma in config.sigmas:
            views = [observe(t_pts, t_nrm, "partial", n=config.points_per_view, sigma=sigma,
                             seed=derive_seed(seed, "view", V, sigma, v)) for v in range(V)]
            obs = np.concatenate(views)  # (V n, 3)
            c0 = Clock()
            c_enc = encode_points(gen, [obs], seed=dseed)  # (1, *cs)
            encode_seconds = c0()
            for method in config.methods:
                c0 = Clock()
                res = fit_one(gen, method, obs, config, seed=dseed, c_enc=c_enc, cond_sub=cond_sub)
                # every method starts from the encoding: its time is part of each method's cost
                fit_seconds = c0() + encode_seconds
                grid = decode_conditions(gen, res["condition"], dseed, params=res["params"])[0]
                s = measure(grid, seed=seed)
                geo = geometry(s.points, t_ref)
                after = forget_figures(gen, f_conds, f_refs, res["params"], dseed, seed)
                row = {"views": V, "sigma": sigma, "method": method, "observed_points": len(obs),
                       "chamfer_l1": geo["chamfer_l1"], "fscore": geo["fscore"],
                       "topology_correct": s.robust == t_clean.robust, "exact_topology_correct": s.betti == t_clean.betti,
                       "robust": list(s.robust), "valid": s.valid, "trainable": res["trainable"],
                       "loss_start": res["losses"][0], "loss_end": res["losses"][-1], "fit_seconds": fit_seconds,
                       "forget_chamfer_before": before["chamfer"], "forget_chamfer_after": after["chamfer"],
                       **forgetting(before, after)}
                table.append(row)
                if config.meshes:
                    save_mesh(grid, folder / "meshes" / f"v{V}-s{sigma:g}-{method}.ply")
    write_csv(folder / "table.csv", table)
    by_method = {m: {k: finite_mean([r[k] for r in table if r["method"] == m])
                     for k in ("chamfer_l1", "fscore", "topology_correct", "forgetting", "forget_fscore_drop",
                                                                    "forget_topology_changed", "forget_max_grid_change", "fit_seconds")} for m in config.methods}
    plot_fit(folder / "fit.png", table, views=config.views, sigmas=config.sigmas, methods=config.methods)
    write_results(folder, {
        "checkpoint": config.checkpoint, "generator": gen.kind, "target": {"id": target["id"], "family": config.family,
                                                                            "robust": list(t_clean.robust)},
        "forget_set": [r["id"] for r in forget_rows], "forget_before": {"chamfer": before["chamfer"], "fscore": before["fscore"], "valid": before["kept"]},
        "table": table, "by_method": by_method, "wall_seconds": clock(), "examples_check": examples_check,
        "examples_dropped": [c["id"] for c in examples_check if not c["ok"]],
    })
    return folder

"""The subspace study (paper claim 2): does a PCA subspace of K examples vary local geometry and keep topology?

K examples of one family become K points (encoded conditions, or LoRA fine-tunes under the
examples' mean condition); PCA with k < K components; S Gaussian samples in the subspace are
decoded under one fixed noise seed and measured against the decoded examples. Two baselines
at the same distance from the mean: a random direction in the full parameterisation, and
isotropic Gaussian noise on an example's condition (scaled to the same relative distance).
A validity gate (distance from the subspace's support before decoding, SDF eikonal residual
after) is scored by precision and recall against the measured failures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightspace.analysis.measure import DEFAULT_VOLUME_THRESHOLD, Shape, chamfer, measure
from weightspace.data.dataset import load_grid
from weightspace.decode.mesh import save_mesh
from weightspace.decode.points import decode_points
from weightspace.experiments.common import (
    Clock,
    check_choice,
    clean_surface,
    generator_pose,
    load_study_generator,
    mismatches,
    refuse,
    row_root,
    start_results,
    study_data,
    topology_check,
)
from weightspace.experiments.plots import plot_subspace
from weightspace.experiments.subspace_figures import gate_thresholds, kind_summary, precision_recall, support_score
from weightspace.generators.protocol import Generator
from weightspace.runtime.errors import InputError
from weightspace.runtime.results import write_csv, write_results
from weightspace.runtime.seeding import derive_seed, item_generator, item_rng
from weightspace.space.frame import Frame
from weightspace.space.lora import LORA_FORMS
from weightspace.space.parameterisations import make_parameterisation
from weightspace.space.population import fit_member
from weightspace.space.subspace import fit_subspace_matrix

SUBSPACE_PARAMETERISATIONS = ("condition", "lora")
KINDS = ("subspace", "random", "condition_noise")


@dataclass
class SubspaceConfig:
    """One subspace study (the CLI builds one of these)."""

    checkpoint: str = "default"
    out: str = "results/subspace"
    family: str = "torus"
    examples: int = 4  # K (2, 4, 8, 16 in the paper's regime)
    k: int = 2  # PCA components, 1 <= k < K
    samples: int = 16  # S samples per kind (subspace and each baseline)
    parameterisation: str = "condition"  # condition | lora
    temperature: float = 1.0  # subspace samples z_i ~ N(0, (temperature sigma_i)^2)
    data: str | None = None  # data folder (default: procedural shapes made in the results folder)
    data_seed: int = 1
    seed: int = 0  # sampler noise seed (fixed for every decode) and sampling seed
    observations: int = 1024  # surface points per encoded example
    lora_rank: int = 2
    lora_targets: str = "all"
    # the form the LoRA subspace is learned in (examples are fitted as rank-r factors either way):
    # delta (Delta W = B A, the same for every factorisation) | factors (A, B)
    lora_form: str = "delta"
    # LoRA fit per example (generator training loss on its grid): steps, Adam lr and loss draws per
    # step; None takes the generator's population defaults, chosen so members reproduce their shapes
    fit_steps: int | None = None
    lr: float | None = None
    fit_draws: int | None = None
    gate_factor: float = 1.5  # a gate score above factor x the examples' largest flags a failure
    volume_threshold: float = DEFAULT_VOLUME_THRESHOLD
    meshes: bool = True

    @classmethod
    def small(cls, checkpoint: str = "default", out: str = "results/demo/subspace") -> "SubspaceConfig":
        """The demo-sized run: K = 4 condition examples (1,024 points each), k = 2, 8 samples per kind;
        one example may fail its check (k + 1 = 3 must decode to their own shapes)."""
        return cls(checkpoint=checkpoint, out=out, examples=4, k=2, samples=8, observations=1024)

    def validate(self) -> None:
        check_choice("parameterisation", self.parameterisation, SUBSPACE_PARAMETERISATIONS)
        check_choice("lora_form", self.lora_form, LORA_FORMS)
        if self.examples < 2:
            raise InputError(f"examples (K) must be >= 2, got {self.examples}")
        if not 1 <= self.k < self.examples:
            raise InputError(f"k must satisfy 1 <= k < K = {self.examples}, got {self.k}")
        if self.samples < 1 or self.temperature < 0 or (self.fit_steps or 0) < 0 or self.gate_factor <= 0 \
                or (self.lr is not None and not self.lr > 0) or (self.fit_draws is not None and self.fit_draws < 1):
            raise InputError("samples must be >= 1, temperature and fit_steps >= 0, lr and gate_factor > 0, fit_draws >= 1")


def _unit(d: int, seed: int, *keys: Any) -> torch.Tensor:
    g = torch.randn(d, generator=item_generator(seed, *keys), dtype=torch.float64)
    return (g / g.norm()).float()


def run_subspace(config: SubspaceConfig, *, generator: Generator | None = None) -> Path:
    """Run the subspace study into `config.out`; returns the results folder.

    results.json: per kind (`subspace`, `random`, `condition_noise`, and `examples`):
    topology kept (exact, robust), validity rate, local variation, diversity, novelty; the
    examples' topology; the gate's precision and recall; wall time.
    """
    config.validate()
    clock = Clock()
    folder = start_results(config.out, config)
    gen = load_study_generator(config.checkpoint, generator)
    R = gen.resolution
    root, rows = study_data(folder / "data", data=config.data, families=[config.family], count=config.examples,
                            seed=config.data_seed, resolution=R, pose=generator_pose(gen))
    if len(rows) < config.examples:
        raise InputError(f"family {config.family!r}: {len(rows)} shapes in the data, K = {config.examples} asked")
    rows = rows[: config.examples]
    seed = config.seed

    # --- the K examples as points ----------------------------------------------------------------------
    cond_param = make_parameterisation(gen, "condition")
    surfaces, conds = [], []
    for i, row in enumerate(rows):
        pts, _ = clean_surface(root, row)
        take = item_rng(seed, "observe", row["id"]).choice(len(pts), size=min(config.observations, len(pts)), replace=False)
        surfaces.append(torch.from_numpy(pts[take]))
        grid = torch.from_numpy(load_grid(row_root(root, row), row))
        fit = fit_member(gen, cond_param, grid, fit="grid", steps=0, lr=1.0, seed=derive_seed(seed, "member", i),
                         condition_fit="encode", surface=surfaces[-1])
        conds.append(fit["point"])
    cond_x = torch.stack(conds)  # (K, D_c)
    if config.parameterisation == "condition":
        param, x = cond_param, cond_x
    else:
        param = make_parameterisation(gen, "lora", rank=config.lora_rank, targets=config.lora_targets)
        param.set_anchor(cond_x.mean(0).reshape(1, *gen.condition_shape))
        defaults = gen.fit_defaults["lora"]
        steps = defaults["steps"] if config.fit_steps is None else config.fit_steps
        lr = defaults["lr"] if config.lr is None else config.lr
        draws = defaults["draws"] if config.fit_draws is None else config.fit_draws
        pts_ = []
        for i, row in enumerate(rows):
            grid = torch.from_numpy(load_grid(row_root(root, row), row))
            pts_.append(fit_member(gen, param, grid, fit="grid", steps=steps, lr=lr, draws=draws,
                                   seed=derive_seed(seed, "member", i))["point"])
        x = torch.stack(pts_)  # (K, D) factors: each example is a rank-r adapter
        if config.lora_form == "delta":
            param, x = param.delta_parameterisation(), param.to_delta(x).cpu()  # (K, D_delta), exact

    # --- every example must decode to its own shape's topology before it defines anything ------------------
    dseed = derive_seed(seed, "decode") % 2**31
    ex_all = decode_points(gen, param, x, [dseed] * x.shape[0]).numpy()  # (K, R, R, R)
    clean_all = [measure(load_grid(row_root(root, r), r), seed=seed) for r in rows]
    check = topology_check([r["id"] for r in rows],
                           [measure(g, seed=seed, volume_threshold=config.volume_threshold).robust for g in ex_all],
                           [c.robust for c in clean_all])
    keep = [i for i, c in enumerate(check) if c["ok"]]
    if len(keep) < config.k + 1:
        refuse(folder, config.checkpoint, (
            f"only {len(keep)} of {len(rows)} examples decode to their own shape's robust Betti numbers ({mismatches(check)}); "
            f"a {config.k}-dimensional subspace needs {config.k + 1}. Use a generator (or --parameterisation / "
            f"--fit-steps) whose examples reproduce their shapes, or a smaller k"), examples_check=check)
    rows, x, cond_x = [rows[i] for i in keep], x[keep], cond_x[keep]
    ex_grids, clean = ex_all[keep], [clean_all[i] for i in keep]
    sub = fit_subspace_matrix(x, config.k, frame=Frame.of(param, config.checkpoint))
    sub.save(folder / "subspace")
    cond_sub = sub if param is cond_param else fit_subspace_matrix(cond_x, config.k, frame=Frame.of(cond_param))

    # --- points to decode --------------------------------------------------------------------------------
    S = config.samples
    samples = sub.sample(S, seed=seed, temperature=config.temperature).float()  # (S, D)
    radius = (samples - sub.mean).double().norm(dim=1)  # (S,)
    spread = float((x - sub.mean).double().norm(dim=1).mean())
    c_mean = cond_x.mean(0)
    c_spread = float((cond_x - c_mean).double().norm(dim=1).mean())
    rand = torch.stack([sub.mean + radius[i].float() * _unit(x.shape[1], seed, "random-direction", i) for i in range(S)])
    pick = item_rng(seed, "noise-example").integers(0, cond_x.shape[0], size=S)
    noisy = torch.stack([cond_x[pick[i]] + float(radius[i] / max(spread, 1e-12) * c_spread)
                         * _unit(cond_x.shape[1], seed, "condition-noise", i) for i in range(S)])

    groups = {
        "examples": (param, x),
        "subspace": (param, samples),
        "random": (param, rand),
        "condition_noise": (cond_param, noisy),
    }
    shapes: dict[str, list[Shape]] = {}
    grids: dict[str, np.ndarray] = {}
    for name, (p, pts) in groups.items():
        g = ex_grids if name == "examples" else decode_points(gen, p, pts, [dseed] * pts.shape[0]).numpy()  # (n, R, R, R)
        grids[name] = g
        shapes[name] = [measure(gi, seed=seed, volume_threshold=config.volume_threshold) for gi in g]

    examples = shapes["examples"]
    target_robust = Counter(s.robust for s in examples).most_common(1)[0][0]
    target_exact = Counter(s.betti for s in examples).most_common(1)[0][0]
    ex_pts = [s.points for s in examples]
    ex_w = x.double()
    ex_nn = torch.cdist(ex_w, ex_w).fill_diagonal_(float("inf")).min(dim=1).values  # (K,)
    w_scale = float(ex_nn.median())

    # --- gate calibration on the examples, per space ----------------------------------------------------------
    support = {"examples": support_score(sub, x), "subspace": support_score(sub, samples),
               "random": support_score(sub, rand), "condition_noise": support_score(cond_sub, noisy)}
    thr_support, thr_eik = gate_thresholds(support["examples"], support_score(cond_sub, cond_x), examples, k=config.k,
                                           temperature=config.temperature, factor=config.gate_factor)

    item_rows: list[dict[str, Any]] = []
    for name in groups:
        pts_w = groups[name][1].double()
        for i, s in enumerate(shapes[name]):
            near = [chamfer(s.points, e) for e in ex_pts]
            j = int(np.argmin(near))
            dw = (ex_w - pts_w[i]).norm(dim=1) if name != "condition_noise" else (cond_x.double() - pts_w[i]).norm(dim=1)
            thr = thr_support["condition" if name == "condition_noise" and param is not cond_param else "own"]
            flag_support = bool(support[name][i] > thr)
            flag_eik = bool(s.eikonal > thr_eik)
            item_rows.append({
                "kind": name, "index": i, "radius": float((pts_w[i] - (cond_x.double().mean(0) if name == "condition_noise" else sub.mean.double())).norm()),
                **s.row(), "kept_exact": s.betti == target_exact, "kept_robust": s.robust == target_robust,
                "empty": s.empty, "touches_box": s.touches_box, "chamfer_nearest_example": near[j], "nearest_example": rows[j]["id"],
                "weight_nearest_example": float(dw.min()), "weight_novelty_ratio": float(dw.min()) / w_scale if w_scale > 0 else float("nan"),
                "support_score": float(support[name][i]), "gate_support": flag_support, "gate_eikonal": flag_eik,
                "gate": flag_support or flag_eik, "failed": (not s.valid) or s.robust != target_robust,
            })
    write_csv(folder / "samples.csv", item_rows)

    summary = {name: kind_summary([r for r in item_rows if r["kind"] == name], shapes[name], ex_pts) for name in groups}
    evaluated = [r for r in item_rows if r["kind"] != "examples"]
    gate = {key: precision_recall([r[key] for r in evaluated], [r["failed"] for r in evaluated])
            for key in ("gate_support", "gate_eikonal", "gate")}
    gate["thresholds"] = {"support": thr_support, "eikonal": thr_eik, "factor": config.gate_factor}
    gate["failure"] = "invalid (empty, full or cut by the box) or robust topology != the examples'"

    if config.meshes:
        for name in groups:
            for i, gi in enumerate(grids[name]):
                save_mesh(gi, folder / "meshes" / f"{name}-{i:03d}.ply")
    plot_subspace(folder / "subspace.png", summary, title=f"{gen.kind}: {config.family}, K={config.examples}, k={config.k}, "
                                                   f"{config.parameterisation}")
    write_results(folder, {
        "checkpoint": config.checkpoint, "generator": gen.kind, "family": config.family, "K": config.examples, "k": config.k,
        "samples": S, "parameterisation": config.parameterisation, "dimension": int(x.shape[1]),
        "explained_variance_ratio": [float(v) for v in sub.explained_variance_ratio],
        "examples_topology": {"robust": list(target_robust), "exact": list(target_exact),
                              "per_example_robust": [list(s.robust) for s in examples],
                              "clean_robust": [list(s.robust) for s in clean]},
        "topology_kept": {name: summary[name]["topology_kept_robust"] for name in groups},
        "warnings": ([] if target_robust != (0, 0, 0) else
                     ["the examples decode empty, so 'topology kept' counts empty shapes; read kept_and_valid"]),
        "examples_check": check, "examples_dropped": [c["id"] for c in check if not c["ok"]], "K_used": len(rows),
        "summary": summary, "gate": gate, "decodes": len(check) + 3 * S, "wall_seconds": clock(),
    })
    return folder

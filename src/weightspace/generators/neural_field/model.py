"""`NeuralFieldGenerator`: the DeepSDF-style auto-decoder behind the generator protocol (condition = code z)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from weightspace.data.grid import grid_points
from weightspace.generators.neural_field.config import FieldConfig
from weightspace.generators.neural_field.decode import adaptive_grid
from weightspace.generators.neural_field.losses import clamped_l1, sample_grid
from weightspace.generators.neural_field.network import FieldNet
from weightspace.generators.neural_field.reconstruct import fit_priors, reconstruct_codes, sample_codes
from weightspace.generators.protocol import Generator, Params
from weightspace.runtime.checkpoint import check_state_matches, save_checkpoint
from weightspace.runtime.config import check_config, config_from_dict, config_to_dict
from weightspace.runtime.errors import InputError
from weightspace.runtime.seeding import item_generator

KIND = "neural-field"


def _check_seeds(seeds: Sequence[int] | None, batch: int, what: str) -> list[int]:
    if seeds is None:
        return list(range(batch))
    seeds = [int(s) for s in seeds]
    if len(seeds) != batch:
        raise InputError(f"seeds: got {len(seeds)} seeds for {batch} {what}; pass one seed per item")
    return seeds


def _check_draw_seeds(seeds: Sequence[Sequence[int]], batch: int) -> list[list[int]]:
    """Per member its draw seeds, the same number D >= 1 for every member: B lists of D ints."""
    draws = [[int(s) for s in member] for member in seeds]
    if len(draws) != batch or not draws[0] or any(len(d) != len(draws[0]) for d in draws):
        raise InputError(f"seeds: need one list of draw seeds per member, the same number (>= 1) for each of the "
                         f"{batch} members; got lengths {[len(d) for d in draws]}")
    return draws


class NeuralFieldGenerator(Generator):
    """DeepSDF auto-decoder: f(x, z) with one code per training shape; the condition is z (B, d_z)."""

    kind: ClassVar[str] = KIND
    # False: batched fits merge each member's LoRA factors and run members one after another, which gives
    # the one-at-a-time members exactly (1.0x). The factored path (batched.py, 1.14-1.25x, docs/scaling.md)
    # rounds differently, and this field's 300-step fits amplify the rounding into members 7% apart:
    # equally good fits, but not the same members, which `--batch-members` promises.
    accepts_low_rank: ClassVar[bool] = False

    def __init__(self, cfg: FieldConfig, net: FieldNet | None = None) -> None:
        self.cfg = cfg = check_config(cfg, where="model")
        self.net = net if net is not None else FieldNet(
            n_codes=cfg.n_codes, d_z=cfg.d_z, width=cfg.width, depth=cfg.depth, skip=cfg.skip,
            pe_freqs=cfg.pe_freqs, n_families=len(cfg.families),
        )
        self.config: dict[str, Any] = {"kind": KIND, "model": config_to_dict(cfg)}

    # --- conditions -------------------------------------------------------------------
    @property
    def condition_shape(self) -> tuple[int, ...]:
        return (self.cfg.d_z,)

    def training_codes(self) -> torch.Tensor:
        """The learnt code of every training shape, in manifest order: (N, d_z)."""
        return self.net.codes.detach()

    @property
    def resolution(self) -> int:
        return int(self.cfg.resolution)

    # --- conditions (capabilities EncodesPoints, HasFamilies) ------------------------------
    @property
    def families(self) -> list[str]:
        """The families this checkpoint can sample: those it had training shapes of, as its training
        recorded them (config data.families); a checkpoint that records none, every family it knows."""
        trained = (self.config.get("data") or {}).get("families")
        return [f for f in self.cfg.families if f in trained] if isinstance(trained, list) else list(self.cfg.families)

    def encode_families(self, names: Sequence[str], seeds: Sequence[int] | None = None) -> torch.Tensor:
        """A code drawn from each named family's Gaussian: (B, d_z)."""
        return self.sample_family_codes([names] if isinstance(names, str) else list(names), seeds)

    def encode_points(self, points: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """The code of each surface cloud (B, P, 3) by code optimisation: (B, d_z)."""
        return self.reconstruct(points, seeds)

    def sample_family_codes(self, family: Sequence[str], seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Codes drawn from each named family's Gaussian (`all`: the global one), one generator per item: (B, d_z)."""
        valid = list(self.cfg.families) + ["all"]
        bad = [f for f in family if f not in valid]
        if bad:
            raise InputError(f"condition: unknown family {bad[0]!r}; valid: {', '.join(valid)}")
        trained = self.families
        untrained = [f for f in family if f != "all" and f not in trained]
        if untrained:  # its Gaussian would be the global one: a sample of no family in particular
            raise InputError(f"condition: this checkpoint had no training shapes of family {untrained[0]!r}; "
                             f"it samples {', '.join(trained) or 'no family'} (or all)")
        seeds = _check_seeds(seeds, len(family), "families")
        net = self.net
        mean = torch.stack([net.global_mean if f == "all" else net.family_mean[valid.index(f)] for f in family])
        chol = torch.stack([net.global_chol if f == "all" else net.family_chol[valid.index(f)] for f in family])
        return sample_codes(mean, chol, seeds, self.cfg.sample_temperature)  # (B, d_z)

    def reconstruct(self, points: torch.Tensor, seeds: Sequence[int] | None = None, **overrides: Any) -> torch.Tensor:
        """Code optimisation from surface points (B, P, 3) with the network frozen: (B, d_z)."""
        points = torch.as_tensor(points, dtype=torch.float32, device=self.device)
        if points.dim() != 3 or points.shape[-1] != 3 or points.shape[1] < 1:
            raise InputError(f"condition: points must have shape (B, P, 3) with P >= 1, got {tuple(points.shape)}")
        if not torch.isfinite(points).all():
            raise InputError("condition: points contain NaN or infinite values")
        seeds = _check_seeds(seeds, points.shape[0], "point clouds")
        c = self.cfg
        opts = dict(steps=c.recon_steps, lr=c.recon_lr, restarts=c.recon_restarts, prior_weight=c.recon_prior,
                    free_weight=c.recon_free_weight, outside_weight=c.recon_outside_weight, explore=c.recon_explore,
                    n_queries=c.recon_queries, n_batch=c.recon_batch)
        unknown = set(overrides) - set(opts)
        if unknown:
            raise InputError(f"reconstruct: unknown option(s) {sorted(unknown)}; valid: {sorted(opts)}")
        opts.update(overrides)
        net = self.net
        return reconstruct_codes(
            lambda x, z: net(x, z), points, seeds=seeds, candidates=net.codes.detach(),
            prior_mean=net.global_mean, prior_chol=net.global_chol, clamp=c.clamp, **opts,
        )

    def fit_code_priors(self, labels: torch.Tensor | None) -> None:
        """Refit the per-family and global code Gaussians to the current training codes (labels (N,) int)."""
        stats = fit_priors(self.net.codes.detach(), labels, len(self.cfg.families), self.cfg.prior_shrinkage)
        for name, value in stats.items():
            getattr(self.net, name).copy_(value)

    # --- decoding -----------------------------------------------------------------------
    def _field(self, x: torch.Tensor, z: torch.Tensor, params: Params | None) -> torch.Tensor:
        if params is None:
            return self.net(x, z)
        return functional_call(self.net, dict(params), (x, z))

    def _check_condition(self, condition: torch.Tensor) -> torch.Tensor:
        if condition.dim() != 2 or condition.shape[1] != self.cfg.d_z:
            raise InputError(f"condition must have shape (B, {self.cfg.d_z}), got {tuple(condition.shape)}")
        return condition.to(self.device, torch.float32)

    def sdf_points(
        self, points: torch.Tensor, condition: torch.Tensor, seeds: Sequence[int], *, params: Params | None = None
    ) -> torch.Tensor:
        condition = self._check_condition(condition)
        _check_seeds(seeds, condition.shape[0], "conditions")
        if points.dim() != 3 or points.shape[0] != condition.shape[0] or points.shape[-1] != 3:
            raise InputError(f"points must have shape ({condition.shape[0]}, P, 3), got {tuple(points.shape)}")
        points = points.to(self.device, torch.float32)
        chunks = [self._field(c, condition, params) for c in points.split(self.cfg.chunk, dim=1)]
        return torch.cat(chunks, dim=1)  # (B, P)

    def sdf_grid(
        self,
        condition: torch.Tensor,
        seeds: Sequence[int],
        *,
        params: Params | None = None,
        resolution: int | None = None,
        chunk: int | None = None,
        adaptive: bool | None = None,
    ) -> torch.Tensor:
        """f on the R^3 grid, evaluated `chunk` points at a time, truncated to +-clamp: (B, R, R, R).

        Without gradients (under `torch.no_grad()`), `adaptive` (default: the config's
        `adaptive_decode`) evaluates coarse to fine (`neural_field.decode`): exact near the surface,
        +-clamp far from it, several times faster at 64^3.

        Memory is bounded by the chunk: without gradients each chunk's activations are freed at
        once; with gradients to the condition or to `params` each chunk is recomputed in the
        backward pass.
        """
        condition = self._check_condition(condition)
        _check_seeds(seeds, condition.shape[0], "conditions")
        R = int(resolution or self.cfg.resolution)
        if R < 2:
            raise InputError(f"resolution must be >= 2, got {R}")
        step = int(chunk or self.cfg.chunk)
        if (self.cfg.adaptive_decode if adaptive is None else adaptive) and not torch.is_grad_enabled():
            return adaptive_grid(lambda p, z: self._field(p, z, params), condition, R, clamp=self.cfg.clamp, chunk=step)
        x = torch.from_numpy(grid_points(R)).to(self.device).reshape(1, -1, 3)  # (1, R^3, 3)
        B = condition.shape[0]
        # When a gradient is wanted for the condition or a swapped weight, each chunk is recomputed in
        # the backward pass (activation checkpointing), so the decode keeps only the (B, R^3) outputs,
        # not every layer's activations. (A gradient to the base weights alone takes the plain path.)
        remat = torch.is_grad_enabled() and (
            condition.requires_grad or any(v.requires_grad for v in (params or {}).values())
        )
        out = []
        for c in x.split(step, dim=1):
            c = c.expand(B, -1, -1)  # (B, chunk, 3)
            if remat:
                out.append(checkpoint(self._field, c, condition, params, use_reentrant=False))
            else:
                out.append(self._field(c, condition, params))  # (B, chunk)
        return torch.cat(out, dim=1).clamp(-self.cfg.clamp, self.cfg.clamp).reshape(B, R, R, R)

    def sdf_grid_batched(
        self,
        conditions: torch.Tensor,
        seeds: Sequence[int],
        params_batch: Mapping[str, torch.Tensor],
        resolution: int | None = None,
    ) -> torch.Tensor:
        """Decode K weight sets at once: params_batch name -> (K, ...), conditions (K, d_z) -> (K, R, R, R)."""
        from weightspace.generators.neural_field.batched import batched_sdf_grid

        conditions = self._check_condition(conditions)
        _check_seeds(seeds, conditions.shape[0], "weight sets")
        return batched_sdf_grid(self, params_batch, conditions, int(resolution or self.cfg.resolution))

    # --- losses used for fitting ------------------------------------------------------
    def observation_loss(
        self, points: torch.Tensor, condition: torch.Tensor, seeds: Sequence[int], *, params: Params | None = None
    ) -> torch.Tensor:
        """Loss of observed surface points (B, P, 3) as reconstruction from points scores a code, here for
        weights too: mean |f| at the points, plus `recon_free_weight` x the free-space term (|f| at seeded
        queries near the cloud equals their distance to it) and, for a closed cloud, `recon_outside_weight`
        x the known-outside term (f at least that distance where the box boundary reaches without
        passing the cloud). The protocol's default, |f| at the points alone, is met by a field that is 0
        near every point whatever its sign: fitted that way, members decoded near-empty (IoU 0.05)."""
        from weightspace.generators.neural_field.losses import unsigned_distance
        from weightspace.generators.neural_field.reconstruct import (
            free_space_queries,
            observation_terms,
            outside_queries,
            outside_term,
        )

        condition = self._check_condition(condition)
        _check_seeds(seeds, condition.shape[0], "conditions")
        points = points.to(self.device, torch.float32)  # (B, P, 3)
        cfg, clamp = self.cfg, self.cfg.clamp

        def field(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return self._field(x, z, params)

        queries = free_space_queries(points, seeds, cfg.recon_queries)  # (B, Q, 3)
        target = unsigned_distance(queries, points, clamp)  # (B, Q)
        surf, free = observation_terms(field, points, queries, target, condition, clamp)  # (B,), (B,)
        loss = surf + cfg.recon_free_weight * free
        if cfg.recon_outside_weight > 0:
            outs, out_d, out_mask = outside_queries(points.detach(), seeds, cfg.recon_queries, band=2 * clamp)
            if bool(out_mask.any()):
                loss = loss + cfg.recon_outside_weight * out_mask * outside_term(field, outs, out_d, condition, clamp)
        return loss.mean()

    def training_loss(
        self, grids: torch.Tensor, condition: torch.Tensor, seeds: Sequence[int], *, params: Params | None = None,
        n_points: int = 4096,
    ) -> torch.Tensor:
        """Clamped L1 at seeded points (half uniform, half near the surface) read trilinearly from grids (B, R, R, R)."""
        condition = self._check_condition(condition)
        seeds = _check_seeds(seeds, condition.shape[0], "grids")
        grids = grids.to(self.device, torch.float32)
        if grids.dim() != 4 or grids.shape[0] != condition.shape[0]:
            raise InputError(f"grids must have shape ({condition.shape[0]}, R, R, R), got {tuple(grids.shape)}")
        R = grids.shape[-1]
        x = torch.stack([self._loss_points(self._loss_band(grids[b]), R, s, n_points) for b, s in enumerate(seeds)])
        x = x.to(self.device)  # (B, P, 3)
        target = sample_grid(grids, x)  # (B, P)
        return clamped_l1(self._field(x, condition, params), target, self.cfg.clamp)

    def training_loss_batched(
        self, grids: torch.Tensor, conditions: torch.Tensor, seeds: Sequence[Sequence[int]],
        params_batch: Mapping[str, torch.Tensor], *, n_points: int = 4096, method: str | None = None,
    ) -> torch.Tensor:
        """`training_loss` of B members at once (capability BatchedTrainingLoss): grids (B, R, R, R),
        conditions (B, d_z), seeds[b] the D draw seeds of member b, params_batch name -> (B, ...) -> (B,).

        Member b's D draws read the same seeded points as `training_loss` of its grid repeated D
        times; its D P points go through its own weights (`batched.batched_field`: stacked in a grouped
        matmul, vmap, or a loop; `method` default `batched.DEFAULT_FIT_METHOD`, the measured fastest, or
        for LoRA factors kept factored (StackedLowRank entries) `batched.LOW_RANK_FIT_METHOD`).
        """
        from weightspace.generators.lowrank import is_low_rank
        from weightspace.generators.neural_field.batched import DEFAULT_FIT_METHOD, LOW_RANK_FIT_METHOD, batched_field, check_params_batch

        conditions = self._check_condition(conditions)
        B = conditions.shape[0]
        draws = _check_draw_seeds(seeds, B)
        grids = grids.to(self.device, torch.float32)
        if grids.dim() != 4 or grids.shape[0] != B:
            raise InputError(f"grids must have shape ({B}, R, R, R), got {tuple(grids.shape)}")
        check_params_batch(self, params_batch, B)
        R, x = grids.shape[-1], []
        for b in range(B):
            band = self._loss_band(grids[b])  # once per member, not per draw
            x.append(torch.cat([self._loss_points(band, R, s, n_points) for s in draws[b]]))  # (D P, 3)
        x = torch.stack(x).to(self.device)  # (B, D P, 3)
        target = sample_grid(grids, x)  # (B, D P)
        method = method or (LOW_RANK_FIT_METHOD if is_low_rank(params_batch) else DEFAULT_FIT_METHOD)
        pred = batched_field(self, params_batch, x, conditions, method=method)  # (B, D P)
        return clamped_l1(pred, target, self.cfg.clamp, dim=-1)  # (B,)

    def _loss_band(self, grid: torch.Tensor) -> torch.Tensor:
        """Grid vertices in the band |sdf| < clamp of one grid (R, R, R): (n_band, 3) indices (all vertices when none)."""
        band = torch.nonzero(grid.abs().cpu() < self.cfg.clamp)  # (n_band, 3) indices
        if band.shape[0] == 0:
            R = grid.shape[-1]
            band = torch.nonzero(torch.ones(R, R, R, dtype=torch.bool))
        return band

    @staticmethod
    def _loss_points(band: torch.Tensor, R: int, seed: int, n_points: int) -> torch.Tensor:
        """The seeded loss points of one draw on a grid of resolution R: half uniform in [-1, 1]^3, half
        near the surface, at `band` vertices (`_loss_band`) jittered by half a voxel: (P, 3) world units."""
        g = item_generator(seed, "nf-grid-loss")
        uniform = torch.rand(n_points // 2, 3, generator=g) * 2 - 1  # (P/2, 3)
        pick = band[torch.randint(band.shape[0], (n_points - n_points // 2,), generator=g)].float()  # (P/2, 3) indices
        near = pick / (R - 1) * 2 - 1 + (torch.rand(pick.shape, generator=g) - 0.5) * (2 / (R - 1))
        return torch.cat([uniform, near.clamp(-1, 1)])  # (P, 3)

    # --- weight-space views --------------------------------------------------------------
    def effective_weights(self, condition: torch.Tensor) -> dict[str, torch.Tensor]:
        """Biases a code induces in the layers that read it: b + W_z z for layers.0 and layers.skip, each (B, width)."""
        return self.net.code_shift(self._check_condition(condition))

    # Chosen by member fidelity (benchmarks/member_fidelity.py): 50 steps left ladders' rungs too shallow
    # to keep their holes (robust Betti), 300 steps with two point draws per step keep them.
    fit_defaults = {
        "condition": {"steps": 50, "lr": 1e-2, "draws": 1},
        "lora": {"steps": 300, "lr": 3e-3, "draws": 2},
        "layers": {"steps": 300, "lr": 3e-4, "draws": 2},
    }

    def fit_excluded(self) -> tuple[str, ...]:
        """The training shapes' codes are not on the path of a decode from a given code."""
        return ("codes",)

    def module_groups(self) -> dict[str, list[str]]:
        groups = {f"layer{i}": [f"layers.{i}", f"norms.{i}"] for i in range(self.cfg.depth)}
        groups["linear"] = [f"layers.{i}" for i in range(self.cfg.depth)] + ["out"]
        groups["norms"] = [f"norms.{i}" for i in range(self.cfg.depth)]
        groups["latent_input"] = ["layers.0", f"layers.{self.cfg.skip}"]
        groups["out"] = ["out"]
        groups["codes"] = ["codes"]
        return groups

    # --- persistence --------------------------------------------------------------------
    def save(self, folder: str | Path, *, extra_config: Mapping[str, Any] | None = None) -> Path:
        config = dict(self.config)
        config.update(dict(extra_config or {}))
        config["kind"] = KIND
        config["model"] = config_to_dict(self.cfg)
        return save_checkpoint(folder, self.net.state_dict(), config)

    @classmethod
    def from_checkpoint(cls, state: dict[str, torch.Tensor], config: dict[str, Any]) -> "NeuralFieldGenerator":
        if config.get("kind") != KIND:
            raise InputError(f"config.json: field 'kind' must be {KIND!r}, got {config.get('kind')!r}")
        if "model" not in config:
            raise InputError("config.json: missing field 'model' (the architecture)")
        cfg = config_from_dict(FieldConfig, config["model"], where="config.json: model")
        gen = cls(cfg)
        check_state_matches(state, gen.net.state_dict(), "config.json model")
        gen.net.load_state_dict({k: v.float() for k, v in state.items()})
        gen.config.update({k: v for k, v in config.items() if k not in ("kind", "model")})
        return gen

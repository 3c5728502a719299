"""Typed configs of the neural-field auto-decoder (architecture) and of its training, read by the one loader.

Every field carries its type, bounds and help text (`weightspace.runtime.config.option`); build a config
from JSON with `config_from_dict(FieldConfig, raw, where="config.json: model")` and one made in code with
`check_config(cfg, where="model")`. `validate` holds only the checks bounds cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass

from weightspace.runtime.config import field_path, option
from weightspace.runtime.errors import InputError


@dataclass
class FieldConfig:
    """Architecture, code prior and reconstruction defaults; stored in config.json under `model`."""

    n_codes: int = option(1, min=1, help="N: one latent code per training shape")
    d_z: int = option(32, min=1, help="latent code size")
    width: int = option(96, min=1, help="hidden width of every layer (96 trains 2x faster per point than 128 on this CPU)")
    depth: int = option(5, min=1, help="number of hidden layers (each Linear -> LayerNorm -> ReLU)")
    skip: int = option(2, min=1, help="hidden layer that re-reads [gamma(x), z] (DeepSDF's latent skip); 0 < skip < depth")
    pe_freqs: int = option(0, max=12, help="positional-encoding octaves L (0 = raw xyz)")
    clamp: float = option(0.1, min=0, exclusive_min=True,
                          help="DeepSDF clamp delta of the L1 loss; decoded grids are truncated to +-clamp")
    resolution: int = option(32, min=2, help="default decode resolution")
    families: list[str] = option(default_factory=list, help="family names, in label order (code priors; distinct)")
    prior_shrinkage: float = option(0.2, min=0, max=1, help="covariance shrinkage toward its diagonal for the code Gaussians")
    sample_temperature: float = option(1.0, min=0, exclusive_min=True, help="scale of the Gaussian's spread when sampling codes")
    recon_steps: int = option(300, min=1, help="Adam steps of code optimisation from points "
                              "(150 -> 300: val IoU 0.57 -> 0.61, Betti 0.19 -> 0.44)")
    recon_lr: float = option(0.02, min=0, exclusive_min=True, help="Adam learning rate of code optimisation")
    recon_restarts: int = option(3, min=1, help="inits per item (best training codes); the lowest final loss wins")
    recon_explore: int = option(9, help="more inits per item, pruned to recon_restarts after a fifth of the steps "
                                "(0 -> 9: a partial torus IoU 0.14 -> 0.57)")
    recon_prior: float = option(1e-3, min=0, help="weight of the Mahalanobis code prior in reconstruction")
    recon_free_weight: float = option(1.0, min=0, help="weight of the free-space term (|f| ~ distance to the points); "
                                      "0 for partial scans")
    recon_outside_weight: float = option(1.0, min=0, help="weight of the known-outside term (closed clouds only; 0 = off)")
    recon_queries: int = option(1024, min=1, help="free-space query points per item")
    recon_batch: int = option(512, min=1, help="observed points and queries per item and step (seeded subset)")
    chunk: int = option(8192, min=1, help="points per evaluation chunk (memory bound of a decode)")
    adaptive_decode: bool = option(True, help="decodes without gradients go coarse to fine (exact near the surface)")

    def validate(self, where: str = "model") -> "FieldConfig":
        """What bounds cannot say: the skip layer against the depth, distinct family names."""
        def bad(name: str, why: str) -> InputError:
            return InputError(f"{field_path(where, name)}: {why}, got {getattr(self, name)!r}")

        if not self.skip < self.depth:
            raise bad("skip", f"must satisfy 0 < skip < depth={self.depth}")
        if len(set(self.families)) != len(self.families):
            raise bad("families", "must be distinct strings")
        return self


@dataclass
class TrainConfig:
    """Training schedule; a JSON config file may override any field under `train`."""

    minutes: float = option(45.0, min=0, exclusive_min=True,
                            help="wall-time budget; the cosine schedule ends at whichever of steps/minutes comes first")
    steps: int = option(20000, min=1, help="optimiser steps at most")
    points_per_shape: int = option(64, min=1, help="SDF samples per shape per step (every training shape is in every step)")
    bank_size: int = option(16384, min=1, help="fixed SDF samples per shape, drawn once at startup")
    near_sigmas: list[float] = option(default_factory=lambda: [0.01, 0.04], min=0, exclusive_min=True,
                                      help="Gaussian offsets from the surface (at least one)")
    uniform_fraction: float = option(0.15, min=0, max=1, exclusive_max=True, help="share of the bank drawn uniformly in the box")
    grid_fraction: float = option(0.3, min=0, help="share of the bank at the training grid's vertices with |sdf| < clamp "
                                  "(below 1 - uniform_fraction)")
    lr: float = option(2e-3, min=0, exclusive_min=True, help="network learning rate (Adam)")
    code_lr: float = option(1e-2, min=0, exclusive_min=True, help="latent code learning rate (Adam)")
    code_reg: float = option(1e-4, min=0, help="weight of the code prior mean ||z||^2 (DeepSDF's code regularisation)")
    warmup_steps: int = option(100, help="linear learning-rate warm-up steps")
    ema_decay: float = option(0.0, min=0, max=1, exclusive_max=True, help="EMA of all network weights (0 = off)")
    seed: int = option(0, help="seed of the sample bank, the initialisation and every draw")
    log_every: int = option(25, min=1, help="steps between loss-log rows")
    save_every_minutes: float = option(5.0, min=0, exclusive_min=True, help="wall minutes between checkpoints")

    def validate(self, where: str = "train") -> "TrainConfig":
        """What bounds cannot say: a non-empty sigma list, the two bank shares together."""
        def bad(name: str, why: str) -> InputError:
            return InputError(f"{field_path(where, name)}: {why}, got {getattr(self, name)!r}")

        if not self.near_sigmas:
            raise bad("near_sigmas", "must be a non-empty list of positive numbers")
        if not self.grid_fraction < 1.0 - self.uniform_fraction:
            raise bad("grid_fraction", "must be in [0, 1 - uniform_fraction)")
        return self

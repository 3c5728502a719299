"""Typed configs of the latent diffusion generator (architecture) and of its training, with validation."""

from __future__ import annotations

import math

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from weightspace.runtime.errors import InputError

FRONTS = ("haar", "plain")
SAMPLER_NAMES = ("ddim", "ddpm")
COND_LAYOUTS = ("grid", "pooled")
STAGES = ("ae", "diffusion", "all")


@dataclass
class ModelConfig:
    """Architecture and sampling defaults; stored in a checkpoint's config.json under `model`."""

    resolution: int = 32  # TSDF grid resolution R (a multiple of 4)
    truncation: float = 0.2  # TSDF truncation in world units (from the data manifest)
    front: str = "haar"  # autoencoder front end: haar (one 3D Haar level) | plain (stride-2 conv)
    ae_channels: list[int] = field(default_factory=lambda: [32, 64])  # conv widths at R/2 and R/4
    latent_channels: int = 4  # latent grid is (latent_channels, R/4, R/4, R/4)
    patch: int = 2  # latent patch size; tokens = (R / 4 / patch)^3
    width: int = 128  # denoiser width
    depth: int = 4  # denoiser blocks
    heads: int = 4  # attention heads
    # Condition layout. grid: one condition token per latent token, on the same cells (points are
    # scattered into a coarse grid, voxels convolved down to it, ConvONet-style), added to the
    # denoiser's input tokens as well as attended to. pooled: M tokens by attention pooling, seen
    # through cross-attention only (the first shipped checkpoint; configs without the field load as it).
    cond_layout: str = "grid"
    cond_tokens: int = 0  # M: condition tokens; 0 = the layout's own (grid: (R / 4 / patch)^3, pooled: 8)
    cond_dim: int = 64  # d: condition token width
    families: list[str] = field(default_factory=list)  # family names, in label order
    timesteps: int = 1000  # T of the DDPM
    sample_steps: int = 16  # default DDIM steps
    guidance: float = 2.0  # classifier-free guidance scale (1 = no guidance)
    sampler: str = "ddim"  # ddim | ddpm

    @property
    def n_cond_tokens(self) -> int:
        """M, with cond_tokens = 0 resolved: one per latent token (grid) or 8 (pooled)."""
        if self.cond_tokens:
            return self.cond_tokens
        return (self.resolution // 4 // self.patch) ** 3 if self.cond_layout == "grid" else 8

    def validate(self, where: str = "model") -> "ModelConfig":
        def bad(name: str, why: str) -> InputError:
            return InputError(f"{where}.{name}: {why}, got {getattr(self, name)!r}")

        for name in ("latent_channels", "patch", "width", "depth", "heads", "cond_dim", "sample_steps", "timesteps"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        if self.cond_tokens < 0:
            raise bad("cond_tokens", "must be >= 0 (0: the layout's own count)")
        if self.resolution < 8 or self.resolution % 4:
            raise bad("resolution", "must be a multiple of 4 and >= 8")
        if not self.truncation > 0:
            raise bad("truncation", "must be > 0")
        if self.front not in FRONTS:
            raise bad("front", f"must be one of {list(FRONTS)}")
        if len(self.ae_channels) != 2 or any(c < 8 or c % 8 for c in self.ae_channels):
            raise bad("ae_channels", "must be two multiples of 8")
        if (self.resolution // 4) % self.patch:
            raise bad("patch", f"must divide the latent resolution {self.resolution // 4}")
        if self.width % self.heads or self.width < 16:
            raise bad("width", f"must be >= 16 and divisible by heads={self.heads}")
        if self.cond_layout not in COND_LAYOUTS:
            raise bad("cond_layout", f"must be one of {list(COND_LAYOUTS)}")
        cells = (self.resolution // 4 // self.patch) ** 3
        if self.cond_layout == "grid" and self.cond_tokens not in (0, cells):
            raise bad("cond_tokens", f"must be 0 or {cells} (one per latent token) with cond_layout 'grid'")
        for name in ("latent_channels", "depth", "heads", "cond_dim", "sample_steps"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        if self.cond_dim % 4:
            raise bad("cond_dim", "must be a multiple of 4")
        if not 1 <= self.sample_steps <= self.timesteps:
            raise bad("sample_steps", f"must be in 1..timesteps={self.timesteps}")
        if self.guidance < 0:
            raise bad("guidance", "must be >= 0 (0: unconditional, 1: no guidance)")
        if self.sampler not in SAMPLER_NAMES:
            raise bad("sampler", f"must be one of {list(SAMPLER_NAMES)}")
        if len(set(self.families)) != len(self.families):
            raise bad("families", "must not repeat a name")
        return self


@dataclass
class TrainConfig:
    """Training schedule; the JSON config file may override any field under `train`."""

    minutes: float = 55.0  # total wall-time budget for the stages run (autoencoder + diffusion)
    ae_fraction: float = 0.5  # share of the budget for the autoencoder when --stage all
    ae_steps: int = 0  # > 0: exactly this many autoencoder steps (lr by step), reproducible across resumes
    diffusion_steps: int = 0  # > 0: exactly this many diffusion steps; 0: both stages budget by wall time
    ae_batch: int = 16
    ae_lr: float = 2e-3
    near_surface_weight: float = 4.0  # extra L1 weight where |sdf| < 2 voxels
    sign_weight: float = 0.5  # weight of the inside/outside BCE term
    diffusion_batch: int = 32
    diffusion_lr: float = 5e-4
    ema_decay: float = 0.999
    cond_drop: float = 0.1  # probability of the null condition (classifier-free guidance)
    # Probability that a family-conditioned or null item draws its time step from the noisier half
    # [T/2, T) instead of [0, T): where a sample's global structure (its parts and holes) is decided.
    high_t_prob: float = 0.0
    kind_probs: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.3])  # family, points, voxels
    train_points: int = 1024  # points per training point cloud
    point_sigma_max: float = 0.02  # point noise sigma drawn from [0, this]
    partial_prob: float = 0.3  # chance of cutting the cloud by a random plane
    seed: int = 0
    threads: int = 1  # torch threads; 1 avoids OpenMP spin-waits on a shared machine
    log_every: int = 25  # steps between loss-log rows
    checkpoint_seconds: float = 120.0  # wall seconds between checkpoints

    def validate(self, where: str = "train") -> "TrainConfig":
        def bad(name: str, why: str) -> InputError:
            return InputError(f"{where}.{name}: {why}, got {getattr(self, name)!r}")

        for name in ("minutes", "ae_lr", "diffusion_lr", "checkpoint_seconds"):
            if not getattr(self, name) > 0:
                raise bad(name, "must be > 0")
        for name in ("ae_fraction", "ema_decay", "cond_drop", "partial_prob", "high_t_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise bad(name, "must be in [0, 1)")
        for name in ("ae_batch", "diffusion_batch", "train_points", "threads", "log_every"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        if len(self.kind_probs) != 3 or any(p < 0 for p in self.kind_probs) or sum(self.kind_probs) <= 0:
            raise bad("kind_probs", "must be three non-negative weights (family, points, voxels)")
        for name in ("point_sigma_max", "ae_steps", "diffusion_steps", "near_surface_weight", "sign_weight"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        return self


def _check_type(value: Any, annotation: str, where: str) -> Any:
    """Check one JSON value against a dataclass field annotation (int, float, str, list[...])."""
    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if annotation == "str":
        if not isinstance(value, str):
            raise InputError(f"{where}: expected a string, got {value!r}")
        return value
    if annotation.startswith("list["):
        if not isinstance(value, list):
            raise InputError(f"{where}: expected a list, got {value!r}")
        inner = annotation[5:-1]
        return [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    raise AssertionError(f"unhandled annotation {annotation}")


def from_mapping(cls, data: Mapping[str, Any] | None, where: str):
    """Build a config dataclass from a JSON object; unknown keys and wrong types raise InputError naming the field."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown field(s) {unknown}; valid fields are {sorted(fields)}")
    kwargs = {k: _check_type(v, str(fields[k].type), f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs).validate(where)


def model_config_from(data: Mapping[str, Any] | None, where: str = "model") -> ModelConfig:
    return from_mapping(ModelConfig, data, where)


def saved_model_config(data: Mapping[str, Any] | None, where: str = "model") -> ModelConfig:
    """The architecture stored with a checkpoint; one saved before `cond_layout` existed is 'pooled'."""
    if isinstance(data, Mapping) and "cond_layout" not in data:
        data = {**data, "cond_layout": "pooled"}
    return model_config_from(data, where)


def train_config_from(data: Mapping[str, Any] | None, where: str = "train") -> TrainConfig:
    return from_mapping(TrainConfig, data, where)

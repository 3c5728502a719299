"""Typed configs of the latent diffusion generator (architecture) and of its training, read by the one loader.

Every field carries its type, bounds and help text (`weightspace.runtime.config.option`); build a config
from JSON with `config_from_dict(ModelConfig, raw, where="config.json: model")` and one made in code with
`check_config(cfg, where="model")`. `validate` holds only the checks bounds cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from weightspace.runtime.config import config_from_dict, field_path, option
from weightspace.runtime.errors import InputError

Front = Literal["haar", "plain"]
LatentPosterior = Literal["point", "gaussian"]  # what the encoder gives: a latent, or a Gaussian's mean and log-variance
CondLayout = Literal["grid", "pooled"]
SamplerName = Literal["ddim", "ddpm"]
LossWeighting = Literal["uniform", "min-snr", "truncated-v"]  # per time step, see losses.diffusion_loss
LrSchedule = Literal["run", "piece"]  # what one warm-up and cosine decay span, see TrainConfig.lr_schedule
Prediction = Literal["x0", "v"]  # what the denoiser's output is; the network returns x0 either way
Stage = Literal["ae", "diffusion", "all"]  # what a training run trains: autoencoder, diffusion, or both in turn


@dataclass
class ModelConfig:
    """Architecture and sampling defaults; stored in a checkpoint's config.json under `model`."""

    resolution: int = option(32, min=8, help="TSDF grid resolution R (a multiple of 4)")
    truncation: float = option(0.2, min=0, exclusive_min=True, help="TSDF truncation in world units (from the data manifest)")
    front: Front = option("haar", help="autoencoder front end: haar (one 3D Haar level) or plain (stride-2 conv)")
    ae_channels: list[int] = option(default_factory=lambda: [32, 64], min=8,
                                    help="conv widths at R/2 and R/4: two multiples of 8")
    ae_blocks: int = option(1, min=1, help="residual blocks at R/4 in the encoder and in the decoder each")
    latent_channels: int = option(4, min=1, help="latent grid is (latent_channels, R/4, R/4, R/4)")
    latent_posterior: LatentPosterior = option(
        "point", help="point: the encoder gives the latent; gaussian: it gives a diagonal Gaussian's mean and "
        "log-variance, the autoencoder trains on draws from it with a KL term towards N(0, I) (train.kl_weight), "
        "and everything after training uses the mean")
    patch: int = option(2, min=1, help="latent patch size; tokens = (R / 4 / patch)^3")
    width: int = option(128, min=16, help="denoiser width (divisible by heads)")
    depth: int = option(4, min=1, help="denoiser blocks")
    heads: int = option(4, min=1, help="attention heads")
    prediction: Prediction = option(
        "x0", help="what the denoiser's output stands for: x0 (the clean latent itself) or v (Salimans & Ho 2022: "
        "x0 = sqrt(a) z_t - sqrt(1 - a) v, so the noisy input passes straight through to x0 where noise is low and "
        "the network predicts a correction); the network returns x0 either way; configs saved without it are x0")
    self_condition: bool = option(
        False, help="self-conditioning (Chen et al. 2022, 'Analog Bits'): the denoiser also reads its own previous x0 "
        "estimate, trained on half the batches and fed the estimate of the step before when sampling; configs saved "
        "without the field load without it")
    refine: int = option(
        0, min=0, help="> 0: a convolutional refinement at the latent grid with this many channels after the token "
        "output: three 3x3x3 convolutions over the estimate and the noisy latent, with the time and condition "
        "added after the first, whose result is added to the estimate; the last starts at zero, so a denoiser "
        "given it later computes what it computed without it. Lets the estimate vary within a patch's cells, "
        "where thin handles and rungs live; 0 (configs saved without the field): none")
    cond_layout: CondLayout = option(
        "grid", help="grid: one condition token per latent token, on the same cells (points scattered into a coarse "
        "grid, voxels convolved down to it, ConvONet-style), added to the denoiser's input tokens as well as attended "
        "to; pooled: M tokens by attention pooling, seen through cross-attention only (the first shipped checkpoint; "
        "configs saved without the field load as it)")
    cond_tokens: int = option(0, help="M: condition tokens; 0 = the layout's own (grid: (R / 4 / patch)^3, pooled: 8)")
    cond_dim: int = option(64, min=4, help="d: condition token width (a multiple of 4)")
    families: list[str] = option(default_factory=list, help="family names, in label order (distinct)")
    timesteps: int = option(1000, min=1, help="T of the DDPM")
    sample_steps: int = option(16, min=1, help="default DDIM steps (at most timesteps)")
    guidance: float = option(2.0, min=0, help="classifier-free guidance scale (0: unconditional, 1: no guidance)")
    sampler: SamplerName = option("ddim", help="default sampler")

    @property
    def n_cond_tokens(self) -> int:
        """M, with cond_tokens = 0 resolved: one per latent token (grid) or 8 (pooled)."""
        if self.cond_tokens:
            return self.cond_tokens
        return (self.resolution // 4 // self.patch) ** 3 if self.cond_layout == "grid" else 8

    def validate(self, where: str = "model") -> "ModelConfig":
        """What bounds cannot say: multiples, divisibility and one field against another."""
        def bad(name: str, why: str) -> InputError:
            return InputError(f"{field_path(where, name)}: {why}, got {getattr(self, name)!r}")

        if self.resolution % 4:
            raise bad("resolution", "must be a multiple of 4 and >= 8")
        if len(self.ae_channels) != 2 or any(c % 8 for c in self.ae_channels):
            raise bad("ae_channels", "must be two multiples of 8")
        if (self.resolution // 4) % self.patch:
            raise bad("patch", f"must divide the latent resolution {self.resolution // 4}")
        if self.width % self.heads:
            raise bad("width", f"must be divisible by heads={self.heads}")
        cells = (self.resolution // 4 // self.patch) ** 3
        if self.cond_layout == "grid" and self.cond_tokens not in (0, cells):
            raise bad("cond_tokens", f"must be 0 or {cells} (one per latent token) with cond_layout 'grid'")
        if self.cond_dim % 4:
            raise bad("cond_dim", "must be a multiple of 4")
        if self.sample_steps > self.timesteps:
            raise bad("sample_steps", f"must be in 1..timesteps={self.timesteps}")
        if len(set(self.families)) != len(self.families):
            raise bad("families", "must not repeat a name")
        return self


@dataclass
class TrainConfig:
    """Training schedule; the JSON config file may override any field under `train`."""

    minutes: float = option(55.0, min=0, exclusive_min=True,
                            help="total wall-time budget for the stages run (autoencoder + diffusion)")
    ae_fraction: float = option(0.5, min=0, max=1, exclusive_max=True,
                                help="share of the budget for the autoencoder with --stage all")
    ae_steps: int = option(0, help="> 0: exactly this many autoencoder steps (lr by step), reproducible across resumes")
    diffusion_steps: int = option(0, help="> 0: exactly this many diffusion steps; 0: both stages budget by wall time")
    ae_batch: int = option(16, min=1, help="autoencoder batch size")
    ae_lr: float = option(2e-3, min=0, exclusive_min=True, help="autoencoder learning rate")
    near_surface_weight: float = option(4.0, min=0, help="extra L1 weight where |sdf| < 2 voxels")
    sign_weight: float = option(0.5, min=0, help="weight of the inside/outside BCE term")
    kl_weight: float = option(1e-3, min=0, help="with model.latent_posterior gaussian: weight of the KL term, "
                              "averaged over latent elements as the reconstruction terms are over voxels")
    diffusion_batch: int = option(32, min=1, help="diffusion batch size")
    diffusion_lr: float = option(5e-4, min=0, exclusive_min=True, help="diffusion learning rate")
    lr_schedule: LrSchedule = option(
        "run", help="run: one warm-up and cosine decay (to 5%) over the whole run, so a piece continued from a finished "
        "checkpoint (--continue-from) goes on at the run's position in it, late in the cosine and at a small fraction "
        "of the learning rate; piece: a continued piece gets its own warm-up and cosine over its own steps or minutes")
    ema_decay: float = option(0.999, min=0, max=1, exclusive_max=True, help="EMA decay of the weights a checkpoint holds")
    cond_drop: float = option(0.1, min=0, max=1, exclusive_max=True,
                              help="probability of the null condition (classifier-free guidance)")
    self_condition_prob: float = option(
        0.5, min=0, max=1, help="with model.self_condition: the share of diffusion batches that first estimate x0 "
        "without gradient and train on that estimate as the self-condition (the rest get zeros)")
    high_t_prob: float = option(
        0.0, min=0, max=1, exclusive_max=True, help="probability that a family-conditioned or null item draws its time "
        "step from the noisier half [T/2, T) instead of [0, T): where a sample's global structure (its parts and "
        "holes) is decided")
    loss_weighting: LossWeighting = option(
        "uniform", help="diffusion loss weight per time step: uniform (x0 loss), min-snr (min(SNR, snr_gamma)) or "
        "truncated-v (1 + min(SNR, snr_gamma)); normalised to mean 1 over t")
    snr_gamma: float = option(5.0, min=0, exclusive_min=True, help="the SNR cap of min-snr and truncated-v")
    kind_probs: list[float] = option(default_factory=lambda: [0.3, 0.4, 0.3], min=0,
                                     help="weights of the condition kinds family, points, voxels (three, not all 0)")
    train_points: int = option(1024, min=1, help="points per training point cloud")
    point_sigma_max: float = option(0.02, min=0, help="point noise sigma drawn from [0, this]")
    partial_prob: float = option(0.3, min=0, max=1, exclusive_max=True, help="chance of cutting the cloud by a random plane")
    seed: int = option(0, help="seed of the weights' initialisation and of every draw")
    threads: int = option(1, min=1, help="torch threads; 1 avoids OpenMP spin-waits on a shared machine")
    log_every: int = option(25, min=1, help="steps between loss-log rows")
    checkpoint_seconds: float = option(120.0, min=0, exclusive_min=True, help="wall seconds between checkpoints")

    def validate(self, where: str = "train") -> "TrainConfig":
        """What bounds cannot say: the condition kinds' weights as a whole."""
        if len(self.kind_probs) != 3 or sum(self.kind_probs) <= 0:
            raise InputError(f"{field_path(where, 'kind_probs')}: must be three non-negative weights (family, points, voxels), "
                             f"not all 0, got {self.kind_probs!r}")
        return self


def saved_model_config(data: Mapping[str, Any] | None, where: str = "model") -> ModelConfig:
    """The architecture stored with a checkpoint; one saved before `cond_layout` existed is 'pooled'."""
    if isinstance(data, Mapping) and "cond_layout" not in data:
        data = {**data, "cond_layout": "pooled"}
    return config_from_dict(ModelConfig, data, where=where)

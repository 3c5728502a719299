"""Training loop of the latent diffusion generator: autoencoder stage, then diffusion stage on its
latents; wall-time budgeted, resumable, with EMA weights, a JSONL loss log and safetensors checkpoints.

Files in the output folder:
  model.safetensors + config.json   the EMA generator (a usable checkpoint at every save)
  train_state.safetensors           raw weights and Adam moments, for resuming
  loss_log.jsonl                    one row per `log_every` steps: stage, step, seconds, loss, lr (+ val_iou)
  training_record.json              every invocation's wall time, the totals, and the loss log (`record`)

Under torchrun (`runtime.distributed`) every rank draws each step's whole batch and computes the
loss of its contiguous share; DDP averages the gradients, rank 0 alone writes these files, and every
rank resumes from the same train_state.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, get_args

import numpy as np
import torch
from safetensors.torch import save_file

from weightspace.data.dataset import ShapeDataset
from weightspace.generators.latent_diffusion.config import ModelConfig, Stage, TrainConfig, saved_model_config
from weightspace.generators.latent_diffusion.losses import augment_points, autoencoder_loss, diffusion_loss, gaussian_kl, voxels_from_grids
from weightspace.generators.latent_diffusion.model import LatentDiffusionGenerator
from weightspace.generators.latent_diffusion.network import LatentDiffusionNet
from weightspace.generators.latent_diffusion.record import LOSS_LOG, RECORD_NAME, take_history, write_training_record
from weightspace.runtime.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint, load_state, refuse_non_finite, state_hash, state_metadata
from weightspace.runtime.config import check_config
from weightspace.runtime.distributed import (
    Ranks,
    Stopped,
    StopRequests,
    barrier,
    data_parallel,
    from_main,
    init_ranks,
    mean_over_ranks,
    same_settings,
    saved_state,
    shard,
    share,
)
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_path, file_digest
from weightspace.runtime.optim_state import adam_tensors, restore_adam
from weightspace.runtime.seeding import item_generator
from weightspace.runtime.train_folder import TrainLock, changed, check_out, check_resume, clear_run, trim_log

TRAIN_STATE = "train_state.safetensors"
RUN_FILES = (TRAIN_STATE, WEIGHTS_NAME, CONFIG_NAME, LOSS_LOG, RECORD_NAME)  # what --fresh deletes
# the model fields an autoencoder's weights depend on: two checkpoints agreeing on them can share one
AUTOENCODER_FIELDS = ("resolution", "truncation", "front", "ae_channels", "ae_blocks", "latent_channels", "latent_posterior")


@dataclasses.dataclass
class TrainingData:
    """Training tensors held in memory: grids (N, R, R, R) world units, labels (N,), points (N, P, 3)."""

    grids: torch.Tensor
    labels: torch.Tensor
    points: torch.Tensor
    families: list[str]
    resolution: int
    truncation: float
    manifest_hash: str
    pose: str = "random"  # the shapes' pose (`data make --pose`, or "as given" for imported meshes); "+"-joined when mixed


def rows_hash(rows: list[dict]) -> str:
    """The first 16 hex digits of the SHA-256 of the training rows as sorted JSON: what a checkpoint
    records of its data (`data.manifest_hash`) and how its training folder is recognised."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def load_training_data(data_dir: str | Path, split: str | None = "train") -> TrainingData:
    """Read a data folder (`weightspace data make`) into memory for training."""
    from weightspace.data.families import FAMILY_NAMES, row_pose

    ds = ShapeDataset(data_dir, split=split)
    names = {str(r.get("family", "")) for r in ds.rows}
    unknown = sorted(names - set(FAMILY_NAMES))
    families = list(FAMILY_NAMES) + unknown  # imported shapes keep their own family names after the procedural ones
    labels = torch.tensor([families.index(str(r.get("family", ""))) for r in ds.rows], dtype=torch.int64)  # (N,)
    truncs = {float(r["truncation"]) for r in ds.rows if "truncation" in r}
    if len(truncs) != 1:
        raise InputError(f"{data_dir}: expected one TSDF truncation across the manifest, got {sorted(truncs) or 'none'}")
    grids = torch.from_numpy(np.array(ds.grids, dtype=np.float32))  # (N, R, R, R)
    points = torch.stack([ds[i]["points"] for i in range(len(ds))])  # (N, P, 3)
    digest = rows_hash(ds.rows)
    poses = sorted({row_pose(r) for r in ds.rows})
    return TrainingData(grids, labels, points, families, int(grids.shape[-1]), truncs.pop(), digest, "+".join(poses))


class EMA:
    """Exponential moving average of a module's parameters and buffers, with the usual warm-up
    decay min(decay, (1 + n) / (10 + n))."""

    def __init__(self, net: torch.nn.Module, decay: float):
        self.shadow = copy.deepcopy(net).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, net: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for p_ema, p in zip(self.shadow.parameters(), net.parameters()):
            if p.requires_grad:
                p_ema.lerp_(p.detach(), 1 - d)
        for b_ema, b in zip(self.shadow.buffers(), net.buffers()):
            b_ema.copy_(b)


def _lr(base: float, frac: float, step: int, warmup: int = 50) -> float:
    """Linear warm-up, then cosine decay to 5% over the stage's time budget (frac in [0, 1])."""
    return base * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _save_all(out: Path, net, ema: EMA, opt: torch.optim.Optimizer, cfg: ModelConfig, extra: dict) -> None:
    """The resume state, then the EMA generator checkpoint.

    The resume state is one atomic file: raw weights (net.*), EMA weights (ema.*), Adam moments
    (opt.*) and, in its metadata, the config with the progress counters. A run resumes from that
    file alone, so a kill between the two writes (or between a checkpoint's weights and its
    config.json) leaves a consistent state beside an older exported checkpoint, never a mix of two saves.
    """
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state.update({f"ema.{k}": v for k, v in ema.shadow.state_dict().items()})
    state.update(adam_tensors(opt, net))
    config = {"kind": "latent-diffusion", "model": dataclasses.asdict(cfg), **extra}
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    refuse_non_finite(state, out)  # before either write: a diverged run keeps its last good state and checkpoint
    with atomic_path(out / TRAIN_STATE) as tmp:
        save_file(state, str(tmp), metadata={"config": json.dumps(config)})
    LatentDiffusionGenerator(cfg, ema.shadow).save(out, extra_config=extra)


def _load_resume_state(out: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(config, raw state with net.* and opt.* keys, EMA state dict) of the run in `out`.

    A resume state written before it carried its own config and EMA weights takes both from the
    checkpoint beside it.
    """
    path = out / TRAIN_STATE
    state = load_state(path)
    meta = state_metadata(path)
    if "config" not in meta:
        ema_state, config = load_checkpoint(out)
        return config, state, ema_state
    try:
        config = json.loads(meta["config"])
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: the config in its metadata is not valid JSON ({e})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise InputError(f"{path}: the config in its metadata has no 'model' object")
    return config, state, {k[4:]: v for k, v in state.items() if k.startswith("ema.")}


def _load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"{where}: weights do not match the model in its config ({str(e).splitlines()[0][:200]})") from None


def _adopt_autoencoder(net: LatentDiffusionNet, cfg: ModelConfig, source: str | Path) -> dict[str, Any]:
    """Copy the trained autoencoder of checkpoint `source` into `net`; returns its provenance
    (checkpoint, hash, data, ae_steps, ae_seconds), which the run's progress takes its counts from."""
    from weightspace.generators.registry import resolve_checkpoint

    folder = resolve_checkpoint(source)
    state, config = load_checkpoint(folder)
    src = saved_model_config(config.get("model"), where=f"{folder / 'config.json'}: model")
    differ = [f"{f} {getattr(src, f)!r} vs {getattr(cfg, f)!r}" for f in AUTOENCODER_FIELDS if getattr(src, f) != getattr(cfg, f)]
    if differ:
        raise InputError(f"{folder}: its autoencoder does not fit this model ({'; '.join(differ)})")
    prog = config.get("progress", {})
    if not prog.get("ae_done"):
        raise InputError(f"{folder}: its autoencoder stage has not finished (progress {prog})")
    adopted = {k: v for k, v in state.items() if k.startswith(("ae.", "latent_mean", "latent_std"))}
    _load_into(net, {**net.state_dict(), **adopted}, folder / WEIGHTS_NAME)
    return {"checkpoint": str(source), "autoencoder_hash": state_hash(adopted), "data": config.get("data"),
            "ae_steps": int(prog["ae_steps"]), "ae_seconds": float(prog.get("ae_seconds", 0.0))}


class Logger:
    """Appends loss rows to loss_log.jsonl and prints a progress line with the ETA (`write` False: a
    data-parallel rank other than 0, which writes nothing)."""

    def __init__(self, out: Path, echo: Callable[[str], None], write: bool = True):
        self.path = out / LOSS_LOG
        self.echo = echo
        self.write = write
        self.validated: dict[str, tuple[int, float]] = {}  # stage -> (step, val_iou) of its last validation row

    def row(self, **row: Any) -> None:
        if "val_iou" in row:
            self.validated[row["stage"]] = (row["step"], row["val_iou"])
        if not self.write:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")

    def progress(self, stage: str, step: int, used: float, budget: float, loss: float, extra: str = "",
                 total_steps: int = 0) -> None:
        """One progress line; a stage with a step budget (`total_steps`) ends on steps, not on the clock."""
        if total_steps:
            done = min(1.0, step / total_steps)
            eta = used / max(step, 1) * max(total_steps - step, 0)
            where = f"step {step:6d}/{total_steps}"
        else:
            done, eta, where = min(1.0, used / budget), max(0.0, budget - used), f"step {step:6d}"
        width = 30
        filled = int(width * done)
        self.echo(f"[{stage:9s}] [{'#' * filled}{'.' * (width - filled)}] {where}  loss {loss:.4f}{extra}  "
                  f"{used / 60:5.1f}{'' if total_steps else f'/{budget / 60:.1f}'} min  ETA {eta / 60:4.1f} min")


@torch.no_grad()
def reconstruction_iou(net: LatentDiffusionNet, grids: torch.Tensor, truncation: float) -> float:
    """Mean voxel IoU of the autoencoder on grids (N, R, R, R) world units (solid where < 0)."""
    ious = []
    for chunk in grids.split(16):
        pred = net.ae.decode(net.ae.encode((chunk / truncation).clamp(-1, 1)))  # (b, R, R, R)
        a, b = pred < 0, chunk < 0
        inter = (a & b).flatten(1).sum(1).float()
        union = (a | b).flatten(1).sum(1).float().clamp(min=1)
        ious.append(inter / union)
    return float(torch.cat(ious).mean())


@dataclasses.dataclass
class StageRun:
    """What one training stage shares with the loop that runs it."""

    out: Path
    cfg: ModelConfig
    tc: TrainConfig
    progress: dict
    logger: Logger
    extra: Callable[[], dict]
    resume_state: dict[str, torch.Tensor] | None = None  # raw state of the run resumed (net.*, opt.*)
    device: torch.device = torch.device("cpu")  # where the networks and training tensors live
    ranks: Ranks = Ranks()  # this process's place in a torchrun run (one process: rank 0 of 1)


def _run_stage(name: str, run: StageRun, net, ema: EMA, opt: torch.optim.Optimizer, params: list[torch.Tensor],
               loss_fn: Callable[[torch.Generator], torch.Tensor], *, base_lr: float, total_steps: int, budget_s: float,
               clip: float | None = None, validate: Callable[[], float] | None = None, trained: torch.nn.Module | None = None) -> None:
    """The loop of one stage: step budget `total_steps` (or wall-time `budget_s` when 0), lr warm-up and
    cosine decay, EMA, loss log, progress line, periodic checkpoints; counters live in run.progress.

    Each step draws from its own generator item_generator(seed, name, step), so a resumed run draws
    what an uninterrupted one does. Under torchrun the loss runs as one DDP forward over `trained`
    (the module whose parameters the stage trains; default `net`), rank 0's clock schedules every
    rank, and rank 0 alone logs and saves.

    SIGINT or SIGTERM stops the loop after the step it is in: the counters and a checkpoint are saved
    there, then `Stopped` (a KeyboardInterrupt) is raised (`train_latent_diffusion` writes the
    invocation's record row), so a stopped run loses no step and resumes exactly.
    """
    tc, progress, logger, ranks = run.tc, run.progress, run.logger, run.ranks
    step_loss = data_parallel(trained if trained is not None else net, loss_fn, ranks, run.device)
    if run.resume_state is not None and progress[f"{name}_steps"] > 0:
        restore_adam(opt, net, run.resume_state, run.out / TRAIN_STATE)
    step, used = progress[f"{name}_steps"], progress[f"{name}_seconds"]
    # where the schedule's warm-up and cosine start: the run's beginning, or this piece's (lr_schedule piece)
    from_step, from_s = ((progress.get(f"{name}_piece_from_steps", 0), progress.get(f"{name}_piece_from_seconds", 0.0))
                         if tc.lr_schedule == "piece" else (0, 0.0))
    last_save, t_prev, loss_avg = time.time(), time.time(), None
    net.train()
    with StopRequests() as stop:  # a signal ends the loop after its step, saved (below)
        while step < total_steps if total_steps else used < budget_s:
            gen = item_generator(tc.seed, name, step)
            frac = (step - from_step) / max(total_steps - from_step, 1) if total_steps else (used - from_s) / max(budget_s - from_s, 1e-9)
            for group in opt.param_groups:
                group["lr"] = _lr(base_lr, frac, step - from_step)
            loss = step_loss(gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            ema.update(net, step)
            step += 1
            now = time.time()
            used = from_main(used + now - t_prev, ranks)  # every rank ends the stage at the same step
            t_prev = now
            loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
            if step % tc.log_every == 0:
                value = mean_over_ranks(loss, ranks)  # the whole batch's loss (each rank's share scaled to sum to it)
                row = dict(stage=name, step=step, seconds=round(used, 2), loss=round(value, 6), lr=opt.param_groups[0]["lr"])
                if ranks.main:
                    if validate is not None and step % (tc.log_every * 8) == 0:
                        row["val_iou"] = round(validate(), 4)
                        t_prev = time.time()  # validation time is not training time
                    logger.row(**row)
                    extra = f" (smoothed {loss_avg:.4f})" + (f"  val_iou {row['val_iou']:.3f}" if "val_iou" in row else "")
                    logger.progress(name, step, used, budget_s, row["loss"], extra, total_steps=total_steps)  # the row's loss
            stopping = stop.check(ranks)
            if stopping or now - last_save > tc.checkpoint_seconds:
                progress.update({f"{name}_steps": step, f"{name}_seconds": used})
                if ranks.main:
                    _save_all(run.out, net, ema, opt, run.cfg, run.extra())
                last_save = t_prev = time.time()
            if stopping:
                raise Stopped(f"{name} stage stopped by a signal at step {step}; saved")
    progress.update({f"{name}_steps": step, f"{name}_seconds": used, f"{name}_done": True})


def _ae_stage(run: StageRun, net, ema: EMA, data: TrainingData, val_grids, budget_s: float) -> None:
    """Autoencoder stage: surface-weighted L1 + sign BCE on normalised TSDFs, random axis flips."""
    cfg, tc = run.cfg, run.tc
    params = list(net.ae.parameters())
    opt = torch.optim.Adam(params, lr=tc.ae_lr)
    band = 2.0 * (2.0 / (cfg.resolution - 1)) / cfg.truncation  # two voxels, in normalised TSDF units
    tsdf_all = (data.grids.to(run.device) / cfg.truncation).clamp(-1, 1)  # (N, R, R, R), on the training device
    ranks = run.ranks
    mine = shard(tc.ae_batch, ranks)  # this rank's rows of every batch

    def loss_fn(gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(tsdf_all.shape[0], (tc.ae_batch,), generator=gen)  # (B,) drawn on the CPU
        x = tsdf_all[idx[mine].to(tsdf_all.device)]  # (B_r, R, R, R)
        flips = [d for d in (1, 2, 3) if torch.rand((), generator=gen) < 0.5]
        if flips:
            x = x.flip(flips)
        kl = None
        if net.ae.gaussian:  # a draw from the posterior, and its KL to N(0, I) averaged over the whole batch's latent elements
            mean, logvar = net.ae.posterior(x)  # (B_r, C, r, r, r) each
            noise = torch.randn(tc.ae_batch, *mean.shape[1:], generator=gen)[mine].to(mean.device)  # (B_r, C, r, r, r)
            z = mean + (0.5 * logvar).exp() * noise
            kl = gaussian_kl(mean, logvar).sum() / (tc.ae_batch * mean[0].numel())
        else:
            z = net.ae.encode(x)  # (B_r, C, r, r, r)
        pred = net.ae.decode(z)  # (B_r, R, R, R)
        if not ranks.distributed:
            loss = autoencoder_loss(pred, x, band=band, near_surface_weight=tc.near_surface_weight, sign_weight=tc.sign_weight)
        else:  # the ranks' shares add up to the whole batch's loss; W times that, since DDP averages the ranks
            loss = ranks.world * autoencoder_loss(pred, x, band=band, near_surface_weight=tc.near_surface_weight,
                                                  sign_weight=tc.sign_weight, of_batch=tsdf_all[idx.to(tsdf_all.device)])
        return loss if kl is None else loss + ranks.world * tc.kl_weight * kl

    validate = (lambda: reconstruction_iou(ema.shadow, val_grids, cfg.truncation)) if val_grids is not None else None
    _run_stage("ae", run, net, ema, opt, params, loss_fn, base_lr=tc.ae_lr, total_steps=tc.ae_steps, budget_s=budget_s,
               validate=validate, trained=net.ae)


@torch.no_grad()
def _set_latent_stats(net, ema, data: TrainingData, cfg: ModelConfig) -> torch.Tensor:
    """Per-channel mean and std of the (EMA) encoder's latents over the training grids; returns the
    normalised latents (N, C, r, r, r) for the diffusion stage."""
    enc = ema.shadow.ae
    dev = next(enc.parameters()).device
    zs = torch.cat([enc.encode((g.to(dev) / cfg.truncation).clamp(-1, 1)) for g in data.grids.split(32)])  # (N, C, r, r, r)
    mean = zs.mean(dim=(0, 2, 3, 4))  # (C,)
    std = zs.std(dim=(0, 2, 3, 4)).clamp(min=1e-4)  # (C,)
    for m in (net, ema.shadow):
        m.latent_mean.copy_(mean)
        m.latent_std.copy_(std)
        m.ae.load_state_dict(enc.state_dict())  # diffusion uses (and keeps) the EMA autoencoder
    return ema.shadow.normalise(zs)


def _diffusion_stage(run: StageRun, net, ema: EMA, data: TrainingData, latents: torch.Tensor, budget_s: float) -> torch.optim.Optimizer:
    """Diffusion stage: x0-prediction loss; each item draws a condition kind (family / augmented
    points / voxels at 8^3 or 16^3), and the null condition with probability cond_drop."""
    cfg, tc = run.cfg, run.tc
    for p in net.ae.parameters():
        p.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=tc.diffusion_lr)
    probs = torch.tensor(tc.kind_probs, dtype=torch.float64)
    dev = run.device
    grids = data.grids.to(dev)  # (N, R, R, R) for the voxel conditions
    B, M, d = tc.diffusion_batch, cfg.n_cond_tokens, cfg.cond_dim
    mine = shard(B, run.ranks)  # this rank's rows of every batch (all of them in one process)
    Br, scale = mine.stop - mine.start, share(B, run.ranks)

    def local(sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Of batch rows `sel` (k,), the mask of this rank's (k,) and their positions in its share."""
        keep = (sel >= mine.start) & (sel < mine.stop)
        return keep, (sel[keep] - mine.start).to(dev)

    def loss_fn(gen: torch.Generator) -> torch.Tensor:
        # every random draw is made on the CPU from `gen` for the whole batch, so a run draws the same on
        # any device and any number of ranks; a rank computes its share of the rows
        idx = torch.randint(latents.shape[0], (B,), generator=gen)  # (B,)
        kind = torch.multinomial(probs, B, replacement=True, generator=gen)  # (B,) 0 family, 1 points, 2 voxels
        cond = torch.zeros(Br, M, d, device=dev)  # (B_r, M, d)
        sel = (kind == 0).nonzero().flatten()
        keep, at = local(sel)
        if keep.any():
            cond = cond.index_copy(0, at, net("family", data.labels[idx[sel[keep]]].to(dev)))
        sel = (kind == 1).nonzero().flatten()
        if len(sel):
            pts = augment_points(data.points[idx[sel]], n=tc.train_points, sigma_max=tc.point_sigma_max,
                                 partial_prob=tc.partial_prob, generator=gen)  # (b, n, 3)
            keep, at = local(sel)
            if keep.any():
                cond = cond.index_copy(0, at, net("points", pts[keep].to(dev)))
        sel = (kind == 2).nonzero().flatten()
        if len(sel):
            V = 8 if torch.rand((), generator=gen) < 0.5 else 16
            keep, at = local(sel)
            if keep.any():
                cond = cond.index_copy(0, at, net("voxels", voxels_from_grids(grids[idx[sel[keep]].to(dev)], V)))
        drop = (torch.rand(B, generator=gen) < tc.cond_drop).view(B, 1, 1).to(dev)
        cond = torch.where(drop[mine], net("null", Br), cond)  # (B_r, M, d)
        t = torch.randint(cfg.timesteps, (B,), generator=gen)  # (B,)
        if tc.high_t_prob > 0:  # drawn only when set, so runs without it draw exactly as before
            high = torch.randint(cfg.timesteps // 2, cfg.timesteps, (B,), generator=gen)  # (B,)
            pick = (torch.rand(B, generator=gen) < tc.high_t_prob) & ((kind == 0) | drop.view(B).cpu())  # (B,)
            t = torch.where(pick, high, t)
        t = t[mine].to(dev)
        z0 = latents[idx[mine].to(dev)]  # (B_r, C, r, r, r)
        noise = torch.randn((B, *latents.shape[1:]), generator=gen)[mine].to(dev)  # (B_r, C, r, r, r)
        # drawn only with the option, so runs without it draw exactly as before; one coin per batch, so
        # every rank makes the same choice
        self_cond = cfg.self_condition and bool(torch.rand((), generator=gen) < tc.self_condition_prob)
        loss = diffusion_loss(lambda z, tt, c, *prev: net("denoise", z, tt, c, *prev), z0, cond, t, noise, net.alphas_cumprod,
                              weighting=tc.loss_weighting, gamma=tc.snr_gamma, self_condition=self_cond)
        return loss if not run.ranks.distributed else scale * loss  # a mean over this rank's rows

    _run_stage("diffusion", run, net, ema, opt, params, loss_fn, base_lr=tc.diffusion_lr, total_steps=tc.diffusion_steps,
               budget_s=budget_s, clip=1.0)
    return opt


def train_latent_diffusion(data_dir: str | Path, out_dir: str | Path, **kwargs: Any) -> LatentDiffusionGenerator:
    """Train (or resume training of) a latent diffusion generator on a data folder; keywords as
    `_train_latent_diffusion`'s. `out_dir` is checked first (a file, the data folder or a folder of
    something else is refused) and held by this run alone while it trains (`runtime.train_folder`)."""
    check_out(Path(out_dir), Path(data_dir), "latent-diffusion", (TRAIN_STATE,), fresh=not kwargs.get("resume", True))
    with TrainLock(Path(out_dir)):
        return _train_latent_diffusion(data_dir, out_dir, **kwargs)


# settings a resume may change: the sampler's defaults; every other model field shapes the weights
SAMPLING_FIELDS = ("sample_steps", "guidance", "sampler")


def _check_resume(out: Path, config: dict[str, Any], model: ModelConfig | None, tc: TrainConfig, data: "TrainingData",
                  data_dir: str | Path, echo: Callable[[str], None]) -> None:
    """Refuse a resume on other data or with another model; say which training settings changed."""
    skip = ("families", "resolution", "truncation", *SAMPLING_FIELDS)  # the first three come from the data
    check_resume(out, data_was=config.get("data", {}).get("manifest_hash"), data_now=data.manifest_hash,
                 data_folder=config.get("data", {}).get("folder"), data_dir=Path(data_dir), what="model",
                 arch=changed(config["model"], dataclasses.asdict(model), skip=skip) if model is not None else [],
                 settings=changed(config.get("train", {}), dataclasses.asdict(tc)),
                 start_over="start over with --fresh or a new --out (leave out --config's model to resume with the "
                            "run's own)", echo=echo)


def _train_latent_diffusion(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    stage: Stage = "all",
    command: str | None = None,
    autoencoder_from: str | Path | None = None,
    continue_from: str | Path | None = None,
    resume: bool = True,
    device: str = "auto",
    echo: Callable[[str], None] = print,
) -> LatentDiffusionGenerator:
    """Train (or resume training of) a latent diffusion generator on a data folder.

    stage : ae | diffusion | all. The budget `train.minutes` covers the stages run now; with
    `all` the autoencoder gets `ae_fraction` of it. Resumes from `out_dir` when it holds a
    checkpoint of this trainer (the architecture there wins over `model`).
    autoencoder_from : a checkpoint (or `default`) whose trained autoencoder a new run starts from,
    with that autoencoder's step and time counts; the rest of the architecture may differ.
    continue_from : a finished checkpoint (or `default`) whose diffusion stage a new run in `out_dir`
    continues, in a later piece (another session, another machine): every weight, the progress
    counters, the loss log and the training record come along; the optimiser starts afresh (a
    checkpoint holds the EMA weights only), and the record names the piece.
    resume : False (`--fresh`) starts over: the earlier run's files in `out_dir` (RUN_FILES) are deleted
    once the data and settings have passed their checks (a refused run deletes nothing), other files stay; --autoencoder-from and --continue-from may then start there.
    device : auto (CUDA when present) | cpu | cuda[:N]. Random draws are made on the CPU either way,
    so a run draws the same items, noise and time steps on every device.
    """
    if stage not in get_args(Stage):
        raise InputError(f"stage must be one of {list(get_args(Stage))}, got {stage!r}")
    started = datetime.datetime.now(datetime.timezone.utc)
    tc = check_config(train or TrainConfig(), where="train")
    ranks, dev = init_ranks(device)
    if not ranks.main:
        echo = lambda message: None  # noqa: E731 (rank 0 alone speaks)
    out = Path(out_dir)
    # every rank must run what rank 0 runs, or one waits in a collective the others never reach; data, --out and
    # the sources are compared by what they hold (machines may mount a shared folder at different paths), and
    # train.threads (this machine's cores), the device and the command line are each rank's own
    sources = {k: None if v is None else file_digest(Path(v) / "config.json") or str(v)
               for k, v in (("autoencoder_from", autoencoder_from), ("continue_from", continue_from))}
    same_settings({"model": dataclasses.asdict(model) if model is not None else None, "train": dataclasses.asdict(tc), "stage": stage,
                   "data": {"manifest_sha256": file_digest(Path(data_dir) / "manifest.jsonl")}, **sources,
                   "fresh": not resume, "saved": saved_state(out / TRAIN_STATE) if resume else None}, ranks,
                  skip=("train.threads",))
    torch.set_num_threads(tc.threads)
    data = load_training_data(data_dir, "train")
    out.mkdir(parents=True, exist_ok=True)  # after the data loaded: a run refused for its data leaves no folder
    if not resume:  # --fresh deletes the earlier run (below, once every check passed): a source in it would go too (every rank refuses)
        from weightspace.generators.registry import resolve_checkpoint

        for flag, source in (("--autoencoder-from", autoencoder_from), ("--continue-from", continue_from)):
            if source is not None and resolve_checkpoint(source).resolve() == out.resolve():
                raise InputError(f"{flag}: {source} is --out itself, whose run --fresh deletes before it is read; give the "
                                 "new run another --out")
    try:
        val_grids = torch.from_numpy(np.array(ShapeDataset(data_dir, split="val").grids[:48], dtype=np.float32)).to(dev)  # (<=48, R, R, R)
    except InputError:
        val_grids = None

    progress = dict(ae_steps=0, ae_seconds=0.0, ae_done=False, diffusion_steps=0, diffusion_seconds=0.0, diffusion_done=False,
                    diffusion_piece_from_steps=0, diffusion_piece_from_seconds=0.0)  # where this piece began (--continue-from)
    resume_state, ae_source = None, None
    continued = None
    if resume and (out / TRAIN_STATE).is_file():
        if autoencoder_from is not None or continue_from is not None:
            raise InputError(f"{out}: already holds a run to resume; --autoencoder-from and --continue-from start a new one "
                             "(use a new --out, or --fresh to replace that run)")
        config, resume_state, ema_state = _load_resume_state(out)
        _check_resume(out, config, model, tc, data, data_dir, echo)
        cfg = saved_model_config(config["model"], where=f"{out / TRAIN_STATE}: model")
        progress.update({k: v for k, v in config.get("progress", {}).items() if k in progress})
        ae_source = config.get("autoencoder_from")
        net = LatentDiffusionNet(cfg)
        _load_into(net, {k[4:]: v for k, v in resume_state.items() if k.startswith("net.")}, out / TRAIN_STATE)
        ema = EMA(net.to(dev), tc.ema_decay)
        _load_into(ema.shadow, ema_state, out / TRAIN_STATE)
        echo(f"resuming from {out} ({progress})")
    elif continue_from is not None:
        if stage != "diffusion" or autoencoder_from is not None:
            raise InputError("--continue-from continues a finished run's diffusion stage: pass --stage diffusion "
                             "(and no --autoencoder-from)")
        cfg, net, continued, ae_source = _continue(continue_from, progress, tc.diffusion_steps)
        progress.update(diffusion_piece_from_steps=progress["diffusion_steps"], diffusion_piece_from_seconds=progress["diffusion_seconds"])
        ema = EMA(net.to(dev), tc.ema_decay)  # the checkpoint holds the EMA weights: both start from them
        echo(f"continuing {continue_from} ({progress})")
    else:
        from_data = dict(families=data.families, resolution=data.resolution, truncation=data.truncation)
        for name, value in from_data.items():  # set from the data: a config's other value would be replaced silently
            if model is not None and getattr(model, name) not in (getattr(ModelConfig(), name), value):
                raise InputError(f"model.{name} {getattr(model, name)!r} is not the data's ({value!r}, {data_dir}); it is "
                                 f"set from the training grids: remove model.{name} or use matching data")
        cfg = dataclasses.replace(model or ModelConfig(), **from_data)
        cfg = check_config(cfg, where="model")
        torch.manual_seed(tc.seed)
        net = LatentDiffusionNet(cfg)
        if autoencoder_from is not None:
            ae_source = _adopt_autoencoder(net, cfg, autoencoder_from)
            progress.update(ae_steps=ae_source["ae_steps"], ae_seconds=ae_source["ae_seconds"], ae_done=True)
            echo(f"autoencoder from {autoencoder_from} ({progress['ae_steps']} steps)")
        ema = EMA(net.to(dev), tc.ema_decay)
    if (cfg.resolution, cfg.truncation) != (data.resolution, data.truncation) or cfg.families[: len(data.families)] != data.families:
        raise InputError(f"{data_dir}: data (resolution {data.resolution}, truncation {data.truncation}) does not match the checkpoint in {out}")
    if not resume and ranks.main:  # --fresh, once every check has passed: a refused run leaves the earlier one whole
        removed = clear_run(out, RUN_FILES)
        if removed:
            echo(f"starting over in {out}: removed the earlier run's {', '.join(removed)}")
    if continued is not None and ranks.main:  # after --fresh cleared the folder, which would delete them again
        take_history(continue_from, out)
    present = set(data.labels.tolist())
    trained_families = [f for i, f in enumerate(data.families) if i in present]
    logger = Logger(out, echo, write=ranks.main)
    if ranks.main:  # rows logged after the last save are logged again from here; a new run starts a new log
        trim_log(logger.path, lambda row: int(row.get("step", 0)) <= int(progress.get(f"{row.get('stage')}_steps", 0)))

    def extra() -> dict:
        return {
            "autoencoder_from": ae_source,
            "continued_from": continued,
            "train": dataclasses.asdict(tc),
            "progress": dict(progress),
            "data": {"folder": Path(data_dir).name, "manifest_hash": data.manifest_hash, "train_shapes": int(data.grids.shape[0]),
                     "pose": data.pose, "families": trained_families},  # the families whose tokens saw shapes
            "command": command,
            "device": str(dev),
        }

    run = StageRun(out, cfg, tc, progress, logger, extra, resume_state, dev, ranks)
    barrier(ranks)  # every rank has read the resume state before rank 0 writes the next one
    budget = tc.minutes * 60.0
    try:
        opt = _stages(run, net, ema, data, val_grids, stage, budget, echo)
    except Stopped:  # a signal stopped a stage after a step and saved it: the record gets this piece too
        if ranks.main:
            write_training_record(out, extra(), started=started, stage=stage, threads=tc.threads, processes=ranks.world,
                                  stopped=True)
        raise
    config = extra()
    if ranks.main:
        _save_all(out, net, ema, opt, cfg, config)
        write_training_record(out, config, started=started, stage=stage, threads=tc.threads, processes=ranks.world)
    barrier(ranks)
    echo(f"saved {out / WEIGHTS_NAME} ({progress['ae_steps']} autoencoder steps, {progress['diffusion_steps']} diffusion steps)")
    return LatentDiffusionGenerator(cfg, ema.shadow, extra())


def _stages(run: StageRun, net, ema: EMA, data: TrainingData, val_grids, stage: str, budget: float,
            echo: Callable[[str], None]) -> torch.optim.Optimizer:
    """The stages `stage` asks for, each within its share of `budget` seconds; returns the last optimiser."""
    cfg, tc, progress, logger = run.cfg, run.tc, run.progress, run.logger
    if stage in ("ae", "all") and not (stage == "all" and progress["ae_done"]):
        ae_budget = budget * (tc.ae_fraction if stage == "all" else 1.0)
        if stage == "ae":
            ae_budget += progress["ae_seconds"]  # --stage ae --minutes M adds M minutes
        _ae_stage(run, net, ema, data, val_grids, ae_budget)
        if val_grids is not None:
            done_at, iou = logger.validated.get("ae", (-1, 0.0))
            if done_at != progress["ae_steps"]:  # the loop's own validation row may already be at the last step
                iou = reconstruction_iou(ema.shadow, val_grids, cfg.truncation)
                logger.row(stage="ae", step=progress["ae_steps"], seconds=round(progress["ae_seconds"], 2), val_iou=round(iou, 4))
            echo(f"autoencoder done: {progress['ae_steps']} steps, val IoU {iou:.3f} (EMA weights, first {len(val_grids)} val shapes)")
    if stage in ("diffusion", "all"):
        if not progress["ae_steps"]:
            raise InputError(f"{run.out}: no trained autoencoder here; run --stage ae (or all) first")
        latents = _set_latent_stats(net, ema, data, cfg)  # (N, C, r, r, r)
        diff_budget = budget * (1.0 - tc.ae_fraction) if stage == "all" else budget + progress["diffusion_seconds"]
        return _diffusion_stage(run, net, ema, data, latents, max(diff_budget, 1.0))
    return torch.optim.Adam([p for p in net.parameters() if p.requires_grad])


def _continue(source: str | Path, progress: dict, total_steps: int) -> tuple[ModelConfig, LatentDiffusionNet, dict, Any]:
    """Load checkpoint `source` for a continued run: (architecture, net with its weights,
    the piece's provenance, its autoencoder's source). Progress counters are taken into `progress`;
    its loss log and training record go into `out` once the run has passed its checks (`record.take_history`). A step
    budget (`total_steps` > 0, train.diffusion_steps) the checkpoint has already reached is refused."""
    from weightspace.generators.registry import resolve_checkpoint

    folder = resolve_checkpoint(source)
    state, config = load_checkpoint(folder)
    cfg = saved_model_config(config.get("model"), where=f"{folder / 'config.json'}: model")
    prog = config.get("progress", {})
    if not prog.get("ae_done") or not prog.get("diffusion_steps"):
        raise InputError(f"{folder}: has no trained diffusion stage to continue (progress {prog})")
    if 0 < total_steps <= int(prog["diffusion_steps"]):  # the piece would train no step and copy the checkpoint
        raise InputError(f"train.diffusion_steps: {total_steps} counts the run's steps, and {folder} has trained "
                         f"{prog['diffusion_steps']} already; set more, or 0 to train by wall time (--minutes)")
    net = LatentDiffusionNet(cfg)
    _load_into(net, state, folder / WEIGHTS_NAME)
    progress.update({k: v for k, v in prog.items() if k in progress})
    progress["diffusion_done"] = False
    continued = {"checkpoint": str(source), "weights_hash": state_hash(state), "diffusion_steps": int(prog["diffusion_steps"]),
                 "diffusion_seconds": float(prog.get("diffusion_seconds", 0.0)),
                 "note": "a new piece from the checkpoint's EMA weights; the optimiser state starts afresh"}
    return cfg, net, continued, config.get("autoencoder_from")

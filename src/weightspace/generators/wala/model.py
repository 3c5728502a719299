"""WaLa: load a released checkpoint folder and run its inference path (condition -> latent -> grid -> mesh).

    model = WaLa.from_pretrained(folder)         # args.json + checkpoint.ckpt (or model.safetensors)
    cond = model.encode_condition(points=p)      # or voxels=v; None for an unconditional model
    z = model.sample(cond, noises=[n0, n1, ...]) # the initial draw, then one per step; or seed=
    grid = model.decode_latent(z)                # (R, R, R) float32

These calls run without autograd (no graph is kept through the sampling steps); `sample(..., grad=True)`
keeps it, for fits that differentiate through the sampler (`WaLaGenerator`).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from weightspace.generators.wala.config import WALA_GUIDANCE, CheckpointConfig, WaLaConfig, config_from_args, read_args, read_checkpoint_config
from weightspace.generators.wala.network import WaLaNet, build
from weightspace.generators.wala.sampler import guided, spaced_ddpm
from weightspace.generators.wala.schedule import SpacedSchedule, betas, spaced_schedule
from weightspace.runtime.errors import InputError


def read_folder_state(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of a WaLa folder: model.safetensors when present, else checkpoint.ckpt through the vetted reader."""
    from weightspace.runtime.checkpoint import load_state

    if (folder / "model.safetensors").is_file():
        return load_state(folder / "model.safetensors"), str(folder / "model.safetensors")
    ckpt = folder / "checkpoint.ckpt"
    if not ckpt.is_file():
        raise InputError(f"{folder}: no checkpoint.ckpt or model.safetensors (a WaLa folder holds args.json and one of them)")
    from weightspace.runtime.safe_load import load_lightning_checkpoint

    return load_lightning_checkpoint(ckpt).state_dict, str(ckpt)


class WaLa:
    """WaLa's inference path over a `WaLaNet` (see the module docstring for the calls)."""

    def __init__(self, cfg: WaLaConfig, net: WaLaNet, args: Mapping[str, Any], *, unused_keys: Sequence[str] = ()):
        self.cfg, self.net, self.args = cfg, net, dict(args)
        self.unused_keys = list(unused_keys)
        self.schedule = self.make_schedule(cfg.diffusion_rescale_timestep)

    # --- loading ----------------------------------------------------------------------
    @classmethod
    def from_state(cls, args: Mapping[str, Any], state: Mapping[str, torch.Tensor], *, where: str = "state dict",
                   args_where: str = "args.json") -> "WaLa":
        """From WaLa's args dict and a state dict; `where` and `args_where` name them in errors."""
        cfg = config_from_args(args, where=args_where)
        net, unused = build(cfg, state, where)
        return cls(cfg, net, args, unused_keys=unused)

    @classmethod
    def from_converted(cls, state: Mapping[str, torch.Tensor], config: Mapping[str, Any], *, where: str = "config.json",
                       weights: str = "model.safetensors") -> tuple["WaLa", CheckpointConfig]:
        """From a checkpoint written by `weightspace convert wala`: (model, its checked config.json)."""
        cfg, ck = read_checkpoint_config(config, where=where)
        net, unused = build(cfg, state, weights)
        return cls(cfg, net, ck.args, unused_keys=unused), ck

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, device: str | torch.device = "cpu") -> "WaLa":
        """A WaLa folder (args.json + checkpoint.ckpt or model.safetensors), or a folder written by `weightspace convert wala`;
        `~` is expanded."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise InputError(f"{folder}: WaLa folder not found")
        if not (folder / "args.json").is_file() and (folder / "config.json").is_file():
            from weightspace.runtime.checkpoint import load_checkpoint

            state, config = load_checkpoint(folder)
            if config.get("kind") != "wala":
                raise InputError(f"{folder / 'config.json'}: not a converted WaLa checkpoint (kind {config.get('kind')!r})")
            return cls.from_converted(state, config, where=str(folder / "config.json"),
                                      weights=str(folder / "model.safetensors"))[0].to(device)
        _, args = read_args(folder / "args.json")
        state, where = read_folder_state(folder)
        return cls.from_state(args, state, where=where, args_where=str(folder / "args.json")).to(device)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> "WaLa":
        self.net.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return self.net.autoencoder.quantize.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.autoencoder.quantize.embedding.weight.dtype

    def make_schedule(self, steps: int) -> SpacedSchedule:
        cfg = self.cfg
        base = betas(cfg.diffusion_beta_schedule, cfg.diffusion_step, cfg.diffusion_scale_ratio)
        return spaced_schedule(base, steps, cfg.diffusion_model_var_type)

    # --- conditions -------------------------------------------------------------------
    @torch.no_grad()
    def encode_condition(self, *, points: Any = None, voxels: Any = None) -> torch.Tensor | None:
        """Raw condition tokens (B, T, c): points (N, 3) or (B, N, 3) as given (no normalisation, as WaLa);
        voxels (16,)*3, (B, 16, 16, 16) or (B, 1, 16, 16, 16) occupancy. None for an unconditional model."""
        kind = self.cfg.kind
        if kind == "un":
            if points is not None or voxels is not None:
                raise InputError("this WaLa model is unconditional; it takes no points or voxels")
            return None
        wanted, given = ("points", points) if kind == "pc" else ("voxels", voxels)
        other = voxels if kind == "pc" else points
        if given is None or other is not None:
            raise InputError(f"this WaLa model is conditioned on {wanted}: pass {wanted}= only")
        x = torch.as_tensor(np.asarray(given) if not isinstance(given, torch.Tensor) else given).to(self.device, self.dtype)
        if kind == "pc":
            x = x.unsqueeze(0) if x.dim() == 2 else x
            if x.dim() != 3 or x.shape[-1] != 3 or x.shape[1] < 1:
                raise InputError(f"points must have shape (N, 3) or (B, N, 3), got {tuple(x.shape)}")
        else:
            v = self.cfg.voxel_dim * 2
            x = x.reshape(-1, 1, *x.shape[-3:]) if x.dim() in (3, 4, 5) else x
            if x.dim() != 5 or tuple(x.shape[-3:]) != (v, v, v):
                raise InputError(f"voxels must have shape ({v}, {v}, {v}) or (B, [1,] {v}, {v}, {v}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise InputError(f"{wanted} contain NaN or infinite values")
        return self.net("encode", x)

    def process_condition(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw condition (B, T, c) -> (unconditional, conditional) contexts (fixture README 4.2)."""
        return self.net("process", cond)

    # --- sampling ---------------------------------------------------------------------
    def latent_shape(self, batch: int = 1) -> tuple[int, ...]:
        g = self.cfg.grid_size
        return (batch, self.cfg.e_dim, g, g, g)

    def sample(
        self,
        cond: torch.Tensor | None = None,
        *,
        noises: Sequence[torch.Tensor] | None = None,
        seed: int | Sequence[int] | None = None,
        steps: int | None = None,
        guidance: float | None = WALA_GUIDANCE,
        call: Callable | None = None,
        callback: Callable[[dict], None] | None = None,
        grad: bool = False,
    ) -> torch.Tensor:
        """Latents (B, e, g, g, g) by WaLa's spaced DDPM, without autograd unless `grad`.

        noises : K + 1 tensors (B or 1, e, g, g, g): the initial draw, then one per step (the last is masked).
        seed : one int (B = 1: the same draws as `torch.manual_seed(seed)` in WaLa) or one per item.
        guidance : classifier-free guidance scale for a conditioned model whose args set dp_cond
            (WaLa always uses 3.0); None samples the conditional branch alone.
        call : runs a stage of the network, call(mode, *args), in place of `self.net` (the generator swaps weights in through it).
        grad : keep autograd's graph through every step, as the caller's grad mode has it (a fit differentiates
            through the sampler); off, no step's activations are kept.
        """
        cfg = self.cfg
        if (cond is None) != (cfg.kind == "un"):
            raise InputError("an unconditional model samples with cond=None" if cfg.kind == "un" else "this model needs a condition: cond = encode_condition(...)")
        schedule = self.schedule if steps is None else self.make_schedule(int(steps))
        K = len(schedule.timestep_map)
        B = cond.shape[0] if cond is not None else 1
        draws = self._draws(noises, seed, B, K)
        call = call or self.net
        unet = lambda x, t, ctx: call("denoise", x, t, ctx)  # noqa: E731
        with contextlib.nullcontext() if grad else torch.no_grad():
            if cond is not None:
                ctx_uncond, ctx_cond = call("process", cond.to(self.device, self.dtype))
            else:
                ctx_uncond = ctx_cond = None
            fn = guided(unet, ctx_uncond, ctx_cond, guidance if cfg.guided else None)
            return spaced_ddpm(fn, draws(0), schedule, mean_type=cfg.diffusion_model_mean_type, noise=lambda i: draws(i + 1),
                               callback=callback)

    def _draws(self, noises, seed, B: int, K: int) -> Callable[[int], torch.Tensor]:
        shape = self.latent_shape(1)[1:]
        if (noises is None) == (seed is None):
            raise InputError("sample takes exactly one of noises= (K + 1 recorded draws) or seed=")
        if noises is not None:
            if len(noises) != K + 1:
                raise InputError(f"noises must hold {K + 1} tensors (the initial draw and one per step for {K} steps), got {len(noises)}")
            bad = [i for i, n in enumerate(noises) if tuple(n.shape[-4:]) != shape]
            if bad:
                raise InputError(f"noises[{bad[0]}] has shape {tuple(noises[bad[0]].shape)}; expected (B, {', '.join(map(str, shape))})")
            return lambda i: noises[i].to(self.device, self.dtype).expand(B, *shape)
        seeds = [int(seed)] * 1 if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != B:
            raise InputError(f"seed must be one int (batch 1) or one per item: {B} items, {len(seeds)} seeds")
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return lambda i: torch.cat([torch.randn(1, *shape, generator=g) for g in gens]).to(self.device, self.dtype)

    # --- decoding ---------------------------------------------------------------------
    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, e, g, g, g) -> grids (B, R, R, R) float32 (snapped to the codebook first), without autograd."""
        if z.dim() != 5 or tuple(z.shape[1:]) != self.latent_shape(1)[1:]:
            raise InputError(f"latents must have shape (B, {', '.join(map(str, self.latent_shape(1)[1:]))}), got {tuple(z.shape)}")
        return self.net("decode", z.to(self.device, self.dtype)).float()

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """One latent (e, g, g, g) or (1, e, g, g, g) -> grid (R, R, R) float32."""
        z = z.unsqueeze(0) if z.dim() == 4 else z
        if z.shape[0] != 1:
            raise InputError(f"decode_latent takes one latent; use decode_latents for a batch of {z.shape[0]}")
        return self.decode_latents(z)[0]

    def mesh(self, grid: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """A mesh of a grid (R, R, R) as WaLa maps it: the zero level set, vertices v / R * 2 - 1, faces reversed.

        Not WaLa's exact mesh: WaLa runs PyMCubes, this runs scikit-image's marching cubes, which
        tiles ambiguous cubes differently. On the same grid the vertex and face counts agree within
        2% (fixture pc: 25410 / 49624 here, 25348 / 49456 in WaLa); the grid itself matches to ~1e-6.
        """
        from skimage.measure import marching_cubes

        g = grid.detach().cpu().numpy()
        if not (g.min() < 0.0 < g.max()):
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
        verts, faces, _, _ = marching_cubes(g, 0.0)
        return (verts / g.shape[0] * 2 - 1).astype(np.float32), faces[:, ::-1].copy()

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.net.parameters())


def read_voxel_json(path: str | os.PathLike) -> torch.Tensor:
    """WaLa's voxel JSON (resolution, occupancy triples, color) -> occupancy (1, 1, R, R, R) float32.

    As WaLa: triples fill a grid of edge R + 1 (negative indices wrap into it) and the last index
    of each axis is dropped, so a coordinate equal to R is discarded; one above R is an error.
    """
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not {"resolution", "occupancy", "color"} <= set(data):
        raise InputError(f"{path}: expected a JSON object with 'resolution', 'occupancy' and 'color'")
    R = data["resolution"]
    occ = np.asarray(data["occupancy"])
    if not isinstance(R, int) or R < 1:
        raise InputError(f"{path}: 'resolution' must be a positive integer, got {R!r}")
    if occ.size == 0 or occ.ndim != 2 or occ.shape[1] != 3 or occ.dtype.kind not in "iu":
        raise InputError(f"{path}: 'occupancy' must be a non-empty list of integer [i, j, k] triples")
    if (occ > R).any() or (occ < -(R + 1)).any():
        raise InputError(f"{path}: occupancy index out of range for resolution {R}: {occ[((occ > R) | (occ < -(R + 1))).any(1)][0].tolist()}")
    grid = np.zeros((R + 1,) * 3, np.float32)
    grid[occ[:, 0], occ[:, 1], occ[:, 2]] = 1.0
    return torch.from_numpy(grid[:R, :R, :R].copy()).reshape(1, 1, R, R, R)

"""WaLaGenerator: a WaLa model behind the generator protocol (kind `wala`): conditions, grids, module groups, save/load.

Conditions are WaLa's raw condition tokens (B, T, c) from the point or voxel encoder, the space the
studies interpolate; an unconditional model takes a placeholder condition of shape (B, 1) that is
ignored. A decode swaps weights in with `torch.func.functional_call` at every stage (condition
mapping, denoiser, decoder), draws one noise generator per item in WaLa's order (so seed s with
batch 1 reproduces WaLa's `torch.manual_seed(s)` sample), and returns WaLa's grid: R^3 samples at
i / R * 2 - 1 per axis (WaLa's mesh mapping), whose zero level set is the surface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from weightspace.generators.protocol import Generator, Params
from weightspace.generators.wala.config import check_steps, read_checkpoint_config
from weightspace.generators.wala.model import WALA_GUIDANCE, WaLa
from weightspace.runtime.checkpoint import save_checkpoint
from weightspace.runtime.errors import InputError

KIND = "wala"


class WaLaGenerator(Generator):
    """Point-cloud, voxel or unconditional WaLa as a weightspace generator."""

    kind = KIND
    fit_anchor = "mean"
    fit_defaults = {
        "condition": {"steps": 20, "lr": 1e-2, "draws": 1},
        "lora": {"steps": 20, "lr": 1e-3, "draws": 1},
        "layers": {"steps": 20, "lr": 1e-4, "draws": 1},
    }

    def __init__(self, model: WaLa, *, steps: int | None = None, guidance: float | None = WALA_GUIDANCE,
                 extra_config: Mapping[str, Any] | None = None):
        check_steps(steps, model.cfg, "steps")
        self.model, self.net = model, model.net
        self.steps, self.guidance = steps, guidance
        self.config = {"kind": KIND, "args": model.args, **dict(extra_config or {})}

    # --- loading and saving ------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, state: dict[str, torch.Tensor], config: dict[str, Any]) -> "WaLaGenerator":
        """The factory of kind `wala`: config.json is checked whole (unknown keys, types, bounds) before anything is built."""
        model, ck = WaLa.from_converted(state, config, where="config.json")
        extra = {k: v for k, v in config.items() if k not in ("kind", "args", "weights_hash")}
        return cls(model, steps=ck.sampling.steps, guidance=ck.sampling.guidance, extra_config=extra)

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs) -> "WaLaGenerator":
        return cls(WaLa.from_pretrained(folder), **kwargs)

    def save(self, folder: str | Path, *, extra_config: Mapping[str, Any] | None = None) -> Path:
        """Write model.safetensors + config.json; `extra_config` may only set keys config.json has (`CheckpointConfig`),
        since loading refuses any other."""
        config = {**self.config, "sampling": {"steps": self.steps, "guidance": self.guidance}, **dict(extra_config or {})}
        read_checkpoint_config(config, where=str(Path(folder) / "config.json"))  # what loading will check
        return save_checkpoint(folder, self.net.state_dict(), config)

    # --- the required core -------------------------------------------------------------
    @property
    def unconditional(self) -> bool:
        return self.model.cfg.kind == "un"

    @property
    def condition_shape(self) -> tuple[int, ...]:
        cfg = self.model.cfg
        if cfg.kind == "un":
            return (1,)
        return (cfg.num_inds if cfg.kind == "pc" else cfg.voxel_dim**3, cfg.cond_dim)

    @property
    def resolution(self) -> int:
        return int(self.model.cfg.resolution)

    def _call(self, params: Params | None, mode: str, *args):
        if params is None:
            return self.net(mode, *args)
        return functional_call(self.net, dict(params), (mode, *args), strict=False)

    def _check(self, condition: torch.Tensor, seeds: Sequence[int]) -> None:
        if tuple(condition.shape[1:]) != self.condition_shape:
            raise InputError(f"condition must have shape (B, {', '.join(map(str, self.condition_shape))}), got {tuple(condition.shape)}")
        if len(seeds) != condition.shape[0]:
            raise InputError(f"seeds must give one seed per item: {condition.shape[0]} items, {len(seeds)} seeds")

    def sample_latents(self, condition: torch.Tensor, seeds: Sequence[int], *, params: Params | None = None,
                       steps: int | None = None) -> torch.Tensor:
        """Latents (B, e, g, g, g), one noise generator per item; differentiable (fits run through the sampler)."""
        self._check(condition, seeds)
        m = self.model
        cond = None if m.cfg.kind == "un" else condition.to(m.device, m.dtype)
        call = (lambda mode, *args: self._call(params, mode, *args)) if params is not None else None
        latents = []
        for i, seed in enumerate(seeds):
            c = None if cond is None else cond[i : i + 1]
            latents.append(m.sample(c, seed=int(seed), steps=steps or self.steps, guidance=self.guidance, call=call, grad=True))
        return torch.cat(latents)

    def decode_latents(self, z: torch.Tensor, *, params: Params | None = None, resolution: int | None = None) -> torch.Tensor:
        """Latents -> grids (B, R, R, R); a `resolution` other than R resamples trilinearly over the same box."""
        grid = self._call(params, "decode", z.to(self.model.device, self.model.dtype)).float()  # (B, R, R, R)
        if resolution is not None and resolution != grid.shape[-1]:
            if resolution < 2:
                raise InputError(f"resolution must be >= 2, got {resolution}")
            grid = F.interpolate(grid.unsqueeze(1), size=(resolution,) * 3, mode="trilinear", align_corners=True).squeeze(1)
        return grid

    def sdf_grid(self, condition, seeds, *, params=None, resolution=None, steps=None):
        return self.decode_latents(self.sample_latents(condition, seeds, params=params, steps=steps), params=params, resolution=resolution)

    def sdf_points(self, points, condition, seeds, *, params=None):
        if points.dim() != 3 or points.shape[-1] != 3:
            raise InputError(f"points must have shape (B, P, 3), got {tuple(points.shape)}")
        grid = self.sdf_grid(condition, seeds, params=params)  # (B, R, R, R), sample i at i / R * 2 - 1
        R = grid.shape[-1]
        loc = (points + 1) * R / (2 * (R - 1)) * 2 - 1  # WaLa's sample positions -> grid_sample's [-1, 1] (align_corners)
        loc = loc[..., [2, 1, 0]].to(grid.dtype).unsqueeze(2).unsqueeze(2)  # (B, P, 1, 1, 3), (z, y, x)
        out = F.grid_sample(grid.unsqueeze(1), loc, mode="bilinear", padding_mode="border", align_corners=True)
        return out.flatten(1)  # (B, P)

    def training_loss(self, grids, condition, seeds, *, params=None):
        """Grid loss of the decoded shape: mean squared difference of the grids clipped to +-2 voxels.

        Not WaLa's diffusion loss: that needs the wavelet encoder, which the released inference
        path does not load. The gradient runs through the sampler, so fits use few steps.
        """
        band = 2 * 2.0 / self.resolution
        pred = self.sdf_grid(condition, seeds, params=params, resolution=grids.shape[-1])
        target = grids.to(pred.device, pred.dtype)
        return (pred.clamp(-band, band) - target.clamp(-band, band)).pow(2).mean()

    # --- capabilities ------------------------------------------------------------------
    def encode_points(self, points, seeds=None) -> torch.Tensor:
        """Surface points (B, P, 3) in [-1, 1]^3 -> condition tokens; passed as given, as WaLa does."""
        if self.model.cfg.kind != "pc":
            raise InputError(f"this WaLa model takes {'voxels' if self.model.cfg.kind == 'vx' else 'no condition'}, not points")
        return self.model.encode_condition(points=torch.as_tensor(points, dtype=torch.float32))

    def encode_voxels(self, voxels, seeds=None) -> torch.Tensor:
        """Occupancy (B, 16, 16, 16) -> condition tokens (B, 512, c)."""
        if self.model.cfg.kind != "vx":
            raise InputError(f"this WaLa model takes {'points' if self.model.cfg.kind == 'pc' else 'no condition'}, not voxels")
        return self.model.encode_condition(voxels=torch.as_tensor(voxels, dtype=torch.float32))

    def module_groups(self) -> dict[str, list[str]]:
        """Denoiser blocks one by one and together, the denoiser's other parts, condition encoder and mapping, decoder, codebook."""
        n = len(self.net.network.unet.blocks)
        groups = {f"denoiser_block_{i}": [f"network.unet.blocks.{i}."] for i in range(n)}
        groups["denoiser_blocks"] = ["network.unet.blocks."]
        groups["denoiser"] = ["network.unet."]
        if self.model.cfg.kind != "un":
            groups["condition_encoder"] = ["encoder."]
            groups["condition_mapping"] = ["network.cond_mapping_network.", "network.cond_pos_emb"]
        groups["decoder"] = ["autoencoder.decoder."]
        groups["codebook"] = ["autoencoder.quantize."]
        return groups

    def fit_excluded(self) -> tuple[str, ...]:
        """A fit under a given condition never runs the condition encoder; the codebook and filters stay fixed."""
        return ("encoder.", "autoencoder.quantize.", "autoencoder.dwt_inverse_3d.")


"""A tiny but complete `Generator` for tests: an MLP SDF f(x, c) with FiLM, a Conv3d feature volume and seeded noise.

It implements the protocol's core and every optional capability but families and voxels honestly, so the weight-space stages can
be tested without the real generators: conditions are (M, d) tokens, `sdf_grid` depends on the
seed (a per-item noise vector added to the pooled condition), `params=` swaps weights through
`torch.func.functional_call`, and `net` has Linear and Conv3d layers for LoRA to target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap  # noqa: F401

from weightspace.data.grid import grid_points
from weightspace.generators.protocol import Generator, Params
from weightspace.runtime.checkpoint import save_checkpoint
from weightspace.runtime.errors import InputError
from weightspace.runtime.seeding import item_generator


class ToyNet(nn.Module):
    """f(x, tokens, noise) -> sdf: an encoder, FiLM from pooled tokens, an MLP and a Conv3d feature volume."""

    def __init__(self, tokens: int = 4, dim: int = 8, hidden: int = 32, volume: int = 6, channels: int = 4) -> None:
        super().__init__()
        self.tokens, self.dim = tokens, dim
        self.enc = nn.Linear(3, tokens * dim)  # point encoder (max-pooled)
        self.film = nn.Linear(dim, 2 * hidden)  # pooled condition -> scale, shift
        self.inp = nn.Linear(3 + channels, hidden)
        self.mid = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1)
        self.feat = nn.Parameter(0.1 * torch.randn(1, channels, volume, volume, volume))  # (1, C, V, V, V)
        self.vol = nn.Conv3d(channels, channels, 3, padding=1)

    def encode(self, points: torch.Tensor) -> torch.Tensor:
        return self.enc(points).amax(dim=1).view(points.shape[0], self.tokens, self.dim)  # (B, M, d)

    def modulation(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self.film(cond.mean(dim=1)).chunk(2, dim=-1)  # (B, H) each
        return scale, shift

    def forward(self, x: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x (B, P, 3), cond (B, M, d), noise (B, d) -> sdf (B, P)."""
        B = x.shape[0]
        scale, shift = self.modulation(cond + noise[:, None, :])
        volume = self.vol(self.feat).expand(B, -1, -1, -1, -1)  # (B, C, V, V, V)
        # grid_sample reads coordinates as (z, y, x) for a volume indexed [x, y, z]
        f = F.grid_sample(volume, x.flip(-1)[:, :, None, None, :], align_corners=True)  # (B, C, P, 1, 1)
        f = f[..., 0, 0].transpose(1, 2)  # (B, P, C)
        h = torch.relu(self.inp(torch.cat([x, f], dim=-1)))  # (B, P, H)
        h = torch.relu(self.mid(h) * (1 + scale[:, None]) + shift[:, None])  # (B, P, H)
        return self.out(h)[..., 0] + x.norm(dim=-1) - 0.5  # (B, P): a sphere plus learned residual


class ToyGenerator(Generator):
    """The toy generator: everything the protocol asks for, in a few thousand parameters."""

    kind: ClassVar[str] = "toy"

    def __init__(self, *, tokens: int = 4, dim: int = 8, hidden: int = 32, resolution: int = 12,
                 noise_scale: float = 0.05, truncation: float = 0.2, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.config = {"kind": self.kind, "tokens": tokens, "dim": dim, "hidden": hidden,
                       "resolution": resolution, "noise_scale": noise_scale, "truncation": truncation, "seed": seed}
        self.net = ToyNet(tokens, dim, hidden)
        self.net.eval()

    # --- conditions -----------------------------------------------------------------------
    @property
    def condition_shape(self) -> tuple[int, ...]:
        return (self.net.tokens, self.net.dim)

    @property
    def resolution(self) -> int:
        return int(self.config["resolution"])

    def encode_points(self, points, seeds=None) -> torch.Tensor:
        """Capability EncodesPoints (the toy takes no family or voxel condition)."""
        return self.net.encode(points.to(self.device, torch.float32))

    # --- decoding -------------------------------------------------------------------------------
    def _noise(self, seeds: Sequence[int], dim: int) -> torch.Tensor:
        rows = [torch.randn(dim, generator=item_generator(int(s), "toy-noise")) for s in seeds]
        return self.config["noise_scale"] * torch.stack(rows).to(self.device)  # (B, d)

    def _call(self, x, condition, seeds, params) -> torch.Tensor:
        if condition.shape[1:] != self.condition_shape:
            raise InputError(f"condition must be (B, {self.condition_shape}), got {tuple(condition.shape)}")
        noise = self._noise(seeds, self.net.dim)
        if params:
            return functional_call(self.net, dict(params), (x, condition, noise))
        return self.net(x, condition, noise)

    def sdf_points(self, points, condition, seeds, *, params: Params | None = None) -> torch.Tensor:
        t = self.config["truncation"]
        return self._call(points, condition, seeds, params).clamp(-t, t)

    def _grid_points(self, resolution: int | None) -> torch.Tensor:
        R = resolution or self.config["resolution"]
        return torch.from_numpy(grid_points(R)).reshape(1, -1, 3).to(self.device), R  # (1, R^3, 3)

    def sdf_grid(self, condition, seeds, *, params: Params | None = None, resolution: int | None = None) -> torch.Tensor:
        x, R = self._grid_points(resolution)
        B = condition.shape[0]
        return self.sdf_points(x.expand(B, -1, -1), condition, seeds, params=params).reshape(B, R, R, R)

    def sdf_grid_batched(self, conditions, seeds, params_batch: Params, resolution: int | None = None) -> torch.Tensor:
        """Decode B items, each with its own weights: params_batch maps name -> (B, *shape)."""
        x, R = self._grid_points(resolution)
        noise = self._noise(seeds, self.net.dim)  # (B, d)
        t = self.config["truncation"]

        def one(p, c, n):
            return functional_call(self.net, p, (x, c[None], n[None]))[0]

        out = vmap(one)(dict(params_batch), conditions, noise)  # (B, R^3)
        return out.clamp(-t, t).reshape(-1, R, R, R)

    # --- losses -----------------------------------------------------------------------------------
    def training_loss(self, grids, condition, seeds, *, params: Params | None = None) -> torch.Tensor:
        pred = self.sdf_grid(condition, seeds, params=params, resolution=grids.shape[-1])
        t = self.config["truncation"]
        return (pred - grids.clamp(-t, t)).abs().mean()

    def training_loss_batched(self, grids, conditions, seeds, params_batch: Params) -> torch.Tensor:
        """Capability BatchedTrainingLoss: member b's `training_loss` over its D draws, all members in one vmap: (B,)."""
        x, R = self._grid_points(grids.shape[-1])
        D = len(seeds[0])
        noise = torch.stack([self._noise(member, self.net.dim) for member in seeds])  # (B, D, d)
        t = self.config["truncation"]

        def one(p, grid, c, n):
            pred = functional_call(self.net, p, (x.expand(D, -1, -1), c.expand(D, -1, -1), n)).clamp(-t, t)  # (D, R^3)
            return (pred - grid.reshape(1, -1).clamp(-t, t)).abs().mean()

        return vmap(one)(dict(params_batch), grids, conditions, noise)  # (B,)

    # --- weight-space views ------------------------------------------------------------------------
    def effective_weights(self, condition: torch.Tensor) -> dict[str, torch.Tensor]:
        scale, shift = self.net.modulation(condition)
        return {"mid.scale": scale, "mid.shift": shift}

    def module_groups(self) -> dict[str, list[str]]:
        return {"encoder": ["enc"], "film": ["film"], "mlp": ["inp", "mid", "out"], "volume": ["feat", "vol"]}

    # --- persistence --------------------------------------------------------------------------------
    def save(self, folder: str | Path, *, extra_config: Mapping[str, Any] | None = None) -> Path:
        return save_checkpoint(folder, self.net.state_dict(), {**self.config, **dict(extra_config or {})})

    @classmethod
    def from_checkpoint(cls, state: dict[str, torch.Tensor], config: dict[str, Any]) -> "ToyGenerator":
        keys = ("tokens", "dim", "hidden", "resolution", "noise_scale", "truncation")
        gen = cls(**{k: config[k] for k in keys if k in config})
        try:
            gen.net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise InputError(f"toy checkpoint does not match its config: {e}") from None
        return gen


def make_toy(seed: int = 0, **kwargs: Any) -> ToyGenerator:
    """A picklable factory (for process-pool tests)."""
    return ToyGenerator(seed=seed, **kwargs)


def make_toy_data(folder: str | Path, count: int = 6, resolution: int = 12, points: int = 256, seed: int = 0) -> Path:
    """Write a data folder in the agreed format (manifest.jsonl, grids/, points/) of spheres and tori."""
    import json

    import numpy as np

    folder = Path(folder)
    (folder / "grids").mkdir(parents=True, exist_ok=True)
    (folder / "points").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = grid_points(resolution).reshape(-1, 3).astype(np.float64)  # (R^3, 3)
    rows = []
    for i in range(count):
        family = ("sphere", "torus")[i % 2]
        if family == "sphere":
            r = 0.3 + 0.3 * rng.random()
            sdf = np.linalg.norm(x, axis=1) - r
            d = rng.standard_normal((points, 3))
            surf = r * d / np.linalg.norm(d, axis=1, keepdims=True)
        else:
            R_, r = 0.5 + 0.1 * rng.random(), 0.15 + 0.05 * rng.random()
            q = np.stack([np.linalg.norm(x[:, :2], axis=1) - R_, x[:, 2]], 1)
            sdf = np.linalg.norm(q, axis=1) - r
            u, v = rng.random(points) * 2 * np.pi, rng.random(points) * 2 * np.pi
            surf = np.stack([(R_ + r * np.cos(v)) * np.cos(u), (R_ + r * np.cos(v)) * np.sin(u), r * np.sin(v)], 1)
        grid = np.clip(sdf, -0.2, 0.2).reshape(resolution, resolution, resolution).astype(np.float32)
        sid = f"{family}-{i:03d}"
        np.save(folder / "grids" / f"{sid}.npy", grid)
        np.savez(folder / "points" / f"{sid}.npz", points=surf.astype(np.float32), normals=surf.astype(np.float32))
        rows.append({"id": sid, "family": family, "label": i % 2, "split": "train", "grid": f"grids/{sid}.npy",
                     "points": f"points/{sid}.npz", "resolution": resolution, "truncation": 0.2})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder

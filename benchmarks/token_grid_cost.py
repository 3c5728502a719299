"""CPU cost of the latent diffusion denoiser's token grid at 32^3: sampling (16 DDIM steps with guidance,
batch 16) and one diffusion training step (batch 32), for untrained models of a few sizes, one thread.

The figures do not depend on the weights, so untrained models time what trained ones would.
Example: .venv/bin/python benchmarks/token_grid_cost.py
"""

from __future__ import annotations

import time

import torch

from weightspace.data.families import FAMILY_NAMES
from weightspace.generators.latent_diffusion.config import ModelConfig
from weightspace.generators.latent_diffusion.model import LatentDiffusionGenerator
from weightspace.generators.latent_diffusion.network import LatentDiffusionNet

SIZES = [
    dict(patch=2, width=128, depth=4),  # the shipped `default`
    dict(patch=1, width=128, depth=4),
    dict(patch=1, width=64, depth=4),
    dict(patch=1, width=64, depth=2),  # `default-points`
]


def cost(size: dict, *, batch: int = 16, train_batch: int = 32, train_steps: int = 3) -> dict:
    cfg = ModelConfig(families=list(FAMILY_NAMES), **size).validate()
    net = LatentDiffusionNet(cfg).eval()
    gen = LatentDiffusionGenerator(cfg, net)
    names = [FAMILY_NAMES[i % len(FAMILY_NAMES)] for i in range(batch)]
    with torch.no_grad():
        gen.sdf_grid(gen.condition(family=names[:2]), [0, 1])  # warm-up
        t0 = time.perf_counter()
        gen.sdf_grid(gen.condition(family=names), list(range(batch)))
        sample_s = (time.perf_counter() - t0) / batch
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    r = cfg.resolution // 4
    z = torch.randn(train_batch, cfg.latent_channels, r, r, r)  # (B, C, r, r, r)
    labels = torch.randint(len(FAMILY_NAMES), (train_batch,))  # (B,)
    t = torch.randint(cfg.timesteps, (train_batch,))  # (B,)
    t0 = time.perf_counter()
    for _ in range(train_steps):
        loss = (net("denoise", z, t, net("family", labels)) - z).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    step_s = (time.perf_counter() - t0) / train_steps
    return {**size, "sample_seconds_per_shape": sample_s, "train_step_seconds": step_s,
            "parameters_M": sum(p.numel() for p in net.parameters()) / 1e6}


def main() -> None:
    torch.set_num_threads(1)
    for size in SIZES:
        c = cost(size)
        print(f"{size}: sample {c['sample_seconds_per_shape']:.3f} s/shape, train step {c['train_step_seconds']:.3f} s, "
              f"params {c['parameters_M']:.2f}M", flush=True)


if __name__ == "__main__":
    main()

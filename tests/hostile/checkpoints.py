"""Tiny real generator checkpoints (random weights) to point hostile commands at."""

from __future__ import annotations

from pathlib import Path

import torch

FAMILIES = ["sphere", "torus", "shell"]


def tiny_latent_diffusion(folder: Path, seed: int = 0) -> Path:
    from weightspace.generators.latent_diffusion.config import ModelConfig
    from weightspace.generators.latent_diffusion.model import LatentDiffusionGenerator

    cfg = ModelConfig(resolution=16, ae_channels=[8, 16], latent_channels=2, patch=2, width=32, depth=2, heads=2,
                      cond_dim=8, families=FAMILIES, timesteps=100, sample_steps=4, guidance=2.0)
    torch.manual_seed(seed)
    gen = LatentDiffusionGenerator(cfg)
    with torch.no_grad():  # move zero-initialised layers off zero so outputs depend on every weight
        g = torch.Generator().manual_seed(seed)
        for p in gen.net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    gen.save(folder)
    return folder


def tiny_neural_field(folder: Path, seed: int = 0) -> Path:
    from weightspace.generators.neural_field.config import FieldConfig
    from weightspace.generators.neural_field.model import NeuralFieldGenerator

    torch.manual_seed(seed)
    gen = NeuralFieldGenerator(FieldConfig(n_codes=4, d_z=8, width=16, depth=3, skip=1, resolution=12, families=FAMILIES))
    gen.save(folder)
    return folder

"""Helper of bench_weightspace.py part (c): one LoRA population build (a separate process, so it can be killed).

Usage: _bench_pop_build.py DATA OUT MEMBERS STEPS CHECKPOINT|ld-arch|toy
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def default_architecture():
    """The default latent-diffusion architecture (ModelConfig defaults), random weights: same cost per step."""
    from weightspace.data.families import FAMILY_NAMES
    from weightspace.generators.latent_diffusion.config import ModelConfig
    from weightspace.generators.latent_diffusion.model import LatentDiffusionGenerator

    torch.manual_seed(0)
    gen = LatentDiffusionGenerator(ModelConfig(families=list(FAMILY_NAMES)))
    gen.net.eval()
    return gen


def main() -> None:
    from weightspace.runtime.allocator import retain_freed_memory

    retain_freed_memory()  # the build runs in this process, as the weightspace command runs it (cli.main)
    data, out, members, steps, checkpoint = sys.argv[1:6]
    torch.set_num_threads(1)
    from weightspace.generators import load_generator
    from weightspace.space.population import PopulationConfig, build_population

    if checkpoint == "toy":
        from toy_generator import make_toy

        loader = functools.partial(make_toy, seed=0, resolution=32)
    elif checkpoint == "ld-arch":
        loader = default_architecture
    else:
        loader = functools.partial(load_generator, checkpoint)
    cfg = PopulationConfig(checkpoint=checkpoint, parameterisation="lora", data=data, out=out, members=int(members),
                           options={"rank": 4, "alpha": 8.0, "targets": "all"}, steps=int(steps), lr=1e-3)
    build_population(cfg, loader=loader)


if __name__ == "__main__":
    main()

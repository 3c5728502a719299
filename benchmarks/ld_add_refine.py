"""Give a latent diffusion checkpoint's denoiser a convolutional refinement at the latent grid, keeping what
it computes (issue 14).

The round trip of real latents (`ld_family_levers.py roundtrip`) loses mugs' handles and ladders' rungs
already at moderate noise: the denoiser is not precise enough there, and its tokens see each 2^3 patch
of the 8^3 latent as one vector. `model.refine` adds three 3x3x3 convolutions over the estimate and the
noisy latent (`Denoiser`); the last starts at zero, so the written checkpoint samples exactly what the
source samples until training moves it (`--check` shows the largest latent difference). Continue it
with the ordinary trainer, which loads the architecture from the folder:

  .venv/bin/python benchmarks/ld_add_refine.py --checkpoint default --channels 32 --out runs/ld32-refine-init --check
  weightspace train latent-diffusion --data runs/data32c-2560 --out runs/ld32-refine \\
      --continue-from runs/ld32-refine-init --stage diffusion --config configs/ablation/ld32-refine-cont.json --device cpu
"""

from __future__ import annotations

import torch
from _derived_checkpoint import parser, write_and_check

from weightspace.generators.latent_diffusion.config import saved_model_config
from weightspace.generators.latent_diffusion.network import LatentDiffusionNet
from weightspace.generators.registry import resolve_checkpoint
from weightspace.runtime.checkpoint import load_checkpoint


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--channels", type=int, default=32, help="channels of the refinement's convolutions")
    ap.add_argument("--seed", type=int, default=0, help="seed of the new (non-zero) weights")
    args = ap.parse_args()
    src = resolve_checkpoint(args.checkpoint)
    state, config = load_checkpoint(src)
    model = dict(config["model"])
    if model.get("refine"):
        raise SystemExit(f"{src}: the denoiser has a refinement already")
    if args.channels < 1:
        raise SystemExit(f"--channels must be >= 1, got {args.channels}")
    model["refine"] = args.channels
    torch.manual_seed(args.seed)
    fresh = LatentDiffusionNet(saved_model_config(model)).state_dict()
    added = {k: v for k, v in fresh.items() if k.startswith("denoiser.refine.")}
    new = {**state, **added}
    config = {**config, "model": model,
              "refine_from": {"checkpoint": str(args.checkpoint), "seed": args.seed,
                              "how": "benchmarks/ld_add_refine.py: a refinement added whose last convolution is zero"}}
    write_and_check(args, src, new, config,
                    f"refinement with {args.channels} channels, {sum(v.numel() for v in added.values())} new parameters")


if __name__ == "__main__":
    main()

"""Give a latent diffusion checkpoint's denoiser self-conditioning, keeping what it computes (issue 14).

Self-conditioning (Chen et al. 2022, "Analog Bits") lets the denoiser read its own x0 estimate of
the step before. The new input projection (`denoiser.self_cond_in`) starts at zero, so the written
checkpoint samples exactly what the source samples until training moves it (`--check` shows the
largest latent difference). Continue it with the ordinary trainer, which loads the architecture
from the folder and trains the self-conditioned call on `train.self_condition_prob` of the batches:

  .venv/bin/python benchmarks/ld_add_self_condition.py --checkpoint default --out runs/ld32-sc-init --check
  weightspace train latent-diffusion --data runs/data32c-2560 --out runs/ld32-sc-cont \\
      --continue-from runs/ld32-sc-init --stage diffusion --config configs/ablation/ld32-sc-cont.json --device cpu
"""

from __future__ import annotations

import torch
from _derived_checkpoint import parser, write_and_check

from weightspace.generators.registry import resolve_checkpoint
from weightspace.runtime.checkpoint import load_checkpoint


def main() -> None:
    args = parser(__doc__).parse_args()
    src = resolve_checkpoint(args.checkpoint)
    state, config = load_checkpoint(src)
    model = dict(config["model"])
    if model.get("self_condition"):
        raise SystemExit(f"{src}: the denoiser is self-conditioned already")
    patch_in = state["denoiser.patch_in.weight"]  # (W, C p^3)
    new = dict(state)
    new["denoiser.self_cond_in.weight"] = torch.zeros_like(patch_in)
    new["denoiser.self_cond_in.bias"] = torch.zeros(patch_in.shape[0], dtype=patch_in.dtype)
    config = {**config, "model": {**model, "self_condition": True},
              "self_condition_from": {"checkpoint": str(args.checkpoint),
                                      "how": "benchmarks/ld_add_self_condition.py: a zero self_cond_in projection added"}}
    write_and_check(args, src, new, config, f"self-conditioned denoiser, {patch_in.numel() + patch_in.shape[0]} new parameters (zero)")


if __name__ == "__main__":
    main()

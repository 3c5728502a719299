"""Grow a latent diffusion checkpoint's denoiser deeper, keeping what it computes (issue 14, capacity lever).

The shipped `default` plateaued: 50 more CPU minutes of the same 4-block denoiser moved its family
samples from 0.56 to 0.59 (pooled over 2 seeds, within noise). This asks whether capacity, not
training time, is the limit without retraining from scratch (which the CPU budget cannot afford):
it writes a checkpoint folder whose denoiser has `--factor` times the blocks, the trained blocks
kept in order and a new block after each. A new block's adaLN layer is zero, so its gates are zero
and it starts as the identity (the same construction that starts every block of a fresh denoiser):
the grown checkpoint samples exactly what the source samples until training moves it. Continue it
with the ordinary trainer, which loads the architecture from the folder:

  .venv/bin/python benchmarks/ld_grow_depth.py --checkpoint default --factor 2 --out runs/ld32-deep-init
  weightspace train latent-diffusion --data runs/data32a-2560 --out runs/ld32-deep \\
      --continue-from runs/ld32-deep-init --stage diffusion --config configs/latent-diffusion-32.json --minutes 50
  weightspace evaluate families runs/ld32-deep --per-family 8 --seed 0 --threads 1

`--check` decodes a few family samples from both folders under the same seeds and prints the
largest latent difference (0 up to float rounding).
"""

from __future__ import annotations

import torch
from _derived_checkpoint import parser, write_and_check

from weightspace.generators.registry import resolve_checkpoint
from weightspace.runtime.checkpoint import load_checkpoint


def grown_state(state: dict[str, torch.Tensor], depth: int, factor: int, seed: int) -> dict[str, torch.Tensor]:
    """The state of a denoiser with depth x factor blocks: old block i at i * factor, the blocks in between
    freshly initialised with zero adaLN (identity); everything outside the blocks unchanged."""
    from weightspace.generators.latent_diffusion.denoiser import DenoiserBlock

    prefix = "denoiser.blocks."
    sample = {k[len(prefix) + 2:]: v for k, v in state.items() if k.startswith(prefix + "0.")}
    width = sample["adaln.weight"].shape[1]
    heads = 4
    out = {k: v for k, v in state.items() if not k.startswith(prefix)}
    torch.manual_seed(seed)
    for i in range(depth):
        for k, v in state.items():
            if k.startswith(f"{prefix}{i}."):
                out[f"{prefix}{i * factor}.{k[len(f'{prefix}{i}.'):]}"] = v
        for j in range(1, factor):
            block = DenoiserBlock(width, heads)  # adaLN zero-initialised: the block adds nothing yet
            for name, value in block.state_dict().items():
                out[f"{prefix}{i * factor + j}.{name}"] = value.detach().clone()
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--factor", type=int, default=2, help="blocks after growing = depth x factor")
    ap.add_argument("--seed", type=int, default=0, help="seed of the new blocks' initial attention and MLP weights")
    args = ap.parse_args()
    src = resolve_checkpoint(args.checkpoint)
    state, config = load_checkpoint(src)
    model = dict(config["model"])
    if not any(k.startswith("denoiser.blocks.") for k in state):
        raise SystemExit(f"{src}: no denoiser blocks in the state (keys start {sorted(state)[:3]})")
    depth = int(model["depth"])
    if int(model["heads"]) != 4:
        raise SystemExit("this script builds new blocks with 4 heads; the source has " + str(model["heads"]))
    new = grown_state(state, depth, args.factor, args.seed)
    config = {**config, "model": {**model, "depth": depth * args.factor},
              "grown_from": {"checkpoint": str(args.checkpoint), "depth": depth, "factor": args.factor, "seed": args.seed,
                             "how": "benchmarks/ld_grow_depth.py: old block i at i x factor, new zero-adaLN blocks between"}}
    write_and_check(args, src, new, config, f"depth {depth} -> {depth * args.factor}, "
                    f"{sum(v.numel() for k, v in state.items() if 'denoiser' in k)} -> "
                    f"{sum(v.numel() for k, v in new.items() if 'denoiser' in k)} denoiser parameters")

if __name__ == "__main__":
    main()

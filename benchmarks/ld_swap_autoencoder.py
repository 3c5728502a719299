"""Put another checkpoint's autoencoder under a latent diffusion checkpoint's denoiser (issue 14, autoencoder lever).

A retrained autoencoder (here: the shipped one continued with a heavier sign term, whose decoder draws
thin holes deep enough for the robust Betti margin) moves the latent (0.41 std rms for the sign-6 one),
so the old denoiser does not sample it as it is. This writes a checkpoint folder with the denoiser,
condition encoders and progress of `--checkpoint` and the autoencoder (weights and step counts) of
`--autoencoder`, to be continued by the ordinary trainer; its diffusion stage recomputes the latent
statistics from the new encoder before the first step:

  .venv/bin/python benchmarks/ld_swap_autoencoder.py --checkpoint default --autoencoder runs/ae-sign6 --out runs/ld32-s6-swap-init
  weightspace train latent-diffusion --data runs/data32c-2560 --out runs/ld32-s6-cont \\
      --continue-from runs/ld32-s6-swap-init --stage diffusion \\
      --config configs/ablation/ld32-cont-sign6-canonical-truncated-v.json --device cpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _derived_checkpoint import write_derived

from weightspace.generators.latent_diffusion.config import saved_model_config
from weightspace.generators.latent_diffusion.train import AUTOENCODER_FIELDS
from weightspace.generators.registry import resolve_checkpoint
from weightspace.runtime.checkpoint import load_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="default", help="the denoiser's checkpoint")
    ap.add_argument("--autoencoder", required=True, help="the autoencoder's checkpoint (a `--stage ae` run will do)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    src, ae_src = resolve_checkpoint(args.checkpoint), resolve_checkpoint(args.autoencoder)
    state, config = load_checkpoint(src)
    ae_state, ae_config = load_checkpoint(ae_src)
    a, b = saved_model_config(config["model"]), saved_model_config(ae_config["model"])
    differ = [f for f in AUTOENCODER_FIELDS if getattr(a, f) != getattr(b, f)]
    if differ:
        raise SystemExit(f"{ae_src}: its autoencoder does not fit {src} ({', '.join(differ)} differ)")
    if not ae_config.get("progress", {}).get("ae_done"):
        raise SystemExit(f"{ae_src}: its autoencoder stage has not finished")
    new = {k: (ae_state[k] if k.startswith("ae.") else v) for k, v in state.items()}
    prog = {**config["progress"], "ae_steps": ae_config["progress"]["ae_steps"], "ae_seconds": ae_config["progress"]["ae_seconds"]}
    config = {**config, "progress": prog,
              "autoencoder_swapped": {"from": str(args.autoencoder), "how": "benchmarks/ld_swap_autoencoder.py; the "
                                      "diffusion stage recomputes the latent statistics from the new encoder"}}
    out = write_derived(src, Path(args.out), new, config)
    print(f"wrote {out}: the denoiser of {src} on the autoencoder of {ae_src} ({prog['ae_steps']} autoencoder steps)")


if __name__ == "__main__":
    main()

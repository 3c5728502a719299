"""Member fidelity: do fitted weight-space members decode to their own shapes? (issue 14)

Builds one population per (checkpoint, parameterisation) on a data folder with the population
defaults (or the settings given) and prints the fidelity table of each: mean decode IoU against
the target, the share whose robust Betti numbers equal the target's (Wilson 95% interval), empty
decodes, the base point's IoU, and seconds per member. Targets: IoU >= 0.80, Betti >= 90%.

Example (the figures in the latent-diffusion training record):
  weightspace data make --family torus,pretzel,pair,ladder --count 32 --seed 4242 --split 1,0,0 --out runs/fid32
  .venv/bin/python benchmarks/member_fidelity.py --data runs/fid32 --out runs/fidelity \\
      --checkpoints default,default-field --parameterisations lora,layers --workers 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from weightspace.analysis.rates import format_rate
from weightspace.runtime.allocator import retain_freed_memory
from weightspace.runtime.io import atomic_write_json
from weightspace.space.population import PopulationConfig, build_population, fidelity_summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, help="one population folder per run is made under it (reruns resume)")
    ap.add_argument("--checkpoints", default="default,default-field")
    ap.add_argument("--parameterisations", default="lora,layers")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--draws", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    retain_freed_memory()  # in-process builds here run as the weightspace command runs them (cli.main)
    out = Path(args.out)
    table = {}
    for ckpt in args.checkpoints.split(","):
        for name in args.parameterisations.split(","):
            options = {"rank": args.rank} if name == "lora" else {}
            cfg = PopulationConfig(checkpoint=ckpt, parameterisation=name, data=args.data, out=str(out / f"{ckpt}-{name}"),
                                   options=options, steps=args.steps, lr=args.lr, draws=args.draws,
                                   executor="process" if args.workers > 1 else "inprocess", workers=args.workers)
            s = fidelity_summary(build_population(cfg))
            table[f"{ckpt}/{name}"] = s
            for fam, t in [*s["per_family"].items(), ("all", s["all"])]:
                print(f"{ckpt:14s} {name:7s} {fam:8s} n={t['n']:3d}  IoU {t['iou']:.3f}  Betti {format_rate(t['betti'])}  "
                      f"empty {t['empty']}  base IoU {t['base_iou']:.3f}  {t['seconds_per_member']:.1f} s/member", flush=True)
    atomic_write_json(out / "fidelity.json", table)


if __name__ == "__main__":
    main()

"""Diagnostic: is a neural field's reconstruction from points limited by the reconstruction or by the field?

For held-out shapes it compares two codes under the frozen network:
  points  the code reconstructed from 2,048 noisy surface points (what `evaluate generator` scores);
  oracle  that code optimised further against the shape's true SDF grid with the generator's own
          training loss: roughly the best this field can represent the shape.
If the oracle is not much better than the points code, better reconstruction cannot reach a higher
IoU near that code; the field's code space (training data, capacity) has to improve. The oracle
starts from the reconstructed code, so a code in a wrong basin can hold it there: on the 512-shape
field this diagnostic read 0.655 against 0.605 from points (16 validation shapes), yet the
known-outside term alone later lifted the points figure on the test split from 0.571 to 0.699.

Example: .venv/bin/python benchmarks/diag_neural_field_codes.py --checkpoint default-field --data runs/data32
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from weightspace.analysis import topology
from weightspace.analysis.geometry import iou
from weightspace.generators import load_generator
from weightspace.generators.neural_field import evaluate as nf_eval
from weightspace.runtime.seeding import derive_seed


def diagnose(checkpoint: str, data: Path, *, split: str, every: int, count: int, oracle_steps: int, batch: int = 4) -> dict:
    gen = load_generator(checkpoint)
    rows = [r for r in nf_eval.read_manifest(data, None) if r["split"] == split][::every][:count]
    obs = torch.from_numpy(np.stack([nf_eval._observation(data, r, 0) for r in rows]))  # (n, 2048, 3)
    truths = [nf_eval.load_grid(data, r) for r in rows]
    scores = {"points": ([], []), "oracle": ([], [])}
    for s in range(0, len(rows), batch):
        seeds = [derive_seed(0, "nf-eval", r["id"]) for r in rows[s : s + batch]]
        z = gen.condition(points=obs[s : s + batch], seeds=seeds)  # (b, d_z)
        target = torch.from_numpy(np.stack(truths[s : s + batch]))  # (b, R, R, R)
        z_oracle = z.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([z_oracle], lr=0.01)
        for _ in range(oracle_steps):
            loss = gen.training_loss(target, z_oracle, seeds)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            decoded = {"points": gen.sdf_grid(z, seeds).numpy(), "oracle": gen.sdf_grid(z_oracle, seeds).numpy()}
        for name, grids in decoded.items():
            for g, t in zip(grids, truths[s : s + batch]):
                scores[name][0].append(iou(g, t))
                scores[name][1].append(topology(g).betti == topology(t).betti)
    return {
        "checkpoint": checkpoint,
        "shapes": len(rows),
        "split": split,
        **{f"{name}_iou": float(np.mean(v[0])) for name, v in scores.items()},
        **{f"{name}_betti_match": float(np.mean(v[1])) for name, v in scores.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="default-field")
    p.add_argument("--data", type=Path, default=Path("runs/data32"))
    p.add_argument("--split", default="val")
    p.add_argument("--every", type=int, default=4, help="take every N-th shape of the split")
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--oracle-steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(diagnose(args.checkpoint, args.data, split=args.split, every=args.every, count=args.count,
                              oracle_steps=args.oracle_steps), indent=2))


if __name__ == "__main__":
    main()

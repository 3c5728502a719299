"""What the set metrics of `evaluate generator` read for a generator that returns real shapes (issue 14).

MMD, COV and 1-NNA compare a checkpoint's family samples with the test split. To know how much of a
sampler's figure is the denoiser and how much the autoencoder, this scores two stand-ins with the
same surface points and seeds: the val split's shapes themselves (a perfect generator: 1-NNA near
0.5) and their round trips through the checkpoint's autoencoder (a perfect denoiser).

  .venv/bin/python benchmarks/ld_set_metric_floor.py --checkpoint default --data runs/data32c-2560 --shapes 256
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from weightspace.analysis.sets import set_metrics
from weightspace.data.dataset import ShapeDataset
from weightspace.generators.latent_diffusion.evaluate import held_out_rows, surface_cloud
from weightspace.generators.registry import as_generator
from weightspace.runtime.seeding import derive_seed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--data", required=True, help="the checkpoint's training folder (its test and val splits)")
    ap.add_argument("--shapes", type=int, default=256, help="test shapes, and as many val shapes")
    ap.add_argument("--seed", type=int, default=0, help="the seed `evaluate generator` was given")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = as_generator(args.checkpoint)
    test, idx = held_out_rows(args.data, args.shapes)
    ref = [test[i]["grid"].numpy() for i in idx]  # each (R, R, R)
    val = ShapeDataset(args.data, "val")
    real = [val[j]["grid"].numpy() for j in range(min(len(val), len(ref)))]  # drawn as the test split is
    with torch.no_grad():
        recon = [g for k in range(0, len(real), 32)
                 for g in gen.decode_latents(gen.encode_grids(torch.from_numpy(np.stack(real[k:k + 32])))).numpy()]
    ref_clouds = [surface_cloud(g, derive_seed(args.seed, "set-ref", k)) for k, g in enumerate(ref)]
    for name, grids in (("val shapes", real), ("their autoencoder reconstructions", recon)):
        clouds = [surface_cloud(g, derive_seed(args.seed, "set-gen", k)) for k, g in enumerate(grids)]
        m = set_metrics(clouds, ref_clouds)
        print(json.dumps({"set": name, "n": len(grids), "test_shapes": len(ref),
                          **{k: round(float(m[k]), 4) for k in ("mmd", "cov", "nna")}}), flush=True)


if __name__ == "__main__":
    main()

"""Ablation: the autoencoder's Haar wavelet front end vs a plain stride-2 front end, at equal training time.

The two autoencoders train in one process, one step each in turn, so machine load hits both alike;
each stops when its own summed step time reaches the budget. Reports validation IoU of each.

Example: .venv/bin/python benchmarks/ablation_latent_diffusion_front.py --data runs/data32 --seconds 150
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from weightspace.data.dataset import ShapeDataset
from weightspace.generators.latent_diffusion.config import ModelConfig, TrainConfig
from weightspace.generators.latent_diffusion.losses import autoencoder_loss
from weightspace.generators.latent_diffusion.network import LatentDiffusionNet
from weightspace.generators.latent_diffusion.train import EMA, reconstruction_iou


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--seconds", type=float, default=150.0, help="training seconds per front end")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tc = TrainConfig()
    train = ShapeDataset(args.data, split="train")
    trunc = float(train.rows[0]["truncation"])
    res = int(train.grids.shape[-1])
    tsdf = (torch.from_numpy(np.array(train.grids, dtype=np.float32)) / trunc).clamp(-1, 1)  # (N, R, R, R)
    val = torch.from_numpy(np.array(ShapeDataset(args.data, split="val").grids, dtype=np.float32))  # (V, R, R, R)
    band = 2.0 * (2.0 / (res - 1)) / trunc
    runs = {}
    for front in ("haar", "plain"):
        torch.manual_seed(args.seed)
        net = LatentDiffusionNet(ModelConfig(front=front, resolution=res, truncation=trunc))
        runs[front] = dict(net=net, ema=EMA(net, tc.ema_decay), opt=torch.optim.Adam(net.ae.parameters(), lr=tc.ae_lr),
                           gen=torch.Generator().manual_seed(args.seed), seconds=0.0, steps=0)
    while any(r["seconds"] < args.seconds for r in runs.values()):
        for r in runs.values():
            if r["seconds"] >= args.seconds:
                continue
            t0 = time.perf_counter()
            x = tsdf[torch.randint(tsdf.shape[0], (tc.ae_batch,), generator=r["gen"])]  # (B, R, R, R)
            pred = r["net"].ae.decode(r["net"].ae.encode(x))
            loss = autoencoder_loss(pred, x, band=band, near_surface_weight=tc.near_surface_weight, sign_weight=tc.sign_weight)
            r["opt"].zero_grad(set_to_none=True)
            loss.backward()
            r["opt"].step()
            r["ema"].update(r["net"], r["steps"])
            r["steps"] += 1
            r["seconds"] += time.perf_counter() - t0
    out = {front: dict(steps=r["steps"], train_seconds=round(r["seconds"], 1),
                       seconds_per_step=round(r["seconds"] / r["steps"], 3),
                       val_iou=round(reconstruction_iou(r["ema"].shadow, val, trunc), 4),
                       ae_parameters=sum(p.numel() for p in r["net"].ae.parameters()))
           for front, r in runs.items()}
    print(json.dumps({"budget_seconds_each": args.seconds, "batch": tc.ae_batch, "lr": tc.ae_lr, "results": out}, indent=2))


if __name__ == "__main__":
    main()

"""Your own SDF model in weightspace: define it, register it, and run two studies on it.

    python examples/custom_generator.py OUT

writes OUT/interpolate/results.json (topology transitions along a path between two encoded shapes)
and OUT/subspace/results.json (does a PCA subspace of four examples keep their topology?), plus
the model's checkpoint in OUT/checkpoint, loadable by `weightspace ... --checkpoint OUT/checkpoint`
once the kind is registered (or installed through the `weightspace.generators` entry-point group).
It takes under a minute on one CPU core, a third of it training the model (300 steps reproduce the
endpoints and the examples; more steps lower the loss further).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from weightspace.data.dataset import load_grid, read_manifest
from weightspace.data.make import make_dataset
from weightspace.experiments.interpolate import InterpolateConfig, run_interpolate
from weightspace.experiments.subspace import SubspaceConfig, run_subspace
from weightspace.generators import FieldGenerator, load_generator, register


# --- the model: any torch module f(x, z) -> sdf ------------------------------------------------------
class MLPSDF(nn.Module):
    """A plain MLP auto-decoder: points x (B, P, 3) and a code z (B, d_z) -> signed distance (B, P)."""

    def __init__(self, n_codes: int, d_z: int = 16, width: int = 128, depth: int = 4) -> None:
        super().__init__()
        self.register_buffer("codes", torch.zeros(n_codes, d_z))  # the training shapes' codes (N, d_z), saved along
        layers, d_in = [], 3 + d_z
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), nn.ReLU()]
            d_in = width
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, z[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)  # (B, P, 3 + d_z)
        return self.mlp(h)[..., 0]  # (B, P)


# --- the generator: the adapter plus one capability ---------------------------------------------------
class MLPGenerator(FieldGenerator):
    """FieldGenerator gives the protocol's core and save/load; encode_points adds the EncodesPoints
    capability the studies use to turn a shape's surface samples into a condition."""

    def encode_points(self, points: torch.Tensor, seeds=None) -> torch.Tensor:
        points = torch.as_tensor(points, dtype=torch.float32)  # (B, P, 3)
        seeds = [0] * points.shape[0]
        with torch.no_grad():  # start from the training code that fits the surface best
            codes = self.net.codes  # (N, d_z)
            err = torch.stack([self.sdf_points(points, c.expand(points.shape[0], -1), seeds).abs().mean(1) for c in codes])  # (N, B)
            z = codes[err.argmin(0)].clone().requires_grad_(True)  # (B, d_z)
        opt = torch.optim.Adam([z], lr=1e-2)
        with torch.enable_grad():  # callers may encode under no_grad
            for _ in range(100):  # DeepSDF's inference: the surface is the zero level, with a small code prior
                loss = self.sdf_points(points, z, seeds).abs().mean() + 1e-4 * z.pow(2).sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return z.detach()


register("mlp-sdf", lambda state, config: MLPGenerator.from_state(MLPSDF(config["n_codes"]), state, config), replace=True)


# --- training (the user's own loop; here: DeepSDF's auto-decoder on procedural shapes) ----------------
def train(data: Path, steps: int = 300) -> MLPGenerator:
    torch.manual_seed(0)
    rows = read_manifest(data)
    grids = torch.from_numpy(np.stack([load_grid(data, r) for r in rows]))  # (N, R, R, R) world units
    gen = MLPGenerator(MLPSDF(len(rows)), condition_shape=(16,), kind="mlp-sdf", resolution=32, config={"n_codes": len(rows)})
    codes = (0.01 * torch.randn(len(rows), 16)).requires_grad_(True)  # (N, d_z)
    opt = torch.optim.Adam([*gen.net.parameters(), codes], lr=1e-3)
    for step in range(steps):
        idx = torch.randperm(len(rows))[:8]
        loss = gen.training_loss(grids[idx], codes[idx], [step * 8 + i for i in range(len(idx))], n_points=1024)
        loss = loss + 1e-4 * codes[idx].pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen.net.codes.copy_(codes.detach())
    print(f"trained {steps} steps, loss {loss.item():.4f}")
    return gen


def main(out: Path) -> None:
    torch.set_num_threads(1)
    data = out / "data"
    make_dataset(data, family="torus,pair", count=16, resolution=32, seed=0, split=(1.0, 0.0, 0.0), progress=False, pose="aligned")
    gen = train(data)
    gen.save(out / "checkpoint")
    gen = load_generator(out / "checkpoint")  # the registered kind loads back by its config.json
    ids = [r["id"] for r in read_manifest(data)]
    torus, pair = next(i for i in ids if i.startswith("torus")), next(i for i in ids if i.startswith("pair"))
    run_interpolate(InterpolateConfig(checkpoint=str(out / "checkpoint"), out=str(out / "interpolate"), endpoints="data",
                                      a=torus, b=pair, data=str(data), steps=8, meshes=False), generator=gen)
    run_subspace(SubspaceConfig(checkpoint=str(out / "checkpoint"), out=str(out / "subspace"), family="torus", examples=4,
                                k=2, samples=8, data=str(data), parameterisation="condition", meshes=False), generator=gen)
    print(f"wrote {out / 'interpolate' / 'results.json'} and {out / 'subspace' / 'results.json'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/custom_generator.py OUT")
    main(Path(sys.argv[1]))

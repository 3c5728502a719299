"""CPU cost of the latent diffusion denoiser's token grid at 32^3: sampling (16 DDIM steps with guidance,
batch 16) and one diffusion training step (batch 32), for untrained models of a few sizes, one thread.

The figures do not depend on the weights, so untrained models time what trained ones would.
Example: .venv/bin/python benchmarks/token_grid_cost.py
"""
import time, torch, dataclasses
torch.set_num_threads(1)
from weightspace.generators.latent_diffusion.config import ModelConfig
from weightspace.generators.latent_diffusion.network import LatentDiffusionNet
from weightspace.generators.latent_diffusion.model import LatentDiffusionGenerator
fams=['table','chair','dumbbell','torus','mug','pretzel','ladder','shell','pair','scatter']
for kw in [dict(patch=2, width=128, depth=4), dict(patch=1, width=128, depth=4), dict(patch=1, width=64, depth=4, heads=4), dict(patch=1, width=64, depth=2, heads=4)]:
    cfg = ModelConfig(families=fams, **kw).validate()
    net = LatentDiffusionNet(cfg).eval()
    gen = LatentDiffusionGenerator(cfg, net)
    names=[fams[i%10] for i in range(16)]
    with torch.no_grad():
        gen.sdf_grid(gen.condition(family=names[:2]), [0,1])
        t0=time.perf_counter(); gen.sdf_grid(gen.condition(family=names), list(range(16))); dt=(time.perf_counter()-t0)/16
    # one training step (diffusion loss, batch 32)
    net.train(); opt=torch.optim.Adam([p for p in net.parameters()], lr=1e-4)
    B=32; r=8; z=torch.randn(B,4,r,r,r); lab=torch.randint(10,(B,))
    t=torch.randint(1000,(B,))
    t0=time.perf_counter()
    for _ in range(3):
        loss=(net("denoise", z, t, net("family", lab))-z).pow(2).mean(); opt.zero_grad(); loss.backward(); opt.step()
    st=(time.perf_counter()-t0)/3
    print(kw, f"sample {dt:.3f} s/shape, train step {st:.3f} s, params {sum(p.numel() for p in net.parameters())/1e6:.2f}M", flush=True)

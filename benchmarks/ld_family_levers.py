"""Where do the latent diffusion model's family samples lose their topology? Three measured levers (issue 14).

  roundtrip  training latents of each family noised to step t and denoised back (guidance and DDIM
             spacing of the checkpoint): the share that keeps its family's robust (b0, b1). t = 0 is
             the autoencoder alone. Separates what the denoiser loses at low noise from what it
             loses building structure at high noise.
  prior      truncated sampling: start the DDIM chain at t* from each family's empirical Gaussian
             (mean and covariance of its training latents, noised to t*) instead of pure noise.
  guidance   guidance in two intervals: --w-high for steps t >= --t-cut, --w-low below (the
             checkpoint uses one scale throughout), on the family samples of --seeds (80 each, pooled).
             On a self-conditioned checkpoint `--sc-feed guided|cond` feeds both branches the guided
             or the conditioned estimate of the step before instead of each its own.
  steps      the family samples of --seeds with DDIM over other step lists (--lists, ';' between
             lists; a single number is that many evenly spaced steps); `--held-out N` adds the held-out
             figures on N test shapes of --data (1-NNA, COV: what fewer steps cost in diversity).
  decoder    fine-tune the decoder alone on latents with added Gaussian noise (sigma ~ U[0, s]),
             encoder and denoiser unchanged, then measure the round trip and the family samples.
  autoencoder  the autoencoder alone on the validation split: the share of shapes whose round trip keeps
             their own robust (b0, b1), overall and per family, and the mean IoU; at latent noise
             `--noise` (a comma list, in units of each latent channel's std over the split), which
             tells how much a denoiser's small latent errors cost. Works on a checkpoint whose
             diffusion stage has not run (`--stage ae`).
  denoised-decoder  fine-tune the decoder alone on the denoiser's own output: training latents noised to
             each t in `--t` and denoised back under their family, paired with their own TSDF, mixed one
             to one with the clean latents; then the validation round trip and the family samples
             (seeds 0 and 1). `--save` writes the checkpoint with that decoder.
  autoguide  autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of
             itself"): x0 = bad(c) + w (good(c) - bad(c)), both conditioned on the family, where
             `--checkpoint` is the good model and `--bad` a weaker one on the same autoencoder
             (fewer blocks or less training); `--w` takes a comma list. Seed 0 of the family samples.

Each prints one line per setting: the rate over `--per` items of each of the 10 families, and the
per-family successes. The figures are in the latent-diffusion-32 training record
(ablations.after_shipping).

  .venv/bin/python benchmarks/ld_family_levers.py roundtrip --data runs/data32a-2560 --t 0,100,300,500
  .venv/bin/python benchmarks/ld_family_levers.py prior --data runs/data32a-2560 --t 500,700,850
  .venv/bin/python benchmarks/ld_family_levers.py guidance --data runs/data32a-2560 --w-high 4 --w-low 2 --t-cut 500
  .venv/bin/python benchmarks/ld_family_levers.py steps --data runs/data32c-2560 --lists "16;8;999,666,333,0" --seeds 10,11 --held-out 256
  .venv/bin/python benchmarks/ld_family_levers.py decoder --data runs/data32a-2560 --sigma 0.3 --steps 800
  .venv/bin/python benchmarks/ld_family_levers.py autoencoder --checkpoint runs/ae-sign6 --data runs/data32c-2560 --noise 0,0.1,0.2
  .venv/bin/python benchmarks/ld_family_levers.py denoised-decoder --data runs/data32c-2560 --t 100,300,500 --steps 800
  .venv/bin/python benchmarks/ld_family_levers.py autoguide --checkpoint runs/ld32-deep --bad default --w 1.5,2,3 --data runs/data32a-2560
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from weightspace.analysis.geometry import iou
from weightspace.analysis.persistence import robust_betti
from weightspace.data.dataset import load_grid, read_manifest
from weightspace.data.families import FAMILIES
from weightspace.generators.latent_diffusion.evaluate import family_samples
from weightspace.generators.latent_diffusion.losses import autoencoder_loss
from weightspace.generators.latent_diffusion.samplers import sample_ddim
from weightspace.generators.registry import as_generator


def split_grids(data: str, split: str) -> tuple[torch.Tensor, list[str]]:
    rows = [r for r in read_manifest(data) if r["split"] == split]
    return torch.from_numpy(np.stack([load_grid(data, r) for r in rows])).float(), [r["family"] for r in rows]


@torch.no_grad()
def encode(gen, grids: torch.Tensor) -> torch.Tensor:
    return torch.cat([gen.encode_grids(chunk) for chunk in grids.split(64)])  # (N, C, r, r, r)


@torch.no_grad()
def denoise_from(gen, x: torch.Tensor, family: str, t_start: int) -> torch.Tensor:
    """DDIM from x at step t_start to 0 under the family's condition with the checkpoint's guidance,
    at the checkpoint's step spacing (sample_steps over the whole chain)."""
    den = gen.guided_denoiser(gen.condition(family=[family] * x.shape[0]))
    steps = max(2, round(gen.cfg.sample_steps * t_start / (gen.cfg.timesteps - 1)))
    return sample_ddim(den, x, torch.round(torch.linspace(t_start, 0, steps)).long(), gen.net.alphas_cumprod.float())


def matches(gen, z: torch.Tensor, family: str) -> int:
    with torch.no_grad():
        grids = gen.decode_latents(z).numpy()
    declared = tuple(FAMILIES[family].betti[:2])
    return sum(tuple(int(v) for v in robust_betti(g))[:2] == declared for g in grids)


def report(label: str, hits: dict[str, int], per: int) -> None:
    print(f"{label}: {sum(hits.values())}/{per * len(hits)} = {sum(hits.values()) / (per * len(hits)):.3f}  {hits}", flush=True)


def roundtrip(gen, latents: dict[str, torch.Tensor], ts: list[int], per: int) -> None:
    ab = gen.net.alphas_cumprod.float()
    for t in ts:
        hits = {}
        for f, z in latents.items():
            z0, g = z[:per], torch.Generator().manual_seed(7)
            if t > 0:
                z0 = denoise_from(gen, ab[t].sqrt() * z0 + (1 - ab[t]).sqrt() * torch.randn(z0.shape, generator=g), f, t)
            hits[f] = matches(gen, z0, f)
        report(f"roundtrip t={t}", hits, per)


def prior(gen, latents: dict[str, torch.Tensor], ts: list[int], per: int) -> None:
    ab = gen.net.alphas_cumprod.float()
    for t in ts:
        hits = {}
        for i, (f, z) in enumerate(latents.items()):
            flat = z.flatten(1)  # (n, D)
            mean, centred = flat.mean(0), flat - flat.mean(0)
            g = torch.Generator().manual_seed(1000 + i)
            # mean + centred^T w with w ~ N(0, I / (n - 1)) has the empirical covariance exactly
            z0 = (mean + torch.randn(per, flat.shape[0], generator=g) @ centred / (flat.shape[0] - 1) ** 0.5).view(per, *z.shape[1:])
            x = ab[t].sqrt() * z0 + (1 - ab[t]).sqrt() * torch.randn(z0.shape, generator=g)
            hits[f] = matches(gen, denoise_from(gen, x, f, t), f)
        report(f"prior t*={t}", hits, per)


def sample_with(gen, steps: list[int] | None, denoiser=None) -> None:
    """Make `gen.sample_latents` (this process only) run DDIM over the step list `steps` (default: the
    checkpoint's spacing) with `denoiser(condition)` (default: the checkpoint's guided denoiser)."""
    from weightspace.generators.latent_diffusion.schedule import ddim_timesteps

    def sample_latents(condition, seeds, **_):
        x_T, _gens = gen.start_noise(seeds)
        ts = torch.tensor(steps) if steps else ddim_timesteps(gen.cfg.timesteps, gen.cfg.sample_steps)
        den = denoiser(condition) if denoiser else gen.guided_denoiser(condition)
        return sample_ddim(den, x_T, ts, gen.net.alphas_cumprod)

    gen.sample_latents = sample_latents


def pooled_family_samples(gen, label: str, seeds: list[int]) -> None:
    hits: dict[str, int] = {}
    for seed in seeds:
        for f, r in family_samples(gen, per_family=8, seed=seed)["per_family"].items():
            hits[f] = hits.get(f, 0) + r["successes"]
    report(f"{label}, seeds {','.join(map(str, seeds))}", hits, 8 * len(seeds))


def guidance_interval(gen, w_high: float, w_low: float, t_cut: int, seeds: list[int], sc_feed: str) -> None:
    """Guidance w_high for t >= t_cut and w_low below, through the checkpoint's own guided denoiser;
    `sc_feed` other than `own` (self-conditioned checkpoints): both branches read the guided estimate
    (`guided`) or the conditioned branch's (`cond`) of the step before, instead of each its own."""
    def schedule(t: int) -> float:
        return w_high if t >= t_cut else w_low

    def fed(condition):
        null = gen.net("null", condition.shape[0])
        prev: list[torch.Tensor] = []

        def den(x, t):
            c, u = gen.net("denoise", torch.cat([x, x]), torch.cat([t, t]), torch.cat([condition, null]), *prev).chunk(2)
            g = u + schedule(int(t[0])) * (c - u)
            prev[:] = [torch.cat([g, g]) if sc_feed == "guided" else torch.cat([c, c])]
            return g
        return den

    if sc_feed != "own" and not gen.cfg.self_condition:
        raise SystemExit(f"--sc-feed {sc_feed}: the checkpoint is not self-conditioned")
    sample_with(gen, None, fed if sc_feed != "own" else (lambda condition: gen.guided_denoiser(condition, guidance=schedule)))
    pooled_family_samples(gen, f"family samples, guidance {w_high} for t >= {t_cut}, {w_low} below, sc feed {sc_feed}", seeds)


def step_lists(gen, lists: list[list[int]], seeds: list[int], held_out: int, data: str) -> None:
    """Family samples (and with `held_out` > 0 the held-out figures on that many test shapes, 1-NNA and
    COV among them) with DDIM over each step list instead of the checkpoint's spacing."""
    from weightspace.generators.latent_diffusion.evaluate import evaluate_generator

    for ts in lists:
        if ts[0] != gen.cfg.timesteps - 1 or ts[-1] != 0 or any(a <= b for a, b in zip(ts, ts[1:])):
            raise SystemExit(f"step list {ts}: must fall strictly from {gen.cfg.timesteps - 1} to 0")
        sample_with(gen, ts)
        pooled_family_samples(gen, f"family samples, steps {ts}", seeds)
        if held_out:
            fig = evaluate_generator(gen, data, max_shapes=held_out, seed=seeds[0])
            print(f"  held out ({fig['held_out_shapes']} test shapes, seed {seeds[0]}): " + ", ".join(
                f"{k} {fig[k]:.4f}" for k in ("family_betti_match", "mmd", "cov", "nna", "points_iou")), flush=True)


def autoguide(gen, bad_name: str, ws: list[float], seed: int) -> None:
    bad = as_generator(bad_name)
    if not torch.equal(bad.net.latent_mean, gen.net.latent_mean) or bad.cfg.families != gen.cfg.families:
        raise SystemExit(f"{bad_name}: not on the same autoencoder latents and families as the good model")
    for w in ws:
        def guided(condition, w=w):
            # the family names behind `condition`: family_samples asks one family at a time
            fam = next((f for f in gen.cfg.families if torch.equal(gen.condition(family=[f])[0], condition[0])), None)
            if fam is None:
                raise SystemExit("autoguide samples family conditions only (the condition is no family's tokens)")
            cond_bad = bad.condition(family=[fam] * condition.shape[0])
            prev_good: list[torch.Tensor] = []
            prev_bad: list[torch.Tensor] = []  # a self-conditioned model reads its own estimate of the step before

            def den(x, t):
                good_x0 = gen.net("denoise", x, t, condition, *prev_good)
                bad_x0 = bad.net("denoise", x, t, cond_bad, *prev_bad)
                if gen.cfg.self_condition:
                    prev_good[:] = [good_x0]
                if bad.cfg.self_condition:
                    prev_bad[:] = [bad_x0]
                return bad_x0 + w * (good_x0 - bad_x0)
            return den

        sample_with(gen, None, guided)
        fs = family_samples(gen, per_family=8, seed=seed)
        report(f"family samples (seed {seed}), autoguidance w = {w} (bad: {bad_name})",
               {f: r["successes"] for f, r in fs["per_family"].items()}, 8)


def tune_decoder(gen, batch, steps: int, lr: float, *, sign_weight: float) -> None:
    """Train the decoder alone (Adam, cosine lr) on `batch()` -> (normalised latents, normalised TSDF targets)
    with the autoencoder's loss (surface band: two voxels); every weight is frozen again afterwards."""
    band = 2.0 * (2.0 / (gen.cfg.resolution - 1)) / gen.cfg.truncation
    for p in gen.net.parameters():
        p.requires_grad_(False)
    params = list(gen.net.ae.decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    for step in range(steps):
        z, tgt = batch()
        loss = autoencoder_loss(gen.net("decode", z), tgt, band=band, near_surface_weight=4.0, sign_weight=sign_weight)
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
    gen.net.eval()
    for p in params:
        p.requires_grad_(False)


def decoder(gen, data: str, sigma: float, steps: int, lr: float) -> None:
    grids, _ = split_grids(data, "train")
    z_all, target = encode(gen, grids), (grids / gen.cfg.truncation).clamp(-1, 1)
    g = torch.Generator().manual_seed(0)

    def batch():
        idx = torch.randint(len(z_all), (16,), generator=g)
        s = sigma * torch.rand(16, 1, 1, 1, 1, generator=g)
        return z_all[idx] + s * torch.randn(z_all[idx].shape, generator=g), target[idx]

    tune_decoder(gen, batch, steps, lr, sign_weight=2.0)
    val, fams = split_grids(data, "val")
    z_val = encode(gen, val)
    for s in (0.0, 0.1, 0.2):
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            out = torch.cat([gen.decode_latents(c + s * torch.randn(c.shape, generator=g)) for c in z_val.split(64)]).numpy()
        kept = [tuple(robust_betti(o))[:2] == tuple(robust_betti(v))[:2] for o, v in zip(out, val.numpy())]
        by = {f: float(np.mean([k for k, ff in zip(kept, fams) if ff == f])) for f in ("mug", "ladder")}
        print(f"validation round trip, latent noise {s}: robust Betti kept {np.mean(kept):.3f}  {by}", flush=True)
    fs = family_samples(gen, per_family=8, seed=0)
    report("family samples (seed 0)", {f: r["successes"] for f, r in fs["per_family"].items()}, 8)


def denoised_decoder(gen, data: str, ts: list[int], steps: int, lr: float, save: str | None) -> None:
    """Fine-tune the decoder alone on what the denoiser makes of real shapes: each training latent noised
    to each t in `ts` and denoised back under its family (the tail of a sampling chain), paired with its
    own TSDF, mixed one to one with the clean latents (so the round trip of real latents is kept)."""
    grids, fams = split_grids(data, "train")
    z_all, target = encode(gen, grids), (grids / gen.cfg.truncation).clamp(-1, 1)
    ab, g = gen.net.alphas_cumprod.float(), torch.Generator().manual_seed(11)
    made, made_idx = [], []
    with torch.no_grad():
        for t in ts:
            for f in gen.families:
                idx = torch.tensor([i for i, ff in enumerate(fams) if ff == f])
                for chunk in idx.split(128):
                    z0 = z_all[chunk]
                    x = ab[t].sqrt() * z0 + (1 - ab[t]).sqrt() * torch.randn(z0.shape, generator=g)
                    made.append(denoise_from(gen, x, f, t))
                    made_idx.append(chunk)
    z_made, i_made = torch.cat(made), torch.cat(made_idx)
    err = (z_made - z_all[i_made]).pow(2).mean().sqrt()
    print(f"{len(z_made)} denoised latents from t in {ts}: rms error {float(err):.3f} (normalised latent units)", flush=True)

    def batch():
        a = torch.randint(len(z_made), (8,), generator=g)  # denoised latents
        b = torch.randint(len(z_all), (8,), generator=g)  # clean latents
        return torch.cat([z_made[a], z_all[b]]), torch.cat([target[i_made[a]], target[b]])

    tune_decoder(gen, batch, steps, lr, sign_weight=6.0)
    autoencoder(gen, data, [0.0])
    for seed in (0, 1):
        fs = family_samples(gen, per_family=8, seed=seed)
        report(f"family samples (seed {seed})", {f: r["successes"] for f, r in fs["per_family"].items()}, 8)
    if save:
        gen.save(save, extra_config={"decoder_from_denoised": {"ts": ts, "steps": steps, "lr": lr, "data": data}})
        print("wrote", save)


@torch.no_grad()
def autoencoder(gen, data: str, noises: list[float]) -> None:
    val, fams = split_grids(data, "val")
    target = (val / gen.cfg.truncation).clamp(-1, 1)  # (N, R, R, R) normalised
    z = torch.cat([gen.net.ae.encode(c) for c in target.split(32)])  # (N, C, r, r, r) raw latents
    std = z.std(dim=(0, 2, 3, 4)).view(1, -1, 1, 1, 1)  # (1, C, 1, 1, 1)
    if gen.net.ae.gaussian:  # how wide the posterior is against the spread of its means (the decoder trained on draws)
        logvar = torch.cat([gen.net.ae.posterior(c)[1] for c in target.split(32)])  # (N, C, r, r, r)
        rel = ((0.5 * logvar).exp() / std).flatten(1).median(dim=1).values.mean()
        print(f"gaussian posterior: median std {rel:.3f} of each channel's latent std (mean over shapes)", flush=True)
    want = [tuple(robust_betti(v))[:2] for v in val.numpy()]
    for s in noises:
        g = torch.Generator().manual_seed(3)
        zz = z + s * std * torch.randn(z.shape, generator=g)
        out = gen.cfg.truncation * torch.cat([gen.net.ae.decode(c) for c in zz.split(32)]).numpy()  # (N, R, R, R) world units
        kept = np.array([tuple(robust_betti(o))[:2] == w for o, w in zip(out, want)])
        mean_iou = np.mean([iou(o, v) for o, v in zip(out, val.numpy())])
        by = {f: f"{int(kept[[ff == f for ff in fams]].sum())}/{sum(ff == f for ff in fams)}" for f in sorted(set(fams))}
        print(f"autoencoder round trip (n = {len(kept)}), latent noise {s} std: Betti kept {kept.mean():.3f}, "
              f"IoU {mean_iou:.3f}  {by}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lever", choices=["roundtrip", "prior", "guidance", "steps", "decoder", "autoencoder", "autoguide",
                                      "denoised-decoder"])
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--data", required=True, help="the checkpoint's training data folder (its train and val splits)")
    ap.add_argument("--t", default="0,100,300,500", help="time steps (roundtrip) or start steps t* (prior)")
    ap.add_argument("--per", type=int, default=8, help="items per family")
    ap.add_argument("--sigma", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--w-high", type=float, default=4.0)
    ap.add_argument("--w-low", type=float, default=2.0)
    ap.add_argument("--t-cut", type=int, default=500)
    ap.add_argument("--bad", default="default", help="autoguide: the weaker model")
    ap.add_argument("--w", default="1.5,2,3", help="autoguide: guidance weights")
    ap.add_argument("--seed", type=int, default=0, help="autoguide: seed of the family samples")
    ap.add_argument("--seeds", default="0", help="guidance, steps: seeds of the family samples (comma list, pooled)")
    ap.add_argument("--sc-feed", default="own", choices=["own", "guided", "cond"], help="guidance: what the branches read")
    ap.add_argument("--lists", default="999,666,333,0", help="steps: DDIM step lists, ';' between lists, or counts (16)")
    ap.add_argument("--held-out", type=int, default=0, help="steps: also the held-out figures on this many test shapes")
    ap.add_argument("--save", help="denoised-decoder: write the checkpoint with the tuned decoder here")
    ap.add_argument("--noise", default="0,0.05,0.1", help="autoencoder: latent noise levels, in latent std units")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = as_generator(args.checkpoint)
    if args.lever == "autoencoder":
        return autoencoder(gen, args.data, [float(v) for v in args.noise.split(",")])
    if args.lever == "decoder":
        return decoder(gen, args.data, args.sigma, args.steps, args.lr)
    if args.lever == "denoised-decoder":
        return denoised_decoder(gen, args.data, [int(t) for t in args.t.split(",")], args.steps, args.lr, args.save)
    seeds = [int(v) for v in args.seeds.split(",")]
    if args.lever == "guidance":
        with torch.no_grad():
            return guidance_interval(gen, args.w_high, args.w_low, args.t_cut, seeds, args.sc_feed)
    if args.lever == "steps":
        from weightspace.generators.latent_diffusion.schedule import ddim_timesteps

        lists = [[int(v) for v in item.split(",")] for item in args.lists.split(";")]
        lists = [ddim_timesteps(gen.cfg.timesteps, ts[0]).tolist() if len(ts) == 1 else ts for ts in lists]
        with torch.no_grad():
            return step_lists(gen, lists, seeds, args.held_out, args.data)
    if args.lever == "autoguide":
        with torch.no_grad():
            return autoguide(gen, args.bad, [float(w) for w in args.w.split(",")], args.seed)
    grids, fams = split_grids(args.data, "train")
    z = encode(gen, grids)
    latents = {f: z[[i for i, ff in enumerate(fams) if ff == f]] for f in gen.families}
    ts = [int(t) for t in args.t.split(",")]
    (roundtrip if args.lever == "roundtrip" else prior)(gen, latents, ts, args.per)


if __name__ == "__main__":
    main()

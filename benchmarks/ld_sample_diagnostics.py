"""Why are the latent diffusion model's family samples worse than its training shapes? Five measurements
(issue 14), each on a finished checkpoint and its training folder.

  fit-gap    the x0 error of the family-conditioned denoiser (guidance 1) on 256 training and 256
             validation latents noised to each step in --t (same noise for both). A ratio near 1 says
             the denoiser is not overfitted: more shapes would not help it, more fitting would.
  low-noise  validation latents of five families noised to each step in --t, kept when their decode has
             the family's robust (b0, b1): the noisy latent itself (rescaled by 1/sqrt(alpha_bar)), the
             denoiser's one-step x0 estimate, and DDIM from t to 0. Says whether the denoiser loses thin
             features (mug handles, ladder rungs) that its noisy input still has.
  volume     family samples (8 per family at each of --seeds) at each guidance in --guidance: the share
             that keeps its family's robust (b0, b1), and each family's mean occupied volume over that of
             its validation shapes (1 = as fat as the data); first the same for decodes of validation latents
             (as encoded, with white noise, the denoiser's one-step estimates). `--rescale PHI` blends in the guided x0
             rescaled to the conditioned branch's standard deviation (Lin et al. 2024, sec. 3.4);
             `--parallel ETA` weights the guidance term's part along the conditioned estimate by ETA
             (0: the projection of adaptive projected guidance, Sadat et al. 2024). `--levels C1,C2`
             measures the same samples with their surface at each iso level C (solid where sdf < C; C > 0
             fattens, as a decoder bias would); the rows of decoded validation latents come only at the
             default level 0.
  set-metrics  1-NNA and COV (Chamfer) of one family sample per test shape against the test split, as
             `evaluate generator` draws them (--seed), per guidance setting, with each family's share of
             correctly classified clouds (1-NNA within the family's rows) and its volume ratio; with
             `--levels`, of the same samples' surfaces at each iso level.

  eta        family samples (8 per family at each of --seeds) with each DDIM eta setting in --eta
             (0: deterministic DDIM, the checkpoint's sampler; 1: the DDPM posterior;
             `0/1@600`: deterministic for t >= 600 and stochastic below); the share that keeps its
             family's robust (b0, b1), per family.

A guidance setting is a number W, or WHIGH/WLOW@T: WHIGH for steps t >= T and WLOW below; an eta
setting is written the same way.

  .venv/bin/python benchmarks/ld_sample_diagnostics.py fit-gap --data runs/data32c-2560
  .venv/bin/python benchmarks/ld_sample_diagnostics.py low-noise --data runs/data32c-2560 --t 30,60,120,200,300
  .venv/bin/python benchmarks/ld_sample_diagnostics.py volume --data runs/data32c-2560 --guidance 1,2,3 --seeds 10
  .venv/bin/python benchmarks/ld_sample_diagnostics.py volume --data runs/data32c-2560 --guidance 2 --rescale 0.7 --seeds 10,11
  .venv/bin/python benchmarks/ld_sample_diagnostics.py eta --data runs/data32c-2560 --eta "0;1;0/1@600;1/0@600" --seeds 10,11
  .venv/bin/python benchmarks/ld_sample_diagnostics.py set-metrics --data runs/data32c-2560 --guidance "2;1;1.5;2/1@400" --seed 0
  .venv/bin/python benchmarks/ld_sample_diagnostics.py volume --data runs/data32c-2560 --guidance 2 --seeds 10,11 --levels -0.03,-0.02,-0.01,0,0.01,0.02,0.03
  .venv/bin/python benchmarks/ld_sample_diagnostics.py set-metrics --data runs/data32c-2560 --guidance 1 --seed 0 --levels 0.01,0.02,0.03

The figures are in the latent-diffusion-32 training record (ablations.session_2026_12_07 and session_2026_12_07_second).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch
from ld_family_levers import denoise_from, encode, matches, split_grids

from weightspace.analysis.persistence import default_eps, diagrams, robust_counts
from weightspace.analysis.sets import distance_matrix, nna_hits, prepare_clouds, self_distances
from weightspace.data.families import FAMILIES
from weightspace.generators.latent_diffusion.evaluate import family_samples, held_out_rows, surface_cloud
from weightspace.generators.latent_diffusion.samplers import sample_eta
from weightspace.generators.latent_diffusion.schedule import ddim_timesteps
from weightspace.generators.registry import as_generator
from weightspace.runtime.seeding import derive_seed

Guidance = float | Callable[[int], float]


def parse_guidance(spec: str) -> Guidance:
    """'2' -> 2.0; '2/1@400' -> 2 for t >= 400, 1 below."""
    if "@" not in spec:
        return float(spec)
    ws, cut = spec.split("@")
    high, low = (float(v) for v in ws.split("/"))
    return lambda t: high if t >= int(cut) else low


def use_guidance(gen, guidance: Guidance, rescale: float = 0.0, parallel: float | None = None) -> None:
    """Make `gen`'s sampling (this process only) guide at `guidance`. With `rescale` > 0 the guided x0 is
    blended with itself rescaled to the conditioned branch's per-item standard deviation. With `parallel`
    set, the guidance term c - u is split into its part along the conditioned estimate c and the rest, and
    the part along c is weighted by `parallel` (0 drops it: the projection of adaptive projected guidance,
    Sadat et al. 2024, without its momentum and norm threshold)."""
    base = type(gen).guided_denoiser

    def guided_denoiser(condition, *, params=None, **_):  # a caller's own guidance gives way to this one
        if rescale == 0 and parallel is None:
            return base(gen, condition, params=params, guidance=guidance)
        null = gen.net("null", condition.shape[0])
        prev: list[torch.Tensor] = []

        def den(x, t):
            both = gen.net("denoise", torch.cat([x, x]), torch.cat([t, t]), torch.cat([condition, null]), *prev)
            if gen.cfg.self_condition:
                prev[:] = [both]
            c, u = both.chunk(2)
            w = guidance(int(t[0])) if callable(guidance) else guidance
            dims = tuple(range(1, c.dim()))
            if parallel is not None:
                d = c - u
                along = (d * c).sum(dims, keepdim=True) / (c * c).sum(dims, keepdim=True).clamp(min=1e-12) * c
                return c + (w - 1) * (d - along + parallel * along)
            g = u + w * (c - u)
            return rescale * g * (c.std(dim=dims, keepdim=True) / g.std(dim=dims, keepdim=True)) + (1 - rescale) * g
        return den

    gen.guided_denoiser = guided_denoiser


def use_eta(gen, eta: Guidance) -> None:
    """Make `gen`'s sampling (this process only) run DDIM at the checkpoint's steps and guidance with
    `eta` (a number or a function of t), each item's noise from its own generator."""
    def sample_latents(condition, seeds, **_):
        x_T, generators = gen.start_noise(seeds)
        ts = ddim_timesteps(gen.cfg.timesteps, gen.cfg.sample_steps)
        return sample_eta(gen.guided_denoiser(condition), x_T, ts, gen.net.alphas_cumprod, eta=eta, generators=generators)

    gen.sample_latents = sample_latents


def per_family(fams: list[str]) -> dict[str, list[int]]:
    return {f: [i for i, x in enumerate(fams) if x == f] for f in sorted(set(fams))}


@torch.no_grad()
def fit_gap(gen, data: str, ts: list[int]) -> None:
    ab = gen.net.alphas_cumprod.float()
    err = {}
    for split in ("train", "val"):
        grids, fams = split_grids(data, split)
        idx = torch.randperm(len(fams), generator=torch.Generator().manual_seed(0))[:256]
        z = encode(gen, grids[idx])  # (n, C, r, r, r)
        cond = gen.condition(family=[fams[i] for i in idx])
        for t in ts:
            x = ab[t].sqrt() * z + (1 - ab[t]).sqrt() * torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
            den = gen.guided_denoiser(cond, guidance=1.0)  # a fresh one: a self-conditioned denoiser reads its last estimate
            err[split, t] = float(((den(x, torch.full((len(idx),), t)) - z) ** 2).mean())
    for t in ts:
        print(f"t = {t}: x0 error train {err['train', t]:.4f}, val {err['val', t]:.4f}, ratio {err['val', t] / err['train', t]:.2f}", flush=True)


@torch.no_grad()
def low_noise(gen, data: str, ts: list[int], per: int) -> None:
    grids, fams = split_grids(data, "val")
    groups = per_family(fams)
    lat = {f: encode(gen, grids[groups[f][:per]]) for f in ("mug", "ladder", "scatter", "table", "pretzel")}
    ab = gen.net.alphas_cumprod.float()
    print(f"autoencoder alone: {sum(matches(gen, z, f) for f, z in lat.items())}/{per * len(lat)}", flush=True)
    for t in ts:
        rows: dict[str, dict[str, int]] = {"noisy latent": {}, "one-step x0": {}, "DDIM from t": {}}
        for f, z0 in lat.items():
            x = ab[t].sqrt() * z0 + (1 - ab[t]).sqrt() * torch.randn(z0.shape, generator=torch.Generator().manual_seed(7))
            rows["noisy latent"][f] = matches(gen, x / ab[t].sqrt(), f)
            den = gen.guided_denoiser(gen.condition(family=[f] * len(x)))
            rows["one-step x0"][f] = matches(gen, den(x, torch.full((len(x),), t)), f)
            rows["DDIM from t"][f] = matches(gen, denoise_from(gen, x, f, t), f)
        for name, hits in rows.items():
            print(f"t = {t}, {name}: {sum(hits.values())}/{per * len(hits)} {hits}", flush=True)


def latent_volumes(gen, grids: torch.Tensor, fams: list[str]) -> None:
    """Volume ratios of decodes of 16 validation latents per family: as encoded, with white noise, and
    the denoiser's one-step estimate (guidance 1) at a few noise levels; is the decoder what fattens?"""
    groups = {f: i[:16] for f, i in per_family(fams).items()}
    z = {f: encode(gen, grids[i]) for f, i in groups.items()}
    ab = gen.net.alphas_cumprod.float()

    def row(label: str, make) -> None:
        r = {f: round(float((gen.decode_latents(make(f, z[f])) < 0).float().mean()) / float((grids[groups[f]] < 0).float().mean()), 2)
             for f in groups}
        print(f"{label}: mean {np.mean(list(r.values())):.3f} {r}", flush=True)

    row("autoencoder round trip", lambda f, zz: zz)
    for s in (0.2, 0.5):
        row(f"latent + white noise {s}", lambda f, zz, s=s: zz + s * torch.randn(zz.shape, generator=torch.Generator().manual_seed(3)))
    for t in (300, 500, 700):
        def one_step(f, zz, t=t):
            x = ab[t].sqrt() * zz + (1 - ab[t]).sqrt() * torch.randn(zz.shape, generator=torch.Generator().manual_seed(3))
            return gen.guided_denoiser(gen.condition(family=[f] * len(zz)), guidance=1.0)(x, torch.full((len(zz),), t))
        row(f"one-step x0 at t = {t}", one_step)


def volume(gen, data: str, guidances: list[str], seeds: list[int], rescale: float, parallel: float | None,
           levels: list[float]) -> None:
    grids, fams = split_grids(data, "val")
    real = {f: float((grids[i] < 0).float().mean()) for f, i in per_family(fams).items()}
    if levels == [0.0]:
        latent_volumes(gen, grids, fams)
    for spec in guidances:
        use_guidance(gen, parse_guidance(spec), rescale, parallel)
        kept = {c: {} for c in levels}
        occupied: dict[float, dict[str, list[float]]] = {c: {} for c in levels}
        for seed in seeds:
            for f, gs in family_samples(gen, per_family=8, seed=seed)["grids"].items():
                want = tuple(FAMILIES[f].betti[:2])
                for g in gs:
                    dg = diagrams(g)  # one filtration, counted at every level
                    for c in levels:
                        kept[c][f] = kept[c].get(f, 0) + (robust_counts(dg, c, default_eps(g.shape[0]))[:2] == want)
                        occupied[c].setdefault(f, []).append(float((g < c).mean()))
        for c in levels:
            ratio = {f: round(float(np.mean(v)) / real[f], 2) for f, v in occupied[c].items()}
            print(f"guidance {spec}, rescale {rescale}, parallel part {parallel}, level {c:+.3f}, seeds {seeds}: kept "
                  f"{sum(kept[c].values())}/{8 * len(seeds) * len(kept[c])} {kept[c]}\n  volume over the val shapes' {ratio}", flush=True)


def etas(gen, specs: list[str], seeds: list[int]) -> None:
    for spec in specs:
        use_eta(gen, parse_guidance(spec))
        kept: dict[str, int] = {}
        for seed in seeds:
            for f, r in family_samples(gen, per_family=8, seed=seed)["per_family"].items():
                kept[f] = kept.get(f, 0) + r["successes"]
        print(f"eta {spec}, seeds {seeds}: kept {sum(kept.values())}/{8 * len(seeds) * len(kept)} {kept}", flush=True)


@torch.no_grad()
def set_metrics_by_family(gen, data: str, guidances: list[str], seed: int, shapes: int, rescale: float,
                          parallel: float | None, eta: str, levels: list[float]) -> None:
    ds, idx = held_out_rows(data, shapes)
    items = [ds[i] for i in idx]
    fams = [it["family"] for it in items]
    seeds = [derive_seed(seed, "eval", it["id"]) % (2**31) for it in items]  # as evaluate generator draws them
    ref = prepare_clouds([surface_cloud(it["grid"].numpy(), derive_seed(seed, "set-ref", k)) for k, it in enumerate(items)], "reference", "none")
    d_rr = self_distances(ref, "chamfer_l2")
    groups = per_family(fams)
    if eta != "0":
        use_eta(gen, parse_guidance(eta))
    for spec in guidances:
        use_guidance(gen, parse_guidance(spec), rescale, parallel)
        t0 = time.perf_counter()
        grids = [g for k in range(0, len(items), 16)
                 for g in gen.sdf_grid(gen.condition(family=fams[k:k + 16]), seeds[k:k + 16]).numpy()]
        print(f"guidance {spec}: sampled {len(grids)} shapes in {time.perf_counter() - t0:.0f} s", flush=True)
        for c in levels:
            t0 = time.perf_counter()
            gen_clouds = prepare_clouds([surface_cloud(g - c, derive_seed(seed, "set-gen", k)) for k, g in enumerate(grids)], "generated", "none")
            d_gr = distance_matrix(gen_clouds, ref, "chamfer_l2")
            correct = nna_hits(self_distances(gen_clouds, "chamfer_l2"), d_gr, d_rr)  # (2n,) samples first
            both = np.array(fams + fams)
            by = {f: round(float(correct[both == f].mean()), 2) for f in groups}
            vol = {f: round(float(np.mean([(grids[k] < c).mean() for k in i]) / np.mean([(items[k]["grid"].numpy() < 0).mean() for k in i])), 2)
                   for f, i in groups.items()}
            print(f"guidance {spec}, rescale {rescale}, parallel part {parallel}, eta {eta}, level {c:+.3f}, seed {seed}, {len(items)} test shapes: "
                  f"1-NNA {correct.mean():.4f}, COV {len(np.unique(d_gr.argmin(axis=1))) / len(ref):.4f} (metrics {time.perf_counter() - t0:.0f} s)\n"
                  f"  1-NNA within each family's rows {by}\n  volume over the test shapes' {vol}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("measure", choices=["fit-gap", "low-noise", "volume", "eta", "set-metrics"])
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--data", required=True, help="the checkpoint's training folder (train, val and test splits)")
    ap.add_argument("--t", default="30,100,300,500,700,850,999", help="fit-gap, low-noise: steps")
    ap.add_argument("--per", type=int, default=16, help="low-noise: validation shapes per family")
    ap.add_argument("--guidance", default="2", help="volume, set-metrics: guidance settings, ';' or ',' between them")
    ap.add_argument("--rescale", type=float, default=0.0, help="volume, set-metrics: guidance rescale PHI in [0, 1]")
    ap.add_argument("--parallel", type=float, default=None, help="volume, set-metrics: weight of the guidance term's part along "
                    "the conditioned estimate (0: projected guidance)")
    ap.add_argument("--eta", default="0", help="eta: DDIM eta settings, ';' between them; set-metrics: one setting")
    ap.add_argument("--seeds", default="10", help="volume, eta: seeds of the family samples (comma list, pooled)")
    ap.add_argument("--seed", type=int, default=0, help="set-metrics: the seed evaluate generator is given")
    ap.add_argument("--shapes", type=int, default=256, help="set-metrics: test shapes")
    ap.add_argument("--levels", default="0", help="volume, set-metrics: iso levels of the samples' surfaces (comma list)")
    args = ap.parse_args()
    if not 0 <= args.rescale <= 1:
        raise SystemExit(f"--rescale must be in [0, 1], got {args.rescale}")
    if args.rescale and args.parallel is not None:
        raise SystemExit("--rescale and --parallel are two kinds of guidance; give one")
    torch.set_num_threads(1)
    gen = as_generator(args.checkpoint)
    ts = [int(t) for t in args.t.split(",")]
    guidances = [g for g in args.guidance.replace(",", ";").split(";") if g]
    levels = [float(c) for c in args.levels.split(",")]
    if args.measure == "fit-gap":
        return fit_gap(gen, args.data, ts)
    if args.measure == "low-noise":
        return low_noise(gen, args.data, ts, args.per)
    with torch.no_grad():
        if args.measure == "eta":
            return etas(gen, [e for e in args.eta.split(";") if e], [int(s) for s in args.seeds.split(",")])
        if args.measure == "volume":
            return volume(gen, args.data, guidances, [int(s) for s in args.seeds.split(",")], args.rescale, args.parallel, levels)
        return set_metrics_by_family(gen, args.data, guidances, args.seed, args.shapes, args.rescale, args.parallel, args.eta, levels)


if __name__ == "__main__":
    main()

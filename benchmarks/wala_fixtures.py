"""Max relative error per stage against the WaLa fixtures, CPU time of one sampling run per fixture model,
and the parameter count of a 1B-sized random WaLa built from an args.json we wrote (an assumption, printed).

    .venv/bin/python benchmarks/wala_fixtures.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_wala_reference as ref  # noqa: E402  (the tests' loaders and fixtures)

from weightspace.generators.wala.config import config_from_args  # noqa: E402
from weightspace.generators.wala.network import WaLaNet  # noqa: E402

# Sizes of the released 1B models are not published in args form; these follow the README's "real" column
# (256^3, g 12, e_dim 4, 512 channels, AE width 128) and a DiT-XL-like denoiser scaled to about 1B. An assumption.
BIG = {"resolution": 256, "grid_size": 12, "e_dim": 4, "max_training_level": 3, "att_hidden_size": 1152,
       "transformer_num_blocks": 32, "transformer_num_heads": 16, "att_patch_size": 1, "unet_model_channels": 128,
       "decoder_num_tran": 4, "n_e": 1024, "pc_output_dim": 1024, "pc_dims": 1024, "num_inds": 256, "add_condition_res_ch": 128}


@torch.no_grad()
def errors(kind: str) -> dict[str, float]:
    m, d = ref.model(kind), ref.io(kind)
    out: dict[str, float] = {}
    cond = ref._cond(kind)
    if cond is not None:
        out["encoder"] = ref.rel(cond, d["cond_encoder.output"])
        u, c = m.process_condition(d["cond_encoder.output"])
        out["condition"] = max(ref.rel(u, d["process_condition.output_uncond"]), ref.rel(c, d["process_condition.output_cond"]))
    ctx = torch.cat([d["process_condition.output_uncond"], d["process_condition.output_cond"]]) if cond is not None else None
    out["denoiser"] = ref.rel(m.net("denoise", d["denoiser.x"], d["denoiser.t"], ctx), d["denoiser.output"])
    t0 = time.process_time()
    z = m.sample(cond, noises=ref._noises(kind))
    out["cpu_s_sampling"] = time.process_time() - t0
    out["sampling_run"] = ref.rel(z, d["sample.final_latent"])
    zq, _ = m.net.autoencoder.snap(d["vq.input"])
    out["vq"] = ref.rel(zq, d["vq.output"])
    out["decoder"] = ref.rel(m.net.autoencoder.decoder(d["decoder.input"]).sum(dim=(2, 3, 4)), d["decoder.output_channel_sums"])
    if "unpack.low" in d:
        low, highs = m.net.autoencoder.coefficients(d["decoder.input"])
        out["unpack"] = max(ref.rel(low, d["unpack.low"]), ref.rel(highs[1], d["unpack.highs1"]), ref.rel(highs[2], d["unpack.highs2"]))
    if "idwt.output" in d:
        out["grid"] = ref.rel(m.decode_latent(d["vq.input"]), d["idwt.output"][0, 0])
    elif "idwt.output_every4" in d:
        g = m.decode_latent(d["vq.input"])[::4, ::4, ::4]
        out["grid"] = float((g - d["idwt.output_every4"][0, 0]).abs().max() / d["idwt.output_maxabs"])
    return out


def big_model_parameters() -> dict[str, int]:
    args = {**json.loads((ref.FIX / "pc" / "args.json").read_text()), **BIG}
    cfg = config_from_args(args)
    widths = {"ae_hidden": 128, "filter_length": 18, "att_inner": 256, "pc_widths": [64, 256, 1024, 1024], "pool_heads": 16,
              "pc_depth": 4, "pc_heads": 16}
    with torch.device("meta"):
        net = WaLaNet(cfg, widths)
    return {name: sum(p.numel() for p in child.parameters()) for name, child in net.named_children()}


if __name__ == "__main__":
    for kind in ref.KINDS:
        errors(kind)  # warm-up (first conv calls)
        print(kind, {k: f"{v:.1e}" if not k.startswith("cpu") else f"{v:.2f}" for k, v in errors(kind).items()})
    counts = big_model_parameters()
    print("1B-sized args (assumed):", BIG)
    print("parameters:", {k: f"{v / 1e6:.1f}M" for k, v in counts.items()}, f"total {sum(counts.values()) / 1e9:.2f}B")

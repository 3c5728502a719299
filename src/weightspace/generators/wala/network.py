"""WaLaNet: every module WaLa's inference runs, named as its checkpoint keys, with widths read from the state dict.

Top-level children mirror the checkpoint prefixes: `encoder` (condition encoder; absent when
unconditional), `network` (condition mapping, `cond_pos_emb`, the denoiser `unet`) and
`autoencoder` (codebook, decoder, synthesis filters). `forward(mode, *args)` dispatches to one stage
so that `torch.func.functional_call` can swap weights for any of them.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch
from torch import nn

from weightspace.generators.wala.config import WaLaConfig
from weightspace.generators.wala.decoder import Autoencoder
from weightspace.generators.wala.denoiser import DiT, UViT
from weightspace.generators.wala.encoders import PointNet, VoxelEncoder
from weightspace.runtime.errors import InputError

# Prefixes inference never reads: the wavelet encoder, the analysis filters and the duplicate filter buffers.
IGNORED_PREFIXES = ("autoencoder.encoder.", "autoencoder.dwt_sparse_composer.", "dwt_inverse_3d.", "dwt_sparse_composer.")
# Prefixes WaLaNet models completely: an extra key there means the args describe another network.
MODELLED_PREFIXES = ("encoder.", "network.", "autoencoder.decoder.", "autoencoder.quantize.")


def normalise_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the `_orig_mod` path component torch.compile leaves (e.g. `autoencoder._orig_mod.decoder...`)."""
    return {".".join(part for part in key.split(".") if part != "_orig_mod"): value for key, value in state.items()}


def _shape(state: Mapping[str, torch.Tensor], key: str, where: str) -> tuple[int, ...]:
    if key not in state:
        raise InputError(f"{where}: state dict lacks {key!r}, which the model described by args.json needs")
    return tuple(state[key].shape)


def _heads(width: int, state: Mapping[str, torch.Tensor], norm_key: str, where: str) -> int:
    """Attention heads = width / the head width of a per-head q LayerNorm in the state dict."""
    hd = _shape(state, norm_key, where)[0]
    if hd < 1 or width % hd:
        raise InputError(f"{where}: {norm_key!r} gives a head width of {hd}, which does not divide the attention width {width} "
                         f"(args.json pc_output_dim or the PointNet widths); do args.json and the weights belong together?")
    return width // hd


def widths_from_state(cfg: WaLaConfig, state: Mapping[str, torch.Tensor], where: str) -> dict[str, int | list[int]]:
    """The widths WaLa hard-codes, read from the (normalised) state dict instead."""
    w: dict[str, int | list[int]] = {
        "ae_hidden": _shape(state, "autoencoder.decoder.in_conv.weight", where)[0],
        "filter_length": _shape(state, "autoencoder.dwt_inverse_3d.g0_dep", where)[2],
        "att_inner": _shape(state, "autoencoder.decoder.t_blocks.0.att.to_q.1.weight", where)[0] if cfg.decoder_num_tran else 256,
    }
    if cfg.kind == "pc":
        w["pc_widths"] = [_shape(state, f"encoder.linear{i}.weight", where)[0] for i in range(1, 5)]
        w["pool_heads"] = _heads(w["pc_widths"][-1], state, "encoder.pooling.mab0.q_norm.weight", where)
        depth = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.t_blocks\.(\d+)\.", k))}
        w["pc_depth"] = max(depth) + 1 if depth else 0
        w["pc_heads"] = _heads(cfg.pc_output_dim, state, "encoder.t_blocks.0.attn.q_norm.weight", where) if depth else 1
    elif cfg.kind == "vx":
        w["vx_first"] = _shape(state, "encoder.in_conv.weight", where)[0]
        w["vx_hidden"] = _shape(state, "encoder.res_1.in_conv.weight", where)[0]
    return w


class _Network(nn.Module):
    """`network.`: condition mapping (Linear + SiLU layers), the condition position embedding, and the denoiser."""

    def __init__(self, cfg: WaLaConfig):
        super().__init__()
        c = cfg.cond_dim
        if c is not None:
            self.cond_mapping_network = nn.ModuleList(nn.Sequential(nn.Linear(c, c), nn.SiLU()) for _ in range(cfg.cond_num_mapping_layers))
            tokens = cfg.num_inds if cfg.kind == "pc" else cfg.voxel_dim**3
            self.cond_pos_emb = nn.Parameter(torch.zeros(1, tokens, c))
        self.unet = DiT(cfg) if cfg.is_dit else UViT(cfg)

    def process_condition(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw condition (B, T, c) -> (unconditional, conditional) contexts: mapping(0) + pos_emb and mapping(cond) + pos_emb."""
        x = torch.cat([torch.zeros_like(cond), cond])  # (2B, T, c)
        for layer in self.cond_mapping_network:
            x = layer(x)
        x = x + self.cond_pos_emb
        return x.chunk(2)


class WaLaNet(nn.Module):
    def __init__(self, cfg: WaLaConfig, widths: Mapping[str, int | list[int]]):
        super().__init__()
        self.cfg = cfg
        if cfg.kind == "pc":
            self.encoder = PointNet(list(widths["pc_widths"]), cfg.num_inds, int(widths["pool_heads"]), cfg.pc_output_dim,
                                    int(widths["pc_depth"]), int(widths["pc_heads"]))
        elif cfg.kind == "vx":
            self.encoder = VoxelEncoder(int(widths["vx_first"]), int(widths["vx_hidden"]), cfg.voxel_context_dim)
        self.network = _Network(cfg)
        self.autoencoder = Autoencoder(
            e_dim=cfg.e_dim, n_e=cfg.n_e, hidden=int(widths["ae_hidden"]), grid_size=cfg.grid_size, num_tran=cfg.decoder_num_tran,
            att_inner=int(widths["att_inner"]), max_training_level=cfg.max_training_level, resolution=cfg.resolution,
            normalize_latent=cfg.normalize_latent, filter_length=int(widths["filter_length"]),
        )

    def forward(self, mode: str, *args):
        """One stage by name: encode (points / voxels), process (condition), denoise (x, t, ctx), decode (latent -> grid)."""
        if mode == "encode":
            return self.encoder(*args)
        if mode == "process":
            return self.network.process_condition(*args)
        if mode == "denoise":
            return self.network.unet(*args)
        if mode == "decode":
            return self.autoencoder(*args)
        raise ValueError(f"unknown mode {mode!r}")


def build(cfg: WaLaConfig, state: Mapping[str, torch.Tensor], where: str) -> tuple[WaLaNet, list[str]]:
    """A WaLaNet holding `state` (float32), and the keys that were present but unused.

    Strict about what inference reads: a missing key, an extra key in a modelled part, or a shape
    that disagrees with args.json raises InputError naming the first such key (and both shapes).
    """
    state = normalise_keys(state)
    widths = widths_from_state(cfg, state, where)
    with torch.device("meta"):  # shapes first, without memory: sizes in args.json too large to allocate fail the check below
        expected = WaLaNet(cfg, widths).state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise InputError(f"{where}: state dict lacks {key!r} (shape {tuple(ref.shape)}), which args.json implies")
        if tuple(state[key].shape) != tuple(ref.shape):
            raise InputError(f"{where}: state dict and args.json disagree at {key!r}: the checkpoint has shape "
                             f"{tuple(state[key].shape)}, args.json implies {tuple(ref.shape)}")
    extra = sorted(k for k in state if k not in expected)
    surplus = [k for k in extra if k.startswith(MODELLED_PREFIXES)]
    if surplus:
        raise InputError(f"{where}: state dict has {surplus[0]!r} (shape {tuple(state[surplus[0]].shape)}), which the model "
                         f"args.json describes does not have ({len(surplus)} such key(s)); do args.json and the weights belong together?")
    net = WaLaNet(cfg, widths)
    net.load_state_dict({k: state[k].float() for k in expected}, strict=True)
    unused = [k for k in extra if not k.startswith(IGNORED_PREFIXES)]
    return net.eval(), unused

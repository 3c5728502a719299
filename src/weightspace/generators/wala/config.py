"""WaLa's args.json: the fields its inference path reads, typed, with every unimplemented value refused by name.

WaLa reads args.json into a dict whose missing keys read as None, so a missing flag is falsy here
too. Fields that only training reads are ignored. Widths that WaLa hard-codes (autoencoder width,
voxel-encoder width, PointNet widths) are not in args.json; they are read from the state dict
(`weightspace.generators.wala.model`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Literal, Mapping

from weightspace.runtime.errors import InputError

Kind = Literal["pc", "vx", "un"]
MeanType = Literal["EPSILON", "START_X", "PREVIOUS_X"]
VarType = Literal["FIXED_SMALL", "FIXED_LARGE"]

# WaLa's CLIP-based and multi-view models: flags whose truthy value selects a path not implemented here.
_UNSUPPORTED_FLAGS = (
    "use_image_conditions", "use_depth_conditions", "use_wavelet_conditions", "use_multiple_views_inferences",
    "use_multiple_views_grids", "use_camera_index", "training_views", "max_images_num",
)


@dataclasses.dataclass(frozen=True)
class WaLaConfig:
    """The inference-relevant part of a WaLa args.json (names as WaLa spells them)."""

    kind: Kind                      # pc (point cloud), vx (16^3 voxels) or un (unconditional)
    resolution: int                 # output grid edge R
    max_depth: int                  # wavelet levels J (only 3)
    max_training_level: int         # decoded levels Lv: 8**Lv channels
    wavelet: str                    # only bior6.8
    grid_size: int                  # latent edge g
    e_dim: int                      # latent channels
    n_e: int                        # codebook rows
    normalize_latent: str | None    # None or "l2_norm"
    decoder_num_tran: int           # transformer blocks in the AE decoder
    cond_num_mapping_layers: int    # Linear + SiLU layers on the raw condition
    dp_cond: float | None           # non-null: classifier-free guidance at sampling
    network_type: str               # "latent_dit" -> DiT, anything else -> U-ViT
    dit_block_type: str             # "cross_dit" -> blocks with cross-attention
    att_patch_size: int             # p
    att_hidden_size: int            # H
    transformer_num_blocks: int
    transformer_num_heads: int
    add_condition_time_ch: Any      # truthy: pooled condition added to the time embedding; not None: global_proj exists
    add_condition_res_ch: int | None  # U-ViT: condition scale in the ResBlocks
    transformer_add_num_register: int
    unet_model_channels: int        # Cu (U-ViT)
    unet_num_res_blocks: int        # first element of WaLa's list (U-ViT)
    learnable_skip_r: int | None    # U-ViT: learned skip gate ratio
    diffusion_beta_schedule: Literal["linear", "cosine"]
    diffusion_step: int             # T
    diffusion_scale_ratio: float
    diffusion_model_mean_type: MeanType
    diffusion_model_var_type: VarType
    diffusion_rescale_timestep: int  # K sampling steps
    pc_output_dim: int | None = None   # c for pc
    num_inds: int | None = None        # pc condition tokens
    voxel_context_dim: int | None = None  # c for vx
    voxel_dim: int | None = None       # 8: voxel tokens per axis

    @property
    def is_dit(self) -> bool:
        return self.network_type == "latent_dit"

    @property
    def cross(self) -> bool:
        return self.dit_block_type == "cross_dit"

    @property
    def cond_dim(self) -> int | None:
        return {"pc": self.pc_output_dim, "vx": self.voxel_context_dim, "un": None}[self.kind]

    @property
    def guided(self) -> bool:
        """Classifier-free guidance runs when a condition is present and dp_cond is set (WaLa's scale: 3.0)."""
        return self.kind != "un" and self.dp_cond is not None


def _get(args: Mapping[str, Any], key: str, where: str, types: tuple[type, ...], *, default: Any = None, required: bool = True):
    value = args.get(key, default)
    if value is None and not required:
        return None
    if value is None or isinstance(value, bool) and bool not in types or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise InputError(f"{where}: field {key!r} must be {names}, got {value!r}")
    return value


def _unimplemented(where: str, key: str, value: Any, valid: str) -> InputError:
    return InputError(f"{where}: args option {key}={value!r} is not implemented by weightspace's WaLa ({valid})")


def config_from_args(args: Mapping[str, Any], where: str = "args.json") -> WaLaConfig:
    """Parse WaLa's args dict; an option whose value this implementation does not cover raises InputError naming it."""
    if not isinstance(args, Mapping):
        raise InputError(f"{where}: expected a JSON object, got {type(args).__name__}")
    for key in _UNSUPPORTED_FLAGS:
        if args.get(key):
            raise _unimplemented(where, key, args[key], "only point-cloud, 16^3-voxel and unconditional models")
    pc, vx = bool(args.get("use_pointcloud_conditions")), bool(args.get("use_voxel_conditions"))
    if pc and vx:
        raise _unimplemented(where, "use_voxel_conditions", True, "one condition at a time; use_pointcloud_conditions is set too")
    kind: Kind = "pc" if pc else "vx" if vx else "un"
    choices = {
        "wavelet": ("bior6.8",), "padding_mode": ("zero", "constant"),
        "encoder_type": ("General_Encoder_Down_2", None), "decoder_type": ("General_Decoder_Up_2", None),
        "normalize_latent": (None, "l2_norm"), "diffusion_beta_schedule": ("linear", "cosine"),
        "diffusion_model_mean_type": ("EPSILON", "START_X", "PREVIOUS_X"),
        "diffusion_model_var_type": ("FIXED_SMALL", "FIXED_LARGE"), "dp_cond_type": (None,),
    }
    for key, valid in choices.items():
        if args.get(key) not in valid:
            raise _unimplemented(where, key, args.get(key), f"valid: {list(valid)}")
    if kind == "pc" and args.get("pc_encoder_type") != "PointNet_Large":
        raise _unimplemented(where, "pc_encoder_type", args.get("pc_encoder_type"), "valid: ['PointNet_Large']")
    max_depth = _get(args, "max_depth", where, (int,))
    if max_depth != 3:
        raise _unimplemented(where, "max_depth", max_depth, "WaLa's autoencoder supports only 3")
    level = _get(args, "max_training_level", where, (int,))
    if not 0 <= level <= max_depth:
        raise _unimplemented(where, "max_training_level", level, f"valid: 0..{max_depth}")
    res_blocks = args.get("unet_num_res_blocks") or [1]
    res_blocks = res_blocks[0] if isinstance(res_blocks, list) else res_blocks
    time_ch = args.get("add_condition_time_ch")
    res_ch = _get(args, "add_condition_res_ch", where, (int,), required=False)
    if kind == "un" and (time_ch is not None or res_ch is not None or args.get("dit_block_type") == "cross_dit"):
        bad = "add_condition_time_ch" if time_ch is not None else "add_condition_res_ch" if res_ch is not None else "dit_block_type"
        raise _unimplemented(where, bad, args.get(bad), "an unconditional model needs add_condition_* null and no cross_dit")
    cfg = WaLaConfig(
        kind=kind,
        resolution=_get(args, "resolution", where, (int,)),
        max_depth=max_depth,
        max_training_level=level,
        wavelet=args["wavelet"],
        grid_size=_get(args, "grid_size", where, (int,)),
        e_dim=_get(args, "e_dim", where, (int,)),
        n_e=_get(args, "n_e", where, (int,)),
        normalize_latent=args.get("normalize_latent"),
        decoder_num_tran=_get(args, "decoder_num_tran", where, (int,), default=0),
        cond_num_mapping_layers=_get(args, "cond_num_mapping_layers", where, (int,), default=0),
        dp_cond=_get(args, "dp_cond", where, (int, float), required=False),
        network_type=str(args.get("network_type")),
        dit_block_type=str(args.get("dit_block_type")),
        att_patch_size=_get(args, "att_patch_size", where, (int,)),
        att_hidden_size=_get(args, "att_hidden_size", where, (int,)),
        transformer_num_blocks=_get(args, "transformer_num_blocks", where, (int,)),
        transformer_num_heads=_get(args, "transformer_num_heads", where, (int,)),
        add_condition_time_ch=time_ch,
        add_condition_res_ch=res_ch,
        transformer_add_num_register=_get(args, "transformer_add_num_register", where, (int,), default=0) or 0,
        unet_model_channels=_get(args, "unet_model_channels", where, (int,), default=0) or 0,
        unet_num_res_blocks=int(res_blocks),
        learnable_skip_r=_get(args, "learnable_skip_r", where, (int,), required=False),
        diffusion_beta_schedule=args["diffusion_beta_schedule"],
        diffusion_step=_get(args, "diffusion_step", where, (int,)),
        diffusion_scale_ratio=float(_get(args, "diffusion_scale_ratio", where, (int, float), default=1.0)),
        diffusion_model_mean_type=args["diffusion_model_mean_type"],
        diffusion_model_var_type=args["diffusion_model_var_type"],
        diffusion_rescale_timestep=_get(args, "diffusion_rescale_timestep", where, (int,)),
        pc_output_dim=_get(args, "pc_output_dim", where, (int,)) if kind == "pc" else None,
        num_inds=_get(args, "num_inds", where, (int,)) if kind == "pc" else None,
        voxel_context_dim=_get(args, "voxel_context_dim", where, (int,)) if kind == "vx" else None,
        voxel_dim=_get(args, "voxel_dim", where, (int,)) if kind == "vx" else None,
    )
    _check(cfg, where)
    return cfg


def _check(cfg: WaLaConfig, where: str) -> None:
    """Relations between fields (4.0, 4.4, 4.6 of the fixture README)."""
    g, p, H = cfg.grid_size, cfg.att_patch_size, cfg.att_hidden_size
    if p < 1 or g % p:
        raise InputError(f"{where}: att_patch_size {p} must divide grid_size {g}")
    if H % cfg.transformer_num_heads:
        raise InputError(f"{where}: transformer_num_heads {cfg.transformer_num_heads} must divide att_hidden_size {H}")
    if not 1 < cfg.diffusion_rescale_timestep <= cfg.diffusion_step:
        raise InputError(f"{where}: diffusion_rescale_timestep must be in 2..diffusion_step={cfg.diffusion_step}, "
                         f"got {cfg.diffusion_rescale_timestep}")
    if cfg.kind == "vx" and cfg.voxel_dim != 8:
        raise _unimplemented(where, "voxel_dim", cfg.voxel_dim, "16^3 voxel input gives 8^3 tokens: valid 8")
    from weightspace.generators.wala.wavelet import check_shapes

    check_shapes(cfg.resolution, cfg.grid_size, cfg.max_training_level, where=where)


def read_args(path: str | os.PathLike) -> tuple[WaLaConfig, dict[str, Any]]:
    """(config, the raw args dict) from an args.json file; a missing or malformed file raises InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (a WaLa folder holds args.json and checkpoint.ckpt)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    return config_from_args(raw, where=str(path)), raw

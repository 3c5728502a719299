"""WaLa's args.json and a converted checkpoint's config.json: typed, bounded, every unimplemented value refused by name.

WaLa reads args.json into a dict whose missing keys read as None, so a missing flag is falsy here
too. Fields that only training reads are ignored. Widths that WaLa hard-codes (autoencoder width,
voxel-encoder width, PointNet widths) are not in args.json; they are read from the state dict
(`weightspace.generators.wala.model`). Types and bounds are checked by the project's strict config
loader (`weightspace.runtime.config`), so every error names the file and the dotted field.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Literal, Mapping

from weightspace.runtime.config import config_from_dict, field_path, option
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import read_json

Kind = Literal["pc", "vx", "un"]
MeanType = Literal["EPSILON", "START_X", "PREVIOUS_X"]
VarType = Literal["FIXED_SMALL", "FIXED_LARGE"]
CastName = Literal["keep", "float32", "float16", "bfloat16"]
# Block and layer counts: far above any release (the 1B models have 32 denoiser blocks); a count of millions
# would spend minutes and gigabytes building modules before the state dict could disagree with it.
MAX_LAYERS = 1024
WALA_GUIDANCE = 3.0  # WaLa's pc/vx inference passes scale=None, which its sampler replaces with 3 (args' `scale` is unused)

# WaLa's CLIP-based and multi-view models: flags whose truthy value selects a path not implemented here.
_UNSUPPORTED_FLAGS = (
    "use_image_conditions", "use_depth_conditions", "use_wavelet_conditions", "use_multiple_views_inferences",
    "use_multiple_views_grids", "use_camera_index", "training_views", "max_images_num",
)


@dataclasses.dataclass(frozen=True)
class WaLaConfig:
    """The inference-relevant part of a WaLa args.json (names as WaLa spells them).

    Integers are >= 0 unless a bound says more (`runtime.config`); `validate` holds the relations.
    """

    kind: Kind                                              # pc (point cloud), vx (16^3 voxels) or un (unconditional)
    resolution: int = option(min=2)                         # output grid edge R
    max_depth: int                                          # wavelet levels J (only 3)
    max_training_level: int                                 # decoded levels Lv: 8**Lv channels
    wavelet: str                                            # only bior6.8
    grid_size: int = option(min=1)                          # latent edge g
    e_dim: int = option(min=1)                              # latent channels
    n_e: int = option(min=1)                                # codebook rows
    normalize_latent: str | None                            # None or "l2_norm"
    decoder_num_tran: int = option(max=MAX_LAYERS)          # transformer blocks in the AE decoder
    cond_num_mapping_layers: int = option(max=MAX_LAYERS)   # Linear + SiLU layers on the raw condition
    dp_cond: float | None = option(min=0, max=1)            # condition dropout in training; non-null: classifier-free guidance at sampling
    network_type: str                                       # "latent_dit" -> DiT, anything else -> U-ViT
    dit_block_type: str                                     # "cross_dit" -> blocks with cross-attention
    att_patch_size: int = option(min=1)                     # p
    att_hidden_size: int = option(min=1)                    # H
    transformer_num_blocks: int = option(max=MAX_LAYERS)
    transformer_num_heads: int = option(min=1)
    add_condition_time_ch: Any                              # truthy: pooled condition added to the time embedding; not None: global_proj exists
    add_condition_res_ch: int | None = option(min=1)        # U-ViT: condition scale in the ResBlocks
    transformer_add_num_register: int = option(max=MAX_LAYERS)
    unet_model_channels: int                                # Cu (U-ViT)
    unet_num_res_blocks: int = option(max=MAX_LAYERS)       # first element of WaLa's list (U-ViT)
    learnable_skip_r: int | None = option(min=1)            # U-ViT: learned skip gate ratio
    diffusion_beta_schedule: Literal["linear", "cosine"]
    diffusion_step: int = option(min=2)                     # T
    diffusion_scale_ratio: float = option(min=0, exclusive_min=True)
    diffusion_model_mean_type: MeanType
    diffusion_model_var_type: VarType
    diffusion_rescale_timestep: int = option(min=2)         # K sampling steps
    pc_output_dim: int | None = option(None, min=1)         # c for pc
    num_inds: int | None = option(None, min=1)              # pc condition tokens
    voxel_context_dim: int | None = option(None, min=1)     # c for vx
    voxel_dim: int | None = option(None, min=1)             # 8: voxel tokens per axis

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

    def validate(self, where: str) -> "WaLaConfig":
        """Relations between fields and the values not implemented here (4.0, 4.4, 4.6 of the fixture README)."""
        if self.max_depth != 3:
            raise _unimplemented(where, "max_depth", self.max_depth, "WaLa's autoencoder supports only 3")
        if not self.max_training_level <= self.max_depth:
            raise _unimplemented(where, "max_training_level", self.max_training_level, f"valid: 0..{self.max_depth}")
        needed = {"pc": ("pc_output_dim", "num_inds"), "vx": ("voxel_context_dim", "voxel_dim"), "un": ()}[self.kind]
        for name in needed:
            if getattr(self, name) is None:
                raise InputError(f"{field_path(where, name)}: expected an integer for a {self.kind} model, got None")
        if self.kind == "un":
            bad = next((k for k in ("add_condition_time_ch", "add_condition_res_ch") if getattr(self, k) is not None),
                       "dit_block_type" if self.cross else None)
            if bad:
                raise _unimplemented(where, bad, getattr(self, bad), "an unconditional model needs add_condition_* null and no cross_dit")
        if self.kind == "vx" and self.voxel_dim != 8:
            raise _unimplemented(where, "voxel_dim", self.voxel_dim, "16^3 voxel input gives 8^3 tokens: valid 8")
        g, p, H = self.grid_size, self.att_patch_size, self.att_hidden_size
        if g % p:
            raise InputError(f"{where}: att_patch_size {p} must divide grid_size {g}")
        if H % self.transformer_num_heads:
            raise InputError(f"{where}: transformer_num_heads {self.transformer_num_heads} must divide att_hidden_size {H}")
        if not self.is_dit and (self.unet_model_channels < 32 or self.unet_model_channels % 32):
            raise InputError(f"{field_path(where, 'unet_model_channels')}: the U-ViT's GroupNorm has 32 groups, so it must be "
                             f"a positive multiple of 32, got {self.unet_model_channels}")
        if self.diffusion_beta_schedule == "linear" and not 0.02 * 1000 / self.diffusion_step * self.diffusion_scale_ratio < 1:
            raise InputError(f"{field_path(where, 'diffusion_scale_ratio')}: the largest linear beta, 0.02 * 1000 / diffusion_step "
                             f"* ratio, must be below 1, got ratio {self.diffusion_scale_ratio} with diffusion_step {self.diffusion_step}")
        check_steps(self.diffusion_rescale_timestep, self, field_path(where, "diffusion_rescale_timestep"))
        from weightspace.generators.wala.wavelet import check_shapes

        check_shapes(self.resolution, self.grid_size, self.max_training_level, where=where)
        return self


def check_steps(steps: Any, cfg: WaLaConfig, where: str) -> None:
    """Sampling steps K (None: the default): WaLa's spacing needs 1 < K <= diffusion_step (K = 1 crashes WaLa, K > T raises)."""
    if steps is None:
        return
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= cfg.diffusion_step:
        raise InputError(f"{where} must be an integer in 2..{cfg.diffusion_step} (diffusion_step), got {steps!r}")


def _unimplemented(where: str, key: str, value: Any, valid: str) -> InputError:
    return InputError(f"{where}: args option {key}={value!r} is not implemented by weightspace's WaLa ({valid})")


def _refuse_non_finite(value: Any, where: str) -> None:
    """JSON's NaN / Infinity anywhere in args (read or not): a converted config.json could not be written with them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{where}: must be a finite number, got {value!r}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _refuse_non_finite(v, field_path(where, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_non_finite(v, f"{where}[{i}]")


def config_from_args(args: Mapping[str, Any], where: str = "args.json") -> WaLaConfig:
    """Parse WaLa's args dict; a bad type or bound, or a value this implementation does not cover, raises InputError naming it.

    Keys this implementation does not read are ignored, not refused: WaLa's args.json holds dozens
    of training-only options (dataset paths, loss weights, augmentations) that differ between releases.
    """
    if not isinstance(args, Mapping):
        raise InputError(f"{where}: expected a JSON object, got {type(args).__name__}")
    _refuse_non_finite(args, where)
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
    res_blocks = args.get("unet_num_res_blocks") or [1]
    kind_fields = {"pc": ("pc_output_dim", "num_inds"), "vx": ("voxel_context_dim", "voxel_dim"), "un": ()}[kind]
    raw = {f.name: args.get(f.name) for f in dataclasses.fields(WaLaConfig) if f.name != "kind"}
    raw.update(
        {k: None for k in ("pc_output_dim", "num_inds", "voxel_context_dim", "voxel_dim") if k not in kind_fields},
        kind=kind,
        decoder_num_tran=args.get("decoder_num_tran", 0),  # WaLa's defaults where its code has them
        cond_num_mapping_layers=args.get("cond_num_mapping_layers", 0),
        transformer_add_num_register=args.get("transformer_add_num_register", 0),
        unet_model_channels=args.get("unet_model_channels", 0),
        unet_num_res_blocks=res_blocks[0] if isinstance(res_blocks, list) else res_blocks,
        diffusion_scale_ratio=args.get("diffusion_scale_ratio", 1.0),
        network_type=str(args.get("network_type")),
        dit_block_type=str(args.get("dit_block_type")),
    )
    return config_from_dict(WaLaConfig, raw, where=where)


def read_args(path: str | os.PathLike) -> tuple[WaLaConfig, dict[str, Any]]:
    """(config, the raw args dict) from an args.json file; a missing or malformed file raises InputError naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: file not found (a WaLa folder holds args.json and checkpoint.ckpt or model.safetensors)")
    raw = read_json(path)
    return config_from_args(raw, where=str(path)), raw


# --- a converted checkpoint's config.json (written by `weightspace convert wala`) ----------------------------
@dataclasses.dataclass
class Sampling:
    """config.json `sampling`: the defaults a converted checkpoint samples with."""

    steps: int | None = option(None, min=2, help="K, at most args.diffusion_step; null: args.diffusion_rescale_timestep")
    guidance: float | None = option(WALA_GUIDANCE, min=0, help="classifier-free guidance scale (WaLa: 3.0); null: the "
                                    "conditional branch alone")


@dataclasses.dataclass
class Source:
    """config.json `source`: where `convert wala` read the weights (a record; nothing reads it back)."""

    folder: str = option("", help="the WaLa folder's name")
    file: str = option("", help="checkpoint.ckpt or model.safetensors")
    ema: bool = option(False, help="the EMA weights (state_dict_ema) were taken")
    placeholders: list[str] = option(default_factory=list, help="objects of the checkpoint left inert")
    unused_keys: list[str] = option(default_factory=list, help="state-dict keys inference does not use (the first 50)")
    dtype_cast: CastName = option("keep", help="--dtype of the conversion")


@dataclasses.dataclass
class CheckpointConfig:
    """A converted checkpoint's config.json. Unknown keys are refused at every level except `args`,
    which is WaLa's own args.json, read by `config_from_args` (unread training keys are kept as given)."""

    kind: Literal["wala"] = option(help="the generator kind")
    args: dict[str, Any] = option(help="WaLa's args.json, whole")
    sampling: Sampling = option(default_factory=Sampling, help="sampling defaults")
    source: Source | None = option(None, help="where the weights came from")
    weights_hash: str | None = option(None, help="hash of the weights, written by save_checkpoint")


def read_checkpoint_config(config: Mapping[str, Any], where: str = "config.json") -> tuple[WaLaConfig, CheckpointConfig]:
    """(WaLa config, the checked config.json) of a converted checkpoint; errors name `where` and the dotted field."""
    ck = config_from_dict(CheckpointConfig, config, where=where)
    cfg = config_from_args(ck.args, where=field_path(where, "args"))
    check_steps(ck.sampling.steps, cfg, field_path(field_path(where, "sampling"), "steps"))
    return cfg, ck

"""WaLa (wavelet latent diffusion, arXiv 2411.08017): our own implementation of its inference path, loading the released checkpoints."""

from weightspace.generators.wala.config import WaLaConfig, config_from_args, read_args
from weightspace.generators.wala.model import WaLa, read_voxel_json

__all__ = ["WaLa", "WaLaConfig", "config_from_args", "read_args", "read_voxel_json"]

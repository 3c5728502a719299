"""WaLa-style conditional latent diffusion: TSDF autoencoder, condition encoders, latent-token denoiser, DDIM."""

from weightspace.generators.latent_diffusion.config import ModelConfig, TrainConfig

__all__ = ["ModelConfig", "TrainConfig"]

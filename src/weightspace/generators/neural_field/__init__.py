"""The DeepSDF-style neural-field auto-decoder: f(x, z) with one latent code per training shape."""

from weightspace.generators.neural_field.config import FieldConfig, TrainConfig
from weightspace.generators.neural_field.model import NeuralFieldGenerator

__all__ = ["FieldConfig", "TrainConfig", "NeuralFieldGenerator"]

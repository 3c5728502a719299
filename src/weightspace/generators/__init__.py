"""Shape generators behind one protocol, and the registry that loads them by kind, name or folder."""

from weightspace.generators.protocol import (
    BatchedDecode,
    BatchedTrainingLoss,
    EffectiveWeights,
    EncodesPoints,
    EncodesVoxels,
    Generator,
    HasFamilies,
    MissingCapability,
    Params,
    Saveable,
    require,
)
from weightspace.generators.registry import as_generator, known_kinds, load_generator, register, resolve_checkpoint, unregister


def __getattr__(name: str):
    # FieldGenerator imports the neural field's losses; load it on first use only.
    if name == "FieldGenerator":
        from weightspace.generators.field import FieldGenerator

        return FieldGenerator
    raise AttributeError(name)


__all__ = [
    "BatchedDecode", "BatchedTrainingLoss", "EffectiveWeights", "EncodesPoints", "EncodesVoxels", "FieldGenerator", "Generator", "HasFamilies",
    "MissingCapability", "Params", "Saveable", "as_generator", "known_kinds", "load_generator", "register",
    "require", "resolve_checkpoint", "unregister",
]

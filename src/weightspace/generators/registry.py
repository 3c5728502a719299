"""Load a generator from a checkpoint folder or a shipped name (`default`, `default-field`, `default-64`, `default-points`)."""

from __future__ import annotations

from pathlib import Path

from weightspace.generators.protocol import Generator
from weightspace.runtime.checkpoint import load_checkpoint
from weightspace.runtime.errors import InputError

# Shipped checkpoints live inside the package so an installed wheel has them too.
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
SHIPPED = {
    "default": "latent-diffusion-32",  # trained on the 2-core CPU in under an hour
    "default-field": "neural-field-32",
    "default-64": "latent-diffusion-64",  # 64^3, trained on a GPU (docs/gpu.md)
    "default-points": "latent-diffusion-32-points",  # 8^3 tokens: better from points, worse family samples
}


def _kinds() -> dict[str, type[Generator]]:
    # An explicit name-to-class table (no dynamic imports by string).
    from weightspace.generators.latent_diffusion.model import LatentDiffusionGenerator
    from weightspace.generators.neural_field.model import NeuralFieldGenerator

    return {"latent-diffusion": LatentDiffusionGenerator, "neural-field": NeuralFieldGenerator}


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """Map a shipped name (`default`, `default-field`, `default-64`, `default-points`) to its folder; otherwise return the path."""
    key = str(name_or_path)
    if key in SHIPPED:
        folder = SHIPPED_DIR / SHIPPED[key]
        if not folder.is_dir():
            raise InputError(f"shipped checkpoint {key!r} is missing from this installation ({folder.name})")
        return folder
    return Path(name_or_path)


def load_generator(name_or_path: str | Path, device: str = "cpu") -> Generator:
    """Load any generator checkpoint; the class is chosen by `config.json`'s `kind`."""
    folder = resolve_checkpoint(name_or_path)
    state, config = load_checkpoint(folder)
    kinds = _kinds()
    kind = config.get("kind")
    if kind not in kinds:
        raise InputError(f"{folder / 'config.json'}: field 'kind' must be one of {sorted(kinds)}, got {kind!r}")
    gen = kinds[kind].from_checkpoint(state, config)
    gen.net.eval()
    return gen.to(device)

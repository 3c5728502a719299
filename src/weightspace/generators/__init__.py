"""Shape generators behind one protocol, and the registry that loads them by name or folder."""

from weightspace.generators.protocol import Generator, Params
from weightspace.generators.registry import load_generator, resolve_checkpoint

__all__ = ["Generator", "Params", "load_generator", "resolve_checkpoint"]

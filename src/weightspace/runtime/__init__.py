"""Runtime services every stage may import: devices, seeding, atomic I/O, checkpoints, progress."""

from weightspace.runtime.device import pick_device
from weightspace.runtime.errors import WeightspaceError, InputError
from weightspace.runtime.io import atomic_write_bytes, atomic_write_json, atomic_write_text, atomic_path, read_json
from weightspace.runtime.seeding import item_generator, seed_everything

__all__ = [
    "pick_device",
    "WeightspaceError",
    "InputError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_path",
    "read_json",
    "item_generator",
    "seed_everything",
]

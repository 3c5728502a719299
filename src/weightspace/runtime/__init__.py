"""Runtime services every stage may import: devices, seeding, atomic I/O, checkpoints, progress.

The names below are found in their modules on first use, so that importing a light module of this
package (`runtime.errors`, `runtime.config`) does not import torch: the CLI builds its command tree
without it.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {  # name -> module that defines it
    "pick_device": "weightspace.runtime.device",
    "WeightspaceError": "weightspace.runtime.errors",
    "InputError": "weightspace.runtime.errors",
    "atomic_write_bytes": "weightspace.runtime.io",
    "atomic_write_json": "weightspace.runtime.io",
    "atomic_write_text": "weightspace.runtime.io",
    "atomic_path": "weightspace.runtime.io",
    "read_json": "weightspace.runtime.io",
    "item_generator": "weightspace.runtime.seeding",
    "seed_everything": "weightspace.runtime.seeding",
}

__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)

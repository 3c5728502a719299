"""Device choice: CPU by default, CUDA when present and asked for (or `auto`)."""

from __future__ import annotations

from typing import Literal

import torch

from weightspace.runtime.errors import InputError

DeviceName = Literal["auto", "cpu", "cuda"]
DEVICE_NAMES = ("auto", "cpu", "cuda")


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """Return the torch device for `name`: `auto` is CUDA when available, else CPU; cuda[:N] only where
    CUDA is; any other device torch knows (mps, xpu, a torch.device) as given."""
    name = str(name)
    if name not in DEVICE_NAMES and not name.startswith("cuda:"):
        try:
            return torch.device(name)
        except (RuntimeError, ValueError):
            raise InputError(f"device must be one of {', '.join(DEVICE_NAMES)} (or cuda:N, or another torch device "
                             f"such as mps), got {name!r}") from None
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for but CUDA is not available on this machine")
    return torch.device(name)

"""Pickles that would create a marker file if anything ever unpickled them."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


class MarkerBomb:
    """Unpickling this runs `exec`, which creates `marker`: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def pickle_bytes(marker: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    return pickle.dumps({"weight": MarkerBomb(marker)}, protocol=protocol)


def write_raw_pickle(path: Path, marker: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle_bytes(marker, protocol))
    return path


def write_torch_pickle(path: Path, marker: Path) -> Path:
    """A `torch.save` file (zip with data.pkl) holding a tensor and the bomb, as a real attack would."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.zeros(3), "payload": MarkerBomb(marker)}, path)
    return path


def write_object_npy(path: Path, marker: Path) -> Path:
    """A .npy of dtype object: loading it with allow_pickle=True would run the bomb."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = MarkerBomb(marker), 1.0
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=True)
    return path


def write_object_npz(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.empty(1, dtype=object)
    arr[0] = MarkerBomb(marker)
    with open(path, "wb") as f:
        np.savez(f, points=arr, normals=arr)
    return path

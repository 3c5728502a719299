"""Bad SDF grids: wrong dimensions, NaN, infinities, foreign dtypes, all solid, all empty."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def corpus(folder: Path, resolution: int = 12) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected): "error" (refused, naming the file) or a documented answer
    "betti=b0,b1,b2" for grids that are valid but extreme."""
    folder.mkdir(parents=True, exist_ok=True)
    R = resolution
    out: dict[str, tuple[Path, str]] = {}

    def put(name: str, arr, expect: str) -> None:
        p = folder / name
        np.save(p, arr, allow_pickle=False)
        out[name] = (p, expect)

    put("flat_2d.npy", np.zeros((R, R), np.float32), "error")
    put("four_d.npy", np.zeros((2, R, R, R), np.float32), "error")
    put("zero_size.npy", np.zeros((0, R, R), np.float32), "error")
    nan = np.full((R, R, R), 0.1, np.float32)
    nan[3, 3, 3] = np.nan
    put("nan.npy", nan, "error")
    put("strings.npy", np.array([["a"] * R] * R), "error")
    put("complex.npy", np.zeros((R, R, R), np.complex64), "error")
    put("all_solid.npy", np.full((R, R, R), -0.1, np.float32), "betti=1,0,0")
    put("all_empty.npy", np.full((R, R, R), 0.1, np.float32), "betti=0,0,0")
    put("all_solid_bool.npy", np.ones((R, R, R), bool), "betti=1,0,0")
    inf = np.full((R, R, R), np.inf, np.float32)
    inf[4:8, 4:8, 4:8] = -np.inf
    put("infinite.npy", inf, "betti=1,0,0")
    (folder / "truncated.npy").write_bytes((folder / "all_empty.npy").read_bytes()[:200])
    out["truncated.npy"] = (folder / "truncated.npy", "error")
    (folder / "not_numpy.npy").write_bytes(b"hello, I am text\n" * 10)
    out["not_numpy.npy"] = (folder / "not_numpy.npy", "error")
    # a valid npy header that claims a 10^12-element array in a 200-byte file
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (10000, 10000, 10000), }"
    header = header + " " * (118 - len(header)) + "\n"
    (folder / "lying_shape.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64)
    out["lying_shape.npy"] = (folder / "lying_shape.npy", "error")
    return out

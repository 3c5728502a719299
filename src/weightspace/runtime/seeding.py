"""Seeding: one random generator per item, so results never depend on batch size or device count."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A stable 63-bit seed from a base seed and any keys (item index, name, ...)."""
    text = repr((int(seed),) + tuple(keys)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def item_generator(seed: int, *keys: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded for one item: same (seed, keys) gives the same stream."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *keys))
    return g


def decode_seed(seed: int, index: int) -> int:
    """The decode seed of item `index` of a population or sample set (31-bit so every generator
    accepts it); `weightspace decode --seed S` decodes item i (a population's member of index i) with decode_seed(S, i)."""
    return derive_seed(seed, "decode", index) % 2**31


def point_seeds(seed: int, n: int) -> list[int]:
    """decode_seed(seed, i) for i < n."""
    return [decode_seed(seed, i) for i in range(n)]


def item_rng(seed: int, *keys: object) -> np.random.Generator:
    """A NumPy generator seeded for one item."""
    return np.random.default_rng(derive_seed(seed, *keys))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global state (for training loops that draw from it)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)

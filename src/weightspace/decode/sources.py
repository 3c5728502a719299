"""Decode a stored point file, a population or samples of a subspace into a folder of grids and meshes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from weightspace.decode.points import decode_points, point_seeds, write_decoded
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_write_json, read_json
from weightspace.space.frame import Frame
from weightspace.space.store import Population, load_point, read_metadata
from weightspace.space.subspace import SUBSPACE_FILE, Subspace


@dataclass
class DecodeConfig:
    """What to decode and where (the CLI builds one of these)."""

    source: str  # point .safetensors | population folder | subspace folder
    out: str
    checkpoint: str | None = None  # default: the checkpoint the source was made with
    samples: int = 8  # subspace samples (subspaces only)
    temperature: float = 1.0
    seed: int = 0
    resolution: int | None = None
    batch_size: int = 8
    meshes: bool = True


def source_kind(path: Path) -> str:
    if path.is_dir() and (path / "config.json").is_file() and (path / "layout.json").is_file():
        return "population"
    if path.is_dir() and (path / SUBSPACE_FILE).is_file():
        return "subspace"
    if path.is_file():
        kind = read_metadata(path).get("kind")
        if kind in ("point", "subspace"):
            return kind
        raise InputError(f"{path}: a safetensors file of kind {kind!r}; expected a point or subspace file")
    raise InputError(f"{path}: not a point file, population folder or subspace folder")


def recorded_checkpoint(source: str | Path) -> str:
    """The checkpoint a point file, population or subspace was made with ('' when it records none);
    reads metadata only."""
    src = Path(source)
    kind = source_kind(src)
    if kind == "population":
        return str(read_json(src / "config.json").get("checkpoint", ""))
    meta = read_metadata(src / SUBSPACE_FILE if kind == "subspace" else src)
    return str(meta.get("checkpoint", ""))


def read_source(src: Path, kind: str, config: DecodeConfig) -> tuple[Frame, torch.Tensor, list[str]]:
    """The frame, points (B, D) and ids of a point file, a population, or `config.samples` subspace samples."""
    if kind == "point":
        pf = load_point(src)
        return pf.frame, pf.point[None], [src.stem]
    if kind == "population":
        pop = Population(src)
        return pop.frame, pop.matrix(), [str(r["id"]) for r in pop.rows]
    sub = Subspace.load(src)
    points = sub.sample(config.samples, seed=config.seed, temperature=config.temperature)
    return sub.frame, points, [f"sample-{i:04d}" for i in range(config.samples)]


def decode_source(config: DecodeConfig, *, generator: Any = None) -> list[dict[str, Any]]:
    """Decode `config.source` into `config.out`; returns the manifest rows written.

    generator : a Generator or checkpoint to decode with; default: `config.checkpoint`, else the one
        the source records.
    """
    from weightspace.generators.registry import generator_loader

    src = Path(config.source)
    kind = source_kind(src)
    frame, points, ids = read_source(src, kind, config)
    checkpoint = config.checkpoint or frame.checkpoint
    if not checkpoint and generator is None:
        raise InputError(f"{src}: records no checkpoint; pass --checkpoint")
    gen = generator_loader(generator, checkpoint)()
    param = frame.build(gen, what=f"{src.name} (checkpoint {checkpoint})")
    seeds = point_seeds(config.seed, points.shape[0])
    grids = decode_points(gen, param, points.to(torch.float32), seeds, resolution=config.resolution, batch_size=config.batch_size)
    rows = write_decoded(config.out, grids, ids, seeds, meshes=config.meshes)
    atomic_write_json(Path(config.out) / "decode.json", {"source": str(config.source), "kind": kind, "checkpoint": checkpoint,
                                                         "count": len(rows), "seed": config.seed, "temperature": config.temperature,
                                                         "layout_size": frame.layout.size, "parameterisation": frame.parameterisation})
    return rows


__all__ = ["DecodeConfig", "decode_source", "source_kind"]

"""Decode a stored point file, a population or samples of a subspace into a folder of grids and meshes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from weightspace.decode.points import decode_points, decoded_rows, write_decoded
from weightspace.runtime.errors import InputError
from weightspace.runtime.executors import Executor, worker_cached
from weightspace.runtime.folders import check_out_folder, finish_replacing, listed_files, named_files, start_replacing
from weightspace.runtime.io import atomic_write_json, read_json, remove_stale_temps
from weightspace.runtime.progress import track
from weightspace.runtime.seeding import decode_seed
from weightspace.space.frame import Frame
from weightspace.space.store import Population, load_point, read_metadata, save_point
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
    overwrite: bool = False  # replace a finished earlier decode in `out`


DECODED_FILES = {"grid": "grids", "mesh": "meshes", "point": "points"}  # a decode's manifest fields naming its files, and their folders


def source_kind(path: Path) -> str:
    if path.is_dir() and (path / "config.json").is_file() and (path / "layout.json").is_file():
        return "population"
    if path.is_dir() and (path / SUBSPACE_FILE).is_file():
        return "subspace"
    if path.is_file():
        kind = read_metadata(path).get("kind")
        if kind in ("point", "subspace"):
            return kind
        what = "a safetensors file that names no kind (a population's member shard?)" if kind is None else \
            f"a safetensors file of kind {kind!r}"
        raise InputError(f"{path}: {what}; expected a point or subspace file, a population folder or a subspace folder")
    if not path.exists():
        raise InputError(f"{path}: not found")
    raise InputError(f"{path}: not a point file, population folder or subspace folder")


def check_decode_out(out: Path, overwrite: bool = False) -> None:
    """Refuse an --out that holds anything but an earlier decode (decoding writes manifest.jsonl and
    grids/ there, which would replace a data folder's or a population's own), and a finished earlier
    decode unless `overwrite` (one killed before its decode.json is taken up again)."""
    check_out_folder(out, "decode", writes="manifest.jsonl and grids/", overwrite=overwrite, finished="decode.json")


def recorded_checkpoint(source: str | Path) -> str:
    """The checkpoint a point file, population or subspace was made with ('' when it records none);
    reads metadata only."""
    src = Path(source)
    kind = source_kind(src)
    if kind == "population":
        return str(read_json(src / "config.json").get("checkpoint", ""))
    meta = read_metadata(src / SUBSPACE_FILE if kind == "subspace" and src.is_dir() else src)  # a folder or its file
    return str(meta.get("checkpoint", ""))


def read_source(src: Path, kind: str, config: DecodeConfig) -> tuple[Frame, torch.Tensor, list[str], list[int]]:
    """The frame, points (B, D), ids and item indices of a point file, a population, or `config.samples`
    subspace samples. A population's items are its members' indices, which a population with gaps (a
    member recorded as failed) does not share with their positions; the others' are their positions."""
    if kind == "point":
        pf = load_point(src)
        return pf.frame, pf.point[None], [src.stem], [0]
    if kind == "population":
        pop = Population(src)
        return pop.frame, pop.matrix(), [str(r["id"]) for r in pop.rows], [int(r["index"]) for r in pop.rows]
    sub = Subspace.load(src)
    points = sub.sample(config.samples, seed=config.seed, temperature=config.temperature)
    return sub.frame, points, [f"sample-{i:04d}" for i in range(config.samples)], list(range(config.samples))


@dataclass
class DecodeTask:
    """One chunk of points for an executor worker: the generator's loader (shared, see Executor.share),
    the frame, points (b, D), one seed per point."""

    loader: Callable[[], Any]
    frame: Frame
    points: torch.Tensor
    seeds: list[int]
    resolution: int | None
    what: str


def decode_chunk(task: DecodeTask) -> np.ndarray:
    """Grids (b, R, R, R) float32 of one chunk (runs in an executor worker, its generator loaded once)."""
    def build() -> tuple[Any, Any]:
        torch.set_num_threads(1)
        gen = task.loader()
        return gen, task.frame.build(gen, what=task.what)

    gen, param = worker_cached(repr(("decode", task.loader, sorted(task.frame.parameterisation.items()))), build)
    return decode_points(gen, param, task.points, task.seeds, resolution=task.resolution, batch_size=len(task.seeds)).numpy()


def decode_source(config: DecodeConfig, *, generator: Any = None, executor: Executor | None = None) -> list[dict[str, Any]]:
    """Decode `config.source` into `config.out`; returns the manifest rows written.

    generator : a Generator or checkpoint to decode with; default: `config.checkpoint`, else the one
        the source records.
    executor : where chunks of `config.batch_size` points decode (a process pool, Ray); default here.
        Each point keeps its own seed, so the grids do not depend on where they were made.
    """
    from weightspace.generators.registry import generator_loader

    src = Path(config.source)
    kind = source_kind(src)
    check_decode_out(Path(config.out), config.overwrite)
    frame, points, ids, items = read_source(src, kind, config)
    checkpoint = config.checkpoint or frame.checkpoint
    if not checkpoint and generator is None:
        raise InputError(f"{src}: records no checkpoint; pass --checkpoint")
    # item i decodes with decode_seed(seed, i): a member as its build's fidelity check decoded it
    seeds = [decode_seed(config.seed, i) for i in items]
    made = f"made on {frame.checkpoint}" if frame.checkpoint else "made on a checkpoint it does not name"
    what = f"{src.name} ({made}; decoding with {checkpoint})"
    points = points.to(torch.float32)
    if executor is None:
        gen = generator_loader(generator, checkpoint)()
        param = frame.build(gen, what=what)
        grids = decode_points(gen, param, points, seeds, resolution=config.resolution, batch_size=config.batch_size)
    else:
        if config.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {config.batch_size}")
        loader = executor.share(generator_loader(generator, checkpoint))
        B = config.batch_size
        tasks = [DecodeTask(loader, frame, points[i : i + B], [int(s) for s in seeds[i : i + B]], config.resolution, what)
                 for i in range(0, points.shape[0], B)]
        grids = np.concatenate(list(track(executor.map(decode_chunk, tasks), "decode", total=len(tasks), status=executor.status)))
    out = Path(config.out)
    for folder in (out / "grids", out / "meshes", out / "points"):  # a killed earlier decode's half-written files; no writer runs here now
        remove_stale_temps(folder)
    # the earlier decode's items and this one's, on record until this one's manifest is written: those
    # it does not rewrite (or a killed run wrote) are then removed, not left to pass as its own
    earlier = listed_files(out / "manifest.jsonl", DECODED_FILES)  # check_decode_out let no other kind's manifest through
    # a subspace sample exists nowhere else: its point is kept, for `population export` or another decode
    kept = [{"point": f"points/{item}.safetensors"} for item in ids] if kind == "subspace" else None
    recorded = start_replacing(out, earlier | named_files([*decoded_rows(ids), *(kept or [])], DECODED_FILES), DECODED_FILES)
    for row, point in zip(kept or [], points):
        save_point(out / row["point"], point, frame)
    rows = write_decoded(out, grids, ids, seeds, extra=kept, meshes=config.meshes)
    finish_replacing(out, recorded, rows, DECODED_FILES)
    drawn = {"samples": config.samples, "temperature": config.temperature} if kind == "subspace" else {}
    atomic_write_json(out / "decode.json", {"source": str(config.source), "kind": kind, "checkpoint": checkpoint, "count": len(rows),
                                            "seed": config.seed, "layout_size": frame.layout.size,
                                            "parameterisation": frame.parameterisation, **drawn})
    return rows


__all__ = ["DecodeConfig", "decode_source", "source_kind"]

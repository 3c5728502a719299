"""On-disk formats of points and populations: safetensors tensors with their frame alongside.

A point file is one safetensors file: tensors `point` (D,) and `anchor` (1, *condition_shape),
metadata `layout`, `parameterisation` (JSON) and `checkpoint` (the name or folder it was made
from): its `Frame`. A population folder holds its frame in `config.json`, `layout.json` and
`anchor.safetensors`, `manifest.jsonl` (one row per finished member) and
`shards/<index>.safetensors` (`point` (D,)).
A member counts only once its manifest row exists, and rows are written after their shard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from weightspace.runtime.checkpoint import load_state, refuse_pickle
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_path, atomic_write_json, atomic_write_text, read_json, read_jsonl, safe_child
from weightspace.space.frame import Frame
from weightspace.space.layout import Layout


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Atomically write tensors plus JSON-encoded metadata values to one safetensors file."""
    path = Path(path)
    meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata.items()}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for foreign files
        raise InputError(f"{path}: not a valid safetensors file ({e})") from None


def _meta_json(meta: dict[str, str], key: str, path: Path) -> Any:
    if key not in meta:
        raise InputError(f"{path}: metadata field {key!r} is missing (not a weightspace file?)")
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        raise InputError(f"{path}: metadata field {key!r} is not valid JSON") from None


def read_frame(meta: dict[str, str], anchor: torch.Tensor | None, path: Path) -> Frame:
    """The frame recorded in a point or subspace file: metadata `layout`, `parameterisation`,
    `checkpoint` and the tensor `anchor`."""
    if anchor is None:
        raise InputError(f"{path}: tensor 'anchor' missing")
    layout = Layout.from_dict(_meta_json(meta, "layout", path), source=str(path))
    from weightspace.space.parameterisations import check_parameterisation_config  # it imports the generators

    check_parameterisation_config(_meta_json(meta, "parameterisation", path), f"{path} (metadata)")
    try:
        return Frame(layout, _meta_json(meta, "parameterisation", path), anchor, meta.get("checkpoint", ""))
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


@dataclass
class PointFile:
    """A stored point (D,) in its frame."""

    point: torch.Tensor
    frame: Frame


def save_point(path: str | Path, point: torch.Tensor, frame: Frame) -> Path:
    """Write one weight-space point (D,) with its frame (layout, parameterisation, anchor, checkpoint) as a
    safetensors file, atomically; `load_point` and `weightspace decode` read it back."""
    if point.shape != (frame.layout.size,):
        raise InputError(f"point has shape {tuple(point.shape)}, layout expects ({frame.layout.size},)")
    return save_tensors(path, {"point": point, "anchor": frame.anchor}, {"kind": "point", **frame.metadata()})


def load_point(path: str | Path) -> PointFile:
    """Read a point file written by `save_point`: the point (D,) and its frame; a foreign or damaged
    file raises InputError naming it."""
    path = Path(path)
    meta = read_metadata(path)
    state = load_state(path)
    frame = read_frame(meta, state.get("anchor"), path)
    if "point" not in state or state["point"].shape != (frame.layout.size,):
        raise InputError(f"{path}: tensor 'point' missing or not of length {frame.layout.size}")
    return PointFile(state["point"], frame)


# --- populations -------------------------------------------------------------------------------
MANIFEST = "manifest.jsonl"


def read_manifest(folder: Path) -> list[dict[str, Any]]:
    """Rows of a population manifest; a torn or malformed line raises InputError naming it."""
    path = folder / MANIFEST
    if not path.exists():
        return []
    rows, seen = [], {}
    for i, row in read_jsonl(path):
        missing = [k for k in ("index", "id", "shard") if k not in row]
        if missing:
            raise InputError(f"{path}: line {i} lacks field(s) {missing}")
        if not isinstance(row["index"], int) or isinstance(row["index"], bool):
            raise InputError(f"{path}: line {i}: index must be an integer, got {row['index']!r}")
        if not isinstance(row["shard"], str):
            raise InputError(f"{path}: line {i}: shard must be a string, got {row['shard']!r}")
        for key in ("index", "id"):  # one row per member: a repeated one would count a member twice
            earlier = seen.setdefault((key, row[key] if key == "index" else str(row[key])), i)
            if earlier != i:
                raise InputError(f"{path}: line {i} repeats member {key} {row[key]!r} of line {earlier}")
        rows.append(row)
    return rows


def write_manifest(folder: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(folder / MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def shard_name(index: int) -> str:
    return f"shards/{index:06d}.safetensors"


def save_population_frame(folder: Path, frame: Frame, config: dict[str, Any]) -> None:
    """Start a population folder: its frame as `anchor.safetensors`, `layout.json` and the
    `parameterisation` and `checkpoint` fields of `config.json` (written last, with `config`)."""
    save_tensors(folder / "anchor.safetensors", {"anchor": frame.anchor}, {"kind": "anchor"})
    atomic_write_text(folder / "layout.json", frame.layout.to_json())
    atomic_write_json(folder / "config.json", {**config, "checkpoint": frame.checkpoint, "parameterisation": frame.parameterisation})


class Population:
    """A finished (or partial) population folder, read-only."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.exists():
            raise InputError(f"{self.folder}: not found")
        if not (self.folder / "config.json").is_file():
            raise InputError(f"{self.folder}: not a population folder (config.json missing)")
        self.config: dict[str, Any] = read_json(self.folder / "config.json")
        if not isinstance(self.config, dict) or not isinstance(self.config.get("parameterisation"), dict):
            raise InputError(f"{self.folder / 'config.json'}: expected a JSON object with a 'parameterisation' object")
        from weightspace.space.parameterisations import check_parameterisation_config  # it imports the generators

        check_parameterisation_config(self.config["parameterisation"], str(self.folder / "config.json"))
        layout = read_json(self.folder / "layout.json")
        if not isinstance(layout, dict):
            raise InputError(f"{self.folder / 'layout.json'}: expected a JSON object")
        anchor = load_state(self.folder / "anchor.safetensors")
        if "anchor" not in anchor:
            raise InputError(f"{self.folder / 'anchor.safetensors'}: tensor 'anchor' missing")
        layout = Layout.from_dict(layout, source=str(self.folder / "layout.json"))
        try:
            self.frame = Frame(layout, self.config["parameterisation"], anchor["anchor"], str(self.config.get("checkpoint", "")))
        except InputError as e:
            raise InputError(f"{self.folder}: {e}") from None
        self.rows = sorted(read_manifest(self.folder), key=lambda r: r["index"])

    def __len__(self) -> int:
        return len(self.rows)

    def point(self, i: int) -> torch.Tensor:
        path = safe_child(self.folder, self.rows[i]["shard"])
        p = load_state(path)["point"]
        if p.shape != (self.frame.layout.size,):
            raise InputError(f"{path}: point has shape {tuple(p.shape)}, layout expects ({self.frame.layout.size},)")
        return p

    def unreadable(self) -> list[dict[str, str]]:
        """Members whose weights file is missing or does not hold the point the layout expects:
        [{id, shard, error}], empty for an intact population. Reads every member's file."""
        bad = []
        for i, row in enumerate(self.rows):
            try:
                self.point(i)
            except InputError as e:
                bad.append({"id": str(row["id"]), "shard": str(row["shard"]), "error": str(e)})
        return bad

    def shape_ids(self) -> list[str]:
        """The id of the data shape each member was fitted to (its row's source, else the member's own id), in row order."""
        return [str((r.get("source") or {}).get("id", r.get("id"))) for r in self.rows]

    def iter_points(self) -> Iterator[torch.Tensor]:
        for i in range(len(self)):
            yield self.point(i)

    def matrix(self) -> torch.Tensor:
        """All points stacked: (N, D) float32 (in memory)."""
        if not self.rows:
            raise InputError(f"{self.folder}: population has no finished members")
        return torch.stack(list(self.iter_points()))

    def to_memmap(self, path: str | Path) -> np.memmap:
        """Write all points row by row into a float32 (N, D) memory-mapped file (never all in memory)."""
        mm = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float32, shape=(len(self), self.frame.layout.size))
        for i, p in enumerate(self.iter_points()):
            mm[i] = p.numpy()
        mm.flush()
        return mm

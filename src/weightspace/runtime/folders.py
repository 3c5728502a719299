"""What a folder on disk holds, told from the files weightspace writes there, so every command that
reads or writes a folder names a wrong one the same way instead of misreading it or writing over it.

A folder's kind, from its marker files (the first that matches):

  inversion     invert.json, or the progress file of an unfinished run (`weightspace subspace invert`)
  edit          edit.json (`weightspace subspace edit`)
  decode        decode.json (`weightspace decode`), or a manifest.jsonl of decoded rows (one killed
                before writing decode.json)
  subspace      subspace.safetensors (`weightspace subspace fit`)
  population    layout.json beside config.json or anchor.safetensors (`weightspace population build`)
  observations  observations.npy (`weightspace data observe`)
  study         results.json (`weightspace experiment ...`)
  checkpoint    config.json naming a generator kind (a trained or shipped generator)
  data          manifest.jsonl of shape rows, or summary.json with grids/ (`data make` / `data import`),
                or the progress file of one of them not finished yet (`runtime.resume.PROGRESS`)
  None          none of these: new, empty, or only files weightspace does not write
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_write_text
from weightspace.runtime.resume import PROGRESS

WHAT = {
    "inversion": "an inversion of scans",
    "edit": "an edit along a direction",
    "decode": "an earlier decode",
    "subspace": "a subspace",
    "population": "a population (fitted members)",
    "observations": "an observations set",
    "checkpoint": "a generator checkpoint",
    "study": "a study's results",
    "data": "a shape dataset",
}


def folder_kind(folder: str | Path) -> str | None:
    """The kind of weightspace folder `folder` is (module docstring), or None; a path that is not a
    folder is None too (callers name a file themselves)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if (folder / "invert.json").is_file() or (folder / ".invert-progress.jsonl").is_file():
        return "inversion"
    if (folder / "edit.json").is_file():
        return "edit"
    if (folder / "decode.json").is_file():
        return "decode"
    if (folder / "subspace.safetensors").is_file():
        return "subspace"
    if (folder / "layout.json").is_file() and ((folder / "config.json").is_file() or (folder / "anchor.safetensors").is_file()):
        return "population"
    if (folder / "observations.npy").is_file():
        return "observations"
    if (folder / "results.json").is_file():
        return "study"
    if (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (ValueError, OSError):
            config = None
        if isinstance(config, dict) and config.get("kind") == "population":
            return "population"  # one whose layout.json is not written yet
        if isinstance(config, dict) and isinstance(config.get("kind"), str):
            return "checkpoint"
    if (folder / "manifest.jsonl").is_file():
        first = _first_row(folder / "manifest.jsonl")
        if '"inside_fraction"' in first and not any(f'"{k}"' in first for k in ("split", "family", "status")):
            return "decode"  # a decode killed before its decode.json: its rows, and no data row's fields
        return "data"
    if (folder / "summary.json").is_file() and (folder / "grids").is_dir():
        return "data"
    if (folder / PROGRESS).is_file():
        return "data"  # a data make or import killed part-way: its rerun takes the shapes up, no other command writes here
    return None


def _first_row(manifest: Path) -> str:
    """The first non-blank line of `manifest` ('' when there is none or it cannot be read)."""
    try:
        with open(manifest, encoding="utf-8") as f:
            return next((line for line in f if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return ""


def listed_files(manifest: Path, fields: dict[str, str]) -> set[str]:
    """The files the rows of `manifest` name in `fields` (`named_files`). An unreadable manifest or
    line names none (nothing is removed on its say)."""
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return set()
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return named_files(rows, fields)


def named_files(rows: Iterable[object], fields: dict[str, str]) -> set[str]:
    """The files `rows` name in `fields` (field -> the subfolder such files live in, e.g.
    {"grid": "grids"}), kept only when they are a plain file name inside that subfolder (`own_file`):
    what a command may remove when it replaces its own earlier output."""
    return {row[key] for row in rows if isinstance(row, dict) for key, sub in fields.items() if own_file(row.get(key), sub)}


def own_file(name: object, sub: str) -> bool:
    """Whether `name` is `sub/<plain file name>` (no further folders, no dot name): the only shape of
    path a command removes on a manifest's say."""
    parts = name.split("/") if isinstance(name, str) else []
    return len(parts) == 2 and parts[0] == sub and parts[1] != "" and not parts[1].startswith(".")


def check_out_folder(out: str | Path, own: str, *, option: str = "--out", writes: str = "", overwrite: bool = True,
                     finished: str | None = None) -> None:
    """Refuse an output folder `out` that is a file, or a weightspace folder of a kind other than `own`
    (what this command writes there would replace that folder's own files, `writes`), before anything
    is written. A new folder, an empty one, or one of only other files is accepted; so is an earlier
    `own`, unless `overwrite` is False and it holds the file `finished` (its record of a finished
    run): replacing earlier results then takes --overwrite, as `data make` and `generate` ask."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{option}: {out} is a file; give a folder")
    kind = folder_kind(out)
    if kind is not None and kind != own:
        mixed = f"; {writes} written there would replace or sit among its files" if writes else ""
        raise InputError(f"{option}: {out} holds {WHAT[kind]}, not {WHAT[own]}{mixed}. Choose a new or empty folder")
    if kind == own and not overwrite and finished is not None and (out / finished).is_file():
        raise InputError(f"{option}: {out} already holds {WHAT[own]} ({finished}); pass --overwrite to replace it, "
                         f"or choose another folder")


REPLACING = ".replacing.json"  # the files a command replacing its output may leave behind, until it is done


def start_replacing(out: Path, names: Iterable[str], fields: dict[str, str]) -> set[str]:
    """Before a command writes its files into `out`: `names` (the files an earlier run there listed,
    and any this run is about to write), joined with those a replacement killed part-way recorded, are
    kept in out/REPLACING until `finish_replacing`. So a rerun after a kill still knows every file
    that may be left over, even when the earlier record is gone or was never written. Only files
    inside the subfolders of `fields` are kept (`own_file`). Returns them."""
    marker = out / REPLACING
    recorded = set(names)
    if marker.is_file():  # a replacement killed part-way: its files are still to be accounted for
        try:
            listed = json.loads(marker.read_text(encoding="utf-8"))
        except (ValueError, OSError, UnicodeDecodeError):
            listed = []
        if isinstance(listed, list):
            recorded.update(n for n in listed if isinstance(n, str))
    recorded = {n for n in recorded if any(own_file(n, sub) for sub in fields.values())}
    if recorded:
        atomic_write_text(marker, json.dumps(sorted(recorded)))
    return recorded


def finish_replacing(out: Path, recorded: set[str], rows: Iterable[object], fields: dict[str, str]) -> None:
    """Once a command's new record of `rows` is written: remove the files `start_replacing` recorded
    that the rows do not name, and the record of them."""
    for name in sorted(recorded - named_files(rows, fields)):
        (out / name).unlink(missing_ok=True)
    (out / REPLACING).unlink(missing_ok=True)

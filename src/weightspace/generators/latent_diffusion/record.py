"""The training record and loss log of a latent diffusion run, across its pieces (a run resumed, or a
finished checkpoint continued with --continue-from into another folder): every invocation's wall time,
the totals per stage, and the loss log.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from weightspace.runtime.distributed import STOPPED_NOTE

LOSS_LOG = "loss_log.jsonl"
RECORD_NAME = "training_record.json"


def take_history(source: str | Path, out: Path) -> None:
    """Copy the loss log and training record of the checkpoint a continued piece starts from (`train._continue`) into
    `out`, where the piece appends to them, so its record lists every piece (a file `out` already holds is kept)."""
    import shutil

    from weightspace.generators.registry import resolve_checkpoint

    folder = resolve_checkpoint(source)
    for name in (LOSS_LOG, RECORD_NAME):
        if (folder / name).is_file() and not (out / name).is_file():
            shutil.copyfile(folder / name, out / name)


def _invocation_minutes(row: dict[str, Any]) -> float:
    """Wall minutes of one invocation row: its own figure, or (a row added by hand for a run stopped before it
    wrote one) the time from its start to its finish or stop; 0 when the row says neither."""
    if "wall_minutes" in row:
        return float(row["wall_minutes"])
    end = row.get("finished_utc") or row.get("stopped_utc")
    if not (row.get("started_utc") and end):
        return 0.0
    return (datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(row["started_utc"])).total_seconds() / 60


def write_training_record(out: Path, config: dict[str, Any], *, started: datetime.datetime, stage: str, threads: int,
                          finished: datetime.datetime | None = None, processes: int = 1, stopped: bool = False) -> dict[str, Any]:
    """Add this invocation to `training_record.json` in `out` and refresh its totals from `config`
    (the checkpoint's config: command, data, progress, autoencoder_from).

    The record: command, data, every invocation (stage, start and end in UTC, wall minutes),
    total wall minutes (plus the training minutes of an autoencoder adopted with
    `autoencoder_from`), steps and training seconds per stage, torch threads, the autoencoder's
    source when it came from another checkpoint, and the loss log. Evaluation adds `final_figures`.
    """
    from weightspace.runtime.io import atomic_write_json, read_json

    path = out / RECORD_NAME
    record = read_json(path) if path.is_file() else {}
    log_path = out / LOSS_LOG  # absent when a run ended before its first log row
    log_lines = [line for line in log_path.read_text().splitlines() if line.strip()] if log_path.is_file() else []
    finished = finished or datetime.datetime.now(datetime.timezone.utc)
    runs = list(record.get("invocations", []))
    runs.append({"stage": stage, "command": config.get("command"), "started_utc": started.isoformat(timespec="seconds"), "processes": processes,
                 "finished_utc": finished.isoformat(timespec="seconds"),
                 "wall_minutes": round((finished - started).total_seconds() / 60, 2),
                 **({"stopped": STOPPED_NOTE} if stopped else {})})
    prog = config.get("progress", {})
    ae_from = config.get("autoencoder_from")
    record.update({
        "command": runs[0]["command"],
        "data": config.get("data"),
        "invocations": runs,
        "wall_minutes": round(sum(map(_invocation_minutes, runs)) + (ae_from or {}).get("ae_seconds", 0.0) / 60, 2),
        "steps": {"autoencoder": prog.get("ae_steps"), "diffusion": prog.get("diffusion_steps")},
        "train_seconds": {"autoencoder": prog.get("ae_seconds"), "diffusion": prog.get("diffusion_seconds")},
        "threads": threads,
        "device": config.get("device", "cpu"),
        "autoencoder_from": ae_from,
        "loss_log": [json.loads(line) for line in log_lines],
    })
    atomic_write_json(path, record)
    return record

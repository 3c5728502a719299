"""The progress file of a command that makes its items one by one (`data make`, `data import`): each
finished item's row, appended as it is done, so a rerun after a kill takes them up instead of making
every item again.

The file, `PROGRESS` in the output folder, is one JSON line of the settings that determine the
items' files, then one line per finished item. A kill can cut its last line short (rows are flushed,
not fsynced, one write each): a line that does not parse is not taken up, and that item is made
again. The settings line is written atomically with the rows a rerun takes up, so the file always
opens with it. The command removes the file once its own record of a finished run (a manifest) is
written; until then `runtime.folders.folder_kind` counts a folder that holds it as that command's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from weightspace.runtime.io import atomic_write_text

PROGRESS = ".progress.jsonl"


def _line(obj: Any, allow_nan: bool = False) -> str:
    return json.dumps(obj, sort_keys=True, allow_nan=allow_nan) + "\n"


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else f"{text[: width - 3]}..."


class ProgressFile:
    """The progress file of one run of `command` into `out`, under `settings` (a JSON object: every
    option the items' files depend on; tuples are recorded as lists). `name` is the file's name in
    `out` (another command's than PROGRESS, which marks a data folder); `allow_nan` lets rows hold
    NaN (Python's JSON extension; a study's row of a figure with nothing to measure)."""

    def __init__(self, out: Path, command: str, settings: dict[str, Any], *, name: str = PROGRESS,
                 allow_nan: bool = False) -> None:
        self.path = Path(out) / name
        self.command = command
        self.allow_nan = allow_nan
        self.settings = json.loads(json.dumps(settings, sort_keys=True, allow_nan=False))  # as it reads back
        self._fh: IO[str] | None = None

    def earlier(self) -> tuple[list[dict[str, Any]], str | None]:
        """What an unfinished earlier run left: (rows, why_not). With the same command and settings,
        its rows that read back whole (a torn line is left out) and None. Otherwise no rows, and a
        phrase saying why none are taken up (None too when there is no progress file)."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return [], None
        except OSError as e:
            return [], f"its progress file cannot be read ({e.strerror or e})"
        try:
            head = json.loads(lines[0]) if lines else None
        except ValueError:
            head = None
        if not isinstance(head, dict) or not isinstance(head.get("settings"), dict):
            return [], "its progress file does not start with its settings"
        if head.get("command") != self.command:
            return [], f"it was a {head.get('command')!r}, not a {self.command!r}"
        if head["settings"] != self.settings:
            old, new = head["settings"], self.settings
            changed = [f"{k} {_short(old.get(k))}, now {_short(new.get(k))}" for k in sorted(old.keys() | new.keys())
                       if old.get(k) != new.get(k)]
            return [], f"it had other settings ({'; '.join(changed)})"
        rows = []
        for line in lines[1:]:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # cut short by a kill: that item is made again
            if isinstance(row, dict):
                rows.append(row)
        return rows, None

    def start(self, rows: list[dict[str, Any]]) -> None:
        """Begin this run's record with the rows it takes up (written atomically with the settings,
        which drops an earlier run's torn line and anything not taken up); `add` appends the rest."""
        atomic_write_text(self.path, _line(dict(command=self.command, settings=self.settings))
                          + "".join(_line(row, self.allow_nan) for row in rows))
        self._fh = open(self.path, "a", encoding="utf-8")

    def add(self, row: dict[str, Any]) -> None:
        """Record one finished item: one line, flushed to the OS (so a killed process loses none; a
        machine that goes down may lose the last few, which are then made again)."""
        assert self._fh is not None, "start() before add()"
        self._fh.write(_line(row, self.allow_nan))
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def remove(self) -> None:
        """Once the run's own record is written: the progress file has served."""
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ProgressFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Progress bars for long work (rich), on stderr so that stdout keeps only results (`--json`, tables).

On a terminal the bar redraws live; written to a file or pipe, rich prints it once, finished.
WEIGHTSPACE_QUIET (or CI) turns bars off.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def log_line(line: str) -> None:
    """The default `log` of long commands (data make, data import, population build): one line on stderr,
    flushed, so stdout keeps what a command reports and the line shows at once beside a progress bar."""
    print(line, file=sys.stderr, flush=True)


def progress_enabled() -> bool:
    return os.environ.get("WEIGHTSPACE_QUIET", "") == "" and os.environ.get("CI", "") == ""


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool | None = None,
          status: Callable[[], str] | None = None) -> Iterator[T]:
    """Iterate `items` under a progress bar with ETA (or silently when disabled).

    status : a line from whatever runs the items (an executor's `status`: Ray's tasks done, failed and
        in flight), shown after the bar and refreshed with it.
    """
    if enabled is None:
        enabled = progress_enabled()
    if not enabled:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[status]}"))
    with Progress(*columns, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total, status=status() if status else "")
        for item in items:
            yield item
            bar.update(task, advance=1, status=status() if status else "")

"""Writing a results folder's files atomically: strict JSON, per-item CSV and PNG figures.

These are the file formats of `report/`'s tables and plots; they live in runtime/ because the
studies (experiments/, a stage before report/) write them, and every stage may import runtime/.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from weightspace.runtime.config import field_path
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_path, atomic_write_text, read_json


def write_results(folder: Path, results: dict[str, Any]) -> Path:
    """`results.json` (summary figures); NaN / inf become null so the file is strict JSON."""
    atomic_write_text(folder / "results.json", json.dumps(_clean(results), indent=2, sort_keys=False) + "\n")
    return folder / "results.json"


def read_results(path: str | Path) -> dict[str, Any]:
    """A `results.json` as `write_results` writes it: a JSON object of finite numbers (a missing figure is null).

    Python's json reads NaN and Infinity, but `write_results` never writes them, so a file that holds one was
    edited or written by something else, and a verdict compared against it would come out silently wrong
    (every comparison with NaN is false). Such a file is refused, naming it and the first such field.
    """
    path = Path(path)
    res = read_json(path)
    if not isinstance(res, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(res).__name__}")
    bad = _non_finite(res, str(path))
    if bad is not None:
        where, value = bad
        raise InputError(f"{where}: {json.dumps(value)} is not a finite number; results.json records a missing or undefined "
                         "figure as null (this file was edited or not written by weightspace)")
    return res


def _non_finite(x: Any, where: str) -> tuple[str, float] | None:
    """The dotted path and value of the first NaN or infinite number in `x` (document order), or None."""
    if isinstance(x, float) and not np.isfinite(x):
        return where, x
    items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{where}[{k}]" if isinstance(k, int) else field_path(where, str(k)))
        if found is not None:
            return found
    return None


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    return x


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """One row per item; the columns are the union of the rows' keys in first-seen order."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())
    return path


def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return " ".join(str(_cell(x)) for x in v)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return v


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

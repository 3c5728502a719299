"""Run the weightspace CLI in a real subprocess (optionally with the toy generator swapped in)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent

# Runs `weightspace` with `weightspace.cli.weights._load` returning the toy generator, so
# population builds run on a model the registry does not know.
TOY_MAIN = (
    "import sys; sys.path.insert(0, {tests!r});"
    "import functools, toy_generator, weightspace.cli.weights as w;"
    "w._load = lambda checkpoint: toy_generator.make_toy(seed=0);"
    "from weightspace.cli import main; sys.argv[0] = 'weightspace'; main()"
)


def env() -> dict[str, str]:
    e = dict(os.environ, WEIGHTSPACE_QUIET="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    e.pop("WEIGHTSPACE_DEBUG", None)
    return e


def command(*args: str, toy: bool = False) -> list[str]:
    if toy:
        return [sys.executable, "-c", TOY_MAIN.format(tests=str(TESTS)), *args]
    return [sys.executable, "-m", "weightspace.cli", *args]


def run(*args: str, toy: bool = False, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args, toy=toy), capture_output=True, text=True, timeout=timeout, env=env(), cwd=cwd)


def run_batch(cases: list[list[str]], tmp: Path, *, toy: bool = False, timeout: float = 300) -> list[dict]:
    """Run many command lines in one subprocess through `weightspace.cli.main` (see cli_batch.py)."""
    import json

    cases_path, results_path = tmp / "cases.json", tmp / "results.json"
    cases_path.write_text(json.dumps([[str(a) for a in argv] for argv in cases]))
    script = Path(__file__).resolve().parent / "cli_batch.py"
    proc = subprocess.run([sys.executable, str(script), str(cases_path), str(results_path), *(["--toy"] if toy else [])],
                          capture_output=True, text=True, timeout=timeout, env=env())
    assert proc.returncode == 0, f"batch driver failed: {proc.stderr[-2000:]}"
    return json.loads(results_path.read_text())

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

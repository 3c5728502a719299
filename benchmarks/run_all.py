"""Run every benchmark script in this folder, one after another, each in its own process.

Each script prints its own tables (medians and ratios against a baseline measured in the same
run). Run by `make bench`; pass script names to run a subset.

Example: .venv/bin/python benchmarks/run_all.py bench_analysis bench_data
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        wanted = {name.removesuffix(".py") for name in argv}
        scripts = [s for s in scripts if s.stem in wanted]
    failed = []
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)])
        print(f"=== {script.stem}: exit {rc}, {time.perf_counter() - t0:.0f} s ===", flush=True)
        if rc:
            failed.append(script.stem)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

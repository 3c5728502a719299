"""Run many `weightspace` command lines through the real entry point (`weightspace.cli.main`) in
one process, so a hostile corpus does not pay the torch import once per case.

Usage: python cli_batch.py CASES.json RESULTS.json [--toy]
CASES.json is a list of argv lists. For each, RESULTS.json gets {rc, stdout, stderr}: the exit
status main() ends with (SystemExit) and everything written to the two streams, including the
traceback an uncaught exception would print (rc is then 1, as for a real process).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import traceback
from pathlib import Path


def run_one(argv: list[str]) -> dict:
    from weightspace.cli import main

    out, err = io.StringIO(), io.StringIO()
    rc = 0
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # what the interpreter would print for an uncaught exception
            traceback.print_exc(file=err)
            rc = 1
    return {"argv": argv, "rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "seconds": time.perf_counter() - t0}


def main() -> None:
    cases_path, results_path = Path(sys.argv[1]), Path(sys.argv[2])
    if "--toy" in sys.argv:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        import toy_generator

        import weightspace.cli.weights as w

        w._load = lambda checkpoint: toy_generator.make_toy(seed=0)
    cases = json.loads(cases_path.read_text())
    results = [run_one(argv) for argv in cases]
    results_path.write_text(json.dumps(results))


if __name__ == "__main__":
    main()

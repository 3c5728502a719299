"""Run each study's default on the shipped generators, one process per study, and record wall times.

Each study runs as `weightspace experiment <study> --checkpoint <ckpt> --out <out>/<ckpt>/<study>` with
one torch thread (OMP_NUM_THREADS=1), so the wall time is that of a single-core default run. The
generators run in parallel (one chain each), the studies of a chain one after another. Writes
`<out>/times.json` and prints each study's summary line. Not part of `make bench` (minutes per study).

Example: .venv/bin/python benchmarks/experiments_defaults.py --out results/findings
Example: .venv/bin/python benchmarks/experiments_defaults.py --out results/findings --extra "--attribute" --studies interpolate
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from weightspace.runtime.io import atomic_write_json

HERE = Path(__file__).resolve().parent
CLI = Path(sys.executable).with_name("weightspace")


def chain(checkpoint: str, studies: list[str], out: Path, extra: list[str], times: dict, lock: threading.Lock) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    label = Path(checkpoint).name
    for study in studies:
        folder = out / label / study
        cmd = [str(CLI), "experiment", study, "--checkpoint", checkpoint, "--out", str(folder), *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        last = (proc.stdout.strip().splitlines() or [""])[-1]
        with lock:
            times[f"{label}/{study}"] = {"command": " ".join(shlex.quote(c) for c in cmd), "seconds": round(seconds, 1),
                                         "exit": proc.returncode, "summary": last}
            print(f"{label}/{study}: exit {proc.returncode}, {seconds:.0f} s\n  {last}", flush=True)
            if proc.returncode:
                print(proc.stderr[-2000:], flush=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/findings")
    ap.add_argument("--checkpoints", default="default,default-field")
    ap.add_argument("--studies", default="interpolate,subspace,fit")
    ap.add_argument("--extra", default="", help="extra CLI options for every study (quoted)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict = {}
    lock = threading.Lock()
    threads = [threading.Thread(target=chain, args=(c, args.studies.split(","), out, shlex.split(args.extra), times, lock))
               for c in args.checkpoints.split(",")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    path = out / "times.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    atomic_write_json(path, {**old, **times})
    return 1 if any(v["exit"] for v in times.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

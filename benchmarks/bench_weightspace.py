"""Benchmarks of the weight-space core: PCA accuracy, streaming PCA at 4 GB against scikit-learn, population builds.

Run:  .venv/bin/python benchmarks/bench_weightspace.py [--parts a,b,c] [--n 256] [--d 4000000] [--k 32]
(a) PCA agrees with NumPy's SVD (components up to sign, singular values), k = N - 1 reconstructs.
(b) k-component PCA of an (N, D) float32 memory-mapped file: our Gram solver vs scikit-learn
    PCA(svd_solver="full") (which loads the data into memory), each in its own subprocess, run one
    after the other; wall time and peak RSS (the child's own VmHWM) and their ratios.
(c) seconds per LoRA member of a population build on the default generator (its architecture with
    random weights if the shipped checkpoint is absent: the cost per step is the same), and a
    build killed after its first member and resumed, ending with exactly N members.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def part_a() -> dict:
    from weightspace.space.pca import pca

    rng = np.random.default_rng(0)
    out = {}
    for n, d, k in [(64, 2000, 16), (200, 150, 20)]:
        x = (rng.standard_normal((n, 24)) @ rng.standard_normal((24, d)) + 0.1 * rng.standard_normal((n, d))).astype(np.float32)
        xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
        for solver in ("exact", "gram", "randomized"):
            r = pca(x, k, solver=solver, iters=8)
            sv_err = float(np.max(np.abs(r.singular_values - s[:k]) / s[:k]))
            signs = np.sign(np.sum(r.basis * vt[:k], axis=1))
            comp_err = float(np.max(np.abs(r.basis - signs[:, None] * vt[:k])))
            out[f"N={n},D={d},k={k},{solver}"] = {"singular_value_rel_err": sv_err, "component_max_abs_err": comp_err}
        r = pca(x, n - 1 if n - 1 <= d else d, solver="auto")
        rec = (x - r.mean) @ r.basis.T @ r.basis
        out[f"N={n},D={d},k=N-1 reconstruction"] = {"max_abs_err_centred": float(np.max(np.abs(rec - (x - r.mean)))),
                                                    "max_abs_value": float(np.max(np.abs(x - r.mean)))}
    return out


def make_data(path: Path, n: int, d: int, seed: int = 0) -> None:
    """(n, d) float32 .npy: 8 shared directions with random weights plus unit noise, written row by row."""
    mm = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((8, d), dtype=np.float32)  # (8, d)
    for i in range(n):
        mm[i] = rng.standard_normal(8).astype(np.float32) * np.arange(8, 0, -1) @ factors + rng.standard_normal(d, dtype=np.float32)
    mm.flush()
    del mm


def child(solver: str, path: str, k: int, result: str) -> None:
    """Fit in this process and report wall time, own peak RSS and the singular values."""
    import torch  # noqa: F401  (both sides import the same libraries, so their baselines match)

    t0 = time.perf_counter()
    if solver == "sklearn":
        from sklearn.decomposition import PCA

        x = np.load(path)  # the whole array in memory, as scikit-learn needs it
        model = PCA(n_components=k, svd_solver="full").fit(x)
        s = model.singular_values_
    else:
        from weightspace.space.pca import pca

        x = np.load(path, mmap_mode="r")
        s = pca(x, k, solver=solver).singular_values
    wall = time.perf_counter() - t0
    Path(result).write_text(json.dumps({"seconds": wall, "peak_rss_bytes": peak_rss(), "singular_values": [float(v) for v in s]}))


def peak_rss() -> int:
    """This process's peak resident set (VmHWM, bytes). Not ru_maxrss: on Linux that survives exec and
    so includes the RSS of the parent at fork time, which is not this solver's memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(solver: str, path: Path, k: int, tmp: Path) -> dict:
    res = tmp / f"{solver}.json"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child", solver, "--file", str(path), "--k", str(k), "--result", str(res)], check=True)
    out = json.loads(res.read_text())
    out["process_seconds"] = time.perf_counter() - t0
    out["children_max_rss_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return out


def part_b(n: int, d: int, k: int, solvers: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-pca-") as tmp:
        tmp = Path(tmp)
        path = tmp / "points.npy"
        t0 = time.perf_counter()
        # in a child, so that this parent never holds the data (its RSS would be inherited by ru_maxrss)
        subprocess.run([sys.executable, __file__, "--make", str(path), "--n", str(n), "--d", str(d)], check=True)
        data_bytes = n * d * 4
        out: dict = {"N": n, "D": d, "k": k, "data_bytes": data_bytes, "make_seconds": time.perf_counter() - t0}
        for solver in solvers:  # ours first: RUSAGE_CHILDREN is a running maximum
            r = run_child(solver, path, k, tmp)
            r["peak_over_data"] = r["peak_rss_bytes"] / data_bytes
            out[solver] = r
            print(solver, json.dumps({kk: v for kk, v in r.items() if kk != "singular_values"}), flush=True)
        if "sklearn" in out and "gram" in out:
            a, b = np.array(out["gram"]["singular_values"]), np.array(out["sklearn"]["singular_values"])
            out["gram_vs_sklearn_sv_rel_err"] = float(np.max(np.abs(a - b) / b))
            out["speedup_gram_over_sklearn"] = out["sklearn"]["seconds"] / out["gram"]["seconds"]
            out["memory_ratio_gram_over_sklearn"] = out["gram"]["peak_rss_bytes"] / out["sklearn"]["peak_rss_bytes"]
    return out


def part_c(members: int, steps: int) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from weightspace.generators import load_generator

    with tempfile.TemporaryDirectory(prefix="bench-pop-") as tmp:
        tmp = Path(tmp)
        try:
            load_generator("default")
            checkpoint, which = "default", "default (latent diffusion)"
        except Exception as e:  # the shipped checkpoint is not there yet: its architecture with random weights
            checkpoint, which = "ld-arch", f"default latent-diffusion architecture, random weights (default unavailable: {str(e)[:80]})"
        from weightspace.data.families import FAMILY_NAMES
        from weightspace.data.make import make_dataset

        families = "all" if members >= len(FAMILY_NAMES) else ",".join(FAMILY_NAMES[:members])  # one shape each, as "all" gave
        make_dataset(tmp / "data", family=families, count=members, resolution=32, seed=0, progress=False)
        script = ROOT / "benchmarks" / "_bench_pop_build.py"
        env = {**os.environ, "WEIGHTSPACE_QUIET": "1", "OMP_NUM_THREADS": "1"}
        args = [sys.executable, str(script), str(tmp / "data"), str(tmp / "pop"), str(members), str(steps), checkpoint]
        t0 = time.perf_counter()
        subprocess.run(args, check=True, env=env)
        full = time.perf_counter() - t0
        rows = [json.loads(l) for l in (tmp / "pop" / "manifest.jsonl").read_text().splitlines() if l.strip()]
        per_member = float(np.mean([r["seconds"] for r in rows]))
        cpu_per_member = float(np.mean([r["metrics"]["cpu_seconds"] for r in rows]))
        # interrupted build: kill it once its first member is written, then resume
        proc = subprocess.Popen(args[:3] + [str(tmp / "pop2")] + args[4:], env=env)
        manifest = tmp / "pop2" / "manifest.jsonl"
        while proc.poll() is None and not (manifest.exists() and manifest.read_text().strip()):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = len([l for l in manifest.read_text().splitlines() if l.strip()]) if manifest.exists() else 0
        subprocess.run(args[:3] + [str(tmp / "pop2")] + args[4:], check=True, env=env)
        after = [json.loads(l) for l in manifest.read_text().splitlines() if l.strip()]
        return {"generator": which, "members": members, "steps": steps, "seconds_per_member": per_member, "cpu_seconds_per_member": cpu_per_member,
                "build_wall_seconds": full, "killed_with_members": before, "resumed_members": len(after),
                "resumed_unique_ids": len({r["id"] for r in after}), "exactly_n": len(after) == members == len({r["id"] for r in after})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="a,b,c")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--d", type=int, default=4_000_000)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--solvers", default="gram,sklearn")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--child")
    ap.add_argument("--file")
    ap.add_argument("--result")
    ap.add_argument("--make")
    a = ap.parse_args()
    if a.make:
        make_data(Path(a.make), a.n, a.d)
        return
    if a.child:
        child(a.child, a.file, a.k, a.result)
        return
    results = {}
    for part in a.parts.split(","):
        t0 = time.perf_counter()
        if part == "a":
            results["a"] = part_a()
        elif part == "b":
            results["b"] = part_b(a.n, a.d, a.k, a.solvers.split(","))
        elif part == "c":
            results["c"] = part_c(a.members, a.steps)
        print(f"== part {part} ({time.perf_counter() - t0:.1f} s)\n{json.dumps(results[part], indent=1)}", flush=True)


if __name__ == "__main__":
    main()

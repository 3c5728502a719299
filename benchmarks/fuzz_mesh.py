"""Fuzz the mesh importer (and the analysis mesh loader) with hypothesis for a bounded time.

Property: for any bytes under a mesh extension, `data.importer.load_mesh` either returns a valid
triangle mesh (finite vertices, >= 1 face, indices in range, non-zero extent) whose signed
distance grid is finite, or raises `MeshImportError` (an InputError naming the file). Any other
exception, an invalid mesh returned, or a case slower than --hang seconds is a finding.

Inputs are drawn three ways: structured text (OBJ / OFF / ASCII PLY with random counts, NaN,
infinities, huge and negative indices), binary STL with random triangle counts, and byte-level
mutations (flips, truncations, insertions) of valid files of every format.

Example: .venv/bin/python benchmarks/fuzz_mesh.py --seconds 90
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import trimesh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightspace.data.importer import MeshImportError, load_mesh, mesh_sdf_grid, normalise
from weightspace.runtime.errors import InputError

FORMATS = ("obj", "off", "ply", "stl", "glb")
NUMS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-10**9, 10**9).map(float),
                 st.sampled_from([0.0, 1.0, -1.0, 1e7, 1e-30, 1e38]))


def _valid_files() -> dict[str, bytes]:
    box = trimesh.creation.box()
    out = {}
    for fmt in FORMATS:
        buf = io.BytesIO()
        box.export(buf, file_type=fmt)
        out[fmt] = buf.getvalue()
    return out


VALID = _valid_files()


@st.composite
def structured(draw) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(("obj", "off", "ply")))
    n_v = draw(st.integers(0, 12))
    verts = [[draw(NUMS) for _ in range(3)] for _ in range(n_v)]
    n_f = draw(st.integers(0, 12))
    idx = st.integers(-3, n_v + 3) if draw(st.booleans()) else st.integers(-(2**40), 2**40)
    faces = [[draw(idx) for _ in range(draw(st.sampled_from((3, 3, 3, 4, 2, 0))))] for _ in range(n_f)]
    if fmt == "obj":
        lines = [f"v {' '.join(repr(c) for c in v)}" for v in verts] + [f"f {' '.join(str(i) for i in f)}" for f in faces]
        lines += draw(st.lists(st.text(max_size=20), max_size=3))
        text = "\n".join(lines)
    elif fmt == "off":
        claimed_v = draw(st.one_of(st.just(n_v), st.integers(-5, 10**12)))
        claimed_f = draw(st.one_of(st.just(n_f), st.integers(-5, 10**12)))
        text = f"OFF\n{claimed_v} {claimed_f} 0\n" + "\n".join(" ".join(repr(c) for c in v) for v in verts) + "\n" + \
            "\n".join(f"{len(f)} " + " ".join(str(i) for i in f) for f in faces)
    else:
        claimed_v = draw(st.one_of(st.just(n_v), st.integers(-5, 10**12)))
        claimed_f = draw(st.one_of(st.just(n_f), st.integers(-5, 10**12)))
        head = ["ply", "format ascii 1.0", f"element vertex {claimed_v}", "property float x", "property float y",
                "property float z", f"element face {claimed_f}", "property list uchar int vertex_indices", "end_header"]
        text = "\n".join(head + [" ".join(repr(c) for c in v) for v in verts] + [f"{len(f)} " + " ".join(map(str, f)) for f in faces])
    return fmt, text.encode("utf-8", "surrogatepass")


@st.composite
def binary_stl(draw) -> tuple[str, bytes]:
    n = draw(st.integers(0, 8))
    claimed = draw(st.one_of(st.just(n), st.integers(0, 2**32 - 1)))
    tris = np.array([[draw(NUMS) for _ in range(12)] for _ in range(n)], dtype=np.float32).reshape(n, 12)
    body = b"".join(t.tobytes() + b"\0\0" for t in tris)
    return "stl", b"\0" * 80 + claimed.to_bytes(4, "little") + body


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(FORMATS))
    data = bytearray(VALID[fmt])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(("flip", "truncate", "insert", "delete")))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            del data[pos : pos + draw(st.integers(1, 32))]
    return fmt, bytes(data)


LOG = None
CASES = st.one_of(structured(), binary_stl(), mutated(), st.tuples(st.sampled_from(FORMATS), st.binary(max_size=512)))


def check(fmt: str, data: bytes, folder: Path, findings: Counter, examples: dict, stats: Counter, hang: float) -> None:
    path = folder / f"case.{fmt}"
    path.write_bytes(data)
    if LOG is not None:  # the case about to run, for native crashes that kill the process (see --log)
        LOG.write(f"{fmt} {data.hex()}\n")
        LOG.flush()
    t0 = time.perf_counter()
    try:
        mesh = load_mesh(path)
        v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
        problem = None
        if not np.isfinite(v).all():
            problem = "returned non-finite vertices"
        elif len(f) == 0 or f.min() < 0 or f.max() >= len(v):
            problem = "returned faces out of range"
        elif np.ptp(v, axis=0).max() <= 0:
            problem = "returned a zero-extent mesh"
        else:
            grid, _ = mesh_sdf_grid(normalise(mesh)[0], 8, 0.2)
            if not np.isfinite(grid).all():
                problem = "signed distance grid not finite"
        stats["accepted"] += 1
        if problem:
            findings[(problem, "")] += 1
            examples.setdefault((problem, ""), (fmt, data[:300]))
    except MeshImportError as e:
        stats["refused:" + e.code] += 1
    except InputError:
        stats["refused:input-error"] += 1
    except Exception as e:  # a finding: anything but a clean refusal
        where = traceback.extract_tb(e.__traceback__)[-1]
        key = (f"{type(e).__name__}", f"{Path(where.filename).name}:{where.lineno}")
        findings[key] += 1
        examples.setdefault(key, (fmt, data[:300], str(e)[:200]))
    dt = time.perf_counter() - t0
    if dt > hang:
        findings[("slow case", f"{dt:.1f}s")] += 1
        examples.setdefault(("slow case", f"{dt:.1f}s"), (fmt, data[:300]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--hang", type=float, default=5.0, help="a case slower than this is a finding")
    ap.add_argument("--log", type=Path, default=None, help="append each case before running it (finds native crashes; "
                    "run with MALLOC_CHECK_=3 so heap corruption aborts at once)")
    ap.add_argument("--replay", type=Path, default=None, help="run the last case of a --log file and exit")
    args = ap.parse_args()
    global LOG
    if args.replay is not None:
        fmt, hexdata = args.replay.read_text().splitlines()[-1].split(" ", 1)
        with tempfile.TemporaryDirectory() as tmp:
            f, e, s = Counter(), {}, Counter()
            check(fmt, bytes.fromhex(hexdata), Path(tmp), f, e, s, args.hang)
            print("replayed", fmt, s, f, e)
        return
    if args.log is not None:
        LOG = open(args.log, "w")
    warnings.simplefilter("ignore")  # trimesh warns on every NaN cast; the findings are what matter
    findings: Counter = Counter()
    examples: dict = {}
    stats: Counter = Counter()
    t_end = time.perf_counter() + args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(CASES)
        def batch(case):
            if time.perf_counter() < t_end:
                check(case[0], case[1], folder, findings, examples, stats, args.hang)

        t0 = time.perf_counter()
        while time.perf_counter() < t_end:
            batch()
        elapsed = time.perf_counter() - t0
    total = sum(stats.values()) + sum(n for (k, _), n in findings.items() if k != "slow case" and not k.startswith("returned"))
    print(f"fuzz_mesh: {total} cases in {elapsed:.0f} s; accepted {stats['accepted']}; refusals {dict(sorted((k, v) for k, v in stats.items() if k != 'accepted'))}")
    if not findings:
        print("findings: none")
    for key, n in findings.most_common():
        print(f"FINDING x{n}: {key}: {examples[key]!r}"[:600])


if __name__ == "__main__":
    main()

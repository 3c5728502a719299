"""A corpus of broken mesh files, each with what a correct importer must say about it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CUBE_V = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=float)  # (8, 3)
CUBE_F = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                   [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])  # (12, 3) outward


def _obj(vertices, faces) -> str:
    lines = [f"v {' '.join(repr(float(c)) if np.isfinite(c) else str(c).lower() for c in v)}" for v in vertices]
    lines += [f"f {' '.join(str(int(i) + 1) for i in f)}" for f in faces]
    return "\n".join(lines) + "\n"


def _ascii_ply(vertices, faces) -> str:
    head = ["ply", "format ascii 1.0", f"element vertex {len(vertices)}", "property float x", "property float y",
            "property float z", f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    return "\n".join(head + [" ".join(str(float(c)).lower() for c in v) for v in vertices]
                     + [f"3 {' '.join(str(int(i)) for i in f)}" for f in faces]) + "\n"


def corpus(folder: Path, seed: int = 0) -> dict[str, tuple[Path, str]]:
    """Write every hostile mesh under `folder`; returns name -> (path, expected outcome).

    Expected outcome: a reason code of `weightspace.data.importer.REASONS` (the file must be
    refused with it), or "ok" (a defined, documented answer: the file imports).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[Path, str]] = {}

    def put(name: str, data: str | bytes, expect: str) -> None:
        p = folder / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        out[name] = (p, expect)

    put("empty.obj", b"", "empty")
    put("empty.stl", b"", "empty")
    put("random.obj", rng.bytes(4096), "unreadable|no-faces")
    put("random.ply", rng.bytes(4096), "unreadable")
    put("random.stl", rng.bytes(4096), "unreadable|no-faces")
    put("random.glb", rng.bytes(4096), "unreadable")
    put("random.off", rng.bytes(4096), "unreadable|no-faces")
    put("text.obj", "this is not a mesh at all\n" * 20, "no-faces|unreadable")
    put("nan.obj", _obj(np.vstack([CUBE_V[:-1], [[np.nan, 0, 0]]]), CUBE_F), "non-finite")
    put("inf.obj", _obj(np.vstack([CUBE_V[:-1], [[np.inf, 0, 0]]]), CUBE_F), "non-finite")
    put("nan.ply", _ascii_ply(np.vstack([CUBE_V[:-1], [[np.nan, 0, 0]]]), CUBE_F), "non-finite")
    put("face_past_end.obj", _obj(CUBE_V, np.vstack([CUBE_F, [[0, 1, 99]]])), "bad-face-index")
    put("face_past_end.ply", _ascii_ply(CUBE_V, np.vstack([CUBE_F, [[0, 1, 99]]])), "bad-face-index|unreadable")
    put("face_past_end.off", "OFF\n8 13 0\n" + "\n".join(" ".join(map(str, v)) for v in CUBE_V) + "\n"
        + "\n".join("3 " + " ".join(map(str, f)) for f in np.vstack([CUBE_F, [[0, 1, 99]]])) + "\n",
        "bad-face-index|unreadable")
    put("vertices_only.obj", _obj(CUBE_V, np.zeros((0, 3), int)), "no-faces")
    put("one_point.obj", _obj(np.zeros((3, 3)), [[0, 1, 2]]), "zero-extent")
    # 64 disconnected triangles facing every way: no inside, but a defined answer (winding-number sign)
    soup_v = rng.uniform(-1, 1, size=(64, 1, 3)) + 0.1 * rng.normal(size=(64, 3, 3))
    put("triangle_soup.obj", _obj(soup_v.reshape(-1, 3), np.arange(64 * 3).reshape(64, 3)), "ok")
    # a cube with one vertex ten million units away: normalisation squeezes the cube to a sliver
    far = CUBE_V.copy()
    far[7] = [1e7, 1e7, 1e7]
    put("ten_million.obj", _obj(far, CUBE_F), "ok")
    # all vertices on the plane z = 0: a closed surface of zero volume
    flat = CUBE_V.copy()
    flat[:, 2] = 0
    put("zero_volume.obj", _obj(flat, CUBE_F), "ok")
    # an STL header that claims 100 million triangles in a 284-byte file
    put("lying_count.stl", b"\0" * 80 + (100_000_000).to_bytes(4, "little") + rng.bytes(200), "unreadable|no-faces")
    # a PLY header that claims 10^12 vertices
    put("lying_count.ply", "ply\nformat ascii 1.0\nelement vertex 1000000000000\nproperty float x\nproperty float y\n"
        "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n", "unreadable|no-faces")
    put("negative_index.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 -5\n", "bad-face-index|unreadable")
    # a vertex line with two coordinates: trimesh returns (V, 2) vertices, which crashed libigl natively (fuzzing)
    put("two_coordinates.obj", _obj(CUBE_V, CUBE_F).replace("v 1.0 0.0 1.0\n", "v 1.0 0.0\n"), "unreadable")
    put("unsupported.xyz", "0 0 0\n1 1 1\n", "unsupported-format")
    return out

"""Orientation repair per body and the solidity check of imported meshes.

A mesh file may hold several bodies (connected components by shared edges). Each is rewound
consistently and oriented by its containment depth among the closed bodies: depth 0 (not inside
another) points outward, depth 1 (a shell's inner wall) inward so its cavity stays a cavity,
depth 2 outward again, and so on. Whether the result bounds a volume at all is measured with the
generalised winding number w (Barill et al. 2018) on the grid: a closed solid gives w near 0 or 1
everywhere, an open sheet or a triangle soup leaves a band of ambiguous values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

# A grid point is clearly outside where |w| < W_OUT and clearly inside where |w| >= W_IN.
W_OUT, W_IN = 0.25, 0.75
# Largest ambiguous share a mesh may have and still count as solid, chosen on meshes made with
# trimesh (tests/test_data_repair.py), whose shares hardly move between 32^3 and 96^3: closed
# bodies 0.00; a sphere with 30 of 5120 faces missing 0.002; a sphere with its cap above z = 0.8
# cut off (~10% of the area) 0.11 | a box missing one side 0.25; an open-ended tube 0.29; a
# sphere cut at z = 0.5 0.35; a box missing two sides 0.68-0.82; a hemisphere 0.72; triangle
# soups and open sheets 1.00. 0.2 sits in the widest gap: small holes pass, missing sides do not.
MAX_AMBIGUOUS = 0.2
SOLIDITY_RESOLUTION = 32  # the share is measured on at most 32^3 points (it moves < 0.01 up to 96^3)
# A point on the surface has w = 1/2 whether the mesh is closed or not, and axis-aligned faces of
# CAD parts often fall on grid planes: the solidity grid is shifted off them by these fractions
# of a cell.
SOLIDITY_SHIFT = (0.29, 0.37, 0.43)
CONTAIN_SAMPLES = 64  # vertices of a body tested against a possible container


def _signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume of a closed triangle set, sum of det(a, b, c) / 6 (positive when wound outward)."""
    tri = vertices[faces]  # (F, 3, 3)
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def solidity_points(resolution: int) -> np.ndarray:
    """The points the solidity figure is measured on: the R^3 grid shifted off its planes, (R^3, 3) float64."""
    from weightspace.data.grid import grid_points, voxel_size

    return grid_points(resolution).reshape(-1, 3).astype(np.float64) + voxel_size(resolution) * np.asarray(SOLIDITY_SHIFT)


def winding_number(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Generalised winding number of the triangles at points: (P,) float64."""
    import igl

    V = np.ascontiguousarray(vertices, dtype=np.float64)  # (V, 3)
    F = np.ascontiguousarray(faces, dtype=np.int64)  # (F, 3)
    # libigl trusts these shapes and indices (a wrong one corrupts memory)
    assert V.ndim == 2 and V.shape[1] == 3 and F.ndim == 2 and F.shape[1] == 3 and len(F) and 0 <= F.min() and F.max() < len(V)
    return np.asarray(igl.fast_winding_number(V, F, np.ascontiguousarray(points, dtype=np.float64)), dtype=np.float64)


@dataclass
class _Body:
    faces: np.ndarray  # (f,) int, indices into the mesh's faces
    closed: bool  # watertight and consistently wound
    lo: np.ndarray  # (3,) bounding box
    hi: np.ndarray  # (3,)


def repair_orientation(mesh: trimesh.Trimesh) -> tuple[trimesh.Trimesh, dict]:
    """Rewind each body consistently and orient it by containment depth; returns (mesh, record).

    record: bodies, closed_bodies (watertight and consistently wound after rewinding),
    rewound_faces (faces flipped to make windings consistent), inverted_bodies (bodies turned
    over as a whole), cavities (closed bodies left pointing inward because they lie inside an odd
    number of closed bodies), overlapping (pairs of closed bodies that intersect without one
    containing the other; their union is meant, which only the winding-number sign gives).
    Bodies of fewer than 4 faces enclose nothing and are left as they are.
    """
    V = np.asarray(mesh.vertices, dtype=np.float64)  # (V, 3)
    work = trimesh.Trimesh(vertices=V, faces=np.array(mesh.faces), process=False)
    trimesh.repair.fix_winding(work)  # BFS over shared edges, per connected component
    F = np.array(work.faces, dtype=np.int64)  # (F, 3)
    rewound = int((F != np.asarray(mesh.faces)).any(axis=1).sum())
    groups = trimesh.graph.connected_components(work.face_adjacency, nodes=np.arange(len(F)), min_len=1)
    edges = trimesh.geometry.faces_to_edges(F)  # (3F, 2), face i owns rows 3i..3i+2
    bodies: list[_Body] = []
    for idx in groups:
        idx = np.sort(np.asarray(idx, dtype=np.int64))
        tight, wound = trimesh.graph.is_watertight(edges.reshape(-1, 6)[idx].reshape(-1, 2))
        pts = V[F[idx].ravel()]
        bodies.append(_Body(idx, bool(tight and wound) and len(idx) >= 4, pts.min(0), pts.max(0)))
    # 1. every body of 4 or more faces outward (positive volume); closed bodies are containers below
    inverted = np.zeros(len(bodies), dtype=bool)
    for b, body in enumerate(bodies):
        if len(body.faces) >= 4 and _signed_volume(V, F[body.faces]) < 0:
            F[body.faces] = F[body.faces][:, ::-1]
            inverted[b] = True
    # 2. containment depth: how many closed bodies hold most of a body's vertices
    depth = np.zeros(len(bodies), dtype=np.int64)
    overlapping = 0
    containers = [b for b, body in enumerate(bodies) if body.closed]
    for a, body in enumerate(bodies):
        if len(body.faces) < 4:
            continue
        verts = np.unique(F[body.faces].ravel())
        sample = V[verts[np.linspace(0, len(verts) - 1, min(len(verts), CONTAIN_SAMPLES)).astype(int)]]  # (s, 3)
        for c in containers:
            box = bodies[c]
            if c == a or (body.hi < box.lo).any() or (body.lo > box.hi).any():
                continue  # bounding boxes apart: no containment, no overlap
            inside = float((winding_number(V, F[box.faces], sample) > 0.5).mean())
            if inside > 0.5:
                depth[a] += 1
            elif inside > 0 and body.closed and a < c:
                overlapping += 1
    # 3. odd depth points inward: the region between a shell and its inner wall is the solid
    odd = (depth % 2 == 1) & np.array([len(b.faces) >= 4 for b in bodies])
    for b in np.flatnonzero(odd):
        F[bodies[b].faces] = F[bodies[b].faces][:, ::-1]
        inverted[b] = not inverted[b]
    record = dict(
        bodies=len(bodies),
        closed_bodies=len(containers),
        rewound_faces=rewound,
        inverted_bodies=int(inverted.sum()),
        cavities=int((odd & np.array([b.closed for b in bodies])).sum()),
        overlapping=overlapping,
    )
    return trimesh.Trimesh(vertices=V, faces=F, process=False), record


def solidity(w: np.ndarray, closed: bool) -> dict:
    """Whether a mesh bounds a volume, from its winding numbers w (any shape) at the grid points.

    The figure `ambiguous` is the share of grid points the mesh does not clearly leave outside
    (|w| >= W_OUT) that it does not clearly put inside either (|w| < W_IN): 0 for a closed solid,
    1 for a sheet or a soup that encloses nothing. A mesh whose bodies are all closed is solid
    whatever the grid shows (a thin closed part may fall between grid points).
    Returns {solid, reason, ambiguous}.
    """
    a = np.abs(np.asarray(w, dtype=np.float64))
    touched = int((a >= W_OUT).sum())
    ambiguous = float(((a >= W_OUT) & (a < W_IN)).sum() / touched) if touched else 1.0
    if closed:
        return dict(solid=True, reason="every body is watertight and consistently wound", ambiguous=ambiguous)
    if not touched or ambiguous > MAX_AMBIGUOUS:
        why = "encloses no grid point" if not touched else f"{ambiguous:.2f} of the grid it touches has an ambiguous winding number"
        return dict(solid=False, reason=f"open mesh without a clear inside: {why} (at most {MAX_AMBIGUOUS} for a solid)", ambiguous=ambiguous)
    return dict(solid=True, reason=f"open mesh with a clear inside: {ambiguous:.2f} of it ambiguous (at most {MAX_AMBIGUOUS})", ambiguous=ambiguous)

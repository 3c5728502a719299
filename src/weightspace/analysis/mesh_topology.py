"""Topology of a triangle mesh: surface components, Euler characteristic, genus, watertightness, and the solid's Betti numbers.

A surface component is a set of faces joined through shared edges. For each component:
chi = V - E + F, boundary loops = cycles of edges used by one face, and for an orientable
surface genus = (2 - chi - loops) / 2.

For a watertight mesh (what `weightspace.decode.mesh.grid_to_mesh` returns), the enclosed solid
has Betti numbers b0 = outer surfaces, b2 = cavity walls, b1 = total genus of all surfaces, and
euler(solid) = chi(surface) / 2, which is what ``weightspace.analysis.topology`` measures on the
grid. Outer surface versus cavity wall is decided by nesting, not by face orientation: a surface
enclosed by an odd number of other surfaces (winding numbers of its points) bounds a cavity.
Surfaces that cross one another (overlapping parts, as CAD exports and multi-mesh scenes often
have) bound a union whose topology is not theirs: the Betti numbers are then None too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from weightspace.runtime.errors import InputError


@dataclass(frozen=True)
class MeshTopology:
    """Topology of one mesh (see the module docstring).

    Attributes
    ----------
    components : int
        Surface components (faces joined through shared edges).
    euler : int
        Euler characteristic V - E + F of the surface, summed over components.
    genus : int or None
        Total genus over components (with boundary loops accounted for); None when an edge is
        shared by three or more faces (such a mesh is not a surface, and the formula gave
        negative genera).
    boundary_loops : int
        Number of boundary edge cycles; 0 for a closed surface.
    watertight : bool
        Every edge is shared by exactly two faces, which can be wound consistently (an orientable
        closed surface; faces stored flipped are rewound on the copy measured).
    b0, b1, b2 : int or None
        Betti numbers of the enclosed solid; None unless the mesh is watertight and no two of its
        surfaces cross.
    solid_euler : int or None
        euler / 2 when b0, b1, b2 are known (equals b0 - b1 + b2).
    crossing : int
        Pairs of closed surfaces that cross (part of one inside the other, part outside).
    """

    components: int
    euler: int
    genus: int | None
    boundary_loops: int
    watertight: bool
    b0: int | None
    b1: int | None
    b2: int | None
    solid_euler: int | None
    crossing: int = 0

    @property
    def betti(self) -> tuple[int, int, int] | None:
        """(b0, b1, b2) of the enclosed solid, or None when the mesh is not watertight."""
        return None if self.b0 is None else (self.b0, self.b1, self.b2)  # type: ignore[return-value]

    def as_dict(self) -> dict:
        """JSON-ready fields."""
        return {
            "components": self.components,
            "euler": self.euler,
            "genus": self.genus,
            "boundary_loops": self.boundary_loops,
            "watertight": self.watertight,
            "b0": self.b0,
            "b1": self.b1,
            "b2": self.b2,
            "solid_euler": self.solid_euler,
            "crossing": self.crossing,
        }


def _count_cycles(edges: np.ndarray, n_vertices: int) -> int:
    """Connected components of a graph given by edges (m, 2): the boundary loops when every
    boundary vertex has degree 2."""
    if len(edges) == 0:
        return 0
    used = np.unique(edges)
    remap = np.full(n_vertices, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    e = remap[edges]  # (m, 2)
    adj = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(len(used), len(used)))
    n, _ = connected_components(adj, directed=False)
    return int(n)


NEST_SAMPLES = 32  # face centroids per surface tested against the others for nesting and crossing


def _nesting(vertices: np.ndarray, faces: np.ndarray, comp: np.ndarray, n_comp: int) -> tuple[np.ndarray, int]:
    """For each closed component, how many other components enclose it; and how many pairs cross.

    vertices : (V, 3) float; faces : (F, 3) int; comp : (F,) int component of each face.
    Up to NEST_SAMPLES face centroids of each component are tested against every other component
    by the generalised winding number (inside where |w| > 1/2). A component enclosed by another
    has all its samples inside it; one with some samples inside and some outside crosses it (two
    overlapping bodies, or bodies touching face to face): the surfaces then bound no solid whose
    Betti numbers they tell. Returns depth (n_comp,) int64 and the number of crossing pairs.
    """
    from weightspace.data.repair import winding_number

    depth = np.zeros(n_comp, dtype=np.int64)
    if n_comp == 1:
        return depth, 0
    centroids = vertices[faces].mean(axis=1)  # (F, 3)
    order = np.argsort(comp, kind="stable")  # faces grouped by component
    starts = np.searchsorted(comp[order], np.arange(n_comp + 1))  # (n_comp + 1,)
    picks = [order[np.linspace(starts[c], starts[c + 1] - 1, min(NEST_SAMPLES, starts[c + 1] - starts[c])).astype(np.int64)]
             for c in range(n_comp)]  # fmt: skip
    sample_comp = np.concatenate([np.full(len(p), c) for c, p in enumerate(picks)])  # (S,)
    samples = centroids[np.concatenate(picks)]  # (S, 3)
    n_samples = np.bincount(sample_comp, minlength=n_comp)  # (n_comp,)
    crossing = np.zeros((n_comp, n_comp), dtype=bool)
    for j in range(n_comp):
        inside = np.abs(winding_number(vertices, faces[comp == j], samples)) > 0.5  # (S,)
        share = np.bincount(sample_comp, weights=inside, minlength=n_comp) / n_samples  # (n_comp,)
        share[j] = 0.0
        depth += share == 1.0
        crossing[:, j] = (share > 0) & (share < 1)
    return depth, int(np.count_nonzero(np.triu(crossing | crossing.T, k=1)))


def mesh_topology(mesh: trimesh.Trimesh) -> MeshTopology:
    """Components, Euler characteristic, genus and watertightness of a triangle mesh.

    Parameters
    ----------
    mesh : trimesh.Trimesh with faces (F, 3) int, in any units. Vertices are merged by position (in
        a unit frame) and faces rewound consistently first (on a copy), so a mesh saved with split
        vertices or some faces flipped is treated as the surface it describes.

    Returns
    -------
    MeshTopology. An empty mesh gives zeros and a watertight, empty solid (0, 0, 0).
    """
    if not isinstance(mesh, trimesh.Trimesh):
        raise InputError(f"expected a trimesh.Trimesh, got {type(mesh).__name__}")
    if len(mesh.faces) == 0:
        return MeshTopology(0, 0, 0, 0, True, 0, 0, 0, 0)
    mesh = mesh.copy()
    # Topology has no units: measure in a unit frame, as trimesh merges at an absolute tolerance (1e-8)
    # that fuses a mesh in tiny units and overflows its integer rounding in huge ones.
    lo, hi = mesh.bounds  # (3,), (3,)
    mesh.vertices = (mesh.vertices - (lo + hi) / 2) / max(float((hi - lo).max()), np.finfo(np.float64).tiny)
    mesh.merge_vertices()
    mesh.remove_unreferenced_vertices()
    trimesh.repair.fix_winding(mesh)  # per surface; a non-orientable one stays inconsistent
    faces = np.asarray(mesh.faces, dtype=np.int64)  # (F, 3)
    n_v = len(mesh.vertices)
    edges = np.sort(mesh.edges, axis=1)  # (3F, 2) directed face edges, sorted per edge
    edge_face = np.repeat(np.arange(len(faces)), 3)  # (3F,)
    uniq, inverse, counts = np.unique(edges, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    # Face components through shared edges, an edge of three or more faces joining them all (trimesh's
    # face_adjacency leaves those out); vertex-only contacts do not join surfaces.
    incidence = coo_matrix((np.ones(len(edge_face)), (edge_face, inverse)), shape=(len(faces), len(uniq))).tocsr()  # (F, E)
    n_comp, comp_labels = connected_components(incidence @ incidence.T, directed=False)  # int, (F,)
    boundary = uniq[counts == 1]  # (b, 2)
    # Per component: V, E, F (a vertex shared by two components at a pinch counts in each).
    first_face_of_edge = np.zeros(len(uniq), dtype=np.int64)
    first_face_of_edge[inverse] = edge_face
    e_comp = comp_labels[first_face_of_edge]  # (E,)
    f_count = np.bincount(comp_labels, minlength=n_comp)
    e_count = np.bincount(e_comp, minlength=n_comp)
    vc = np.unique(np.stack([faces.reshape(-1), np.repeat(comp_labels, 3)], axis=1), axis=0)  # (., 2) (vertex, comp)
    v_count = np.bincount(vc[:, 1], minlength=n_comp)
    chi = v_count - e_count + f_count  # (n_comp,)
    loops = np.zeros(n_comp, dtype=np.int64)
    if len(boundary):
        b_comp = e_comp[counts == 1]
        for c in np.unique(b_comp):  # loop over components with a boundary, not over voxels
            loops[c] = _count_cycles(boundary[b_comp == c], n_v)
    genus = (2 - chi - loops) // 2
    manifold = bool((counts <= 2).all())
    watertight = bool(mesh.is_watertight and mesh.is_winding_consistent)
    b0 = b1 = b2 = solid_euler = None
    crossing = 0
    if watertight:
        depth, crossing = _nesting(np.asarray(mesh.vertices, dtype=np.float64), faces, comp_labels, n_comp)  # (n_comp,), int
    if watertight and not crossing:
        b2 = int(np.count_nonzero(depth % 2 == 1))
        b0 = n_comp - b2
        b1 = int(genus.sum())
        solid_euler = int(chi.sum()) // 2
    return MeshTopology(
        components=n_comp,
        euler=int(chi.sum()),
        genus=int(genus.sum()) if manifold else None,
        boundary_loops=int(loops.sum()),
        watertight=watertight,
        b0=b0,
        b1=b1,
        b2=b2,
        solid_euler=solid_euler,
        crossing=crossing,
    )

"""Geometry and set metrics against brute-force references; mesh topology against grid topology."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from weightspace.analysis import geometry as G
from weightspace.analysis import sets, topology
from weightspace.analysis import shapes as S
from weightspace.analysis.mesh_topology import mesh_topology
from weightspace.decode.mesh import grid_to_mesh
from weightspace.runtime.errors import InputError


def brute_directed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min_j |a_i - b_j| by the full (n, m) distance matrix."""
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(axis=1)  # (n,)


def test_chamfer_hausdorff_fscore_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 3))
    b = rng.normal(size=(250, 3)) * 0.8 + 0.1
    d_ab, d_ba = brute_directed(a, b), brute_directed(b, a)
    c = G.chamfer(a, b)
    assert c["chamfer_l1"] == pytest.approx((d_ab.mean() + d_ba.mean()) / 2, rel=1e-12)
    assert c["chamfer_l2"] == pytest.approx(((d_ab**2).mean() + (d_ba**2).mean()) / 2, rel=1e-12)
    assert G.hausdorff(a, b) == pytest.approx(max(d_ab.max(), d_ba.max()), rel=1e-12)
    tau = 0.3
    p, r = (d_ab <= tau).mean(), (d_ba <= tau).mean()
    assert G.fscore(a, b, tau=tau) == pytest.approx(2 * p * r / (p + r))
    allm = G.compare_points(a, b, tau=tau)
    assert allm["chamfer_l1"] == pytest.approx(c["chamfer_l1"]) and allm["fscore"] == pytest.approx(2 * p * r / (p + r))
    assert G.chamfer(a, a)["chamfer_l1"] == 0.0 and G.fscore(a, a) == 1.0


def test_sampling_is_seeded_and_on_surface() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    p1, n1 = G.sample_surface(sphere, 500, seed=3)
    p2, _ = G.sample_surface(sphere, 500, seed=3)
    p3, _ = G.sample_surface(sphere, 500, seed=4)
    assert np.array_equal(p1, p2) and not np.array_equal(p1, p3)
    assert np.allclose(np.linalg.norm(p1, axis=1), 0.5, atol=0.01)
    assert np.allclose(np.abs(np.einsum("ij,ij->i", n1, p1 / 0.5)), 1.0, atol=0.02)


def test_compare_meshes_and_normal_consistency() -> None:
    s1 = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    s2 = trimesh.creation.icosphere(subdivisions=4, radius=0.6)
    m = G.compare(s1, s2, n=4000, seed=0)
    assert m["chamfer_l1"] == pytest.approx(0.1, abs=0.01)  # radii differ by 0.1
    assert m["hausdorff"] == pytest.approx(0.1, abs=0.02)
    assert m["normal_consistency"] > 0.99 and m["fscore"] == 0.0
    box = trimesh.creation.box(extents=(1, 1, 1))
    assert G.compare(s1, box, n=4000)["normal_consistency"] < 0.95
    empty = trimesh.Trimesh()
    assert G.compare(s1, empty)["chamfer_l1"] == float("inf") and G.compare(s1, empty)["fscore"] == 0.0
    both = G.compare(empty, empty)  # nothing to measure: never a perfect match
    assert np.isnan(both["chamfer_l1"]) and both["fscore"] == 0.0 and both["normal_consistency"] == 0.0


def test_iou_grids() -> None:
    a = np.zeros((10, 10, 10), dtype=bool)
    b = np.zeros_like(a)
    a[:5] = True
    b[2:7] = True
    assert G.iou(a, b) == pytest.approx(3 / 7)
    assert G.iou(a, a) == 1.0 and G.iou(~a & a, ~a & a) == 1.0
    assert G.iou(np.where(a, -1.0, 1.0), a) == 1.0
    with pytest.raises(InputError, match="same shape"):
        G.iou(a, a[:5])


def test_bad_points() -> None:
    with pytest.raises(InputError, match=r"\(n, 3\)"):
        G.chamfer(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(InputError, match="no points"):
        G.hausdorff(np.zeros((0, 3)), np.zeros((5, 3)))


@pytest.mark.parametrize("name", sorted(S.known_shapes()))
@pytest.mark.parametrize("resolution", [32, 48])
def test_mesh_topology_agrees_with_grid(name: str, resolution: int) -> None:
    f, betti = S.known_shapes()[name]
    rng = np.random.default_rng(resolution)
    grid = S.sdf_grid(S.rotated(f, S.random_rotation(rng)), resolution)
    t, m = topology(grid), mesh_topology(grid_to_mesh(grid))
    assert m.watertight and m.boundary_loops == 0
    assert m.betti == t.betti == betti
    assert m.genus == t.genus and m.solid_euler == t.euler and m.euler == 2 * t.euler
    assert m.components == t.b0 + t.b2


def test_mesh_topology_open_and_empty() -> None:
    square = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    m = mesh_topology(square)
    assert (m.components, m.euler, m.boundary_loops, m.genus, m.watertight) == (1, 1, 1, 0, False)
    assert m.betti is None
    e = mesh_topology(trimesh.Trimesh())
    assert e.components == 0 and e.betti == (0, 0, 0)
    assert mesh_topology(trimesh.creation.annulus(0.5, 1.0, 0.5)).genus == 1


def test_set_metrics_and_novelty() -> None:
    rng = np.random.default_rng(1)
    ref = [rng.normal(size=(200, 3)) * s for s in np.linspace(0.2, 1.0, 6)]
    same = sets.set_metrics(ref, ref)
    assert same["mmd"] == 0.0 and same["cov"] == 1.0
    assert same["nna"] == 0.0  # each shape's nearest other is its copy in the other set
    far = sets.set_metrics([x + 5.0 for x in ref], ref)
    assert far["nna"] == 1.0 and far["cov"] < 1.0 and far["mmd"] > 20
    # 1-NNA by brute force over the combined set.
    gen = [rng.normal(size=(200, 3)) * s for s in (0.3, 0.5, 0.9)]
    m = sets.set_metrics(gen, ref, metric="chamfer_l1")
    allc = gen + ref
    d = np.array([[G.chamfer(x, y)["chamfer_l1"] for y in allc] for x in allc])
    np.fill_diagonal(d, np.inf)
    lab = np.r_[np.zeros(3), np.ones(6)]
    assert m["nna"] == pytest.approx((lab[d.argmin(1)] == lab).mean())
    assert m["mmd"] == pytest.approx(d[:3, 3:].min(axis=0).mean())
    nov = sets.novelty([ref[2] + 0.001, gen[0]], ref)
    assert nov["nearest"][0] == 2 and nov["ratio"][0] < 0.01
    with pytest.raises(InputError, match="normalize"):
        sets.set_metrics(gen, ref, normalize="box")  # type: ignore[arg-type]


def test_mesh_topology_of_crossing_surfaces_is_unknown() -> None:
    """Two overlapping closed spheres bound one ball, not (1, 0, 1) or (2, 0, 0): the surfaces cross,
    so the solid's Betti numbers are not theirs and stay None; nested and apart ones still count."""

    def sphere(r: float, x: float) -> trimesh.Trimesh:
        s = trimesh.creation.icosphere(subdivisions=2, radius=r)
        s.apply_translation([x, 0.0, 0.0])
        return s

    overlap = mesh_topology(trimesh.util.concatenate([sphere(0.5, 0.0), sphere(0.5, 0.4)]))
    assert overlap.watertight and overlap.crossing == 1 and overlap.betti is None and overlap.solid_euler is None
    inner = sphere(0.3, 0.1)
    inner.invert()
    shell = mesh_topology(trimesh.util.concatenate([sphere(0.8, 0.0), inner]))
    assert shell.crossing == 0 and shell.betti == (1, 0, 1)
    apart = mesh_topology(trimesh.util.concatenate([sphere(0.3, -0.5), sphere(0.3, 0.5), sphere(0.1, 0.5)]))
    assert apart.crossing == 0 and apart.betti == (2, 0, 1)


def test_mesh_topology_of_a_non_manifold_mesh_has_no_genus() -> None:
    """Two unit boxes sharing a face (their four triangles there on edges of four faces) are one piece
    whose genus the surface formula cannot give: it read 4 surfaces of genus -6."""
    a, b = trimesh.creation.box((1, 1, 1)), trimesh.creation.box((1, 1, 1))
    b.apply_translation([1.0, 0.0, 0.0])
    m = mesh_topology(trimesh.util.concatenate([a, b]))
    assert (m.components, m.genus, m.watertight, m.betti) == (1, None, False, None)


def test_mesh_topology_rewinds_flipped_faces() -> None:
    """A closed torus saved with every 7th face flipped is the torus (it read as not watertight, no Betti
    numbers, while data import called the same file watertight)."""
    torus = trimesh.creation.torus(major_radius=0.5, minor_radius=0.2)
    faces = torus.faces.copy()
    faces[::7] = faces[::7, ::-1]
    m = mesh_topology(trimesh.Trimesh(torus.vertices, faces, process=False))
    assert m.watertight and m.betti == (1, 1, 0)


@pytest.mark.parametrize("scale", [1e-9, 1e-7, 1e15])
def test_mesh_topology_does_not_depend_on_units(scale: float) -> None:
    """A torus in any unit is the torus: trimesh merges vertices at an absolute tolerance (1e-8), so at
    1e-7 the torus's vertices fused and at 1e15 the rounding overflowed; both read as not watertight."""
    torus = trimesh.creation.torus(major_radius=0.5, minor_radius=0.2).apply_scale(scale)
    m = mesh_topology(torus)
    assert m.watertight and m.betti == (1, 1, 0) and m.genus == 1

"""Exact voxel topology: known shapes, GUDHI agreement, edge cases."""

from __future__ import annotations

import gudhi
import numpy as np
import pytest

from weightspace.analysis import shapes as S
from weightspace.analysis import topology
from weightspace.analysis.topology import euler_characteristic
from weightspace.runtime.errors import InputError

KNOWN = S.known_shapes()


def gudhi_betti(solid: np.ndarray) -> tuple[int, int, int]:
    """Betti numbers of the union of closed voxel cubes, from GUDHI's cubical complex (top cells = voxels)."""
    cc = gudhi.CubicalComplex(top_dimensional_cells=np.where(solid, 0.0, 1.0))
    cc.compute_persistence()
    b = cc.persistent_betti_numbers(0.0, 0.0)
    return (int(b[0]), int(b[1]), int(b[2]))


@pytest.mark.parametrize("name", sorted(KNOWN))
@pytest.mark.parametrize("resolution", [32, 48, 64])
def test_known_shapes_at_resolutions_and_rotations(name: str, resolution: int) -> None:
    f, betti = KNOWN[name]
    rng = np.random.default_rng(resolution)
    for k in range(3):
        g = f if k == 0 else S.rotated(f, S.random_rotation(rng))
        t = topology(S.sdf_grid(g, resolution))
        assert t.betti == betti, (name, resolution, k, t.betti)
        assert t.b0 - t.b1 + t.b2 == t.euler
        assert t.genus == betti[1]


def test_bool_grid_and_level() -> None:
    f, _ = KNOWN["torus"]
    sdf = S.sdf_grid(f, 40)
    assert topology(sdf < 0).betti == (1, 1, 0)
    # Raising the level past the hole radius fills the hole: a ball-like solid.
    assert topology(sdf, level=0.45).betti == (1, 0, 0)
    assert topology(sdf, level=-0.5).betti == (0, 0, 0)


def test_empty_and_full_grids() -> None:
    empty = topology(np.zeros((8, 8, 8), dtype=bool))
    assert (empty.betti, empty.euler, empty.genus) == ((0, 0, 0), 0, 0)
    assert empty.component_volumes.shape == (0,) and empty.components_above(0.0) == 0
    full = topology(np.full((8, 8, 8), -1.0, dtype=np.float32))
    assert (full.betti, full.euler) == ((1, 0, 0), 1)
    assert full.component_voxels.tolist() == [512]


def test_diagonal_contacts_follow_26_connectivity() -> None:
    corner = np.zeros((4, 4, 4), dtype=bool)
    corner[1, 1, 1] = corner[2, 2, 2] = True  # closed cubes share one vertex
    assert topology(corner).betti == (1, 0, 0)
    # A cube of 3^3 with the centre removed: enclosed cavity.
    hollow = np.zeros((5, 5, 5), dtype=bool)
    hollow[1:4, 1:4, 1:4] = True
    hollow[2, 2, 2] = False
    assert topology(hollow).betti == (1, 0, 1)
    # Removing an edge-adjacent neighbour does not open the cavity (background is 6-connected).
    ring = np.zeros((5, 5, 3), dtype=bool)
    ring[1:4, 1:4, 1] = True
    ring[2, 2, 1] = False
    assert topology(ring).betti == (1, 1, 0)


def test_single_voxel_euler() -> None:
    one = np.zeros((3, 3, 3), dtype=bool)
    one[1, 1, 1] = True
    assert euler_characteristic(one) == 1


def test_component_volumes_and_threshold() -> None:
    g = np.zeros((10, 10, 10), dtype=bool)
    g[1:4, 1:4, 1:4] = True  # 27 voxels
    g[6:8, 6:8, 6:8] = True  # 8 voxels
    t = topology(g, voxel_volume=1.0)
    assert t.component_voxels.tolist() == [27, 8]
    assert t.components_above(10.0) == 1 and t.components_above(1.0) == 2
    t_world = topology(g)
    assert np.isclose(t_world.component_volumes[0], 27 * (2 / 9) ** 3)


def test_a_solid_touching_the_box_is_not_overcounted() -> None:
    """The samples on the grid's faces stand for half a cell (trapezoidal rule): a solid filling the box
    is the box's 8 at every resolution (it was 11.94 at 8^3), and a solid inside it is unchanged."""
    for r in (8, 32):
        assert np.isclose(topology(np.ones((r, r, r), dtype=bool)).component_volumes[0], 8.0)
    x = np.linspace(-1, 1, 32)
    slab = np.broadcast_to(x[:, None, None] < 0.0, (32, 32, 32))  # the half x < 0 of the box: volume 4
    assert abs(topology(slab).component_volumes[0] - 4.0) < 2 * (2 / 31) * 4  # within a layer of cells
    g = np.zeros((10, 10, 10), dtype=bool)
    g[1:4, 1:4, 1:4] = True
    g[0:2, 6:8, 6:8] = True  # 8 samples, 4 of them on a face
    assert np.allclose(topology(g).component_volumes, [27 * (2 / 9) ** 3, 6 * (2 / 9) ** 3])
    assert topology(g).component_voxels.tolist() == [27, 8]


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(InputError, match="3D"):
        topology(np.zeros((4, 4)))
    with pytest.raises(InputError, match="NaN"):
        topology(np.full((4, 4, 4), np.nan))


def _agreement(solids: list[np.ndarray]) -> None:
    for i, solid in enumerate(solids):
        mine = topology(solid)
        assert mine.betti == gudhi_betti(solid), (i, mine.betti)
        assert mine.b0 - mine.b1 + mine.b2 == mine.euler


def test_gudhi_agreement_corpus_small() -> None:
    rng = np.random.default_rng(0)
    solids = [S.random_solid(rng, int(rng.choice([16, 20, 24]))) < 0 for _ in range(200)]
    # Random noise stresses every corner/edge contact configuration.
    solids += [rng.random((12, 12, 12)) < p for p in (0.2, 0.35, 0.5, 0.65, 0.8)]
    solids += [S.random_solid(rng, 64) < 0]
    _agreement(solids)


@pytest.mark.slow
def test_gudhi_agreement_corpus_full() -> None:
    rng = np.random.default_rng(1)
    _agreement([S.random_solid(rng, 32) < 0 for _ in range(170)])
    _agreement([S.random_solid(rng, 64) < 0 for _ in range(30)])

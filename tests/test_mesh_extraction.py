"""Marching cubes in world units with outward-facing triangles."""

import numpy as np

from weightspace.analysis.shapes import ball, sdf_grid, shell
from weightspace.decode.mesh import grid_to_mesh


def test_ball_mesh_is_closed_outward_and_in_world_units():
    mesh = grid_to_mesh(sdf_grid(ball(radius=0.6), 32))
    assert mesh.is_watertight
    assert abs(mesh.volume - 4 / 3 * np.pi * 0.6**3) < 0.03  # 0.905 in world units
    outward = np.einsum("ij,ij->i", mesh.triangles_center, mesh.face_normals) > 0
    assert outward.all()
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.6).max() < 0.02


def test_shell_volume_excludes_its_cavity():
    mesh = grid_to_mesh(sdf_grid(shell(radius=0.6, thickness=0.2), 32))
    solid = 4 / 3 * np.pi * (0.6**3 - 0.4**3)  # the shell is 0.4 < r < 0.6
    assert abs(mesh.volume - solid) / solid < 0.05


def test_empty_grid_gives_no_mesh_and_full_grid_the_box():
    assert len(grid_to_mesh(np.ones((8, 8, 8), np.float32)).faces) == 0
    h = 2 / 7  # voxel size at 8^3
    for grid, level in ((-np.ones((8, 8, 8), np.float32), 0.0), (np.ones((8, 8, 8), np.float32), 5.0)):
        box = grid_to_mesh(grid, level=level)  # solid everywhere: topology's (1, 0, 0), so its boundary is the surface
        assert box.is_watertight and box.volume > 0
        np.testing.assert_allclose(box.bounds, [[-1 - h / 2] * 3, [1 + h / 2] * 3], atol=1e-6)

"""Decoding: weight-space points to SDF grids, and SDF grids to meshes."""

from weightspace.decode.mesh import grid_to_mesh, save_mesh
from weightspace.decode.points import decode_conditions, decode_points, point_seeds, write_decoded

__all__ = ["grid_to_mesh", "save_mesh", "decode_conditions", "decode_points", "point_seeds", "write_decoded"]

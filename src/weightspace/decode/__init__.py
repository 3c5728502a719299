"""Decoding: weight-space points to SDF grids, and SDF grids to meshes."""

from weightspace.decode.mesh import grid_to_mesh

__all__ = ["grid_to_mesh"]

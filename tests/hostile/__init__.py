"""Builders of hostile inputs, made at test time (no binary junk is committed): pickles that would
run code, broken meshes, bad grids, corrupt weights and bad configs, plus a CLI runner."""

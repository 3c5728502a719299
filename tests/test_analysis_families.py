"""The analysis instruments agree with each other and with the declarations on the data stage's procedural families."""

from __future__ import annotations

import numpy as np
import pytest

families = pytest.importorskip("weightspace.data.families")

from weightspace.analysis import persistence, topology  # noqa: E402
from weightspace.analysis.mesh_topology import mesh_topology  # noqa: E402
from weightspace.data.grid import grid_points  # noqa: E402
from weightspace.decode.mesh import grid_to_mesh  # noqa: E402

R, TRUNC = 32, 0.2


@pytest.mark.parametrize("name", families.FAMILY_NAMES)
def test_grid_mesh_and_robust_topology_agree_on_families(name: str) -> None:
    fam = families.FAMILIES[name]
    pts = grid_points(R).reshape(-1, 3)  # (R^3, 3)
    for seed in (0, 1):
        params = fam.sample_params(np.random.default_rng(seed))
        grid = np.clip(fam.sdf(pts, params).reshape(R, R, R), -TRUNC, TRUNC).astype(np.float32)
        exact = topology(grid).betti
        assert exact == fam.betti, (name, seed, exact)
        assert mesh_topology(grid_to_mesh(grid)).betti == exact
        assert persistence.robust_betti(grid) == exact

"""Persistence of SDF grids: diagrams, bottleneck, robust Betti numbers."""

from __future__ import annotations

import numpy as np
import pytest

from weightspace.analysis import persistence as P
from weightspace.analysis import shapes as S
from weightspace.analysis import topology
from weightspace.runtime.errors import InputError

TRUNC = 0.2


def tsdf(f, resolution: int = 32) -> np.ndarray:
    return np.clip(S.sdf_grid(f, resolution), -TRUNC, TRUNC)


@pytest.mark.parametrize("name", sorted(S.known_shapes()))
def test_robust_betti_equals_exact_on_clean_shapes(name: str) -> None:
    f, betti = S.known_shapes()[name]
    assert P.robust_betti(S.sdf_grid(f, 32)) == betti
    assert P.robust_betti(tsdf(f)) == betti


def test_robust_betti_ignores_floater_counts_real_part() -> None:
    ball, _ = S.known_shapes()["ball"]
    g = tsdf(ball)
    floater = g.copy()
    floater[3, 3, 3] = -0.01  # one voxel just below the level, far from the ball
    assert topology(floater).b0 == 2  # the exact count sees it
    assert P.robust_betti(floater) == (1, 0, 0)
    second = tsdf(S.union(ball, S.ball((0.8, 0.8, 0.8), 0.12)))
    assert topology(second).b0 == 2
    assert P.robust_betti(second) == (2, 0, 0)


def test_robust_betti_ignores_pinhole() -> None:
    # A thick slab with a one-voxel hole through it: the hole closes as soon as the level rises.
    g = np.full((16, 16, 16), TRUNC, dtype=np.float32)
    g[2:14, 2:14, 6:10] = -0.1
    g[8, 8, 6:10] = 0.005  # pinhole just above the level
    assert topology(g).betti == (1, 1, 0)
    assert P.robust_betti(g, eps=0.01) == (1, 0, 0)
    g[8, 8, 6:10] = 0.1  # a hole that survives the window
    assert P.robust_betti(g, eps=0.01) == (1, 1, 0)


def test_fast_robust_betti_matches_diagram_counts() -> None:
    rng = np.random.default_rng(3)
    for _ in range(25):
        g = np.clip(S.random_solid(rng, 20), -TRUNC, TRUNC)
        level, eps = rng.uniform(-0.05, 0.05), rng.uniform(0.0, 0.05)
        assert P.robust_betti(g, level, eps) == P.robust_counts(P.diagrams(g), level, eps)


def test_diagrams_and_bottleneck() -> None:
    ball, _ = S.known_shapes()["ball"]
    g = tsdf(ball, 24)
    d = P.diagrams(g)
    assert len(d) == 3 and all(x.shape[1] == 2 for x in d)
    assert np.isinf(d[0][:, 1]).sum() == 1  # one essential component
    assert P.bottleneck(d, d) == 0.0
    g2 = g.copy()
    g2[2, 2, 2] = -0.05  # floater born at -0.05, dies at the truncation 0.2
    dist = P.bottleneck(d, P.diagrams(g2), dim=0)
    assert dist == pytest.approx(0.125, abs=1e-6)  # matched to the diagonal: (0.2 - -0.05) / 2
    with pytest.raises(InputError, match="dim"):
        P.bottleneck(d, d, dim=3)


def test_empty_full_and_bad_grids() -> None:
    assert P.robust_betti(np.full((8, 8, 8), 1.0)) == (0, 0, 0)
    assert P.robust_betti(np.full((8, 8, 8), -1.0)) == (1, 0, 0)
    with pytest.raises(InputError, match="float"):
        P.diagrams(np.zeros((4, 4, 4), dtype=bool))
    with pytest.raises(InputError, match="NaN"):
        P.robust_betti(np.full((4, 4, 4), np.nan))

"""Procedural families: declared topology at two resolutions, bounds, exact distances, surface samples, redraws."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from weightspace.analysis.topology import topology
from weightspace.data import make as make_mod
from weightspace.data.families import FAMILIES, FAMILY_NAMES, get_family
from weightspace.data.grid import grid_points
from weightspace.data.make import draw_sample, inside_bound, surface_samples
from weightspace.runtime.errors import InputError, WeightspaceError
from weightspace.runtime.seeding import item_rng


def _grid(fam, params, res):
    return fam.sdf(grid_points(res).reshape(-1, 3), params).reshape(res, res, res)


def test_at_least_eight_families_covering_the_required_topologies():
    assert len(FAMILY_NAMES) >= 8
    bettis = {f.betti for f in FAMILIES.values()}
    assert (1, 0, 0) in bettis and (1, 1, 0) in bettis and (1, 0, 1) in bettis
    assert any(b[0] == 1 and b[1] >= 2 for b in bettis)  # genus 2 or 3
    assert any(b[0] >= 2 for b in bettis)  # separate parts
    assert {"dumbbell", "chair", "mug"} <= set(FAMILY_NAMES)


@pytest.mark.parametrize("res", [32, 48])
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_first_draws_have_the_declared_topology(name, res):
    # no redraw here: the first draw of each seed must already match and stay inside the box
    fam = FAMILIES[name]
    for i in range(2):
        params = fam.sample_params(item_rng(123, name, i))
        sdf = _grid(fam, params, res)
        assert topology(sdf).betti == fam.betti, (name, res, i, params)
        assert inside_bound(sdf, res)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_surface_samples_lie_on_the_surface_with_outward_normals(name):
    fam = FAMILIES[name]
    params = fam.sample_params(item_rng(7, name))
    pts, normals = surface_samples(lambda p: fam.sdf(p, params), 512, item_rng(8, name), grid=_grid(fam, params, 32))
    assert pts.shape == (512, 3) and pts.dtype == np.float32 and normals.dtype == np.float32
    assert np.abs(fam.sdf(pts, params)).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-4)
    outside = pts.astype(np.float64) + 0.01 * normals
    # normals point outward (a step can cross into another part only next to a concave crease)
    assert np.mean(fam.sdf(outside, params) > 0.0) > 0.98
    assert np.abs(pts).max() <= 0.9


def test_params_are_json_ready_and_seeded():
    import json

    for name, fam in FAMILIES.items():
        a = fam.sample_params(item_rng(1, name))
        assert json.loads(json.dumps(a)) == a
        assert a == fam.sample_params(item_rng(1, name))
        assert a != fam.sample_params(item_rng(2, name))


def test_unknown_family_lists_the_valid_ones():
    with pytest.raises(InputError, match="valid families: table"):
        get_family("teapot")


def test_mismatching_samples_are_redrawn_and_counted(monkeypatch):
    torus = FAMILIES["torus"]
    calls = {"n": 0}

    def flaky(rng):  # every other draw is a ball (wrong topology) with a huge minor radius
        calls["n"] += 1
        p = torus.sample_params(rng)
        if calls["n"] % 2 == 1:
            p["minor"], p["major"] = 0.5, 0.2
        return p

    fam = dataclasses.replace(torus, sample_params=flaky)
    params, sdf, betti, redraws = draw_sample(fam, item_rng(0, "x"), 32, 10)
    assert redraws == 1 and betti == (1, 1, 0) and topology(sdf).betti == (1, 1, 0)

    never = dataclasses.replace(torus, betti=(1, 0, 0))
    with pytest.raises(WeightspaceError, match="after 3 redraws"):
        draw_sample(never, item_rng(0, "y"), 32, 3)


def test_make_reports_redraws_per_family(tmp_path, monkeypatch):
    torus = FAMILIES["torus"]
    state = {"n": 0}

    def flaky(rng):
        state["n"] += 1
        p = torus.sample_params(rng)
        if state["n"] in (1, 3):
            p["minor"], p["major"] = 0.5, 0.2
        return p

    monkeypatch.setitem(make_mod.FAMILIES, "torus", dataclasses.replace(torus, sample_params=flaky))
    s = make_mod.make_dataset(tmp_path / "d", family="torus", count=3, resolution=32, n_points=64, progress=False)
    assert s["redraws"] == {"torus": 2} and s["redraws_total"] == 2
    rows = [__import__("json").loads(line) for line in (tmp_path / "d" / "manifest.jsonl").read_text().splitlines()]
    assert sum(r["redraws"] for r in rows) == 2
    assert all(r["betti_measured"] == [1, 1, 0] for r in rows)

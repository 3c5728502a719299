"""ShapeDataset over a data folder (memory-mapped cache, splits, observations) and `observe`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from weightspace.cli import _register, app
from weightspace.data import dataset as dataset_mod
from weightspace.data.dataset import ShapeDataset
from weightspace.data.families import FAMILY_NAMES
from weightspace.data.make import make_dataset
from weightspace.data.observe import KINDS, observe
from weightspace.runtime.errors import InputError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "d"
    make_dataset(out, family="all", count=20, resolution=32, seed=1, n_points=300, progress=False)
    return out


def test_items_and_stacked_arrays(folder):
    ds = ShapeDataset(folder)
    assert len(ds) == 20
    item = ds[5]
    assert item["grid"].shape == (32, 32, 32) and item["grid"].dtype == torch.float32
    assert item["points"].shape == (300, 3) and item["normals"].shape == (300, 3)
    assert item["family"] == ds.rows[5]["family"] and item["label"] == FAMILY_NAMES.index(item["family"])
    assert isinstance(ds.grids, np.memmap) and ds.grids.shape == (20, 32, 32, 32) and ds.grids.dtype == np.float32
    assert ds.labels.dtype == np.int64 and list(ds.labels) == [r["label"] for r in ds.rows]
    np.testing.assert_array_equal(ds.grids[5], np.load(folder / ds.rows[5]["grid"]))


def test_cache_is_built_once_and_reused(folder, monkeypatch):
    _ = ShapeDataset(folder).grids  # builds (or finds) the cache
    def no_reads(*a, **k):
        raise AssertionError("grid files read again although the cache exists")
    monkeypatch.setattr(dataset_mod, "load_grid", no_reads)
    monkeypatch.setattr(dataset_mod, "load_points", no_reads)
    ds = ShapeDataset(folder)
    for i in range(len(ds)):  # a whole epoch from the memory map
        ds[i]
    assert not list((folder / ".cache").glob("*.tmp"))


def test_splits_partition_the_set(folder):
    parts = {s: ShapeDataset(folder, s) for s in ("train", "val", "test")}
    ids = [i for ds in parts.values() for i in (r["id"] for r in ds.rows)]
    assert sorted(ids) == sorted(r["id"] for r in ShapeDataset(folder).rows)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert parts["val"].grids.shape == (2, 32, 32, 32)
    assert len({r["family"] for r in parts["val"].rows + parts["test"].rows}) == 4  # stratified: no family twice
    with pytest.raises(InputError, match="split must be one of"):
        ShapeDataset(folder, "validation")


def test_observation_items_are_seeded(folder):
    a = ShapeDataset(folder, observation="partial", obs_points=128, seed=3)
    b = ShapeDataset(folder, observation="partial", obs_points=128, seed=3)
    assert a[2]["observation"].shape == (128, 3)
    assert torch.equal(a[2]["observation"], b[2]["observation"])
    assert not torch.equal(a[2]["observation"], ShapeDataset(folder, observation="partial", obs_points=128, seed=4)[2]["observation"])
    with pytest.raises(InputError, match="clean, noisy, partial, subsampled"):
        ShapeDataset(folder, observation="blurry")


def test_missing_folder_names_the_manifest(tmp_path):
    with pytest.raises(InputError, match="manifest.jsonl"):
        ShapeDataset(tmp_path)


@pytest.fixture
def cloud():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(1000, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)  # unit sphere; normals = points
    return p.astype(np.float32), p.astype(np.float32)


def test_observe_kinds(cloud):
    pts, nrm = cloud
    for kind in KINDS:
        sigma = 0.05 if kind == "noisy" else 0.0
        o = observe(pts, nrm, kind, n=256, sigma=sigma, seed=1)
        assert o.shape == (256, 3) and o.dtype == np.float32
        np.testing.assert_array_equal(o, observe(pts, nrm, kind, n=256, sigma=sigma, seed=1))
        assert not np.array_equal(o, observe(pts, nrm, kind, n=256, sigma=sigma, seed=2))
    clean = observe(pts, nrm, "clean", n=256, seed=1)
    assert np.allclose(np.linalg.norm(clean, axis=1), 1.0, atol=1e-5)  # on the surface
    noisy = observe(pts, nrm, "noisy", n=1000, sigma=0.05, seed=1)
    assert 0.03 < np.std(np.linalg.norm(noisy, axis=1) - 1.0) < 0.07
    sub = observe(pts, nrm, "subsampled", n=500, seed=1)
    assert len(np.unique(sub, axis=0)) == 500  # distinct points
    with pytest.raises(InputError, match="n <= 1000"):
        observe(pts, nrm, "subsampled", n=2000)
    with pytest.raises(InputError, match="sigma > 0"):
        observe(pts, nrm, "noisy")


def test_partial_keeps_one_side(cloud):
    pts, nrm = cloud
    for mode in ("cut", "view"):
        o = observe(pts, nrm, "partial", n=400, seed=9, partial_mode=mode).astype(np.float64)
        # all points lie on one side of a plane: the mean direction separates them from the rest
        d = o.mean(0) / np.linalg.norm(o.mean(0))
        assert (o @ d).min() > (pts @ d).min() + 0.2
    with pytest.raises(InputError, match="cut, view"):
        observe(pts, nrm, "partial", partial_mode="side")


def test_cli_observe(folder, tmp_path):
    _register()
    r = CliRunner().invoke(app, ["data", "observe", str(folder), "--kind", "noisy", "--sigma", "0.01", "--n", "64", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    obs = np.load(tmp_path / "o" / "observations.npy")
    assert obs.shape == (20, 64, 3) and obs.dtype == np.float32
    r = CliRunner().invoke(app, ["data", "observe", str(folder), "--kind", "clean", "--sigma", "0.05", "--out", str(tmp_path / "c")])
    assert "a clean observation has no noise" in str(r.exception) and not (tmp_path / "c").exists()
    with pytest.raises(InputError, match="an observations folder"):  # handed where a dataset belongs
        ShapeDataset(tmp_path / "o")


def test_a_changed_manifest_gets_a_fresh_cache(tmp_path):
    out = tmp_path / "d"
    make_dataset(out, family="torus", count=3, resolution=32, n_points=32, progress=False)
    assert ShapeDataset(out).grids.shape[0] == 3
    lines = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").write_text("\n".join(lines[:2]) + "\n")
    ds = ShapeDataset(out)
    assert ds.grids.shape[0] == 2 and len(ds) == 2
    assert len(list((out / ".cache").glob("grids-all-*.npy"))) == 1  # the stale cache is gone


def test_pickles_without_the_mapped_arrays(folder):
    import pickle

    ds = ShapeDataset(folder)
    ds.grids, ds[0]
    blob = pickle.dumps(ds)
    assert len(blob) < 100_000  # 20 grids of 32^3 float32 would be 2.6 MB
    again = pickle.loads(blob)
    assert torch.equal(again[3]["grid"], ds[3]["grid"])
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    assert next(iter(loader))["grid"].shape == (8, 32, 32, 32)


def test_read_shapes_is_the_one_reader_of_usable_rows(folder, tmp_path):
    """Populations, the field's trainer, ShapeDataset and observe read a data folder through `read_shapes`:
    an import's failed rows are left out, a row lacking a field is named by its shape, an empty split is
    named, and two shapes with one id are refused (a population of them could not be read back)."""
    import json
    import shutil

    from weightspace.data.dataset import read_shapes
    from weightspace.generators.neural_field.samples import read_manifest as field_rows
    from weightspace.space.population import read_shapes as population_rows

    copy = tmp_path / "d"
    shutil.copytree(folder, copy)
    lines = (copy / "manifest.jsonl").read_text().splitlines()
    failed = json.dumps({"id": "broken.obj", "status": "failed", "error": "not a mesh"})
    (copy / "manifest.jsonl").write_text("\n".join([*lines, failed, ""]))
    ids = [r["id"] for r in read_shapes(copy)]
    assert len(ids) == 20 and "broken.obj" not in ids
    assert [r["id"] for r in population_rows(copy, split="train", members=3)] == [r["id"] for r in read_shapes(copy, split="train")][:3]
    assert all(r["split"] == "train" for r in field_rows(copy))
    with pytest.raises(InputError, match="no shapes in split 'nope'"):
        read_shapes(copy, split="nope")
    row = json.loads(lines[4])
    del row["points"]
    (copy / "manifest.jsonl").write_text("\n".join([*lines[:4], json.dumps(row), *lines[5:]]))
    with pytest.raises(InputError, match=rf"shape {row['id']!r} lacks field\(s\) \['points'\]"):
        field_rows(copy, None)
    assert len(population_rows(copy)) == 20  # a population of grids does not need the points
    (copy / "manifest.jsonl").write_text("\n".join([*lines, lines[3]]) + "\n")
    with pytest.raises(InputError, match=rf"shape id {json.loads(lines[3])['id']!r} appears twice"):
        read_shapes(copy)


def test_an_observation_set_is_replaced_only_when_asked(folder, tmp_path):
    from weightspace.data.observe import observe_folder

    out = tmp_path / "obs"
    observe_folder(folder, out, kind="noisy", sigma=0.01, n=16)
    before = (out / "observations.npy").read_bytes()
    with pytest.raises(InputError, match=r"already holds an observations set \(config.json\); pass --overwrite"):
        observe_folder(folder, out, kind="clean", n=16)
    assert (out / "observations.npy").read_bytes() == before
    observe_folder(folder, out, kind="clean", n=16, overwrite=True)
    assert (out / "observations.npy").read_bytes() != before


def test_an_occupancy_grid_in_a_dataset_is_refused_by_name(folder, tmp_path):
    """A hand-made dataset whose grids are 0/1 occupancy would train on distances that are never negative."""
    import shutil

    copy = tmp_path / "d"
    shutil.copytree(folder, copy)
    row = ShapeDataset(copy).rows[2]
    np.save(copy / row["grid"], (np.load(copy / row["grid"]) < 0).astype(np.uint8))
    with pytest.raises(InputError, match=r"grid holds only 0 and 1, an occupancy grid; a dataset's grids are signed") as e:
        dataset_mod.load_grid(copy, row)
    assert row["grid"] in str(e.value)


def test_a_grid_of_another_size_than_its_row_says_is_refused_by_name(folder, tmp_path):
    """A 16^3 grid under a row saying resolution 32 was read as it was: a population fitted it as a 16^3 shape."""
    import shutil

    copy = tmp_path / "d"
    shutil.copytree(folder, copy)
    row = ShapeDataset(copy).rows[3]
    np.save(copy / row["grid"], np.load(copy / row["grid"])[::2, ::2, ::2])  # (16, 16, 16)
    with pytest.raises(InputError, match=r"grid of shape \(16, 16, 16\), but its row in .* says resolution 32") as e:
        dataset_mod.load_grid(copy, row)
    assert row["grid"] in str(e.value) and repr(row["id"]) in str(e.value)
    for bad in ("32", None, True):  # a row's resolution that is not a number is no resolution
        with pytest.raises(InputError, match="says resolution"):
            dataset_mod.load_grid(copy, {**row, "resolution": bad})
    assert dataset_mod.load_grid(copy, ShapeDataset(copy).rows[4]).shape == (32, 32, 32)  # the others as before
    assert dataset_mod.load_grid(copy, {k: v for k, v in row.items() if k != "resolution"}).shape == (16, 16, 16)

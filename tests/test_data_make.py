"""`data make`: files, manifest, splits, topology records, byte-identical determinism, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from weightspace.analysis.topology import topology
from weightspace.cli import _register, app
from weightspace.data.dataset import read_shapes
from weightspace.data.families import FAMILIES, FAMILY_NAMES
from weightspace.data.make import make_dataset
from weightspace.runtime.errors import InputError, Interrupted
from weightspace.runtime.folders import check_out_folder, folder_kind


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]


def _stop_after(monkeypatch, k: int, run) -> list:
    """Run `run` with every shape counted, stopped as by Ctrl-C or a kill once `k` shapes are made;
    returns the shapes it was asked for."""
    from weightspace.data import make as make_module

    real, calls = make_module._make_item, []

    def counted(cfg, job):
        calls.append(job)
        if len(calls) == k + 1:
            raise KeyboardInterrupt
        return real(cfg, job)

    monkeypatch.setattr(make_module, "_make_item", counted)
    with pytest.raises(Interrupted, match=f"interrupted: {k} of .* shapes are saved in .*; run the same command again"):
        run()
    monkeypatch.setattr(make_module, "_make_item", real)
    return calls


def _counting(monkeypatch) -> list:
    """The shapes made from now on, counted."""
    from weightspace.data import make as make_module

    real, calls = make_module._make_item, []
    monkeypatch.setattr(make_module, "_make_item", lambda cfg, job: (calls.append(job), real(cfg, job))[1])
    return calls


def test_mixed_set_files_manifest_and_topology(tmp_path):
    out = tmp_path / "d"
    s = make_dataset(out, family="all", count=12, resolution=32, seed=3, truncation=0.15, n_points=256, progress=False)
    rows = _rows(out)
    assert len(rows) == 12 and s["count"] == 12
    counts = {n: sum(r["family"] == n for r in rows) for n in FAMILY_NAMES}
    assert sorted(counts.values()) == [1] * 8 + [2] * 2  # balanced: 12 over 10 families
    for r in rows:
        assert r["label"] == FAMILY_NAMES.index(r["family"])
        assert r["betti_declared"] == list(FAMILIES[r["family"]].betti) == r["betti_measured"]
        assert r["split"] in ("train", "val", "test")
        grid = np.load(out / r["grid"])
        assert grid.shape == (32, 32, 32) and grid.dtype == np.float32
        assert grid.min() >= -0.15 and grid.max() <= 0.15  # truncated
        assert topology(grid).betti == tuple(r["betti_declared"])  # truncation keeps the sign
        with np.load(out / r["points"]) as z:
            assert z["points"].shape == (256, 3) and z["normals"].shape == (256, 3) and z["points"].dtype == np.float32
        # the stored parameters reproduce the stored grid
        sdf = FAMILIES[r["family"]].sdf(np.stack(np.meshgrid(*[np.linspace(-1, 1, 32)] * 3, indexing="ij"), -1).reshape(-1, 3), r["params"])
        np.testing.assert_allclose(np.clip(sdf, -0.15, 0.15).reshape(grid.shape), grid, atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["redraws"]) == set(FAMILY_NAMES) and summary["truncation"] == 0.15


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = make_dataset(tmp_path / "a", family="all", count=10, resolution=32, seed=11, n_points=128, progress=False)
    b = make_dataset(tmp_path / "b", family="all", count=10, resolution=32, seed=11, n_points=128, progress=False)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa == fb and len(fa) == 2 * 10 + 2
    make_dataset(tmp_path / "c", family="all", count=10, resolution=32, seed=12, n_points=128, progress=False)
    fc = _files(tmp_path / "c")
    assert fc["grids/torus-00000.npy"] != fa["grids/torus-00000.npy"]
    assert a["redraws"] == b["redraws"]


def test_worker_processes_write_the_same_files_and_resume_a_stopped_run(tmp_path, monkeypatch):
    """--workers 2 writes the same files as one process, here resuming a run stopped after 2 shapes:
    the pool makes the other 10, and the parent alone records each in the progress file as it comes back."""
    from weightspace.runtime.resume import ProgressFile

    one = make_dataset(tmp_path / "a", family="all", count=12, resolution=16, seed=3, n_points=64, progress=False)
    _stop_after(monkeypatch, 2, lambda: make_dataset(tmp_path / "b", family="all", count=12, resolution=16, seed=3, n_points=64,
                                                      progress=False))
    recorded, add = [], ProgressFile.add
    monkeypatch.setattr(ProgressFile, "add", lambda self, row: (recorded.append(row["id"]), add(self, row))[1])
    two = make_dataset(tmp_path / "b", family="all", count=12, resolution=16, seed=3, n_points=64, progress=False, workers=2,
                       log=lambda line: None)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert one["redraws"] == two["redraws"] and one["split"] == two["split"] and two["resumed"] == 2
    assert recorded == [r["id"] for r in _rows(tmp_path / "a")][2:]


def test_items_do_not_depend_on_the_other_families(tmp_path):
    make_dataset(tmp_path / "all", family="all", count=10, resolution=32, seed=5, n_points=64, progress=False)
    make_dataset(tmp_path / "one", family="mug", count=1, resolution=32, seed=5, n_points=64, progress=False)
    for i in range(1):
        name = f"grids/mug-{i:05d}.npy"
        assert (tmp_path / "all" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_split_is_stratified_and_seeded(tmp_path):
    make_dataset(tmp_path / "d", family="torus", count=20, resolution=32, seed=0, n_points=32, progress=False)
    splits = [r["split"] for r in _rows(tmp_path / "d")]
    assert splits.count("train") == 16 and splits.count("val") == 2 and splits.count("test") == 2
    assert splits != sorted(splits, key=("train", "val", "test").index)  # shuffled, not in blocks


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(family="teapot"), "valid families"),
        (dict(count=0), "--count"),
        (dict(truncation=0.0), "--truncation"),
        (dict(split=(0.5, 0.1, 0.1)), "--split"),
        (dict(resolution=8), "--resolution must be at least 16"),
        (dict(workers=0), "--workers"),
        (dict(family="all", count=8), "pair, scatter would get no shapes; ask for --count 10"),
        (dict(family="torus,pair", count=1), "pair would get no shapes; ask for --count 2"),
    ],
)
def test_bad_options_name_the_option(tmp_path, kwargs, match):
    with pytest.raises(InputError, match=match):
        make_dataset(tmp_path / "d", **{**dict(family="torus", count=2, n_points=16, progress=False), **kwargs})
    assert not (tmp_path / "d").exists()  # refused before anything is written


def test_refuses_to_overwrite_without_the_flag(tmp_path):
    make_dataset(tmp_path / "d", family="torus", count=1, n_points=16, progress=False)
    with pytest.raises(InputError, match="--overwrite"):
        make_dataset(tmp_path / "d", family="torus", count=1, n_points=16, progress=False)
    make_dataset(tmp_path / "d", family="torus", count=1, n_points=16, progress=False, overwrite=True)


def test_an_interrupted_overwrite_leaves_no_dataset_and_a_finished_one_no_old_files(tmp_path, monkeypatch):
    """--overwrite killed part-way used to leave the earlier manifest over a mix of old and new grids (another
    resolution, even), which every later command read as the earlier dataset. Now the earlier manifest and
    summary go first, and a finished overwrite removes the earlier shapes it did not rewrite."""
    from weightspace.data import make as make_module
    from weightspace.data.dataset import read_shapes

    out = tmp_path / "d"
    make_dataset(out, family="torus,pair", count=6, resolution=32, n_points=16, progress=False)
    (out / "notes.txt").write_text("mine")
    real, calls = make_module._make_item, []

    def dies_on_the_third(cfg, job):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a Ctrl-C (or a kill) between two shapes
        return real(cfg, job)

    monkeypatch.setattr(make_module, "_make_item", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        make_dataset(out, family="torus,pair", count=4, resolution=16, n_points=16, progress=False, overwrite=True)
    assert not (out / "manifest.jsonl").exists() and not (out / "summary.json").exists()
    with pytest.raises(InputError, match="manifest.jsonl: not found"):
        read_shapes(out)
    monkeypatch.setattr(make_module, "_make_item", real)
    make_dataset(out, family="torus,pair", count=4, resolution=16, n_points=16, progress=False)  # no --overwrite needed now
    rows = _rows(out)
    assert len(rows) == 4 and all(np.load(out / r["grid"]).shape == (16, 16, 16) for r in rows)
    make_dataset(out, family="torus", count=1, resolution=16, n_points=16, progress=False, overwrite=True)
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["torus-00000.npy"]
    assert sorted(p.name for p in (out / "points").iterdir()) == ["torus-00000.npz"]
    assert (out / "notes.txt").read_text() == "mine"


def test_a_stopped_run_is_resumed_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    """A rerun after a kill used to make every shape again. Now it takes up the shapes the stopped run
    recorded and makes only the rest; manifest, summary and every file are byte for byte an
    uninterrupted run's, and the progress file is gone."""
    kw = dict(family="torus,pair,mug", count=9, resolution=16, seed=2, n_points=32, progress=False)
    make_dataset(tmp_path / "a", **kw)
    _stop_after(monkeypatch, 4, lambda: make_dataset(tmp_path / "b", **kw))
    assert (tmp_path / "b" / ".progress.jsonl").is_file() and not (tmp_path / "b" / "manifest.jsonl").exists()
    assert folder_kind(tmp_path / "b") == "data"  # still data make's own folder, which no other command takes
    with pytest.raises(InputError, match="holds a shape dataset"):
        check_out_folder(tmp_path / "b", "decode")
    with pytest.raises(InputError, match="was stopped before it finished; run the same command again"):
        read_shapes(tmp_path / "b")
    made, said = _counting(monkeypatch), []
    s = make_dataset(tmp_path / "b", **kw, log=said.append)
    assert len(made) == 5 and s["resumed"] == 4 and said == [f"resuming: 4 of 9 shapes already made in {tmp_path / 'b'}"]
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_a_torn_last_progress_line_is_made_again(tmp_path, monkeypatch):
    """A kill while a row is being appended leaves half a line: that shape is made again, the rest are taken up."""
    kw = dict(family="torus,pair", count=6, resolution=16, seed=4, n_points=32, progress=False)
    make_dataset(tmp_path / "a", **kw)
    _stop_after(monkeypatch, 3, lambda: make_dataset(tmp_path / "b", **kw))
    progress = tmp_path / "b" / ".progress.jsonl"
    text = progress.read_text()
    progress.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # the third row cut in half
    (tmp_path / "b" / "grids" / "torus-00000.npy").write_bytes(b"\x93NUMPY")  # and a damaged grid
    made, said = _counting(monkeypatch), []
    make_dataset(tmp_path / "b", **kw, log=said.append)
    assert sorted(made) == [("pair", 0), ("pair", 1), ("pair", 2), ("torus", 0), ("torus", 2)]
    assert said == [f"resuming: 1 of 6 shapes already made in {tmp_path / 'b'}; 1 recorded are done again "
                    f"(a file missing, damaged or changed since)"]
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_other_settings_start_afresh_and_leave_no_earlier_shape(tmp_path, monkeypatch):
    """A rerun with other settings takes up no row (its shapes would not be this run's) and says why; the
    stopped run's shapes that the new one does not rewrite are removed. So is a finished dataset's progress
    file replaced with --overwrite."""
    kw = dict(family="torus,pair", count=6, resolution=16, seed=4, n_points=32, progress=False)
    _stop_after(monkeypatch, 4, lambda: make_dataset(tmp_path / "b", **kw))
    made, said = _counting(monkeypatch), []
    make_dataset(tmp_path / "b", **{**kw, "count": 2, "n_points": 16}, log=said.append)
    assert len(made) == 2 and len(said) == 1
    assert said[0].startswith(f"not resuming the unfinished run in {tmp_path / 'b'}: it had other settings (")
    assert "n_points 32, now 16" in said[0] and "starting afresh" in said[0]
    make_dataset(tmp_path / "a", **{**kw, "count": 2, "n_points": 16})
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    # a finished dataset replaced with --overwrite starts afresh too, whatever progress file is left beside it
    (tmp_path / "b" / ".progress.jsonl").write_text((tmp_path / "b" / "manifest.jsonl").read_text())
    made.clear()
    make_dataset(tmp_path / "b", **{**kw, "count": 2, "n_points": 16}, overwrite=True, log=said.append)
    assert len(made) == 2 and len(said) == 1 and _files(tmp_path / "a") == _files(tmp_path / "b")


def test_cli_make_and_families(tmp_path):
    _register()
    runner = CliRunner()
    r = runner.invoke(app, ["data", "families", "--json"])
    assert r.exit_code == 0
    listed = json.loads(r.output)
    assert [f["name"] for f in listed] == FAMILY_NAMES and listed[3]["betti"] == list(FAMILIES[FAMILY_NAMES[3]].betti)
    r = runner.invoke(app, ["data", "make", "--family", "shell", "--count", "2", "--points", "32", "--seed", "1", "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert "wrote 2 shapes" in r.output and len(_rows(tmp_path / "d")) == 2
    for cmd in ("families", "make", "import", "observe"):
        help_text = runner.invoke(app, ["data", cmd, "--help"]).output
        assert "Example:" in help_text and "weightspace data" in help_text

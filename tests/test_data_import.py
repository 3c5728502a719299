"""`data import`: every supported format from meshes made here, sign methods, and every bad-input case by name."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import trimesh
from typer.testing import CliRunner

from weightspace.analysis.topology import topology
from weightspace.cli import SOME_FAILED, _register, app
from weightspace.data import importer as importer_module
from weightspace.data.grid import MIN_RESOLUTION, grid_points
from weightspace.data.importer import MESH_FORMATS, MeshImportError, import_meshes, load_mesh
from weightspace.runtime.errors import InputError
from weightspace.runtime.executors import spawn_pool
from weightspace.runtime.folders import folder_kind


def _rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def torus() -> trimesh.Trimesh:
    return trimesh.creation.torus(major_radius=3.0, minor_radius=1.0, major_sections=48, minor_sections=24)


@pytest.mark.parametrize("ext", [f.lstrip(".") for f in MESH_FORMATS])
def test_each_format_imports_with_the_right_topology(tmp_path, torus, ext):
    src = tmp_path / f"ring.{ext}"
    torus.copy().apply_translation([5.0, -2.0, 1.0]).export(src)
    s = import_meshes([src], tmp_path / "out", resolution=32, n_points=200, progress=False)
    assert s["imported"] == 1 and s["failed"] == 0
    (row,) = _rows(tmp_path / "out")
    assert row["status"] == "ok" and row["format"] == ext
    assert row["sign_method"] == "pseudonormal" and row["watertight"]
    assert row["betti_measured"] == [1, 1, 0]
    assert row["pose"] == s["pose"] == "as given"  # centred and scaled, never turned: no procedural pose
    # normalisation: world = (v - center) * scale puts the longest side at 2 * (1 - margin)
    np.testing.assert_allclose(row["center"], [5.0, -2.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(row["scale"], 0.9 / 4.0, rtol=1e-5)
    grid = np.load(tmp_path / "out" / row["grid"])
    assert grid.shape == (32, 32, 32) and grid.dtype == np.float32
    with np.load(tmp_path / "out" / row["points"]) as z:
        pts = z["points"]
    assert pts.shape == (200, 3) and np.abs(pts).max() <= 0.9 + 1e-5


def _binvox(path: Path, occupancy: np.ndarray, translate=(0.0, 0.0, 0.0), scale: float = 1.0) -> Path:
    """A binvox file as the binvox tool writes it: x, z, y order, (value, run length) bytes."""
    from trimesh.exchange.binvox import binvox_bytes

    flat = occupancy.transpose(0, 2, 1).ravel().astype(np.uint8)
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    rle = []
    for start, stop in zip(starts, np.r_[starts[1:], flat.size]):
        for k in range(start, stop, 255):
            rle += [flat[start], min(255, stop - k)]
    path.write_bytes(binvox_bytes(np.asarray(rle, np.uint8), occupancy.shape, translate, scale))
    return path


def _voxel_torus(side: int = 40) -> np.ndarray:
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, side)] * 3, indexing="ij")
    return (np.hypot(x, y) - 0.6) ** 2 + (1.5 * z) ** 2 < 0.25**2  # lying flat: its hole along z


def test_a_binvox_occupancy_grid_imports_through_its_surface(tmp_path):
    """ShapeNet ships binvox voxelisations; the import meshes the occupancy and treats it as a mesh, in the
    file's world frame (translate, scale), with the topology of the voxels."""
    occupancy = _voxel_torus()
    src = _binvox(tmp_path / "ring.binvox", occupancy, translate=(10.0, 0.0, 0.0), scale=4.0)
    both = np.zeros((24, 24, 24), bool)
    both[2:8, 2:20, 2:20] = both[14:22, 4:12, 4:12] = True  # two blocks: (2, 0, 0)
    s = import_meshes([src, _binvox(tmp_path / "blocks.binvox", both)], tmp_path / "out", resolution=32, n_points=100,
                      progress=False)
    assert s["imported"] == 2 and s["failed"] == 0
    ring, blocks = _rows(tmp_path / "out")
    assert ring["format"] == "binvox" and ring["watertight"] and ring["betti_measured"] == [1, 1, 0]
    assert blocks["betti_measured"] == [2, 0, 0]
    # binvox's convention: voxel i's centre sits at translate + scale (i + 0.5) / side, the grid spanning
    # [translate, translate + scale]: a grid full of voxels imports with that box as its bounds
    full = import_meshes([_binvox(tmp_path / "full.binvox", np.ones((8, 8, 8), bool), translate=(1.0, 2.0, 3.0), scale=2.0)],
                         tmp_path / "full", resolution=16, n_points=10, progress=False)
    assert full["imported"] == 1
    (box,) = _rows(tmp_path / "full")
    np.testing.assert_allclose(box["center"], [2.0, 3.0, 4.0], atol=1e-6)
    np.testing.assert_allclose(box["scale"], 0.9 / 1.0, rtol=1e-6)  # its side is 2, the file's scale
    # so the ring's centre, at index 19.5 of 40, is at x = 10 + 4 * 20 / 40
    np.testing.assert_allclose(ring["center"], [12.0, 2.0, 2.0], atol=0.05)
    grid = np.load(tmp_path / "out" / ring["grid"])
    assert topology(grid).betti == (1, 1, 0)
    # the ring lies flat in the file's x-y plane, as its occupancy does: thin along z after the import too
    extent = np.ptp(np.argwhere(grid < 0), axis=0)
    assert extent[2] < extent[0] / 2 and extent[2] < extent[1] / 2


def test_bad_binvox_files_are_refused_by_name(tmp_path):
    good = _binvox(tmp_path / "good.binvox", _voxel_torus(16)).read_bytes()
    cases = {
        "cut.binvox": (good[: len(good) - 7], "unreadable", r"needs 4096: the file is truncated"),
        "long.binvox": (good + bytes([1, 200]), "unreadable", r"runs past its header's dim \[16, 16, 16\] \(4096 voxels"),
        "odd.binvox": (good + bytes([1]), "unreadable", r"runs past its header's dim .* data past the grid's end"),
        "huge.binvox": (b"#binvox 1\ndim 100000 100000 100000\ntranslate 0 0 0\nscale 1\ndata\n\x01\xff", "unreadable",
                        r"three equal sides of 2 to 1024 voxels"),
        "text.binvox": (b"hello\n", "unreadable", "not a readable binvox file"),
        "none.binvox": (None, "no-faces", r"no voxel of its 8x8x8 grid is set"),
        # runs covering 16 x 32 x 64 voxels: the header and data agree, but trimesh asserted on a box
        "box.binvox": (b"#binvox 1\ndim 16 32 64\ntranslate 0 0 0\nscale 1\ndata\n" + b"\x00\xff" * 128 + b"\x01\x80",
                       "unreadable", r"three equal sides of 2 to 1024 voxels, got \[16, 32, 64\]"),
        # one voxel: trimesh's voxel size scale / (side - 1) is infinite, and meshing its NaN surface crashed
        "one.binvox": (b"#binvox 1\ndim 1 1 1\ntranslate 0 0 0\nscale 1\ndata\n\x01\x01", "unreadable",
                       r"got \[1, 1, 1\]"),
    }
    for name, (data, code, message) in cases.items():
        path = tmp_path / name
        _binvox(path, np.zeros((8, 8, 8), bool)) if data is None else path.write_bytes(data)
        with pytest.raises(MeshImportError, match=message) as e:
            load_mesh(path)
        assert e.value.code == code and str(path) in str(e.value)


def test_distance_matches_the_analytic_torus(tmp_path, torus):
    torus.export(tmp_path / "t.obj")
    import_meshes([tmp_path / "t.obj"], tmp_path / "o", resolution=32, truncation=0.3, n_points=16, progress=False)
    grid = np.load(tmp_path / "o" / _rows(tmp_path / "o")[0]["grid"])
    p = grid_points(32).reshape(-1, 3).astype(np.float64) / (0.9 / 4.0)  # back to mesh units
    exact = (np.hypot(np.hypot(p[:, 0], p[:, 1]) - 3.0, p[:, 2]) - 1.0) * (0.9 / 4.0)
    exact = np.clip(exact, -0.3, 0.3).reshape(grid.shape)
    assert np.abs(grid - exact).max() < 0.01  # polygonised torus vs the analytic one, world units


def test_open_mesh_uses_the_winding_number_and_scene_is_concatenated(tmp_path):
    ball = trimesh.creation.icosphere(subdivisions=3)
    open_ball = trimesh.Trimesh(ball.vertices, ball.faces[:-3], process=False)  # a small hole
    open_ball.export(tmp_path / "open.ply")
    scene = trimesh.Scene([trimesh.creation.icosphere(radius=0.5), trimesh.creation.box().apply_translation([3, 0, 0])])
    scene.export(tmp_path / "two.glb")
    import_meshes([tmp_path], tmp_path / "o", resolution=32, n_points=16, progress=False)
    rows = {r["id"].split("-", 1)[1]: r for r in _rows(tmp_path / "o")}
    assert rows["open"]["sign_method"] == "fast_winding_number" and not rows["open"]["watertight"]
    assert rows["open"]["betti_measured"] == [1, 0, 0] and rows["open"]["solid"]  # the robust sign still fills the ball
    assert rows["two"]["betti_measured"] == [2, 0, 0]


BAD = {
    "empty": ("empty.obj", b""),
    "unreadable": ("garbage.ply", b"this is not a ply file\n"),
    "no-faces": ("points.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n"),
    "non-finite": ("nan.obj", b"v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n"),
    "zero-extent": ("dot.obj", b"v 1 1 1\nv 1 1 1\nv 1 1 1\nf 1 2 3\n"),
    "bad-face-index": ("bad.off", b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n"),
    "unsupported-format": ("mesh.xyz", b"0 0 0\n"),
}


@pytest.mark.parametrize("code", sorted(BAD))
def test_each_bad_file_gives_its_named_error(tmp_path, code):
    name, content = BAD[code]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MeshImportError) as e:
        load_mesh(tmp_path / name)
    assert e.value.code == code and name in str(e.value)


def test_faces_naming_a_vertex_twice_are_dropped(tmp_path):
    """An OFF sphere with two degenerate faces (STL and CAD exports hold such) is the closed sphere; a file
    whose faces are all degenerate, or all of zero area, holds no triangle."""
    ball = trimesh.creation.icosphere(subdivisions=2)
    faces = np.vstack([ball.faces, [[0, 0, 1], [2, 2, 2]]])  # (F + 2, 3)
    trimesh.Trimesh(ball.vertices, faces, process=False).export(tmp_path / "ball.off")
    mesh = load_mesh(tmp_path / "ball.off")
    assert len(mesh.faces) == len(ball.faces) and mesh.is_watertight
    (tmp_path / "dots.obj").write_bytes(b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 1 2\nf 3 3 3\n")
    (tmp_path / "line.obj").write_bytes(b"v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    for name, why in (("dots.obj", "every face is degenerate"), ("line.obj", "every face has zero area")):
        with pytest.raises(MeshImportError, match=why) as e:
            load_mesh(tmp_path / name)
        assert e.value.code == "no-faces" and name in str(e.value)


def test_bad_obj_face_index_and_missing_file(tmp_path):
    (tmp_path / "bad.obj").write_bytes(b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    with pytest.raises(MeshImportError) as e:
        load_mesh(tmp_path / "bad.obj")
    assert e.value.code == "bad-face-index"
    with pytest.raises(MeshImportError) as e:
        load_mesh(tmp_path / "nowhere.stl")
    assert e.value.code == "not-found"


def test_bad_files_do_not_stop_the_import_and_set_the_exit_status(tmp_path, torus):
    src = tmp_path / "in"
    src.mkdir()
    for name, content in BAD.values():
        (src / name).write_bytes(content)
    torus.export(src / "zz_good.stl")
    paths = [src / name for name, _ in BAD.values()] + [src / "zz_good.stl"]
    _register()
    r = CliRunner().invoke(app, ["data", "import", *map(str, paths), "--resolution", "24", "--points", "16", "--out", str(tmp_path / "o")])
    assert r.exit_code == SOME_FAILED, r.output  # some failed, one imported
    rows = _rows(tmp_path / "o")
    failed = {r["error"] for r in rows if r["status"] == "failed"}
    assert failed == set(BAD)
    assert [r["status"] for r in rows].count("ok") == 1
    for name, _ in BAD.values():
        assert name in r.output  # reported on the console by name
    assert not list((tmp_path / "o").rglob("*.tmp"))  # atomic writes leave no temporaries
    # the ShapeDataset reads the imported shapes and skips the failed rows
    from weightspace.data.dataset import ShapeDataset

    ds = ShapeDataset(tmp_path / "o")
    assert len(ds) == 1 and topology(ds.grids[0]).betti == (1, 1, 0)


def test_exit_status_when_nothing_could_be_read(tmp_path):
    """Every file failed: the CLI's bad-input status (2) with one error line, never a count that collides with it."""
    from weightspace.cli import main

    for name, content in list(BAD.values())[:3]:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(SystemExit) as e:
        main(["data", "import", *(str(tmp_path / n) for n, _ in list(BAD.values())[:3]), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    assert all(r["status"] == "failed" for r in _rows(tmp_path / "o"))  # the manifest still names each failure


def test_resolution_floor_is_the_one_data_make_keeps(tmp_path, torus):
    torus.export(tmp_path / "t.obj")
    with pytest.raises(InputError, match=f"--resolution must be at least {MIN_RESOLUTION} .*got 8"):
        import_meshes([tmp_path / "t.obj"], tmp_path / "o", resolution=8, progress=False)
    assert not (tmp_path / "o").exists()


def test_nothing_imported_is_the_bad_input_status_even_with_a_skip(tmp_path, capsys, monkeypatch):
    """A sheet (skipped as not solid) and three broken files: nothing was imported, so exit 2 with an
    error line, as the help says; and the progress bar counts every file, skipped and failed too."""
    import weightspace.data.importer as importer
    from weightspace.cli import main

    trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], [[0, 1, 2], [1, 3, 2]]).export(tmp_path / "sheet.obj")
    names = ["sheet.obj"]
    for name, content in list(BAD.values())[:3]:
        (tmp_path / name).write_bytes(content)
        names.append(name)
    steps = []

    def counting_track(items, *args, **kwargs):  # advances after each item, as runtime.progress.track does
        for item in items:
            yield item
            steps.append(item)

    monkeypatch.setattr(importer, "track", counting_track)
    with pytest.raises(SystemExit) as e:
        main(["data", "import", *(str(tmp_path / n) for n in names), "--resolution", "16", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: none of the 4 files could be imported: 3 failed, 1 skipped as not solid" in err
    assert len(steps) == 4  # the bar reached 4/4, not 3/4


def _mixed_sources(src, torus):
    """Five files in `src`, in name order: three that import (a torus, a brick, a ball), one that fails
    (a face naming a missing vertex) and one skipped as not solid (a triangle soup)."""
    src.mkdir()
    torus.export(src / "a_ring.stl")
    trimesh.creation.box((2.0, 1.0, 1.0)).export(src / "b_brick.obj")
    (src / "c_broken.obj").write_bytes(b"v 0 0 0\nv 1 0 0\nf 1 2 9\n")
    trimesh.Trimesh(np.random.default_rng(0).uniform(-1, 1, (30, 3)), np.arange(30).reshape(10, 3)).export(src / "d_soup.obj")
    trimesh.creation.icosphere(2, 1.0).export(src / "e_ball.ply")
    return src


def test_worker_processes_write_the_same_bytes(tmp_path, torus):
    """--workers 2 writes every file (grids, points, manifest, summary) byte for byte as one worker,
    and reports the failed and skipped files in the same order."""
    src = _mixed_sources(tmp_path / "in", torus)
    _register()
    outputs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        r = CliRunner().invoke(app, ["data", "import", str(src), "--resolution", "16", "--points", "64",
                                     "--workers", workers, "--out", str(out)])
        assert r.exit_code == SOME_FAILED, r.output
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        # the progress bar (on stderr too) shows elapsed time, which differs between runs
        outputs[workers] = (files, "\n".join(line for line in r.stderr.splitlines() if "━" not in line))
    files, stderr = outputs["1"]
    assert len(files) == 2 * 3 + 2 and outputs["2"] == (files, stderr)
    assert stderr.index("c_broken") < stderr.index("d_soup")  # failures and skips come in file order
    with pytest.raises(InputError, match="--workers"):
        import_meshes([src], tmp_path / "w0", workers=0)


def test_pool_workers_end_silently_at_ctrl_c():
    """Ctrl-C reaches every process of the group: a worker must end at once and silently (the default
    action), not raise KeyboardInterrupt, which printed the traceback of one still importing torch.
    data import, data make and the process executor all take their workers from `spawn_pool`."""
    from weightspace.data import make as make_module
    from weightspace.runtime import executors

    with spawn_pool(1) as pool:
        assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_DFL
    assert importer_module.spawn_pool is make_module.spawn_pool is executors.spawn_pool
    backend = executors.ProcessPoolExecutorBackend(workers=1)
    try:
        assert list(backend.map(signal.getsignal, [signal.SIGINT])) == [signal.SIG_DFL]
    finally:
        backend.close()


def test_a_solid_thinner_than_a_voxel_is_imported_with_a_warning(tmp_path):
    """A closed plate 0.02 thick imports as solid, but no grid sample lands inside it at 16^3: its grid is
    empty, which a training run would take as a shape. It is named in the summary and warned of."""
    src = tmp_path / "m"
    src.mkdir()
    trimesh.creation.box(extents=(1.0, 1.0, 0.02)).export(src / "plate.stl")
    trimesh.creation.box(extents=(1.0, 1.0, 0.6)).export(src / "block.stl")
    _register()
    r = CliRunner().invoke(app, ["data", "import", str(src), "--resolution", "16", "--points", "64", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    rows = {Path(row["source"]).name: row for row in map(json.loads, (tmp_path / "o" / "manifest.jsonl").read_text().splitlines())}
    assert s["imported"] == 2 and s["empty_at_resolution"] == [rows["plate.stl"]["id"]]
    assert rows["block.stl"]["betti_measured"] == [1, 0, 0]
    assert "warning: 1 imported shape(s) have no inside voxel at 16^3" in r.output and rows["plate.stl"]["id"] in r.output


def test_a_stopped_import_is_resumed_and_ends_as_an_uninterrupted_one(tmp_path, torus, monkeypatch):
    """A rerun after a kill used to import every file again. Now it takes up the files the stopped import
    recorded (failed and skipped ones too, reported again in file order), imports again one changed
    since, and ends byte for byte as an uninterrupted import; other options start afresh and say so."""
    src = _mixed_sources(tmp_path / "in", torus)
    real, calls = importer_module._import_one, []

    def counted(cfg, job):
        calls.append(job[1].name)
        if len(calls) == 4 and stop:
            raise KeyboardInterrupt  # as a Ctrl-C (or a kill) after three files
        return real(cfg, job)

    monkeypatch.setattr(importer_module, "_import_one", counted)
    _register()

    def run(out, *options):
        r = CliRunner().invoke(app, ["data", "import", str(src), "--resolution", "16", "--points", "32", *options, "--out", str(out)])
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        return r, files, [line for line in r.stderr.splitlines() if line.startswith(("failed:", "skipped:"))]

    stop = False
    whole, files, reported = run(tmp_path / "a")
    assert whole.exit_code == SOME_FAILED and len(reported) == 2
    stop, calls[:] = True, []
    r, _, _ = run(tmp_path / "b")
    assert r.exit_code == 130 and len((tmp_path / "b" / ".progress.jsonl").read_text().splitlines()) == 1 + 3
    assert folder_kind(tmp_path / "b") == "data"
    stat = (src / "b_brick.obj").stat()
    os.utime(src / "b_brick.obj", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # changed since: imported again
    stop, calls[:] = False, []
    r, resumed, again = run(tmp_path / "b")
    assert calls == ["b_brick.obj", "d_soup.obj", "e_ball.ply"]
    assert f"resuming: 2 of 5 files already imported in {tmp_path / 'b'}; 1 recorded are done again" in r.stderr
    assert r.exit_code == SOME_FAILED and resumed == files and again == reported
    # other options: nothing taken up, and the stopped import's files replaced
    stop, calls[:] = True, []
    run(tmp_path / "c", "--seed", "1")
    stop, calls[:] = False, []
    r, other, _ = run(tmp_path / "c")
    assert len(calls) == 5 and other == files
    assert f"not resuming the unfinished run in {tmp_path / 'c'}: it had other settings (seed 1, now 0)" in r.stderr


def test_a_shapenet_folder_imports_the_mesh_not_its_voxelisations_beside_it(tmp_path, torus):
    """ShapeNet keeps model_normalized.obj with a .solid.binvox and a .surface.binvox beside it: a folder scan
    imports the mesh once; a folder of binvox alone (ShapeNetVox32) and binvox files named outright are imported."""
    model = tmp_path / "shapenet" / "02691156" / "abc" / "models"
    model.mkdir(parents=True)
    torus.export(model / "model_normalized.obj")
    for kind in ("solid", "surface"):
        _binvox(model / f"model_normalized.{kind}.binvox", _voxel_torus(16))
    voxels_only = tmp_path / "shapenet" / "02691156" / "def"
    voxels_only.mkdir()
    _binvox(voxels_only / "model.binvox", _voxel_torus(16))
    said = []
    s = import_meshes([tmp_path / "shapenet"], tmp_path / "out", resolution=16, n_points=50, progress=False, log=said.append)
    assert [Path(r["source"]).name for r in _rows(tmp_path / "out")] == ["model_normalized.obj", "model.binvox"]
    assert s["voxelisations_left_out"] == [str(model / f"model_normalized.{k}.binvox") for k in ("solid", "surface")]
    assert any("left out 2 .binvox file(s)" in line for line in said)
    named = import_meshes([model / "model_normalized.solid.binvox", model], tmp_path / "out2", resolution=16, n_points=50,
                          progress=False, log=said.append)
    assert named["count"] == 2 and named["voxelisations_left_out"] == [str(model / "model_normalized.surface.binvox")]

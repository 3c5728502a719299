"""`weightspace analyze topology | compare` and the file-level Python API behind them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import trimesh
from typer.testing import CliRunner

from weightspace.analysis import shapes as S
from weightspace.analysis.files import analyze_file, compare_files
from weightspace.analysis.geometry import iou
from weightspace.cli import _register, app, main
from weightspace.decode.mesh import grid_to_mesh
from weightspace.runtime.errors import InputError


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("analyze")
    known = S.known_shapes()
    out = {}
    for name in ("torus", "shell", "two_balls"):
        out[name] = d / f"{name}.npy"
        np.save(out[name], S.sdf_grid(known[name][0], 32))
    out["occupancy"] = d / "occupancy.npy"
    np.save(out["occupancy"], S.sdf_grid(known["double_torus"][0], 32) < 0)
    out["mesh"] = d / "double_torus.obj"
    grid_to_mesh(S.sdf_grid(known["double_torus"][0], 32)).export(out["mesh"])
    out["bad"] = d / "bad.npy"
    out["bad"].write_text("not an array")
    out["flat"] = d / "flat.npy"
    np.save(out["flat"], np.zeros((4, 4)))
    return out


def _invoke(args: list[str]):
    _register()
    return CliRunner().invoke(app, args)


def test_topology_json(files: dict[str, Path]) -> None:
    paths = [files[k] for k in ("torus", "shell", "two_balls", "occupancy", "mesh")]
    r = _invoke(["analyze", "topology", *map(str, paths), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    got = [(row["b0"], row["b1"], row["b2"], row["euler"], row["genus"]) for row in rows]
    assert got == [(1, 1, 0, 0, 1), (1, 0, 1, 2, 0), (2, 0, 0, 2, 0), (1, 2, 0, -1, 2), (1, 2, 0, -1, 2)]
    assert [row["path"] for row in rows] == [str(p) for p in paths]


def test_topology_table_and_level(files: dict[str, Path]) -> None:
    r = _invoke(["analyze", "topology", str(files["torus"])])
    assert r.exit_code == 0, r.output
    assert re.search(r"grid\s*│\s*1\s*│\s*1\s*│\s*0\s*│\s*0\s*│\s*1\s*│", r.output), r.output
    row = analyze_file(files["torus"], level=0.45)  # hole filled
    assert (row["b0"], row["b1"], row["b2"]) == (1, 0, 0)


def test_compare_json(files: dict[str, Path]) -> None:
    r = _invoke(["analyze", "compare", str(files["occupancy"]), str(files["mesh"]), "--n", "3000", "--json"])
    assert r.exit_code == 0, r.output
    (m,) = json.loads(r.output)
    assert {"chamfer_l1", "chamfer_l2", "hausdorff", "fscore", "normal_consistency"} <= set(m)
    assert m["chamfer_l1"] < 0.05  # occupancy mesh vs SDF mesh of the same double torus
    both = compare_files(files["torus"], files["torus"], n=2000)
    assert both["iou"] == 1.0


def test_compare_never_scores_an_empty_grid_as_a_match(tmp_path: Path) -> None:
    """Nothing solid has no surface: inf distances (null in JSON) and zero scores against the full grid,
    whose surface is the box's boundary (topology (1, 0, 0)); at a level above every value both are the box."""
    empty, full = tmp_path / "empty.npy", tmp_path / "full.npy"
    np.save(empty, np.full((16, 16, 16), 0.2, np.float32))
    np.save(full, np.full((16, 16, 16), -0.2, np.float32))
    _register()
    r = CliRunner().invoke(app, ["analyze", "compare", str(empty), str(full), "--n", "500", "--json"])
    assert r.exit_code == 0, r.output
    (m,) = json.loads(r.stdout)
    assert m["chamfer_l1"] is None and m["hausdorff"] is None
    assert m["fscore"] == m["normal_consistency"] == m["iou"] == 0.0
    assert m["no_surface"] == [str(empty)] and m["solid_everywhere"] == [str(full)]
    assert f"{empty} has no surface" in r.stderr
    both = compare_files(empty, empty, n=100)
    # IoU of two empty grids is geometry.iou's 1.0 (the same empty solid), as member fidelity and evaluation
    # report it; compare said NaN for the same pair. The surface metrics have no surface to sample.
    assert np.isnan(both["chamfer_l1"]) and both["fscore"] == 0.0 and both["iou"] == 1.0 == iou(np.load(empty), np.load(empty))
    r = CliRunner().invoke(app, ["analyze", "compare", str(empty), str(empty), "--n", "100", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["iou"] == 1.0 and "IoU 1: the other is empty too" in r.stderr
    high = compare_files(empty, full, n=500, level=5.0)
    assert high["no_surface"] == [] and high["solid_everywhere"] == [str(empty), str(full)] and high["iou"] == 1.0


def test_bad_files_name_the_file(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    for key, msg in (("bad", "not a .npy array"), ("flat", "3D")):
        with pytest.raises(InputError, match=msg) as e:
            analyze_file(files[key])
        assert str(files[key]) in str(e.value)
    zero = files["bad"].with_name("zero_size.npy")
    np.save(zero, np.zeros((0, 4, 4), np.float32))  # 3-D, but no samples: not "must be 3D"
    with pytest.raises(InputError, match=r"grid is empty, shape \(0, 4, 4\)"):
        analyze_file(zero)
    txt = files["bad"].with_suffix(".txt")
    txt.write_text("hello")
    with pytest.raises(InputError, match="unsupported file type"):
        analyze_file(txt)
    missing = files["torus"].parent / "missing.npy"
    with pytest.raises(SystemExit) as ex:
        main(["analyze", "topology", str(missing)])
    assert ex.value.code == 2
    assert "missing.npy" in capsys.readouterr().err


def test_topology_measures_the_good_files_when_one_fails(files: dict[str, Path], tmp_path: Path) -> None:
    """One bad file is named on stderr with its reason (and an "error" entry in --json); the others are still printed; exit 2."""
    empty = tmp_path / "empty.obj"
    empty.write_bytes(b"")
    paths = [files["torus"], empty, files["two_balls"]]
    r = _invoke(["analyze", "topology", *map(str, paths), "--json"])
    assert r.exit_code == 2
    rows = json.loads(r.stdout)
    assert [row["path"] for row in rows] == [str(p) for p in paths]
    assert [(row["b0"], row["b1"], row["b2"]) for row in rows] == [(1, 1, 0), (None, None, None), (2, 0, 0)]
    assert "error" not in rows[0] and rows[1]["error"] == f"{empty}: empty file"
    assert r.stderr.strip() == f"error: {empty}: empty file"
    _register()  # a terminal wide enough for the paths: at 80 columns rich wraps a long temporary path mid-name
    table = CliRunner().invoke(app, ["analyze", "topology", *map(str, paths)], env={"COLUMNS": "300"})
    assert table.exit_code == 2 and "balls.npy" in table.stdout and "empty.obj" in table.stderr


def test_topology_of_a_folder_and_of_an_empty_mesh(files: dict[str, Path], tmp_path: Path) -> None:
    """A folder stands for its shape files; a mesh file with no vertices and no faces (what generate writes
    for an empty decode) is the empty shape, as an all-positive grid is; vertices without faces stay refused."""
    nothing = grid_to_mesh(np.full((8, 8, 8), 0.5, np.float32))  # (0, 3) vertices and faces
    folder = tmp_path / "gen"
    (folder / "meshes").mkdir(parents=True)
    for fmt in ("ply", "obj", "glb"):
        nothing.export(folder / "meshes" / f"empty.{fmt}", file_type=fmt)
    np.save(folder / "all_positive.npy", np.full((8, 8, 8), 0.5, np.float32))
    (folder / "notes.txt").write_text("not a shape")
    r = _invoke(["analyze", "topology", str(folder), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [Path(row["path"]).name for row in rows] == ["all_positive.npy", "empty.glb", "empty.obj", "empty.ply"]
    assert all((row["b0"], row["b1"], row["b2"], row["empty"]) == (0, 0, 0, True) for row in rows)
    assert "empty (no surface)" in _invoke(["analyze", "topology", str(folder / "meshes" / "empty.ply")]).stdout
    assert analyze_file(files["mesh"])["empty"] is False
    points = tmp_path / "points.obj"
    points.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    (tmp_path / "none").mkdir()
    r = _invoke(["analyze", "topology", str(points), str(tmp_path / "none"), "--json"])
    assert r.exit_code == 2
    assert [row["error"] for row in json.loads(r.stdout)] == [
        f"{points}: no triangle faces (read a PointCloud, not a triangle mesh)",
        f"{tmp_path / 'none'}: a directory holding no grid (.npy) or mesh (.obj .ply .stl .off .glb .gltf) files",
    ]
    with pytest.raises(InputError, match="is a directory"):
        compare_files(folder, files["torus"])


def test_topology_of_overlapping_parts_is_not_guessed(tmp_path: Path) -> None:
    """A mesh of two overlapping closed spheres is one ball, which its surfaces do not tell: no Betti numbers, a note."""
    a, b = trimesh.creation.icosphere(2, radius=0.5), trimesh.creation.icosphere(2, radius=0.5)
    b.apply_translation([0.4, 0.0, 0.0])
    path = tmp_path / "overlap.obj"
    trimesh.util.concatenate([a, b]).export(path)
    row = analyze_file(path)
    assert (row["b0"], row["b1"], row["b2"], row["watertight"], row["crossing"]) == (None, None, None, True, 1)
    r = _invoke(["analyze", "topology", str(path)])
    assert r.exit_code == 0 and "surfaces cross" in r.stdout, r.output


def test_compare_names_a_grid_it_cannot_mesh(files: dict[str, Path], tmp_path: Path) -> None:
    """A 1^3 grid (it divided by R - 1 = 0: an internal error) and a grid with infinities (an error naming no file)."""
    one, infinite = tmp_path / "one.npy", tmp_path / "infinite.npy"
    np.save(one, np.full((1, 1, 1), -1.0, np.float32))
    np.save(infinite, np.where(S.sdf_grid(S.known_shapes()["torus"][0], 16) < 0, -np.inf, np.inf).astype(np.float32))
    assert analyze_file(infinite)["b1"] == 1  # topology reads the sign only
    for path, why in ((one, "R >= 2"), (infinite, "infinite values")):
        with pytest.raises(InputError, match=why) as e:
            compare_files(path, files["torus"])
        assert str(e.value).startswith(f"{path}: ")


def test_a_folder_scan_skips_the_point_arrays_weightspace_writes(files: dict[str, Path], tmp_path: Path) -> None:
    """Observations (N, n, 3) were measured as a grid (b1 in the hundreds), a dataset's 4-D cache and
    generate's condition points (P, 3) failed the scan (exit 2); only the shapes are measured."""
    folder = tmp_path / "run"
    (folder / "grids").mkdir(parents=True)
    (folder / ".cache").mkdir()
    np.save(folder / "grids" / "torus.npy", np.load(files["torus"]))
    rng = np.random.default_rng(0)
    np.save(folder / "observations.npy", rng.uniform(-1, 1, (4, 64, 3)).astype(np.float32))
    np.save(folder / "condition_points.npy", rng.uniform(-1, 1, (64, 3)).astype(np.float32))
    np.save(folder / ".cache" / "grids-all-0123.npy", np.zeros((2, 8, 8, 8), np.float32))
    r = _invoke(["analyze", "topology", str(folder), "--json"])
    assert r.exit_code == 0, r.output
    assert [(Path(row["path"]).name, row["b1"]) for row in json.loads(r.stdout)] == [("torus.npy", 1)]


def test_compare_says_why_two_grids_get_no_iou(files: dict[str, Path], tmp_path: Path) -> None:
    """Two grids of different resolution have no voxel-by-voxel IoU: it was left out of the table without a word."""
    known = S.known_shapes()
    np.save(tmp_path / "torus16.npy", S.sdf_grid(known["torus"][0], 16))
    r = _invoke(["analyze", "compare", str(files["torus"]), str(tmp_path / "torus16.npy"), "--n", "2000", "--json"])
    assert r.exit_code == 0, r.output
    assert "no IoU: the two grids differ in resolution" in r.output
    r = _invoke(["analyze", "compare", str(files["torus"]), str(files["torus"]), "--n", "2000", "--json"])
    assert "no IoU" not in r.output


def test_occupancy_saved_as_numbers_is_read_as_occupancy(files: dict[str, Path], tmp_path: Path) -> None:
    """A 0/1 grid saved as uint8 or float32 (what voxelisers write) measured as an SDF was empty: nothing is
    below level 0. It is the occupancy its bool twin is; a float grid of one value stays a distance."""
    solid = np.load(files["occupancy"])  # bool double torus: (1, 2, 0)
    for dtype in (np.uint8, np.int64, np.float32):
        path = tmp_path / f"occ_{np.dtype(dtype).name}.npy"
        np.save(path, solid.astype(dtype))
        row = analyze_file(path)
        assert (row["b0"], row["b1"], row["b2"]) == (1, 2, 0) and not row["empty"], dtype
        assert compare_files(path, files["occupancy"], n=500)["iou"] == 1.0
    far = tmp_path / "far.npy"
    np.save(far, np.ones((8, 8, 8), np.float32))  # a truncated SDF of nothing, not a full box
    assert analyze_file(far)["empty"]
    np.save(far, np.ones((8, 8, 8), np.uint8))  # integers of 0 and 1 alone: occupancy, full
    assert (analyze_file(far)["b0"], analyze_file(far)["empty"]) == (1, False)
    mask = tmp_path / "mask.npy"  # a mask saved as an image saves it: 0 and 255
    np.save(mask, solid.astype(np.uint8) * 255)
    assert (analyze_file(mask)["b0"], analyze_file(mask)["b1"]) == (1, 2)
    np.save(mask, np.arange(512, dtype=np.int16).reshape(8, 8, 8) - 100)  # integers of many values: distances
    assert analyze_file(mask)["b0"] == 1 and not analyze_file(mask)["empty"]


def test_binvox_files_are_measured_as_occupancy(files: dict[str, Path], tmp_path: Path) -> None:
    from trimesh.exchange.binvox import export_binvox
    from trimesh.voxel import VoxelGrid

    solid = np.load(files["occupancy"])
    path = tmp_path / "double_torus.binvox"
    path.write_bytes(export_binvox(VoxelGrid(solid)))
    r = _invoke(["analyze", "topology", str(path), "--json"])
    assert r.exit_code == 0, r.output
    assert [(row["b0"], row["b1"], row["b2"]) for row in json.loads(r.output)] == [(1, 2, 0)]
    assert compare_files(path, files["occupancy"], n=500)["iou"] == 1.0
    path.write_bytes(path.read_bytes()[:-9])
    with pytest.raises(InputError, match=r"binvox data holds .* the file is truncated") as e:
        analyze_file(path)
    assert str(path) in str(e.value)


def test_grid_volumes_say_their_units(tmp_path: Path) -> None:
    """A cube grid's volumes are world units of the [-1, 1]^3 box it samples; any other grid's count voxels, and
    the table says so (a 'max vol 24' beside 'max vol 0.19' read as the same unit)."""
    slab = np.zeros((8, 8, 4), bool)
    slab[2:5, 2:6, 1:3] = True
    np.save(tmp_path / "slab.npy", slab)
    cube = np.zeros((8, 8, 8), bool)
    cube[2:5, 2:6, 1:3] = True
    np.save(tmp_path / "cube.npy", cube)
    rows = {Path(r["path"]).stem: r for r in json.loads(_invoke(["analyze", "topology", str(tmp_path), "--json"]).output)}
    assert rows["slab"]["volume_units"] == "voxels" and rows["slab"]["component_volumes"] == [24.0]
    assert rows["cube"]["volume_units"].startswith("world")
    _register()
    table = CliRunner().invoke(app, ["analyze", "topology", str(tmp_path / "slab.npy")], env={"COLUMNS": "200"})
    assert "max vol 24 voxels" in table.output


def test_compare_places_a_binvox_file_in_its_own_frame(tmp_path: Path) -> None:
    """A .binvox file says where its voxels sit (translate, scale), as a mesh file does: the voxelisation of a
    sphere of radius 0.3 compared with that sphere is close. It was meshed into the [-1, 1]^3 box instead
    (Chamfer-L1 0.73, F-score 0), while data import read the same file in its frame."""
    from trimesh.exchange.binvox import export_binvox

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.3)
    sphere.export(tmp_path / "sphere.ply")
    (tmp_path / "sphere.binvox").write_bytes(export_binvox(sphere.voxelized(pitch=0.02).fill()))
    m = compare_files(tmp_path / "sphere.binvox", tmp_path / "sphere.ply", n=2000)
    assert m["chamfer_l1"] < 0.02 and m["fscore"] > 0.5

"""Shared study pieces: measurements of known solids, the eikonal residual, strict JSON and CSV tables."""

import json

import numpy as np
import pytest

from weightspace.analysis.measure import eikonal_residual, geometry, measure
from weightspace.data.grid import grid_points
from weightspace.runtime.errors import InputError
from weightspace.runtime.results import read_results, write_csv, write_results


def _ball(radius=0.5, R=24, scale=1.0, truncation=0.2, center=(0.0, 0.0, 0.0)):
    x = grid_points(R).reshape(-1, 3)
    d = scale * (np.linalg.norm(x - np.asarray(center), axis=1) - radius)
    return np.clip(d, -truncation, truncation).reshape(R, R, R).astype(np.float32)


def test_ball_is_one_valid_component_with_unit_gradient():
    s = measure(_ball())
    assert s.betti == (1, 0, 0) and s.robust == (1, 0, 0) and s.valid and not s.empty
    assert abs(s.volume - 4 / 3 * np.pi * 0.5**3) < 0.05
    assert s.eikonal < 0.05


def test_eikonal_residual_sees_a_field_that_is_not_a_distance():
    assert eikonal_residual(_ball(scale=0.3)) > 0.5
    assert eikonal_residual(_ball(truncation=0.1)) < 0.05  # truncation alone is not penalised


def test_empty_and_box_cut_grids_are_invalid():
    empty = measure(np.full((16, 16, 16), 0.2, dtype=np.float32))
    assert empty.empty and not empty.valid and empty.betti == (0, 0, 0)
    cut = measure(_ball(radius=0.6, center=(0.8, 0.0, 0.0), R=16))
    assert cut.touches_box and not cut.valid
    g = geometry(None, measure(_ball()).points)
    assert g["chamfer_l1"] == float("inf") and g["fscore"] == 0.0


def test_results_are_strict_json_and_csv_has_union_of_columns(tmp_path):
    write_results(tmp_path, {"a": float("nan"), "b": [1.0, float("inf")], "c": np.int64(3)})
    assert json.loads((tmp_path / "results.json").read_text()) == {"a": None, "b": [1.0, None], "c": 3}
    write_csv(tmp_path / "t.csv", [{"x": 1, "y": [1, 2]}, {"x": 2, "z": 0.5}])
    assert (tmp_path / "t.csv").read_text().splitlines() == ["x,y,z", "1,1 2,", "2,,0.5"]
    assert read_results(tmp_path / "results.json") == {"a": None, "b": [1.0, None], "c": 3}


def test_a_results_json_with_nan_or_infinity_is_refused_naming_the_field(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"a": 1.0, "summary": {"all": {"rates": [0.5, -Infinity]}}}')
    with pytest.raises(InputError, match=r"results\.json: summary\.all\.rates\[1\]: -Infinity is not a finite number"):
        read_results(path)
    path.write_text('{"a": NaN}')
    with pytest.raises(InputError, match=r"results\.json: a: NaN"):
        read_results(path)
    path.write_text('{"a": 1e999}')  # out of a double's range: json reads it as inf
    with pytest.raises(InputError, match=r"results\.json: a: Infinity"):
        read_results(path)
    # the one-line summary (make demo, the CLI) reads results the same way
    from weightspace.experiments.summary import summarize

    (tmp_path / "config.json").write_text('{"study": "FitConfig"}')
    path.write_text('{"generator": "toy", "table": [{"method": "encode", "chamfer_l1": NaN}]}')
    with pytest.raises(InputError, match=r"table\[0\]\.chamfer_l1: NaN"):
        summarize(tmp_path)


def test_a_results_folder_with_another_run_is_refused_replaced_or_resumed(tmp_path):
    import dataclasses

    import pytest

    from weightspace.experiments.common import record_config, start_results
    from weightspace.runtime.errors import InputError

    @dataclasses.dataclass
    class PathStudy:
        out: str
        a: str = "torus"
        workers: int = 1

    out = tmp_path / "i"
    start_results(out, PathStudy(str(out)))
    write_results(out, {"transitions": 1})
    (out / "meshes").mkdir()
    (out / "meshes" / "t0.5.ply").write_text("old")
    # the same settings (runtime fields aside) go on in the folder: a rerun or a resume
    start_results(out, PathStudy(str(out), workers=4))
    assert (out / "meshes" / "t0.5.ply").is_file()
    before = (out / "config.json").read_bytes()
    # other settings: refused, and nothing in the folder changes
    with pytest.raises(InputError, match=r"other settings \(a 'torus' -> 'pair'\).*--overwrite"):
        start_results(out, PathStudy(str(out), a="pair"))
    assert json.loads((out / "config.json").read_bytes()) == json.loads(before)
    assert json.loads((out / "results.json").read_text())["transitions"] == 1
    # --overwrite replaces it: none of the earlier run's outputs stay beside the new ones, a file of the user's does
    (out / "notes.txt").write_text("mine")
    start_results(out, PathStudy(str(out), a="pair"), overwrite=True, outputs=("meshes", "steps.csv"))
    assert not (out / "meshes").exists() and not (out / "results.json").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["a"] == "pair"
    # a refused run is replaced without asking
    write_results(out, {"refused": "endpoint decodes empty"})
    start_results(out, PathStudy(str(out), a="mug"))
    assert json.loads((out / "config.json").read_text())["a"] == "mug"
    # a run that stopped on bad input after writing its config.json (an unknown family) wrote nothing else:
    # the corrected command runs there instead of being refused as a run with other settings
    bare = tmp_path / "bare"
    start_results(bare, PathStudy(str(bare), a="donut"))
    start_results(bare, PathStudy(str(bare), a="torus"))
    assert json.loads((bare / "config.json").read_text())["a"] == "torus"
    # another study's folder is never taken over
    @dataclasses.dataclass
    class OtherStudy:
        out: str

    with pytest.raises(InputError, match="holds a PathStudy run, not a OtherStudy run"):
        start_results(out, OtherStudy(str(out)), overwrite=True)
    # a study that resumes item by item goes on and records its config only when it finishes
    write_results(out, {"transitions": 2})
    start_results(out, PathStudy(str(out), a="cup"), settings_may_differ=True)
    assert json.loads((out / "config.json").read_text())["a"] == "mug"
    record_config(out, PathStudy(str(out), a="cup"))
    assert json.loads((out / "config.json").read_text())["a"] == "cup"


def test_a_full_grid_is_not_measured_as_the_same_shape_as_an_empty_one():
    """A grid solid everywhere is the solid box (its surface the box's boundary, as `analyze compare` takes it),
    not a shape without a surface: full and empty both had no points, and geometry() scored them identical
    (Chamfer 0, F-score 1), so a path jumping from an exploded decode to an empty one showed no jump."""
    full, empty = measure(np.full((16, 16, 16), -0.2, dtype=np.float32)), measure(np.full((16, 16, 16), 0.2, dtype=np.float32))
    assert not full.empty and not full.valid and full.touches_box and empty.empty
    assert np.abs(full.points).max(axis=1).min() > 0.99  # on the box's boundary
    g = geometry(full.points, empty.points)
    assert g["chamfer_l1"] == float("inf") and g["fscore"] == 0.0

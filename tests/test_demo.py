"""The demo's first stage: shapes of every family, measured, with a report."""

import json

from rich.console import Console

from weightspace.data.families import FAMILY_NAMES
from weightspace.report.demo import DemoConfig, run_demo


def test_demo_shapes_stage_measures_every_family_and_writes_a_report(tmp_path):
    summary = run_demo(DemoConfig(out=tmp_path, per_family=1, resolution=24, studies=False), Console(quiet=True))
    assert summary["shapes"]["count"] == len(FAMILY_NAMES)
    assert summary["shapes"]["matched"] == len(FAMILY_NAMES)  # every made shape has its declared topology
    numbers = json.loads((tmp_path / "results.json").read_text())
    assert numbers["schema"] == "weightspace-demo/1" and numbers["generators"] == {}  # no studies run here
    assert numbers["shapes"]["count"] == len(FAMILY_NAMES)
    page = (tmp_path / "report.html").read_text()
    assert "shapes.csv" in page and "torus" in page and "(1, 1, 0)" in page
    assert (tmp_path / "renders" / "families.png").is_file()


def test_demo_sets_aside_studies_of_a_replaced_checkpoint_and_the_report_skips_them(tmp_path):
    """`make demo` after the shipped weights changed must not resume (and be refused by) studies built on the
    old weights: they move to `.previous/`, nothing is deleted, and a page made of the folder ignores them."""
    from weightspace.report.demo import set_aside_stale_studies
    from weightspace.report.html import discover

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"weights_hash": "aaaa"}))
    out = tmp_path / "demo" / "default"
    quiet = Console(quiet=True)
    assert set_aside_stale_studies(out, ckpt, quiet) is None  # a first demo: nothing to move
    (out / "subspace").mkdir()
    (out / "subspace" / "results.json").write_text("{}")
    assert set_aside_stale_studies(out, ckpt, quiet) is None  # same weights: the studies stay and resume
    assert (out / "subspace" / "results.json").is_file()

    (ckpt / "config.json").write_text(json.dumps({"weights_hash": "bbbb"}))
    moved = set_aside_stale_studies(out, ckpt, quiet)
    assert moved == tmp_path / "demo" / ".previous" / "default-aaaa"
    assert (moved / "subspace" / "results.json").is_file() and not (out / "subspace").exists()
    assert (out / "weights_hash.txt").read_text().strip() == "bbbb"

    (moved / "subspace" / "config.json").write_text('{"study": "SubspaceConfig"}')  # a study folder as the report sees one
    (out / "subspace").mkdir()
    (out / "subspace" / "results.json").write_text("{}")
    (out / "subspace" / "config.json").write_text('{"study": "SubspaceConfig"}')
    assert discover([tmp_path / "demo"]) == [out / "subspace"]

    legacy = tmp_path / "demo" / "default-field"  # a folder from before the stamp: moved too, never deleted
    (legacy / "fit").mkdir(parents=True)
    assert set_aside_stale_studies(legacy, ckpt, quiet).name == "default-field-unstamped"


def test_a_refused_study_leaves_its_generator_kind_unknown_not_a_question_mark(tmp_path):
    """A study refused before it loaded the generator names no kind: the demo's numbers say null
    (docs/results.md), and a study of the same checkpoint that did run gives the kind."""
    from weightspace.report.demo import demo_numbers

    cell = tmp_path / "default-64" / "subspace"
    cell.mkdir(parents=True)
    (cell / "config.json").write_text(json.dumps({"study": "SubspaceConfig", "checkpoint": "default-64"}))
    (cell / "results.json").write_text(json.dumps({"checkpoint": "default-64", "refused": "no cell ran"}))
    numbers = demo_numbers(tmp_path, shapes={}, seconds=1.0, notes={}, skipped={})
    assert numbers["generators"]["default-64"]["kind"] is None
    assert numbers["generators"]["default-64"]["subspace"]["verdict"] == "refused"


def test_a_rerun_reuses_a_finished_study_with_its_refusals_and_fresh_measures_again(tmp_path, monkeypatch):
    """`make demo` twice: the second run reuses the interpolation it finished (same weights, settings and
    version; the study does not resume, so rerunning it was most of a rerun's time), with the note of the
    family endpoints refused before it; --fresh, other settings, or a run that never finished measure again."""
    from dataclasses import dataclass

    import weightspace.experiments
    import weightspace.report.demo
    from weightspace.experiments.common import refuse, start_results, write_results
    from weightspace.report.demo import run_in_turn

    monkeypatch.setattr(weightspace.report.demo, "write_report", lambda folder, title: None)  # a toy study has no page
    monkeypatch.setattr(weightspace.experiments, "summarize", lambda folder: "toy")

    @dataclass
    class ToyConfig:
        out: str
        endpoints: str
        overwrite: bool = True

    calls = []

    def run(config):
        calls.append(config.endpoints)
        folder = start_results(config.out, config, overwrite=True)
        if config.endpoints == "family":
            refuse(folder, "toy", "endpoint 'a' is broken")
        write_results(folder, {"checkpoint": "toy", "transitions": []})

    folder = str(tmp_path / "gen" / "interpolate")
    configs = [ToyConfig(folder, "family"), ToyConfig(folder, "data")]
    quiet = Console(quiet=True)
    first = run_in_turn(tmp_path / "gen", "interpolate", run, configs, quiet, label="toy")
    assert calls == ["family", "data"] and first[1] == ["endpoint 'a' is broken"]
    again = run_in_turn(tmp_path / "gen", "interpolate", run, configs, quiet, label="toy")
    assert calls == ["family", "data"] and again == first  # reused, and still says why it fell back
    run_in_turn(tmp_path / "gen", "interpolate", run, configs, quiet, fresh=True, label="toy")
    assert calls == ["family", "data"] * 2
    (tmp_path / "gen" / "interpolate" / "results.json").unlink()  # killed before it finished
    run_in_turn(tmp_path / "gen", "interpolate", run, configs, quiet, label="toy")
    assert calls == ["family", "data"] * 3
    other = [ToyConfig(folder, "family"), ToyConfig(folder, "population")]
    run_in_turn(tmp_path / "gen", "interpolate", run, other, quiet, label="toy")
    assert calls[-2:] == ["family", "population"]

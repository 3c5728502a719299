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

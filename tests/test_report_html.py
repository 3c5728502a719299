"""The HTML report: one self-contained page per results folder."""

import json
import re

import pytest

from weightspace.analysis.shapes import ball, sdf_grid
from weightspace.decode.mesh import grid_to_mesh
from weightspace.report.html import write_report
from weightspace.runtime.errors import InputError


def test_report_has_figures_tables_and_an_interactive_mesh(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"decodes": 23, "summary": {"rate": 0.5}}))
    (tmp_path / "config.json").write_text(json.dumps({"study": "X", "seed": 3}))
    (tmp_path / "steps.csv").write_text("t,b0\n0.0,1\n1.0,2\n")
    grid = sdf_grid(ball(), 24)
    grid_to_mesh(grid).export(tmp_path / "ball.ply")
    page = write_report(tmp_path, title="a study").read_text()
    assert "summary.rate" in page and "0.5" in page and "decodes" in page
    assert "<td>0.0</td><td>1</td>" in page
    assert "Mesh3d" in page or "mesh3d" in page
    # plotly.js is inlined, not fetched: the page works offline
    assert "<script" in page and not re.search(r"<script[^>]+src=", page)


def test_report_of_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        write_report(tmp_path / "nope")

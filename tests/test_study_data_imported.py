"""Studies on an imported folder: rows whose import failed or was skipped are left out, and asking for one says why."""

import json

import pytest
from toy_generator import make_toy_data

from weightspace.experiments.common import left_out_reason, study_data
from weightspace.runtime.errors import InputError


def test_skipped_and_failed_rows_are_left_out_with_their_reason(tmp_path):
    data = make_toy_data(tmp_path / "data", count=2, resolution=8, points=32)
    with open(data / "manifest.jsonl", "a") as f:
        f.write(json.dumps({"id": "soup", "status": "skipped", "error": "not-solid", "reason": "soup.ply: not solid"}) + "\n")
        f.write(json.dumps({"id": "bad", "status": "failed", "error": "parse", "reason": "bad.obj: no faces"}) + "\n")
    root, rows = study_data(tmp_path / "s", data=str(data), families=[], count=1, seed=0, resolution=8)
    assert [r["id"] for r in rows] == ["sphere-000", "torus-001"]
    assert left_out_reason(data, "soup") == "skipped at import: soup.ply: not solid"
    assert left_out_reason(data, "bad") == "failed at import: bad.obj: no faces"
    assert left_out_reason(data, "sphere-000") is None
    with pytest.raises(InputError, match="no shapes of families"):
        study_data(tmp_path / "s", data=str(data), families=["imported"], count=1, seed=0, resolution=8)

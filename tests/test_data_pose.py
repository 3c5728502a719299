"""The aligned pose: the same shapes in their canonical frame with a small jitter, recorded in the manifest."""

import json

import numpy as np
import pytest

from weightspace.data.families import ALIGNED_JITTER, FAMILIES, quaternion_matrix
from weightspace.data.make import make_dataset
from weightspace.runtime.errors import InputError


def _angle(q) -> float:
    """Rotation angle (radians) of a unit quaternion (w, x, y, z)."""
    return 2 * float(np.arccos(min(1.0, abs(q[0]) / np.linalg.norm(q))))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_aligned_keeps_the_shape_and_changes_only_its_pose(name):
    fam = FAMILIES[name]
    rnd = fam.draw(np.random.default_rng(3), "random")
    ali = fam.draw(np.random.default_rng(3), "aligned")
    for key in set(rnd) - {"rotation", "parts"}:
        assert rnd[key] == ali[key], key  # every shape parameter of the same draw is kept
    limit = np.sqrt(3) * ALIGNED_JITTER + 1e-9  # three Euler angles of at most ALIGNED_JITTER each
    assert _angle(ali["rotation"]) <= limit
    if "parts" in ali:
        for a, b in zip(rnd["parts"], ali["parts"]):
            assert a["size"] == b["size"] and a["kind"] == b["kind"]
            assert _angle(b["rotation"]) <= limit
            assert np.isclose(np.linalg.norm(a["center"]), np.linalg.norm(b["center"]))  # moved about the origin only
    if name == "pair":  # the pair's parts lie along x before the jitter
        c = np.asarray(ali["parts"][1]["center"]) - np.asarray(ali["parts"][0]["center"])
        assert np.allclose(c[1:], 0.0, atol=1e-9) and c[0] > 0
    # the aligned solid is the random one turned: same SDF at rotated points
    p = np.random.default_rng(0).uniform(-0.5, 0.5, (64, 3))
    if "parts" not in ali:
        r_rnd, r_ali = quaternion_matrix(rnd["rotation"]), quaternion_matrix(ali["rotation"])
        np.testing.assert_allclose(fam.sdf(p @ r_ali.T, ali), fam.sdf(p @ r_rnd.T, rnd), atol=1e-9)


def test_make_records_the_pose_and_refuses_an_unknown_one(tmp_path):
    make_dataset(tmp_path / "a", family="torus,pair", count=2, seed=5, pose="aligned", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert [r["family"] for r in rows] == ["torus", "pair"] and {r["pose"] for r in rows} == {"aligned"}
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["pose"] == "aligned"
    with pytest.raises(InputError, match="--pose must be one of random, aligned"):
        make_dataset(tmp_path / "b", family="torus", count=1, pose="upright", progress=False)
    with pytest.raises(InputError, match="twice"):
        make_dataset(tmp_path / "c", family="torus,torus", count=2, progress=False)

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


@pytest.mark.parametrize("seed", range(12))
def test_canonical_turns_a_scatter_into_one_layout_frame_and_keeps_everything_else(seed):
    from weightspace.data.families import canonical_layout

    fam = FAMILIES["scatter"]
    ali = fam.draw(np.random.default_rng(seed), "aligned")
    can = fam.draw(np.random.default_rng(seed), "canonical")
    c_ali = np.array([p["center"] for p in ali["parts"]])  # (3, 3)
    c_can = np.array([p["center"] for p in can["parts"]])
    # a rigid turn about the origin: norms and pairwise distances kept, so the family's bounds still hold
    np.testing.assert_allclose(np.linalg.norm(c_can, axis=1), np.linalg.norm(c_ali, axis=1), atol=1e-12)
    d = lambda c: np.linalg.norm(c[:, None] - c[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(d(c_can), d(c_ali), atol=1e-12)
    for a, b in zip(ali["parts"], can["parts"]):
        assert {k: v for k, v in a.items() if k != "center"} == {k: v for k, v in b.items() if k != "center"}
    # the frame: largest part along +x from the centroid, the second largest at y > 0, z of both 0
    order = np.argsort([-p["reach"] for p in can["parts"]], kind="stable")
    g = c_can.mean(axis=0)
    first, second = c_can[order[0]] - g, c_can[order[1]] - g
    assert first[0] > 0 and abs(first[1]) < 1e-9 and abs(first[2]) < 1e-9
    assert second[1] > 0 and abs(second[2]) < 1e-9
    assert _angle(can["rotation"]) <= np.sqrt(3) * ALIGNED_JITTER + 1e-9
    # one-part and two-part shapes are the aligned ones, draw for draw
    for name in ("torus", "pair", "chair"):
        assert FAMILIES[name].draw(np.random.default_rng(seed), "canonical") == FAMILIES[name].draw(np.random.default_rng(seed), "aligned")
    assert canonical_layout({"rotation": [1.0, 0, 0, 0]}, np.random.default_rng(0)) == {"rotation": [1.0, 0, 0, 0]}


def test_canonical_data_differs_from_aligned_only_in_its_scatters(tmp_path):
    make_dataset(tmp_path / "a", family="pair,scatter", count=4, seed=2, pose="aligned", progress=False)
    make_dataset(tmp_path / "c", family="pair,scatter", count=4, seed=2, pose="canonical", progress=False)
    for item in ("pair-00000", "pair-00001"):
        assert (tmp_path / "a" / "grids" / f"{item}.npy").read_bytes() == (tmp_path / "c" / "grids" / f"{item}.npy").read_bytes()
    assert (tmp_path / "a" / "grids" / "scatter-00000.npy").read_bytes() != (tmp_path / "c" / "grids" / "scatter-00000.npy").read_bytes()
    rows = [json.loads(line) for line in (tmp_path / "c" / "manifest.jsonl").read_text().splitlines()]
    assert {r["pose"] for r in rows} == {"canonical"} and all(r["betti_measured"] == r["betti_declared"] for r in rows)


@pytest.mark.parametrize("pose,expected", [("canonical", "canonical"), ("aligned", "aligned"), ("random", "random"),
                                           (None, "random"), ("aligned+canonical", "random"), ("as given", "random")])
def test_studies_make_shapes_in_the_pose_their_generator_was_trained_on(pose, expected):
    """A study's procedural shapes follow the checkpoint's `data.pose`; one the data maker does not know
    (a mixed folder, or none recorded) falls back to random. `canonical` was once dropped to random."""
    from types import SimpleNamespace

    from weightspace.experiments.common import generator_pose

    config = {"data": {} if pose is None else {"pose": pose}}
    assert generator_pose(SimpleNamespace(config=config)) == expected


def test_the_pose_of_a_row_is_its_own_else_what_its_maker_did():
    """Imported meshes were recorded (by the latent diffusion trainer, which read a row without a pose as random)
    as posed at random, though nothing turned them: rows of an import made before rows said so are "as given"."""
    from weightspace.data.families import AS_GIVEN, row_pose

    assert row_pose({"family": "torus", "pose": "aligned"}) == "aligned"
    assert row_pose({"family": "imported", "pose": AS_GIVEN}) == AS_GIVEN
    assert row_pose({"family": "imported"}) == AS_GIVEN and row_pose({"family": "torus"}) == "random"

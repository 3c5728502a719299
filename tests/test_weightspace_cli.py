"""The weight-space commands end to end on the toy generator: population build, subspace fit, decode."""

import json

import pytest
from toy_generator import ToyGenerator, make_toy, make_toy_data
from typer.testing import CliRunner

from weightspace.cli import _register, app
from weightspace.generators import register, unregister
from weightspace.runtime.errors import InputError, Interrupted


@pytest.fixture()
def runner(tmp_path):
    """The CLI loads the toy generator the way it loads a user's: a registered kind in config.json."""
    _register()
    register("toy", ToyGenerator, replace=True)
    make_toy(seed=0).save(tmp_path / "toy")
    yield CliRunner()
    unregister("toy")


def test_build_fit_decode(runner, tmp_path):
    data = make_toy_data(tmp_path / "data", count=4, resolution=10)
    pop, sub, out = tmp_path / "pop", tmp_path / "sub", tmp_path / "samples"
    r = runner.invoke(app, ["population", "build", "--checkpoint", str(tmp_path / "toy"), "--parameterisation", "lora", "--data", str(data),
                            "--out", str(pop), "--members", "3", "--rank", "2", "--targets", "mid|vol", "--steps", "3"])
    assert r.exit_code == 0, r.output
    assert "3 members" in r.output
    assert len((pop / "manifest.jsonl").read_text().splitlines()) == 3
    r = runner.invoke(app, ["subspace", "fit", str(pop), "--components", "1", "--solver", "gram", "--out", str(sub)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["subspace", "fit", str(pop), "--components", "2", "--solver", "gram", "--out", str(sub)])
    assert isinstance(r.exception, InputError) and "already holds a subspace" in str(r.exception)
    assert json.loads((sub / "summary.json").read_text())["k"] == 1
    r = runner.invoke(app, ["subspace", "fit", str(pop), "--components", "2", "--solver", "gram", "--out", str(sub), "--overwrite"])
    assert r.exit_code == 0, r.output
    summary = json.loads((sub / "summary.json").read_text())
    assert summary["k"] == 2 and summary["n"] == 3 and summary["solver"] == "gram"
    r = runner.invoke(app, ["decode", str(sub), "--samples", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all((out / row["grid"]).is_file() and (out / row["mesh"]).is_file() for row in rows)
    assert json.loads((out / "decode.json").read_text())["samples"] == 2
    # a smaller decode into the same folder leaves none of the earlier decode's items behind
    (out / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["decode", str(sub), "--samples", "1", "--out", str(out), "--no-meshes"])
    assert isinstance(r.exception, InputError) and "pass --overwrite" in str(r.exception)
    r = runner.invoke(app, ["decode", str(sub), "--samples", "1", "--out", str(out), "--no-meshes", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["sample-0000.npy"] and not any((out / "meshes").iterdir())
    assert (out / "notes.txt").read_text() == "mine"
    # a population decodes as stored: --samples / --temperature would be ignored, so they are refused
    r = runner.invoke(app, ["decode", str(pop), "--samples", "4", "--temperature", "0.5", "--out", str(tmp_path / "d")])
    assert isinstance(r.exception, InputError) and "--samples and --temperature" in str(r.exception) and "is a population" in str(r.exception)
    assert not (tmp_path / "d").exists()
    r = runner.invoke(app, ["decode", str(pop), "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert "temperature" not in json.loads((tmp_path / "d" / "decode.json").read_text())


def test_bad_options_are_input_errors(runner, tmp_path):
    data = make_toy_data(tmp_path / "data", count=2, resolution=10)
    r = runner.invoke(app, ["population", "build", "--parameterisation", "dora", "--data", str(data), "--out", str(tmp_path / "p")])
    assert isinstance(r.exception, InputError) and "condition, lora, layers" in str(r.exception)
    r = runner.invoke(app, ["population", "build", "--parameterisation", "condition", "--rank", "2", "--data", str(data),
                            "--out", str(tmp_path / "p")])
    assert isinstance(r.exception, InputError) and "--rank: not an option of --parameterisation condition" in str(r.exception)
    assert not (tmp_path / "p").exists()
    r = runner.invoke(app, ["decode", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert isinstance(r.exception, InputError)
    r = runner.invoke(app, ["decode", str(tmp_path / "nothing"), "--resolution", "0", "--out", str(tmp_path / "o")])
    assert isinstance(r.exception, InputError) and "--resolution must be at least 16" in str(r.exception)


def test_every_command_has_help_with_an_example(runner):
    for args in (["population", "build"], ["subspace", "fit"], ["subspace", "invert"], ["subspace", "edit"], ["decode"]):
        r = runner.invoke(app, [*args, "--help"])
        assert r.exit_code == 0 and "Example: weightspace" in r.output


def test_subspace_fit_warns_of_members_that_do_not_reproduce_their_shapes(runner, tmp_path):
    """A subspace was fitted to a population whose members `population check` flags without a word."""
    data = make_toy_data(tmp_path / "data", count=3, resolution=10)
    pop = tmp_path / "pop"
    r = runner.invoke(app, ["population", "build", "--checkpoint", str(tmp_path / "toy"), "--parameterisation", "condition",
                            "--data", str(data), "--out", str(pop)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (pop / "manifest.jsonl").read_text().splitlines()]
    for row in rows:  # the members as `population check` sees them: all reproduce their shapes but the second
        row["metrics"].update(fidelity_iou=0.9, fidelity_betti=True, fidelity_empty=False)
    rows[1]["metrics"].update(fidelity_iou=0.1, fidelity_betti=False)
    (pop / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    r = runner.invoke(app, ["subspace", "fit", str(pop), "--components", "1", "--out", str(tmp_path / "sub")])
    assert r.exit_code == 0, r.output
    assert f"warning: 1 of 3 members do not reproduce their shapes ({rows[1]['id']})" in r.output, r.output
    rows[1]["metrics"].update(fidelity_iou=0.9, fidelity_betti=True)
    (pop / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    r = runner.invoke(app, ["subspace", "fit", str(pop), "--components", "1", "--out", str(tmp_path / "sub2")])
    assert r.exit_code == 0 and "warning" not in r.output, r.output


def test_subspace_invert_scans_and_observations(runner, tmp_path):
    """`subspace invert` fits a subspace point to each scan (a file at any scale, or a `data observe` set),
    writes point files that `decode` reads back to the same grid, scores observations against their shapes,
    and resumes a killed run."""
    import numpy as np
    import trimesh

    from weightspace.experiments import invert as invert_module

    data = make_toy_data(tmp_path / "data", count=4, resolution=12)  # the toy decodes at 12^3: IoU on the same grid
    pop, sub = tmp_path / "pop", tmp_path / "sub"
    r = runner.invoke(app, ["population", "build", "--checkpoint", str(tmp_path / "toy"), "--parameterisation", "lora", "--data", str(data),
                            "--out", str(pop), "--members", "4", "--rank", "2", "--targets", "mid|vol", "--steps", "3"])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["subspace", "fit", str(pop), "-k", "2", "--solver", "gram", "--out", str(sub)]).exit_code == 0
    obs = tmp_path / "obs"
    assert runner.invoke(app, ["data", "observe", str(data), "--kind", "noisy", "--sigma", "0.01", "--n", "64", "--out", str(obs)]).exit_code == 0
    out = tmp_path / "inv"
    r = runner.invoke(app, ["subspace", "invert", str(sub), "--observations", str(obs), "--out", str(out), "--steps", "6", "--starts", "2", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert summary["scans"] == len(rows) == 4 and summary["topology_correct"]["n"] == 4
    assert all(row["iou"] is not None and "truth_robust" in row and len(row["coords"]) == 2 for row in rows)
    assert summary["seen_distance"]["n"] == 4 and (out / "gallery.png").stat().st_size > 1000
    # the population was fitted to these very shapes: each row says so, and the summary keeps no unseen figures
    members = json.loads((sub / "summary.json").read_text())["members"]
    assert members["population"] == str(pop) and len(members["shapes"]) == 4 and members["data_hash"]
    assert all(row.get("member_of_subspace") for row in rows) and summary["members_of_subspace"] == 4 and summary["unseen"] is None
    assert "are shapes the subspace's population was fitted to" in r.stderr
    # the written point decodes to the written grid
    dec = tmp_path / "dec"
    r = runner.invoke(app, ["decode", str(out / rows[0]["point"]), "--out", str(dec), "--seed", str(rows[0]["decode_seed"])])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(np.load(dec / "grids" / f"{rows[0]['id']}.npy"), np.load(out / rows[0]["grid"]), atol=1e-5)
    # observations of a dataset since remade under the same name are not scored against the new shapes
    config = json.loads((obs / "config.json").read_text())
    assert config["source_hash"]
    (obs / "config.json").write_text(json.dumps({**config, "source_hash": "0" * 16}))
    r = runner.invoke(app, ["subspace", "invert", str(sub), "--observations", str(obs), "--out", str(tmp_path / "remade"), "--steps", "1",
                            "--starts", "0", "--json"])
    assert r.exit_code == 0 and "has changed since the observations were made" in r.stderr, r.output
    assert "topology_correct" not in json.loads(r.stdout) and "iou" not in json.loads((tmp_path / "remade" / "manifest.jsonl").read_text().splitlines()[0])
    # a source recorded relative to where `data observe` ran is found from anywhere by its resolved path
    (obs / "config.json").write_text(json.dumps({**config, "source": "somewhere/else/data"}))
    r = runner.invoke(app, ["subspace", "invert", str(sub), "--observations", str(obs), "--out", str(tmp_path / "moved"), "--steps", "1",
                            "--starts", "0", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["topology_correct"]["n"] == 4, r.output
    (obs / "config.json").write_text(json.dumps(config))
    # a finished run is replaced only with --overwrite
    r = runner.invoke(app, ["subspace", "invert", str(sub), "--observations", str(obs), "--out", str(out)])
    assert isinstance(r.exception, InputError) and "pass --overwrite" in str(r.exception)
    # scan files at any scale and pose, normalised as data import does; their transform is recorded
    ring = trimesh.creation.torus(30.0, 10.0, 24, 12).apply_translation([100.0, 0.0, 5.0])
    ring.export(tmp_path / "ring.ply")
    np.save(tmp_path / "cloud.npy", ring.sample(300).astype(np.float32))
    killed, calls = tmp_path / "killed", []
    real = invert_module.invert_scan

    def dies_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    scan_args = ["subspace", "invert", str(sub), str(tmp_path / "ring.ply"), str(tmp_path / "cloud.npy"), "--steps", "4", "--starts", "0"]
    invert_module.invert_scan = dies_on_the_second
    try:
        with pytest.raises(Interrupted, match="interrupted: 1 of 2 scans are inverted"):  # the CLI exits 130 with it
            invert_module.invert_scans(invert_module.InvertConfig(
                subspace=str(sub), out=str(killed), scans=[str(tmp_path / "ring.ply"), str(tmp_path / "cloud.npy")], steps=4, starts=0))
    finally:
        invert_module.invert_scan = real
    assert not (killed / "invert.json").exists()
    r = runner.invoke(app, [*scan_args, "--out", str(killed)])
    assert r.exit_code == 0, r.output
    assert "taking up 1 scan(s)" in r.output
    r = runner.invoke(app, [*scan_args, "--out", str(tmp_path / "straight")])
    assert r.exit_code == 0, r.output
    for name in ("0000-ring", "0001-cloud"):
        np.testing.assert_array_equal(np.load(killed / "grids" / f"{name}.npy"), np.load(tmp_path / "straight" / "grids" / f"{name}.npy"))
    rows = [json.loads(line) for line in (killed / "manifest.jsonl").read_text().splitlines()]
    assert rows[0]["transform"]["center"] == [100.0, 0.0, 5.0] and "iou" not in rows[0] and "member_of_subspace" not in rows[0]
    # a plug-in whose sdf_grid breaks the protocol (here: another resolution) is named, not meshed and measured
    from weightspace.space.subspace import Subspace

    class Coarse(ToyGenerator):
        def sdf_grid(self, condition, seeds, *, params=None, resolution=None):
            return super().sdf_grid(condition, seeds, params=params, resolution=resolution)[:, ::2, ::2, ::2]

    scan = invert_module.Scan("ring", np.asarray(ring.sample(64), np.float32) / 50.0, "ring.ply")
    with pytest.raises(InputError, match=r"sdf_grid must return grids"):
        invert_module.invert_scan(Coarse(seed=0), Subspace.load(sub), scan, invert_module.InvertConfig(str(sub), str(tmp_path / "x"),
                                                                                                       steps=1, starts=0))
    # the gallery's "points seen" cell: the voxels the points fall in, grown by one
    seen = invert_module._points_grid(np.array([[1.0, 1.0, 1.0]]), 8)
    assert seen[7, 7, 7] < 0 and seen[6, 7, 7] < 0 and seen[6, 6, 6] > 0 and (seen < 0).sum() == 4  # a corner and its 3 faces
    # an id from a hand-edited manifest names no path outside the folder
    assert invert_module._file_safe("../../etc/passwd") == "_.._etc_passwd" and invert_module._file_safe("..") == "scan"
    # neither or both of scans and --observations is refused
    r = runner.invoke(app, ["subspace", "invert", str(sub), "--out", str(tmp_path / "none")])
    assert isinstance(r.exception, InputError) and "one of the two" in str(r.exception)


def test_subspace_edit_along_an_attribute_measures_what_changed(runner, tmp_path):
    """`subspace edit` fits the direction of a member attribute, decodes points along it, and records the fit's
    R^2 (in-sample and leave-one-out), the shapes' measures and, for a measurable attribute, its rank correlation."""
    import numpy as np

    from weightspace.experiments.edit import fit_quality, spearman

    data = make_toy_data(tmp_path / "data", count=6, resolution=12)
    pop, sub, out = tmp_path / "pop", tmp_path / "sub", tmp_path / "edit"
    r = runner.invoke(app, ["population", "build", "--checkpoint", str(tmp_path / "toy"), "--parameterisation", "lora", "--data", str(data),
                            "--out", str(pop), "--rank", "2", "--targets", "mid|vol", "--steps", "3"])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["subspace", "fit", str(pop), "-k", "2", "--solver", "gram", "--out", str(sub)]).exit_code == 0
    r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "volume", "--amounts", "-1,0,1", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [row["amount"] for row in rows] == [-1.0, 0.0, 1.0] and result["fit"]["n"] == 6
    assert result["fit"]["r2_leave_one_out"] is not None and len(result["measured"]) == 3
    # the linear model's prediction grows along the direction by construction; the measured volume is the decoder's
    assert result["predicted"][0] < result["predicted"][1] < result["predicted"][2]
    assert all((out / row["grid"]).is_file() and (out / row["point"]).is_file() for row in rows) and (out / "gallery.png").is_file()
    assert rows[1]["measured"] == rows[1]["volume"] and result["population"] == str(pop)
    assert rows[1]["beyond_members"] is False  # the mean lies among the members
    r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "volume", "--amounts", "0,9", "--out", str(tmp_path / "far"), "--no-meshes"])
    assert r.exit_code == 0 and "--amounts 9 lie beyond every member along the direction" in r.output, r.output
    assert [json.loads(line)["beyond_members"] for line in (tmp_path / "far" / "manifest.jsonl").read_text().splitlines()] == [False, True]
    # the middle point is the start (the subspace mean): `decode` of it redraws the same grid
    dec = tmp_path / "dec"
    assert runner.invoke(app, ["decode", str(out / rows[1]["point"]), "--out", str(dec)]).exit_code == 0
    np.testing.assert_allclose(np.load(dec / "grids" / "edit-01.npy"), np.load(out / rows[1]["grid"]), atol=1e-5)
    # family labels (0/1) and a start at a member
    r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "family:torus", "--start", "torus-001", "--out", str(tmp_path / "e2")])
    assert r.exit_code == 0, r.output
    assert "leave-one-out" in r.output
    # bad attributes and starts name what is allowed
    r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "params.nope", "--out", str(tmp_path / "e3")])
    assert isinstance(r.exception, InputError) and "no number under that name" in str(r.exception)
    r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "b0", "--out", str(tmp_path / "e4")])
    assert isinstance(r.exception, InputError) and "the same value" in str(r.exception)  # every toy shape is one part
    r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "family:chair", "--out", str(tmp_path / "e6")])
    assert isinstance(r.exception, InputError) and "(its members' families: sphere, torus)" in str(r.exception)
    r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "volume", "--start", "nobody", "--out", str(tmp_path / "e5")])
    assert isinstance(r.exception, InputError) and "--start must be mean, a member id" in str(r.exception)
    # the figures themselves: a perfectly linear label has R^2 1 both ways; rho of a monotone series is 1
    coords = np.random.default_rng(0).normal(size=(12, 2))
    q = fit_quality(coords, 3 * coords[:, 0] - coords[:, 1])
    assert q["r2"] == pytest.approx(1.0) and q["r2_leave_one_out"] == pytest.approx(1.0)
    assert spearman([1, 2, 3], [0.1, 0.5, 0.9]) == pytest.approx(1.0) and spearman([1, 2, 3], [1, 1, 1]) is None


def _toy_subspace(runner, tmp_path, count=4):
    """A 2-component subspace of a toy LoRA population (the population folder, the subspace folder)."""
    data = make_toy_data(tmp_path / "data", count=count, resolution=12)
    pop, sub = tmp_path / "pop", tmp_path / "sub"
    r = runner.invoke(app, ["population", "build", "--checkpoint", str(tmp_path / "toy"), "--parameterisation", "lora", "--data", str(data),
                            "--out", str(pop), "--rank", "2", "--targets", "mid|vol", "--steps", "3"])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["subspace", "fit", str(pop), "-k", "2", "--solver", "gram", "--out", str(sub)]).exit_code == 0
    return pop, sub


def _scan_files(tmp_path, sizes):
    """Point clouds of a ring, one .npy per size: tmp_path/cloud-SIZE.npy."""
    import numpy as np
    import trimesh

    ring = trimesh.creation.torus(3.0, 1.0, 24, 12)
    paths = []
    for n in sizes:
        paths.append(tmp_path / f"cloud-{n}.npy")
        np.save(paths[-1], ring.sample(n, seed=n).astype(np.float32))
    return [str(p) for p in paths]


def test_subspace_invert_refuses_a_too_small_scan_before_inverting_any(runner, tmp_path):
    """A scan of too few points was refused only when the run reached it, after the scans before it were inverted."""
    _, sub = _toy_subspace(runner, tmp_path)
    scans, out = _scan_files(tmp_path, [200, 10]), tmp_path / "inv"
    r = runner.invoke(app, ["subspace", "invert", str(sub), *scans, "--out", str(out), "--steps", "2", "--starts", "0"])
    assert isinstance(r.exception, InputError) and f"{scans[1]}: 10 points" in str(r.exception)
    assert not out.exists()


def test_subspace_invert_taken_up_without_meshes_writes_them_on_a_rerun_with_meshes(runner, tmp_path):
    """A run killed under --no-meshes and taken up with meshes listed no mesh for the scans it took up."""
    from weightspace.experiments import invert as invert_module

    _, sub = _toy_subspace(runner, tmp_path)
    scans, out = _scan_files(tmp_path, [200, 300]), tmp_path / "inv"
    real, calls = invert_module.invert_scan, []

    def dies_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    invert_module.invert_scan = dies_on_the_second
    try:
        with pytest.raises(Interrupted):
            invert_module.invert_scans(invert_module.InvertConfig(subspace=str(sub), out=str(out), scans=scans, steps=2, starts=0,
                                                                  meshes=False))
    finally:
        invert_module.invert_scan = real
    r = runner.invoke(app, ["subspace", "invert", str(sub), *scans, "--out", str(out), "--steps", "2", "--starts", "0"])
    assert r.exit_code == 0 and "taking up 1 scan(s)" in r.output, r.output
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [row.get("mesh") for row in rows] == ["meshes/0000-cloud-200.ply", "meshes/0001-cloud-300.ply"]
    assert all((out / row["mesh"]).is_file() for row in rows)


def test_subspace_invert_overwrite_leaves_none_of_the_earlier_run_s_files(runner, tmp_path):
    """--overwrite with fewer scans left the earlier run's grids, points and meshes beside the new manifest."""
    _, sub = _toy_subspace(runner, tmp_path)
    scans, out = _scan_files(tmp_path, [200, 300]), tmp_path / "inv"
    args = ["subspace", "invert", str(sub), "--out", str(out), "--steps", "2", "--starts", "0"]
    assert runner.invoke(app, [*args, *scans]).exit_code == 0
    (out / "notes.txt").write_text("mine")
    r = runner.invoke(app, [*args, scans[1], "--overwrite", "--no-meshes"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["0000-cloud-300.npy"]
    assert sorted(p.name for p in (out / "points").iterdir()) == ["0000-cloud-300.safetensors"]
    assert not any((out / "meshes").iterdir()) and (out / "notes.txt").read_text() == "mine"


def test_subspace_edit_names_a_recorded_population_it_cannot_find_and_the_way_out(runner, tmp_path):
    """The population a subspace records, moved away, was reported as '<folder>: not found' without a word on --population."""
    pop, sub = _toy_subspace(runner, tmp_path)
    moved = pop.rename(tmp_path / "moved")
    r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "volume", "--out", str(tmp_path / "e")])
    assert isinstance(r.exception, InputError) and f"the population it was fitted to, {pop}" in str(r.exception)
    assert "pass --population" in str(r.exception)
    r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "volume", "--population", str(moved), "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output


def test_subspace_edit_start_point_files_are_read_in_the_subspace_s_frame_or_named(runner, tmp_path):
    """A member's own point file (LoRA factors) as --start was refused ('points have length ...', naming neither file nor
    option) though the member id was accepted; a point of another generator gave the same unnamed error."""
    from weightspace.space.store import Population, save_point

    pop, sub = _toy_subspace(runner, tmp_path)
    members = Population(pop)
    first = str(members.rows[0]["id"])
    save_point(tmp_path / "member.safetensors", members.matrix()[0], members.frame)  # (D,) factors, as the member is stored
    runs = {}
    for name, start in (("by-id", first), ("by-file", str(tmp_path / "member.safetensors"))):
        r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "volume", "--start", start, "--amounts", "0,1", "--out",
                                str(tmp_path / name), "--json"])
        assert r.exit_code == 0, r.output
        runs[name] = json.loads(r.stdout)["predicted"]
    assert runs["by-file"] == pytest.approx(runs["by-id"], abs=1e-6)
    (tmp_path / "junk.safetensors").write_bytes(b"not a point")
    r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "volume", "--start", str(tmp_path / "junk.safetensors"),
                            "--out", str(tmp_path / "e")])
    assert isinstance(r.exception, InputError) and str(r.exception).startswith(f"--start: {tmp_path / 'junk.safetensors'}")


def test_subspace_edit_refuses_an_amount_whose_point_overflows(runner, tmp_path):
    """--amounts 1e308 wrote a point file of inf, which `decode` then refused, and reported its empty grid as a shape."""
    _, sub = _toy_subspace(runner, tmp_path)
    out = tmp_path / "e"
    r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "volume", "--amounts", "0,1e308", "--out", str(out)])
    assert isinstance(r.exception, InputError) and str(r.exception).startswith("--amounts 1e+308: the point that far") and not out.exists()


def test_subspace_edit_overwrite_leaves_none_of_the_earlier_edit_s_files(runner, tmp_path):
    """An edit of 3 amounts replaced by one of 2 (--overwrite) left edit-02's grid, point and mesh beside the new manifest."""
    _, sub = _toy_subspace(runner, tmp_path)
    out = tmp_path / "e"
    args = ["subspace", "edit", str(sub), "--by", "volume", "--out", str(out)]
    assert runner.invoke(app, [*args, "--amounts", "-1,0,1"]).exit_code == 0
    (out / "notes.txt").write_text("mine")
    r = runner.invoke(app, [*args, "--amounts", "0,2", "--overwrite", "--no-meshes"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["edit-00.npy", "edit-01.npy"]
    assert sorted(p.name for p in (out / "points").iterdir()) == ["edit-00.safetensors", "edit-01.safetensors"]
    assert not any((out / "meshes").iterdir()) and (out / "notes.txt").read_text() == "mine"
    assert not (out / ".replacing.json").exists() and json.loads((out / "edit.json").read_text())["amounts"] == [0.0, 2.0]


def test_subspace_edit_warns_when_population_is_not_the_one_the_subspace_was_fitted_to(runner, tmp_path):
    """--population of other members (here: the first 3 of the 4) was used without a word, though the help calls it the
    population the subspace was fitted to: the direction is then fitted to projections of shapes that did not shape it."""
    pop, sub = _toy_subspace(runner, tmp_path)
    other = tmp_path / "other"
    r = runner.invoke(app, ["population", "build", "--checkpoint", str(tmp_path / "toy"), "--parameterisation", "lora", "--data",
                            str(tmp_path / "data"), "--out", str(other), "--members", "3", "--rank", "2", "--targets", "mid|vol", "--steps", "3"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "volume", "--population", str(other), "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    assert f"warning: --population {other} is not the population {sub} was fitted to ({pop}: 4 shapes" in r.stderr
    r = runner.invoke(app, ["subspace", "edit", str(sub), "--by", "volume", "--population", str(pop), "--out", str(tmp_path / "e2")])
    assert r.exit_code == 0 and "warning" not in r.stderr, r.output


def test_report_shows_subspace_inversions_and_edits(runner, tmp_path):
    """`report` on `subspace invert` and `subspace edit` folders gives each a section with its gallery and table
    (they were refused, or left off, as folders without a study); a decode folder is still refused by name."""
    import re

    data = make_toy_data(tmp_path / "data", count=6, resolution=12)
    pop, sub = tmp_path / "pop", tmp_path / "sub"
    assert runner.invoke(app, ["population", "build", "--checkpoint", str(tmp_path / "toy"), "--parameterisation", "lora", "--data",
                               str(data), "--out", str(pop), "--rank", "2", "--targets", "mid|vol", "--steps", "2"]).exit_code == 0
    assert runner.invoke(app, ["subspace", "fit", str(pop), "-k", "2", "--solver", "gram", "--out", str(sub)]).exit_code == 0
    obs, inv, edit = tmp_path / "obs", tmp_path / "inv", tmp_path / "edit"
    assert runner.invoke(app, ["data", "observe", str(data), "--kind", "noisy", "--sigma", "0.01", "--n", "64", "--out", str(obs)]).exit_code == 0
    assert runner.invoke(app, ["subspace", "invert", str(sub), "--observations", str(obs), "--out", str(inv), "--steps", "2",
                               "--starts", "0"]).exit_code == 0
    assert runner.invoke(app, ["subspace", "edit", str(sub), "--by", "volume", "--amounts", "-1,0,1", "--out", str(edit)]).exit_code == 0
    page = tmp_path / "page.html"
    r = runner.invoke(app, ["report", str(inv), str(edit), "--out", str(page)])
    assert r.exit_code == 0, r.output
    text = page.read_text()
    assert re.search(r"<section id=inversion-\w+><h2>Scans inverted into a subspace: inv</h2>", text)
    assert re.search(r"<section id=edit-\w+><h2>Edit along volume: edit</h2>", text)
    assert text.count('src="data:image/png;base64,') >= 2 and "6 scan(s) inverted into" in text
    assert "<section id=found>" not in text  # no study, no claims to list
    assert runner.invoke(app, ["decode", str(sub), "--samples", "1", "--out", str(tmp_path / "dec")]).exit_code == 0
    r = runner.invoke(app, ["report", str(inv), str(tmp_path / "dec"), "--out", str(tmp_path / "p2.html")])
    assert isinstance(r.exception, InputError) and "dec" in str(r.exception)


def test_targets_the_fit_never_reaches_are_refused_before_any_member(runner, tmp_path):
    """Under the population's fixed anchor the toy's point encoder takes no part in the fit's loss: members of
    its weights would never move (a population of copies, then a subspace refused for spanning nothing)."""
    data = make_toy_data(tmp_path / "data", count=2, resolution=10)
    r = runner.invoke(app, ["population", "build", "--checkpoint", str(tmp_path / "toy"), "--parameterisation", "layers",
                            "--targets", "enc", "--data", str(data), "--out", str(tmp_path / "pop"), "--steps", "2"])
    assert isinstance(r.exception, InputError) and "does not depend on these weights" in str(r.exception), r.output
    assert not (tmp_path / "pop" / "manifest.jsonl").exists()
    r = runner.invoke(app, ["population", "build", "--checkpoint", str(tmp_path / "toy"), "--parameterisation", "layers",
                            "--targets", "mid", "--data", str(data), "--out", str(tmp_path / "pop2"), "--steps", "2"])
    assert r.exit_code == 0, r.output

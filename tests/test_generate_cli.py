"""`weightspace generate` and `weightspace evaluate generator` end to end on a tiny latent diffusion checkpoint."""

import json
import re

import numpy as np
import pytest
import trimesh
from test_latent_diffusion_model import tiny_generator
from test_neural_field_model import tiny_generator as tiny_field
from typer.testing import CliRunner

from weightspace.cli import _register, app
from weightspace.cli.evaluate import EVALUATORS
from weightspace.runtime.errors import InputError


@pytest.fixture(autouse=True, scope="module")
def commands():
    """The CLI's commands, for tests that invoke them without the checkpoint fixture (which registered them)."""
    _register()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ld_ck") / "ck"
    tiny_generator(seed=1).save(folder)
    _register()
    return folder


def test_generate_family_writes_grids_and_meshes(ckpt, tmp_path):
    out = tmp_path / "gen"
    result = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--family", "torus", "--seed", "3", "--count", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "generate.json").read_text())
    assert [s["seed"] for s in summary["shapes"]] == [3, 4]
    for s in summary["shapes"]:
        grid = np.load(out / s["grid"], allow_pickle=False)
        assert grid.shape == (16, 16, 16) and grid.dtype == np.float32
        assert (out / s["mesh"]).is_file()
    # same command, same grids exactly; a different count leaves seed 3's grid the same up to float rounding
    again, one = tmp_path / "again", tmp_path / "one"
    CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--family", "torus", "--seed", "3", "--count", "2", "--out", str(again)])
    CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--family", "torus", "--seed", "3", "--count", "1", "--out", str(one)])
    first = summary["shapes"][0]["grid"]
    assert np.array_equal(np.load(out / first), np.load(again / first))
    assert np.allclose(np.load(out / first), np.load(one / first), atol=1e-5)
    # a used folder is refused, and replaced whole with --overwrite: no shape of the earlier run is left beside the new
    cmd = ["generate", "--checkpoint", str(ckpt), "--family", "mug", "--seed", "9", "--count", "1", "--out", str(out)]
    result = CliRunner().invoke(app, cmd)
    assert result.exit_code != 0 and "--overwrite" in str(result.exception)
    assert np.array_equal(np.load(out / first), np.load(again / first))  # nothing written
    result = CliRunner().invoke(app, [*cmd, "--overwrite"])
    assert result.exit_code == 0, result.output
    listed = json.loads((out / "generate.json").read_text())["shapes"]
    assert [s["seed"] for s in listed] == [9]
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["000-seed9.npy"]
    assert sorted(p.name for p in (out / "meshes").iterdir()) == ["000-seed9.ply"]


def test_generate_from_points_and_voxels(ckpt, tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(300, 3))
    pts = (0.5 * pts / np.linalg.norm(pts, axis=1, keepdims=True)).astype(np.float32)
    trimesh.PointCloud(pts).export(str(tmp_path / "cloud.ply"))
    np.save(tmp_path / "cloud.npy", pts)
    np.save(tmp_path / "vox.npy", rng.random((8, 8, 8)) > 0.5)
    for opt, path, fmt in (("--points", "cloud.ply", "obj"), ("--points", "cloud.npy", "ply"), ("--voxels", "vox.npy", "glb")):
        out = tmp_path / f"o-{path}"
        result = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), opt, str(tmp_path / path), "--format", fmt, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "generate.json").read_text())["shapes"][0]["mesh"].endswith(fmt)


def test_generate_from_a_scan_in_its_own_frame(ckpt, tmp_path):
    """A scan at any scale and place is normalised as `data import` normalises meshes; --original-frame
    maps the meshes back: the round trip of the written transform gives the normalised meshes again."""
    from weightspace.data.importer import normalise
    from weightspace.decode.mesh import grid_to_mesh

    scan = trimesh.creation.torus(0.6, 0.25, 32, 16)
    scan.apply_transform(trimesh.transformations.rotation_matrix(0.7, (1, 2, 0)))
    scan.apply_scale(40.0)
    scan.apply_translation((250.0, -30.0, 12.0))  # millimetres, far from the origin
    scan.export(str(tmp_path / "scan.ply"))
    runs = {}
    for flag in ([], ["--original-frame"]):
        out = tmp_path / ("orig" if flag else "norm")
        result = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--points", str(tmp_path / "scan.ply"), "--seed", "2",
                                          "--count", "2", "--format", "obj", "--out", str(out), *flag])
        assert result.exit_code == 0, result.output
        runs["orig" if flag else "norm"] = out
    out = runs["orig"]
    transform = json.loads((out / "transform.json").read_text())
    summary = json.loads((out / "generate.json").read_text())
    assert summary["mesh_frame"] == "original" and summary["condition"]["transform"] == "transform.json"
    # the transform is the import's normalisation of the scan mesh, and the points seen lie in its box
    norm = normalise(trimesh.load(str(tmp_path / "scan.ply"), process=False))[1]
    assert np.allclose(transform["center"], norm.center) and np.isclose(transform["scale"], norm.scale)
    pts = np.load(out / "condition_points.npy")
    assert pts.shape == (2048, 3) and np.abs(pts).max() <= 0.9 + 1e-5
    assert np.array_equal(pts, np.load(runs["norm"] / "condition_points.npy"))  # one scan, one seed, the same points
    center, scale = np.array(transform["center"]), transform["scale"]
    for shape in summary["shapes"]:
        back = trimesh.load(str(out / shape["mesh"]), process=False)
        normalised = trimesh.load(str(runs["norm"] / shape["mesh"]), process=False)
        made = grid_to_mesh(np.load(out / shape["grid"]))
        assert np.allclose((back.vertices - center) * scale, made.vertices, atol=1e-4)  # the round trip
        assert np.allclose(normalised.vertices, made.vertices, atol=1e-5)  # without the flag: the normalised frame
        assert np.allclose(back.bounds.mean(0), center, atol=1.2 / scale)  # in the scan's frame
    assert json.loads((runs["norm"] / "generate.json").read_text())["mesh_frame"] == "normalised"
    result = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--family", "torus", "--original-frame", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--points" in str(result.exception)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--family", "torus", "--voxels", "x.npy"], "exactly one"),
        (["--family", "teapot"], "teapot"),
        (["--points", "missing.npy"], "not found"),
        (["--family", "torus", "--format", "stl"], "format"),
    ],
)
def test_generate_bad_input(ckpt, tmp_path, args, message):
    result = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code != 0
    assert message in str(result.exception)


def test_generate_refuses_another_commands_folder_as_out(ckpt, tmp_path):
    """`--out` a checkpoint (or a population, a dataset...) wrote grids/, meshes/ and generate.json among its files,
    where decode, subspace fit and data import refuse such a folder by its kind."""
    import shutil

    folder = tmp_path / "ck"
    shutil.copytree(ckpt, folder)
    before = sorted(p.name for p in folder.iterdir())
    result = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--family", "torus", "--out", str(folder)])
    assert isinstance(result.exception, InputError) and "holds a generator checkpoint" in str(result.exception)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_generate_refuses_a_text_obj_and_a_coarse_resolution_by_name(ckpt, tmp_path):
    """An OBJ that is only text loads as an empty scene: an InputError naming the file, not an AttributeError;
    --resolution below data make's floor is refused as data make refuses it."""
    from weightspace.data.grid import MIN_RESOLUTION

    (tmp_path / "notes.obj").write_text("hello, this is not a mesh\n")
    result = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--points", str(tmp_path / "notes.obj"), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and isinstance(result.exception, InputError)
    assert f"{tmp_path / 'notes.obj'}: no points in the file" in str(result.exception)
    result = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--family", "torus", "--resolution", "7", "--out", str(tmp_path / "r")])
    assert isinstance(result.exception, InputError)
    assert f"--resolution must be at least {MIN_RESOLUTION}" in str(result.exception) and not (tmp_path / "r").exists()


def test_evaluate_dispatch_table_and_keys(ckpt, tmp_path):
    from weightspace.data.dataset import ShapeDataset
    from weightspace.data.make import make_dataset
    from weightspace.generators import load_generator
    from weightspace.generators.latent_diffusion.evaluate import FIGURE_KEYS, evaluate_generator
    from weightspace.generators.latent_diffusion.train import rows_hash

    assert set(EVALUATORS) == {"latent-diffusion", "neural-field"}
    data = tmp_path / "data"
    make_dataset(data, family="torus", count=10, resolution=16, seed=0, n_points=2048, progress=False)
    result = CliRunner().invoke(app, ["evaluate", "generator", str(ckpt), "--data", str(data), "--json", "--max-shapes", "2"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert tuple(figures)[: len(FIGURE_KEYS)] == FIGURE_KEYS and "family_unknown_shapes" not in figures
    for key in ("ae_iou", "ae_betti_match", "points_iou", "points_betti_match", "family_betti_match", "cov", "nna"):
        assert 0.0 <= figures[key] <= 1.0, key
    assert figures["seconds_per_shape"] > 0
    assert figures["held_out_shapes"] == 2 and figures["held_out_from"].startswith("every shape")  # not its training folder
    # every rate carries its n and Wilson interval; 2 shapes a side are too few for the set metrics to mean much
    for key in ("ae_betti_match", "points_betti_match", "family_betti_match"):
        assert figures[f"{key}_n"] == 2 and figures[f"{key}_low"] <= figures[key] <= figures[f"{key}_high"], key
    assert figures["set_metrics_n"] == 2 and "2 generated and 2 reference shapes" in figures["set_metrics_caveat"]
    # the training folder, recognised by the hash of its training rows: only its test split is held out
    own = evaluate_generator(load_generator(ckpt), data, max_shapes=64, training_hash=rows_hash(ShapeDataset(data, "train").rows))
    assert own["held_out_shapes"] == len(ShapeDataset(data, "test")) and own["held_out_from"] == "the training folder's test split"


def test_evaluate_latent_diffusion_on_an_imported_folder(ckpt, tmp_path):
    """Failed and skipped rows are left out; shapes of a family the checkpoint does not know are
    measured for ae/points and counted out of the family figures."""
    from weightspace.data.importer import import_meshes
    from weightspace.generators.latent_diffusion.evaluate import FAMILY_KEYS

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.torus(0.6, 0.25, 32, 16).export(meshes / "ring.obj")
    trimesh.creation.box((1.2, 0.8, 0.6)).export(meshes / "brick.stl")
    trimesh.Trimesh(np.random.default_rng(0).uniform(-1, 1, (30, 3)), np.arange(30).reshape(10, 3)).export(meshes / "soup.obj")
    summary = import_meshes([meshes, tmp_path / "missing.obj"], tmp_path / "imported", resolution=16, n_points=512, progress=False)
    assert (summary["imported"], summary["skipped"], summary["failed"]) == (2, 1, 1)
    result = CliRunner().invoke(app, ["evaluate", "generator", str(ckpt), "--data", str(tmp_path / "imported"), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["held_out_shapes"] == 2 and figures["family_unknown_shapes"] == 2  # family "imported"
    assert "imported" in figures["family_figures_note"]
    # unmeasured, not 0: null, with the reason; the text table says so
    assert all(figures[k] is None and "no held-out shape is of a family" in figures[f"{k}_not_measured"] for k in FAMILY_KEYS)
    assert figures["family_betti_match_n"] == 0 and "set_metrics_caveat" not in figures
    assert all(0.0 <= figures[k] <= 1.0 for k in ("ae_iou", "ae_betti_match", "points_iou", "points_betti_match"))
    text = CliRunner().invoke(app, ["evaluate", "generator", str(ckpt), "--data", str(tmp_path / "imported")]).output
    assert "family_betti_match     not measured (no held-out shape is of a family" in text
    assert "ae_betti_match_n" not in text and "(n=2)" in text
    # a folder at another resolution is refused with the one to import at
    import_meshes([meshes / "ring.obj"], tmp_path / "at24", resolution=24, n_points=64, progress=False)
    result = CliRunner().invoke(app, ["evaluate", "generator", str(ckpt), "--data", str(tmp_path / "at24"), "--json"])
    assert result.exit_code != 0 and "--resolution 16" in str(result.exception) + result.output
    # a folder that is not there is named as not found, not as one without held-out shapes
    result = CliRunner().invoke(app, ["evaluate", "generator", str(ckpt), "--data", str(tmp_path / "nowhere"), "--json"])
    assert result.exit_code != 0 and "manifest.jsonl: not found" in str(result.exception), result.output


def test_generate_seed_reaches_a_neural_field_family_code(tmp_path):
    """--seed must change a neural field's family sample: its code is drawn from the family prior."""
    ckpt = tiny_field().save(tmp_path / "nf")
    grids = []
    for seed in (0, 5):
        out = tmp_path / f"gen{seed}"
        result = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--family", "torus", "--seed", str(seed),
                                          "--count", "1", "--out", str(out)])
        assert result.exit_code == 0, result.output
        grids.append(np.load(next((out / "grids").glob("*.npy"))))
    assert not np.array_equal(grids[0], grids[1])
    result = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--family", "torus", "--steps", "4", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "latent diffusion" in str(result.exception)  # a field has no sampler to set


def test_generate_takes_the_sampler_settings(ckpt, tmp_path):
    def run(name, *extra):
        out = tmp_path / name
        result = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--family", "torus", "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "generate.json").read_text())
        return summary["sampler"], np.load(out / summary["shapes"][0]["grid"])

    (default, g0), (set_, g1) = run("default"), run("set", "--steps", "2", "--guidance", "1.5")
    assert default == {"steps": 4, "guidance": 2.0} and set_ == {"steps": 2, "guidance": 1.5}
    assert not np.allclose(g0, g1)
    bad = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--family", "torus", "--guidance", "-1",
                                   "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "--guidance" in str(bad.exception)


def test_evaluate_families_takes_the_sampler_settings(ckpt, tmp_path):
    import numpy as np

    from weightspace.generators import load_generator
    from weightspace.generators.latent_diffusion.evaluate import family_samples

    out = tmp_path / "fam.json"
    result = CliRunner().invoke(app, ["evaluate", "families", str(ckpt), "--per-family", "1", "--steps", "2",
                                      "--guidance", "1.5", "--out", str(out), "--gallery", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    gen = load_generator(ckpt)
    assert (written["steps"], written["guidance"]) == (2, 1.5)
    assert len(written["samples"]) == len(gen.cfg.families) and (tmp_path / "g.png").stat().st_size > 0
    # the settings reach the sampler: the same seeds under other settings give other grids
    a = family_samples(gen, families=gen.cfg.families[:1], per_family=1, steps=2, guidance=1.5)["grids"]
    b = family_samples(gen, families=gen.cfg.families[:1], per_family=1, steps=3, guidance=1.5)["grids"]
    assert not np.allclose(next(iter(a.values()))[0], next(iter(b.values()))[0])
    for option, value in (("--steps", "0"), ("--guidance", "-1")):
        bad = CliRunner().invoke(app, ["evaluate", "families", str(ckpt), option, value])
        assert bad.exit_code != 0 and option in str(bad.exception)


def test_evaluate_families_samples_a_neural_field_from_its_family_codes(tmp_path):
    """A field has families too (a code Gaussian per family): `evaluate families` samples it, one
    code per seed, and refuses the latent diffusion sampler's settings by name."""
    from weightspace.generators import load_generator
    from weightspace.generators.latent_diffusion.evaluate import family_samples

    ckpt = tiny_field().save(tmp_path / "nf")
    out = tmp_path / "fam.json"
    result = CliRunner().invoke(app, ["evaluate", "families", str(ckpt), "--per-family", "2", "--out", str(out),
                                      "--gallery", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    gen = load_generator(ckpt)
    assert len(written["samples"]) == 2 * len(gen.families) and "steps" not in written
    assert (tmp_path / "g.png").stat().st_size > 0 and f"wrote {tmp_path / 'g.png'}" in result.output  # said where
    grids = family_samples(gen, families=gen.families[:1], per_family=2)["grids"][gen.families[0]]
    assert not np.allclose(grids[0], grids[1])  # each sample's code comes from its own seed
    bad = CliRunner().invoke(app, ["evaluate", "families", str(ckpt), "--steps", "4"])
    assert bad.exit_code != 0 and "latent diffusion sampler" in str(bad.exception)


def test_generate_an_unconditional_model_needs_no_condition(tmp_path, monkeypatch):
    """An unconditional generator (WaLa-UN) generates with none of --family, --points, --voxels; a
    conditional one still asks for exactly one."""
    import sys
    from pathlib import Path

    from weightspace.experiments import generate as generate_module

    sys.path.insert(0, str(Path(__file__).parent))
    from toy_generator import ToyGenerator

    class Unconditional(ToyGenerator):
        unconditional = True

    monkeypatch.setattr(generate_module, "load_generator", lambda checkpoint, device: Unconditional(resolution=16))
    rows = generate_module.generate_shapes("un", tmp_path / "g", family=None, points=None, voxels=None, seed=0, count=2,
                                           fmt="ply", resolution=None)
    assert len(rows) == 2 and json.loads((tmp_path / "g" / "generate.json").read_text())["condition"] == {"unconditional": True}
    monkeypatch.setattr(generate_module, "load_generator", lambda checkpoint, device: ToyGenerator(resolution=16))
    with pytest.raises(InputError, match="give exactly one of --family, --points, --voxels: toy is a conditional toy model"):
        generate_module.generate_shapes("toy", tmp_path / "h", family=None, points=None, voxels=None, seed=0, count=1,
                                        fmt="ply", resolution=None)


def test_evaluate_neural_field_without_families_says_not_measured(tmp_path):
    """A field trained on shapes without families samples none: family_betti_match is null with the reason
    (it printed 0.0000), every rate carries n and its Wilson interval, and the held-out shapes are named."""
    from weightspace.data.make import make_dataset

    gen = tiny_field()
    gen.config["data"] = {"families": []}  # as a training on imported meshes records it
    ck = gen.save(tmp_path / "nf")
    data = tmp_path / "data"
    make_dataset(data, family="torus", count=1, resolution=16, seed=0, n_points=256, progress=False)
    _register()
    r = CliRunner().invoke(app, ["evaluate", "generator", str(ck), "--data", str(data), "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    figures = json.loads(r.output)
    assert figures["family_betti_match"] is None and figures["family_betti_match_n"] == 0
    assert figures["family_betti_match_not_measured"] == "the checkpoint has no families (its training shapes had none)"
    assert figures["points_betti_match_n"] == figures["held_out_shapes"] == 1
    assert figures["points_betti_match_low"] <= figures["points_betti_match"] <= figures["points_betti_match_high"]
    assert figures["held_out_from"] == "every shape (not the checkpoint's training folder)"
    text = CliRunner().invoke(app, ["evaluate", "generator", str(ck), "--data", str(data), "--device", "cpu"]).output
    assert "family_betti_match     not measured (the checkpoint has no families" in text
    assert re.search(r"points_betti_match +[01]\.0000 \[\d\.\d{4}, \d\.\d{4}\] \(n=1\)", text), text


def test_latent_diffusion_samples_only_the_families_its_data_held(tmp_path):
    """Where a checkpoint's config records its training data's families (data.families), it samples those
    and refuses the others by name, as the neural field does (a tori-only checkpoint made a 201-part blob for
    chair); one that records none, as the shipped ones, keeps every family of its model."""
    import dataclasses

    from weightspace.generators.latent_diffusion.evaluate import family_samples
    from weightspace.generators.latent_diffusion.model import LatentDiffusionGenerator

    gen = tiny_generator(seed=1)
    gen.config["data"] = {"manifest_hash": "0", "families": ["torus"]}
    ck = gen.save(tmp_path / "tori")
    _register()
    r = CliRunner().invoke(app, ["generate", "--checkpoint", str(ck), "--family", "mug", "--out", str(tmp_path / "g")])
    assert isinstance(r.exception, InputError) and "no training shapes of family 'mug'; it samples torus" in str(r.exception)
    r = CliRunner().invoke(app, ["evaluate", "families", str(ck), "--per-family", "1", "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert list(json.loads(r.output)["per_family"]) == ["torus"]
    # trained on imported meshes: its one family has no declared topology (it listed the 10 procedural ones)
    imported = LatentDiffusionGenerator(dataclasses.replace(gen.cfg, families=["torus", "imported"]),
                                        extra_config={"data": {"families": ["imported"]}})
    with pytest.raises(InputError, match=r"families \(imported\) have no declared topology"):
        family_samples(imported, per_family=1)
    assert tiny_generator(seed=1).families == ["torus", "mug", "shell"]  # records none: every family


def test_evaluate_generator_leaves_imported_out_of_the_family_figures_as_evaluate_families_refuses_it(tmp_path):
    """A checkpoint trained on imported meshes knows the family `imported`: `evaluate generator` scored its samples
    against each held-out shape's own Betti numbers (and took MMD, COV, 1-NNA of them), while `evaluate families`
    refuses the family, which has no declared topology. Both now measure family figures on declared families only."""
    import dataclasses

    from weightspace.data.importer import import_meshes
    from weightspace.generators.latent_diffusion.evaluate import FAMILY_KEYS, evaluate_generator, family_samples
    from weightspace.generators.latent_diffusion.model import LatentDiffusionGenerator

    trimesh.creation.torus(0.6, 0.25, 32, 16).export(tmp_path / "ring.obj")
    import_meshes([tmp_path / "ring.obj"], tmp_path / "imported", resolution=16, n_points=256, progress=False)
    gen = LatentDiffusionGenerator(dataclasses.replace(tiny_generator(seed=1).cfg, families=["torus", "imported"]),
                                   extra_config={"data": {"families": ["imported"]}})
    assert gen.families == ["imported"]
    with pytest.raises(InputError, match=r"families \(imported\) have no declared topology"):
        family_samples(gen, per_family=1)
    figures = evaluate_generator(gen, tmp_path / "imported", max_shapes=1)
    assert figures["family_betti_match_n"] == 0 and all(figures[k] is None for k in FAMILY_KEYS)
    assert "with a declared topology" in figures["family_betti_match_not_measured"]
    assert figures["family_unknown_shapes"] == 1 and "imported: no declared topology" in figures["family_figures_note"]
    assert figures["points_betti_match_n"] == 1 and 0.0 <= figures["ae_iou"] <= 1.0  # measured against its own grid


def test_the_shipped_default_samples_every_family():
    from weightspace.data.families import FAMILY_NAMES
    from weightspace.generators import load_generator

    assert load_generator("default").families == list(FAMILY_NAMES)


def test_generate_says_its_betti_numbers_are_the_grids(ckpt, tmp_path):
    """The Betti numbers beside each mesh path are its SDF grid's (a mesh's own can differ): the line and
    generate.json (`betti_of`) say so, and they are what `analyze topology` gives for the grid file."""
    from weightspace.analysis.files import analyze_file

    out = tmp_path / "gen"
    r = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--family", "torus", "--count", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "generate.json").read_text())
    (shape,) = summary["shapes"]
    assert summary["betti_of"].startswith("the SDF grid") and "analyze topology" in summary["betti_of"]
    grid = analyze_file(out / shape["grid"])
    assert shape["betti"] == [grid["b0"], grid["b1"], grid["b2"]]
    assert f"{shape['mesh']}  {shape['faces']} faces  grid betti {tuple(shape['betti'])}" in r.output


def test_a_killed_generate_leaves_no_shape_to_a_later_smaller_one(tmp_path, monkeypatch):
    """A generate killed part-way left its first shapes with no generate.json naming them; a later, smaller
    generate into the folder left them beside its own. They stay on record until generate.json is written."""
    import sys
    from pathlib import Path

    from weightspace.experiments import generate as generate_module
    from weightspace.runtime.folders import REPLACING

    sys.path.insert(0, str(Path(__file__).parent))
    from toy_generator import ToyGenerator

    class Unconditional(ToyGenerator):
        unconditional = True

    monkeypatch.setattr(generate_module, "load_generator", lambda checkpoint, device: Unconditional(resolution=16))
    real, made = generate_module.topology, []

    def dies_on_the_second(grid):
        made.append(1)
        if len(made) == 2:
            raise KeyboardInterrupt
        return real(grid)

    monkeypatch.setattr(generate_module, "topology", dies_on_the_second)
    out = tmp_path / "g"
    with pytest.raises(KeyboardInterrupt):
        generate_module.generate_shapes("toy", out, family=None, points=None, voxels=None, seed=3, count=3, fmt="ply",
                                        resolution=None)
    assert len(list((out / "grids").iterdir())) == 2 and not (out / "generate.json").exists()
    monkeypatch.setattr(generate_module, "topology", real)
    rows = generate_module.generate_shapes("toy", out, family=None, points=None, voxels=None, seed=4, count=1, fmt="obj",
                                           resolution=None)
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["000-seed4.npy"]
    assert sorted(p.name for p in (out / "meshes").iterdir()) == ["000-seed4.obj"] and rows[0]["mesh"] == "meshes/000-seed4.obj"
    assert not (out / REPLACING).exists()


def test_voxels_from_a_binvox_file_equal_the_npy_occupancy(tmp_path):
    from trimesh.exchange.binvox import export_binvox
    from trimesh.voxel import VoxelGrid

    from weightspace.data.condition_files import read_voxels_file

    occupancy = np.random.default_rng(1).random((8, 8, 8)) > 0.5
    np.save(tmp_path / "vox.npy", occupancy)
    (tmp_path / "vox.binvox").write_bytes(export_binvox(VoxelGrid(occupancy)))
    np.testing.assert_array_equal(read_voxels_file(tmp_path / "vox.binvox"), read_voxels_file(tmp_path / "vox.npy"))
    with pytest.raises(InputError, match="voxels file not found"):
        read_voxels_file(tmp_path / "missing.binvox")

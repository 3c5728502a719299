"""Populations: building, resuming after an interruption, mismatch errors, process pools."""

import functools
import json
import re

import pytest
import torch
from toy_generator import make_toy, make_toy_data

from weightspace.runtime.errors import InputError
from weightspace.runtime.executors import InProcessExecutor, ProcessPoolExecutorBackend
from weightspace.space import population as population_module
from weightspace.space.population import PopulationConfig, build_population
from weightspace.space.store import Population

LOADER = functools.partial(make_toy, seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_toy_data(tmp_path_factory.mktemp("data"), count=4, resolution=10)


def _config(data, out, **kw):
    base = dict(checkpoint="toy", parameterisation="lora", data=str(data), out=str(out),
                options={"rank": 2, "alpha": 4.0, "targets": "mid|vol"}, steps=6, lr=0.02)
    return PopulationConfig(**(base | kw))


def test_lora_population_fits_and_stores(data, tmp_path):
    pop = build_population(_config(data, tmp_path / "pop"), generator=LOADER)
    assert len(pop) == 4
    assert [r["index"] for r in pop.rows] == [0, 1, 2, 3]
    for r in pop.rows:
        assert r["loss"] < r["metrics"]["loss_start"]  # fine-tuning from the base reduced the loss
        assert len(r["loss_curve"]) == 6 and r["seconds"] > 0
    x = pop.matrix()
    assert x.shape == (4, pop.frame.layout.size) and torch.isfinite(x).all()
    param = pop.frame.build(LOADER())
    assert param.rank == 2 and param.modules == ["mid", "vol"]
    again = build_population(_config(data, tmp_path / "pop2"), generator=LOADER)
    assert torch.equal(again.matrix(), x)  # seeded: the same build gives the same points


def test_resume_after_interruption_ends_with_exactly_n_members(data, tmp_path, monkeypatch):
    out = tmp_path / "pop"
    real = population_module.run_member
    calls = []

    def flaky(task):
        calls.append(task.id)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated interruption")
        return real(task)

    monkeypatch.setattr(population_module, "run_member", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_population(_config(data, out), generator=LOADER)
    assert len(Population(out)) == 2
    # a member whose shard was written but whose manifest row was not: must be redone, not counted
    (out / "shards" / "000003.safetensors").write_bytes(b"torn")
    monkeypatch.setattr(population_module, "run_member", real)
    done = []
    pop = build_population(_config(data, out), generator=LOADER, on_member=lambda r: done.append(r["id"]))
    assert len(pop) == 4 and len({r["id"] for r in pop.rows}) == 4
    assert len(done) == 2  # only the two missing members ran
    assert pop.point(3).shape == (pop.frame.layout.size,)
    full = build_population(_config(data, tmp_path / "full"), generator=LOADER)
    assert torch.equal(pop.matrix(), full.matrix())


def test_resume_refits_members_whose_weights_file_is_damaged_or_missing(data, tmp_path, monkeypatch, capsys):
    """A rerun reads every finished member's weights file: one truncated, pickled or deleted is named,
    leaves the manifest before anything else runs, and is fitted again to the point it had."""
    import pickle

    from weightspace.cli import main
    from weightspace.runtime.errors import Interrupted

    out = tmp_path / "pop"
    before = build_population(_config(data, out), generator=LOADER).matrix()  # (4, D)
    shard = out / "shards" / "000002.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])  # truncated mid-tensor
    lines, done = [], []
    pop = build_population(_config(data, out), generator=LOADER, log=lines.append, on_member=lambda r: done.append(r["index"]))
    assert done == [2] and len(lines) == 1
    assert lines[0].startswith(f"member {pop.rows[2]['id']}: weights file damaged (") and lines[0].endswith("; refitting")
    torch.testing.assert_close(pop.matrix(), before, rtol=0, atol=1e-6)  # its seed: the same point again

    (out / "shards" / "000001.safetensors").write_bytes(pickle.dumps({"point": [0.0]}))
    (out / "shards" / "000003.safetensors").unlink()
    monkeypatch.setattr(population_module, "run_member", lambda task: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(Interrupted, match=rf"^interrupted: 2 of 4 members are saved in {out}; run the same command again"):
        build_population(_config(data, out), generator=LOADER, log=lines.append)
    assert [r["index"] for r in Population(out).rows] == [0, 2] and not Population(out).unreadable()  # rows gone first
    assert "weights file damaged" in lines[1] and "weights file missing" in lines[2]
    monkeypatch.undo()
    pop = build_population(_config(data, out), generator=LOADER, log=lines.append)
    torch.testing.assert_close(pop.matrix(), before, rtol=0, atol=1e-6)
    assert len(lines) == 3
    with pytest.raises(SystemExit) as stop:
        main(["population", "check", str(out)])
    assert stop.value.code == 0, capsys.readouterr().err


def test_resume_with_other_settings_is_refused(data, tmp_path):
    build_population(_config(data, tmp_path / "pop", members=1), generator=LOADER)
    with pytest.raises(InputError, match="other steps 6 -> 7"):
        build_population(_config(data, tmp_path / "pop", members=1, steps=7), generator=LOADER)
    with pytest.raises(InputError, match="other base weights"):
        build_population(_config(data, tmp_path / "pop", members=1), generator=functools.partial(make_toy, seed=1))


@pytest.mark.parametrize("name,options", [("condition", {}), ("layers", {"targets": "out"})])
def test_condition_and_layers_populations(data, tmp_path, name, options):
    fit = "points" if name == "condition" else "grid"
    cfg = _config(data, tmp_path / name, parameterisation=name, options=options, members=2, fit=fit, observations=64)
    pop = build_population(cfg, generator=LOADER)
    assert len(pop) == 2
    if name == "condition":
        assert all(r["metrics"]["mode"] == "encode" for r in pop.rows)  # the toy encodes points
        pts = json.loads((data / "manifest.jsonl").read_text().splitlines()[0])
        assert pts["id"] == pop.rows[0]["id"]
    else:
        assert all(r["loss"] < r["metrics"]["loss_start"] for r in pop.rows)


def test_optimised_conditions(data, tmp_path):
    cfg = _config(data, tmp_path / "c", parameterisation="condition", options={}, members=2, condition_fit="optimise", lr=0.05)
    pop = build_population(cfg, generator=LOADER)
    assert all(r["metrics"]["mode"] == "optimise" and r["loss"] < r["metrics"]["loss_start"] for r in pop.rows)


@pytest.mark.slow  # spawning workers that import torch takes tens of seconds on a loaded 2-core machine
def test_process_pool_gives_the_same_points(data, tmp_path):
    cfg = _config(data, tmp_path / "pool", members=2, steps=2)
    with ProcessPoolExecutorBackend(workers=2) as ex:
        pooled = build_population(cfg, generator=LOADER, executor=ex)
    inproc = build_population(_config(data, tmp_path / "inproc", members=2, steps=2), generator=LOADER, executor=InProcessExecutor())
    torch.testing.assert_close(pooled.matrix(), inproc.matrix(), rtol=1e-5, atol=1e-6)


def test_bad_config_values_are_named(data, tmp_path):
    with pytest.raises(InputError, match="fit must be one of"):
        build_population(_config(data, tmp_path / "x", fit="mesh"), generator=LOADER)
    with pytest.raises(InputError, match="manifest.jsonl: not found"):
        build_population(_config(tmp_path, tmp_path / "x"), generator=LOADER)
    # types are checked as a config file's would be, naming the field
    for kw, match in (({"steps": "5"}, r"PopulationConfig\.steps: expected an integer"),
                      ({"members": "2"}, r"PopulationConfig\.members: expected an integer"),
                      ({"lr": "x"}, r"PopulationConfig\.lr: expected a number"),
                      ({"options": {"rank": 2.5, "targets": "mid|vol"}}, "lora rank must be an integer >= 1, got 2.5"),
                      ({"options": {"rank": True, "targets": "mid|vol"}}, "lora rank must be an integer >= 1, got True"),
                      ({"options": {"alpha": "x", "targets": "mid|vol"}}, "lora alpha must be a number >= 0")):
        with pytest.raises(InputError, match=match):
            build_population(_config(data, tmp_path / "y", **kw), generator=LOADER)



def test_layers_targets_that_are_not_a_string_are_named(data, tmp_path):
    cfg = _config(data, tmp_path / "z", parameterisation="layers", options={"targets": ["mid"]})
    with pytest.raises(InputError, match="layers targets must be a string"):
        build_population(cfg, generator=LOADER)


class _NaNAfterStep:
    """A toy generator whose training loss turns NaN after its first call (a fit that diverges)."""

    def __call__(self):
        gen = make_toy(seed=0)
        plain, calls = gen.training_loss, []

        def loss(grids, condition, seeds, *, params=None):
            calls.append(1)
            out = plain(grids, condition, seeds, params=params)
            return out if len(calls) <= 2 else out * float("nan")  # the build's check that the loss reaches the weights, step 0

        gen.training_loss = loss
        return gen


def test_a_fit_whose_loss_turns_nan_names_the_member(data, tmp_path):
    cfg = _config(data, tmp_path / "nan", parameterisation="layers", options={"targets": "mid"})
    with pytest.raises(InputError, match=r"member '.+': the loss is NaN or infinite at step 1 of 6 \(generator 'toy'"):
        build_population(cfg, generator=_NaNAfterStep())


def test_progress_goes_to_stderr_not_stdout(data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WEIGHTSPACE_QUIET", raising=False)
    monkeypatch.delenv("CI", raising=False)
    build_population(_config(data, tmp_path / "p", members=2), generator=LOADER)
    out, err = capsys.readouterr()
    assert out == "" and "2/2" in err


def test_numpy_numbers_in_a_config_built_in_code_are_taken_as_python_numbers(data, tmp_path):
    import numpy as np

    from weightspace.runtime.config import check_config

    cfg = check_config(_config(data, tmp_path / "np", members=np.int64(2), lr=np.float32(0.02)), where="PopulationConfig")
    assert cfg.members == 2 and type(cfg.members) is int and cfg.lr == pytest.approx(0.02)


def test_a_resume_with_another_split_is_refused_before_any_shard_is_overwritten(tmp_path):
    data = make_toy_data(tmp_path / "d", count=6, resolution=10)
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]
    for i, r in enumerate(rows):
        r["split"] = "train" if i < 3 else "test"
    rows.append({"id": "broken", "status": "failed", "error": "empty file"})  # `data import` reports these
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pop = build_population(_config(data, tmp_path / "p", members=2), generator=LOADER)  # a failed row is skipped
    shard = (tmp_path / "p" / pop.rows[0]["shard"]).read_bytes()
    with pytest.raises(InputError, match="another --split or another order"):
        build_population(_config(data, tmp_path / "p", split="test"), generator=LOADER)
    assert (tmp_path / "p" / pop.rows[0]["shard"]).read_bytes() == shard
    # a setting that can only fail is refused before the folder is started; a data folder is not a population
    with pytest.raises(InputError, match="apply to fit points only"):
        build_population(_config(data, tmp_path / "g", observation="noisy", noise=0.01), generator=LOADER)
    with pytest.raises(InputError, match="observation noisy needs noise > 0"):
        build_population(_config(data, tmp_path / "n", fit="points", observation="noisy"), generator=LOADER)
    assert not (tmp_path / "n").exists()
    with pytest.raises(InputError, match="holds a shape dataset, not a population"):
        build_population(_config(data, data), generator=LOADER)


def test_a_hand_edited_population_is_refused_by_name(data, tmp_path):
    """A repeated member line, bytes that are not UTF-8, a member index that is not an integer, or a
    parameterisation option of the wrong kind in config.json: each is named when the population opens,
    before a subspace or decode writes anything."""
    import shutil

    from weightspace.space.subspace import fit_subspace

    build_population(_config(data, tmp_path / "pop"), generator=LOADER)

    def edited(name, edit):
        folder = tmp_path / name
        shutil.copytree(tmp_path / "pop", folder)
        edit(folder)
        return folder

    lines = (tmp_path / "pop" / "manifest.jsonl").read_text().splitlines()
    dup = edited("dup", lambda f: (f / "manifest.jsonl").write_text("\n".join([*lines, lines[1]]) + "\n"))
    with pytest.raises(InputError, match=r"line 5 repeats member index 1 of line 2"):
        Population(dup)
    bad_bytes = edited("bytes", lambda f: (f / "manifest.jsonl").write_bytes((tmp_path / "pop" / "manifest.jsonl").read_bytes() + b"\xff\xfe\n"))
    with pytest.raises(InputError, match=r"manifest.jsonl:5: not UTF-8"):
        Population(bad_bytes)
    row = json.loads(lines[0]) | {"index": "zero"}
    index = edited("index", lambda f: (f / "manifest.jsonl").write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n"))
    with pytest.raises(InputError, match=r"line 1: index must be an integer, got 'zero'"):
        Population(index)
    def listed_name(f):
        config = json.loads((f / "config.json").read_text())
        config["parameterisation"]["name"] = ["lora"]
        (f / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"listed/config.json: parameterisation.name must be one of .* got \['lora'\]"):
        Population(edited("listed", listed_name))
    for name, value, match in (("nan", float("nan"), r"parameterisation: lora alpha must be a number >= 0"),
                               ("unknown", None, r"parameterisation 'lora' takes options .* got unknown \['bogus'\]")):
        def edit(f, value=value):
            config = json.loads((f / "config.json").read_text())
            if value is None:
                config["parameterisation"]["bogus"] = 1
            else:
                config["parameterisation"]["alpha"] = value
            (f / "config.json").write_text(json.dumps(config))
        folder = edited(name, edit)
        with pytest.raises(InputError, match=rf"{name}/config.json: {match}"):
            fit_subspace(folder, 2, out=tmp_path / f"sub-{name}")
        assert not (tmp_path / f"sub-{name}").exists()


def test_a_resume_names_what_changed_and_a_memberless_folder_pins_nothing(data, tmp_path):
    out = tmp_path / "pop"
    build_population(_config(data, out, members=2), generator=LOADER)
    with pytest.raises(InputError, match=r"built with other steps 6 -> 5; use a new --out"):
        build_population(_config(data, out, members=2, steps=5), generator=LOADER)
    other = make_toy_data(tmp_path / "other", count=3, resolution=10)
    with pytest.raises(InputError, match=r"other data \(its manifest.jsonl differs\)"):
        build_population(_config(other, out, members=2), generator=LOADER)
    # a build that stopped before its first member (its first fit failed, say): the corrected command starts afresh
    import shutil

    shutil.rmtree(out / "shards")
    (out / "manifest.jsonl").unlink()
    pop = build_population(_config(data, out, members=2, steps=5), generator=LOADER)
    assert len(pop) == 2 and json.loads((out / "config.json").read_text())["settings"]["steps"] == 5
    # a setting only the earlier build recorded (an older version's) is named too
    config = json.loads((out / "config.json").read_text())
    config["settings"]["batch"] = 4
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"built with other batch 4 -> \(not set\)"):
        build_population(_config(data, out, members=2, steps=5), generator=LOADER)


def test_a_grid_fit_on_grids_of_another_resolution_names_the_folder_and_the_resolution(tmp_path):
    """A latent diffusion generator encodes its target grids at its own resolution: on a folder of 10^3 grids its
    first member failed with `grids must have shape (B, 16, 16, 16)`, naming neither the folder nor the fix."""
    from test_latent_diffusion_model import tiny_generator

    gen = tiny_generator(seed=1)  # 16^3
    data = make_toy_data(tmp_path / "at10", count=2, resolution=10)
    config = _config(data, tmp_path / "pop", parameterisation="condition", options={}, steps=1)
    with pytest.raises(InputError, match=rf"^{re.escape(str(data))}: grids are 10\^3, but this latent-diffusion generator fits members to "
                                         r"16\^3 grids; make or import the folder with --resolution 16"):
        build_population(config, generator=gen)
    assert not (tmp_path / "pop").exists()  # refused before anything is written
    population_module.check_grid_resolution(gen, data, population_module.read_shapes(data), "points")  # points: any grid
    population_module.check_grid_resolution(make_toy(seed=0), data, population_module.read_shapes(data), "grid")  # any R


def test_a_grid_fit_to_empty_grids_is_warned_of(tmp_path):
    """A solid thinner than a voxel imports with an empty grid (`empty_at_resolution`); its member then
    reproduced it by decoding nothing and passed the fidelity check (IoU 1.0) without a word."""
    rows = [{"id": "plate", "betti_measured": [0, 0, 0]}, {"id": "block", "betti_measured": [1, 0, 0]}, {"id": "old"}]
    said = []
    population_module.warn_empty_targets(rows, "grid", said.append)
    assert len(said) == 1 and "1 shape(s) have an empty grid at this resolution (plate)" in said[0]
    said.clear()
    population_module.warn_empty_targets(rows, "points", said.append)  # its surface points are not empty
    population_module.warn_empty_targets(rows[1:], "grid", said.append)
    assert said == []
    # and the build says it, before fitting
    import trimesh

    from weightspace.data.importer import import_meshes

    src = tmp_path / "m"
    src.mkdir()
    trimesh.creation.box(extents=(1.0, 1.0, 0.02)).export(src / "plate.stl")
    trimesh.creation.box(extents=(1.0, 1.0, 0.6)).export(src / "block.stl")
    import_meshes([src], tmp_path / "d", resolution=16, n_points=64, progress=False, log=lambda s: None)
    build_population(_config(tmp_path / "d", tmp_path / "pop", steps=1), generator=LOADER, log=said.append)
    assert any("have an empty grid at this resolution (0001-plate)" in line for line in said), said


def test_a_clean_observation_with_noise_is_refused_as_data_observe_refuses_it(data, tmp_path):
    """`--fit points --observation clean --noise 0.01` added the noise to points the folder's config calls clean."""
    from typer.testing import CliRunner

    from weightspace.cli import _register, app

    with pytest.raises(InputError, match=r"a clean observation \(--observation clean\) has no noise, got --noise 0.01; use "
                                         r"--observation noisy"):
        build_population(_config(data, tmp_path / "c", fit="points", observation="clean", noise=0.01), generator=LOADER)
    assert not (tmp_path / "c").exists()
    _register()
    r = CliRunner().invoke(app, ["population", "build", "--data", str(data), "--out", str(tmp_path / "cli"), "--fit", "points",
                                 "--observation", "clean", "--noise", "0.01"])
    assert isinstance(r.exception, InputError) and "--observation noisy" in str(r.exception), r.output
    assert not (tmp_path / "cli").exists()
    # noise on a partial view stays allowed, as in `data observe`
    _config(data, tmp_path / "p", fit="points", observation="partial", noise=0.01).validate()


def test_an_observation_set_or_a_population_given_as_shapes_is_named_by_both_commands(data, tmp_path):
    """`population build --data` and `data observe FOLDER` read such a folder as shapes and failed on its first
    row ("lacks field(s) ['grid']"); each now says what the folder is, with no option the command lacks."""
    from typer.testing import CliRunner

    from weightspace.cli import _register, app
    from weightspace.data.observe import observe_folder

    obs = tmp_path / "obs"
    observe_folder(data, obs, n=16)
    pop = tmp_path / "pop"
    build_population(_config(data, pop, members=1, steps=1), generator=LOADER)
    _register()
    for args, kind in ((["population", "build", "--data", str(obs), "--out", str(tmp_path / "p1")], "an observations folder"),
                       (["population", "build", "--data", str(pop), "--out", str(tmp_path / "p2")], "a population folder"),
                       (["data", "observe", str(obs), "--out", str(tmp_path / "o1")], "an observations folder"),
                       (["data", "observe", str(pop), "--out", str(tmp_path / "o2")], "a population folder")):
        r = CliRunner().invoke(app, args)
        message = str(r.exception)
        assert isinstance(r.exception, InputError) and f"is {kind}" in message and "--population" not in message, (args, message)
        assert "lacks field" not in message and not (tmp_path / args[-1]).exists()


def test_a_member_grid_of_another_size_than_its_row_says_is_refused(tmp_path):
    """`population build` fitted a grid smaller than its manifest row's resolution without a word."""
    import numpy as np

    data = make_toy_data(tmp_path / "d", count=2, resolution=10)
    row = json.loads((data / "manifest.jsonl").read_text().splitlines()[1])
    np.save(data / row["grid"], np.load(data / row["grid"])[:8, :8, :8])  # (8, 8, 8) under resolution 10
    with pytest.raises(InputError, match=rf"{row['grid']}: grid of shape \(8, 8, 8\), but its row .* says resolution 10"):
        build_population(_config(data, tmp_path / "p", steps=1), generator=LOADER)
    # refused before the first member: the shape before it (row 0) was fitted first and written
    assert not (tmp_path / "p" / "manifest.jsonl").exists() and not list((tmp_path / "p").glob("shards/*"))

"""A tiny end-to-end train of the neural field on a tiny procedural data set: loss falls, resume, load,
evaluation keys, CLI config errors."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from weightspace.cli import _register, app
from weightspace.generators import load_generator
from weightspace.generators.neural_field.config import FieldConfig, TrainConfig
from weightspace.generators.neural_field.evaluate import evaluate_generator
from weightspace.generators.neural_field.samples import build_bank, read_manifest
from weightspace.generators.neural_field.train import LOG_NAME, OLD_STATE_NAME, STATE_NAME, train_neural_field
from weightspace.runtime.checkpoint import load_state, state_metadata
from weightspace.runtime.safe_load import sniff

TINY = dict(d_z=8, width=16, depth=3, skip=1, recon_steps=5, recon_restarts=1, recon_queries=64)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from weightspace.data.make import make_dataset

    folder = tmp_path_factory.mktemp("nf_data")
    make_dataset(folder, family="all", count=30, resolution=16, seed=0, n_points=256, progress=False)
    return folder


def _train(data, out, steps):
    tc = TrainConfig(minutes=2.0, steps=steps, points_per_shape=64, bank_size=512, log_every=5, warmup_steps=5)
    return train_neural_field(data, out, model_cfg=FieldConfig(**TINY), train_cfg=tc, log=lambda s: None)


def _pickles(folder):
    """The files in `folder` that are pickles by their bytes or `.pt` by their name: none, for a run of today."""
    return [p.name for p in folder.iterdir() if p.suffix == ".pt" or sniff(p) in ("pickle", "torch-zip")]


def test_sample_bank_is_exact_and_seeded(tiny_data):
    rows = read_manifest(tiny_data, "train")[:3]
    a = build_bank(tiny_data, rows, size=200, sigmas=[0.01, 0.05], uniform_fraction=0.2, seed=0, grid_fraction=0.2)
    b = build_bank(tiny_data, rows, size=200, sigmas=[0.01, 0.05], uniform_fraction=0.2, seed=0, grid_fraction=0.2)
    assert a.points.shape == (3, 200, 3) and a.sdf.shape == (3, 200) and a.exact == 3
    assert torch.equal(a.points, b.points) and torch.equal(a.sdf, b.sdf)
    assert (a.sdf.abs() < 0.05).float().mean() > 0.3  # most samples sit near the surface


def test_tiny_train_resume_load_and_evaluate(tiny_data, tmp_path):
    out = tmp_path / "ck"
    _train(tiny_data, out, steps=30)
    n_train = len(read_manifest(tiny_data, "train"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "neural-field" and cfg["model"]["n_codes"] == n_train and cfg["model"]["resolution"] == 16
    assert cfg["train_state"]["step"] == 30 and sniff(out / STATE_NAME) == "safetensors" and _pickles(out) == []
    rows = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert rows[-1]["l1"] < rows[0]["l1"]  # the clamped L1 fell
    record = json.loads((out / "training_record.json").read_text())
    assert record["steps"] == 30 and record["loss_log"]
    # resume continues from step 30 to 35 instead of starting over
    _train(tiny_data, out, steps=35)
    assert json.loads((out / "config.json").read_text())["train_state"]["step"] == 35
    back = load_generator(out)
    assert torch.allclose(back.training_codes().mean(0), back.net.global_mean, atol=1e-5)  # priors were fitted
    figures = evaluate_generator(back, tiny_data, max_shapes=1, samples_per_family=1)
    rate_keys = {f"{k}{end}" for k in ("points_betti_match", "family_betti_match") for end in ("_n", "_low", "_high")}
    assert set(figures) == {"train_iou", "points_iou", "points_betti_match", "family_betti_match", "seconds_per_shape",
                            "held_out_shapes", "held_out_from", *rate_keys}  # the training folder, recognised by its manifest hash
    assert all(0.0 <= figures[k] <= 1.0 for k in ("train_iou", "points_iou", "points_betti_match", "family_betti_match"))
    assert figures["seconds_per_shape"] > 0 and figures["held_out_shapes"] == figures["points_betti_match_n"] == 1
    assert figures["held_out_from"] in ("the training folder's test split", "the training folder's val split")


def test_evaluate_on_a_folder_it_was_not_trained_on(tiny_data, tmp_path):
    """Reconstruction from points needs no training codes: any folder is held out, the training fit is skipped."""
    import trimesh

    from weightspace.data.importer import import_meshes
    from weightspace.data.make import make_dataset

    ck = tmp_path / "ck"
    _train(tiny_data, ck, steps=10)
    other = tmp_path / "other"
    make_dataset(other, family="table,chair,dumbbell,torus", count=4, resolution=16, seed=3, n_points=256, progress=False)
    _register()
    r = CliRunner().invoke(app, ["evaluate", "generator", str(ck), "--data", str(other), "--json", "--max-shapes", "4",
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    figures = json.loads(r.output)
    assert "train_iou" not in figures and "not the checkpoint's training data" in figures["train_iou_skipped"]
    assert figures["held_out_shapes"] == 4  # every shape of a foreign folder, whatever its split
    assert 0.0 <= figures["points_iou"] <= 1.0 and 0.0 <= figures["points_betti_match"] <= 1.0
    # an imported folder whose manifest also holds a skipped non-solid row
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.torus(0.6, 0.25, 32, 16).export(meshes / "ring.obj")
    trimesh.Trimesh(np.random.default_rng(0).uniform(-1, 1, (30, 3)), np.arange(30).reshape(10, 3)).export(meshes / "soup.obj")
    import_meshes([meshes], tmp_path / "imported", resolution=16, n_points=256, progress=False)
    figures = evaluate_generator(load_generator(ck), tmp_path / "imported", max_shapes=2, samples_per_family=1)
    assert figures["held_out_shapes"] == 1 and "train_iou_skipped" in figures


def test_evaluate_on_a_process_pool_gives_the_figures_computed_here(tiny_data, tmp_path):
    """`evaluate generator --executor`: the reconstructions and family samples run as tasks on workers
    that load the checkpoint themselves; every batch draws from its own seeds, so the figures agree."""
    from weightspace.cli.evaluate import evaluate_checkpoint
    from weightspace.runtime.executors import make_executor

    ck = tmp_path / "ck"
    _train(tiny_data, ck, steps=10)
    here = evaluate_checkpoint(str(ck), tiny_data, max_shapes=8, seed=1)
    with make_executor("process", workers=2) as ex:
        there = evaluate_checkpoint(str(ck), tiny_data, max_shapes=8, seed=1, executor=ex)
    assert here.pop("seconds_per_shape") > 0 and there.pop("seconds_per_shape") > 0
    assert here["held_out_shapes"] >= 3 and there == pytest.approx(here, abs=1e-9)


def test_ema_run_resumes_with_its_average(tiny_data, tmp_path):
    """With an EMA the checkpoint holds the average; a resume carries it on without touching the live weights."""
    out = tmp_path / "ema"

    def train(steps):
        tc = TrainConfig(minutes=2.0, steps=steps, points_per_shape=64, bank_size=512, log_every=5, warmup_steps=5,
                         ema_decay=0.9)
        return train_neural_field(tiny_data, out, model_cfg=FieldConfig(**TINY), train_cfg=tc, device="cpu", log=lambda s: None)

    train(10)
    state = load_state(out / STATE_NAME)
    assert not torch.equal(state["ema.layers.0.weight"], state["net.layers.0.weight"])
    train(15)
    state2 = load_state(out / STATE_NAME)
    assert json.loads(state_metadata(out / STATE_NAME)["train_state"])["step"] == 15
    assert not torch.equal(state2["ema.layers.0.weight"], state2["net.layers.0.weight"])
    ckpt = load_generator(out)
    assert torch.equal(ckpt.net.layers[0].weight.detach(), state2["ema.layers.0.weight"])  # the checkpoint is the EMA


def test_cli_rejects_bad_config(tiny_data, tmp_path):
    _register()
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"train": {"epochs": 3}}))
    res = CliRunner().invoke(app, ["train", "neural-field", "--data", str(tiny_data), "--out", str(tmp_path / "o"),
                                   "--config", str(bad)])
    assert res.exit_code != 0 and "epochs" in str(res.exception) + res.output
    bad.write_text(json.dumps({"model": {"width": "wide"}}))
    res = CliRunner().invoke(app, ["train", "neural-field", "--data", str(tiny_data), "--out", str(tmp_path / "o"),
                                   "--config", str(bad)])
    assert res.exit_code != 0 and "width" in str(res.exception) + res.output
    help_text = CliRunner().invoke(app, ["train", "neural-field", "--help"]).output
    assert "Example" in help_text


def _write_old_state(out):
    """Replace the safetensors resume state in `out` with the trainer_state.pt that runs made before it:
    torch.save of {optimizer: Adam's state_dict, step, elapsed, net}."""
    from weightspace.runtime.optim_state import restore_adam

    tensors = load_state(out / STATE_NAME)
    counters = json.loads(state_metadata(out / STATE_NAME)["train_state"])
    net = load_generator(out).net
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    others = [p for n, p in net.named_parameters() if n != "codes"]
    opt = torch.optim.Adam([{"params": others}, {"params": [net.codes]}])  # the trainer's groups, in its order
    restore_adam(opt, net, tensors, out / STATE_NAME)
    torch.save({"optimizer": opt.state_dict(), "step": counters["step"], "elapsed": counters["elapsed"], "net": net.state_dict()},
               out / OLD_STATE_NAME)
    (out / STATE_NAME).unlink()


@pytest.mark.parametrize("saved_as", ["safetensors", "old trainer_state.pt"])
def test_a_signal_stops_training_after_its_step_saved(tiny_data, tmp_path, monkeypatch, saved_as):
    """SIGTERM or Ctrl-C mid-run: the step in flight finishes, the checkpoint is saved there with a record
    that says so, and rerunning the command ends where an uninterrupted run ends, along the same loss curve.
    It resumes so from the safetensors state, and from the trainer_state.pt pickle of a run started before
    that (read through the vetted reader, then replaced by the safetensors state)."""
    import signal

    from weightspace.generators.neural_field import train as train_module
    from weightspace.runtime.distributed import Stopped

    def train(out):
        tc = TrainConfig(minutes=2.0, steps=8, points_per_shape=64, bank_size=512, log_every=1, warmup_steps=2)
        return train_neural_field(tiny_data, out, model_cfg=FieldConfig(**TINY), train_cfg=tc, device="cpu", log=lambda s: None)

    straight = train(tmp_path / "straight")
    draw = train_module.item_generator

    def signalled_draw(seed, name, step):
        if step == 3:
            signal.raise_signal(signal.SIGINT)
        return draw(seed, name, step)

    out = tmp_path / "stopped"
    before = signal.getsignal(signal.SIGINT)  # Python's own, or SIG_IGN in a job started in the background
    monkeypatch.setattr(train_module, "item_generator", signalled_draw)
    with pytest.raises(Stopped):
        train(out)
    monkeypatch.setattr(train_module, "item_generator", draw)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is gone with the loop
    assert json.loads((out / "config.json").read_text())["train_state"]["step"] == 4  # step 3 finished, then saved
    assert "stopped" in json.loads((out / "training_record.json").read_text())
    assert _pickles(out) == []
    if saved_as == "old trainer_state.pt":
        _write_old_state(out)
    # what a person or `evaluate` added to the record of the stopped piece outlives the resume
    record = json.loads((out / "training_record.json").read_text())
    (out / "training_record.json").write_text(json.dumps({**record, "machine": "two cores", "figures": {"train_iou": 0.5},
                                                          "figures_command": "weightspace evaluate generator ..."}))
    resumed = train(out)
    assert _pickles(out) == [] and sniff(out / STATE_NAME) == "safetensors"
    assert json.loads((out / "config.json").read_text())["train_state"]["step"] == 8
    record = json.loads((out / "training_record.json").read_text())
    assert "stopped" not in record and record["machine"] == "two cores" and "figures" not in record
    assert record["figures_of_earlier_steps"] == [{"steps": 4, "figures": {"train_iou": 0.5}, "command": "weightspace evaluate generator ..."}]
    # both pieces are listed, the stopped one with its note, and the steps cover the run
    assert [(piece["steps"], "stopped" in piece) for piece in record["pieces"]] == [("0 -> 4", True), ("4 -> 8", False)]
    assert record["steps"] == 8 and [row["step"] for row in record["loss_log"]] == list(range(1, 9))
    for k, v in straight.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[k], v, msg=k)
    curves = [[row["l1"] for row in map(json.loads, (folder / LOG_NAME).read_text().splitlines())] for folder in (tmp_path / "straight", out)]
    assert len(curves[1]) == 8 and curves[1] == pytest.approx(curves[0], rel=1e-5)


def test_a_field_samples_only_the_families_it_trained_on(tmp_path):
    """Trained on tori and pairs only, a field has no code Gaussian of its own for a dumbbell: it
    lists the two families it can sample and refuses the others by name (it used to draw from the
    global Gaussian and decode a shape of no family, often empty)."""
    from weightspace.data.make import make_dataset

    data = tmp_path / "two"
    make_dataset(data, family="torus,pair", count=6, resolution=16, seed=0, n_points=256, progress=False)
    from weightspace.runtime.errors import InputError

    _train(data, tmp_path / "ck", steps=5)
    gen = load_generator(tmp_path / "ck")
    assert gen.families == ["torus", "pair"]
    assert gen.condition(family=["pair", "all"], seeds=[0, 1]).shape == (2, TINY["d_z"])
    with pytest.raises(InputError, match="no training shapes of family 'dumbbell'; it samples torus, pair"):
        gen.condition(family=["dumbbell"], seeds=[0])


@pytest.fixture(scope="module")
def imported_data(tmp_path_factory):
    """A folder of imported meshes (tori and spheres): no procedural family, no `data make` command."""
    import trimesh

    from weightspace.data.importer import import_meshes

    meshes = tmp_path_factory.mktemp("nf_meshes")
    for k in range(3):
        trimesh.creation.torus(0.6, 0.2 + 0.05 * k, 32, 16).export(meshes / f"ring{k}.obj")
        trimesh.creation.icosphere(2, 0.5 + 0.1 * k).export(meshes / f"ball{k}.ply")
    folder = tmp_path_factory.mktemp("nf_imported")
    import_meshes([meshes], folder, resolution=16, n_points=256, progress=False)
    return folder


def test_a_field_trained_on_imported_meshes_records_no_make_command(imported_data, tmp_path):
    """The record gave `weightspace data make --family None ...` as the command that made an imported folder."""
    _train(imported_data, tmp_path / "ck", steps=3)
    data = json.loads((tmp_path / "ck" / "training_record.json").read_text())["data"]
    assert "command" not in data and data["count"] == 6 and data["resolution"] == 16


def test_a_field_of_no_family_says_so_when_asked_for_one(imported_data, tmp_path):
    """The refusal read `it samples  (or all)` with an empty list where the data had no family."""
    from weightspace.runtime.errors import InputError

    _train(imported_data, tmp_path / "ck", steps=3)
    gen = load_generator(tmp_path / "ck")
    assert gen.families == []
    with pytest.raises(InputError, match=r"family 'torus'; it samples no family \(or all\)"):
        gen.condition(family=["torus"], seeds=[0])

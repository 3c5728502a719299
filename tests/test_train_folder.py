"""A training run's --out: what it refuses, one writer at a time, and a loss log with each step once after a resume."""

import json
import multiprocessing
import os

import pytest

from weightspace.generators.neural_field.config import FieldConfig, TrainConfig
from weightspace.generators.neural_field.train import LOG_NAME, train_neural_field
from weightspace.runtime.checkpoint import load_checkpoint
from weightspace.runtime.errors import InputError
from weightspace.runtime.train_folder import LOCK_NAME, TrainLock, check_out, trim_log

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY = dict(d_z=8, width=16, depth=3, skip=1, recon_steps=5, recon_restarts=1, recon_queries=64)


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    from weightspace.data.make import make_dataset

    base = tmp_path_factory.mktemp("tf_data")
    for name, seed in (("a", 0), ("b", 7)):
        make_dataset(base / name, family="all", count=20, resolution=16, seed=seed, n_points=128, progress=False)
    return base / "a", base / "b"


def _train(data, out, steps, **model):
    tc = TrainConfig(minutes=2.0, steps=steps, points_per_shape=32, bank_size=256, log_every=5, warmup_steps=5)
    return train_neural_field(data, out, model_cfg=FieldConfig(**{**TINY, **model}), train_cfg=tc, log=lambda s: None)


def test_out_that_is_not_a_run_of_this_trainer_is_refused_before_anything_is_written(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        check_out(tmp_path / "afile", data, "neural-field", ())
    with pytest.raises(InputError, match="is the data folder"):
        check_out(data, data, "neural-field", ())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"a": 1}')
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a weightspace checkpoint's"):
        check_out(mine, data, "neural-field", ())
    (mine / "config.json").unlink()
    check_out(mine, data, "neural-field", ())  # files a run does not write (a log, notes) do not stop it
    assert (mine / "notes.txt").read_text() == "keep me"
    done = tmp_path / "shipped"  # a finished checkpoint without its resume state: a run would replace it
    done.mkdir()
    (done / "config.json").write_text('{"kind": "neural-field"}')
    with pytest.raises(InputError, match="without its resume state"):
        check_out(done, data, "neural-field", ("train_state.safetensors",))
    check_out(done, data, "neural-field", ("train_state.safetensors",), fresh=True)
    (done / "train_state.safetensors").write_bytes(b"")
    check_out(done, data, "neural-field", ("train_state.safetensors",))
    other = tmp_path / "ld"
    other.mkdir()
    (other / "config.json").write_text('{"kind": "latent-diffusion"}')
    with pytest.raises(InputError, match="holds a latent-diffusion checkpoint"):
        check_out(other, data, "neural-field", ())
    early = tmp_path / "early"  # a run killed before its first save leaves only a log
    early.mkdir()
    (early / "loss_log.jsonl").write_text('{"step": 5}\n')
    check_out(early, data, "neural-field", ())
    check_out(tmp_path / "new", data, "neural-field", ())


def _hold(path, ready, release):
    with TrainLock(path):
        ready.set()
        release.wait(30)


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(tmp_path / "run", ready, release))
    holder.start()
    try:
        assert ready.wait(240)  # a spawned child imports torch first: a minute and more on a loaded 2-core machine
        with pytest.raises(InputError, match=rf"being written by another training run \(process {holder.pid}\)"):
            with TrainLock(tmp_path / "run"):
                pass
    finally:
        release.set()
        holder.join(30)
    with TrainLock(tmp_path / "run"):  # free once the first has ended
        assert (tmp_path / "run" / LOCK_NAME).read_text() == str(os.getpid())
    # a lock on a folder it made, left holding nothing else, takes the folder away with it
    with TrainLock(tmp_path / "fresh"):
        pass
    assert not (tmp_path / "fresh").exists()


def test_trim_log_keeps_rows_up_to_the_resumed_step(tmp_path):
    log = tmp_path / "loss_log.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in (5, 10, 15, 20)) + '{"step": 2')
    assert trim_log(log, lambda r: r["step"] <= 10) == 3  # two rows after the save and one cut by a kill
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [5, 10]


def test_resume_refuses_other_data_or_another_network_and_logs_each_step_once(tmp_path, two_datasets):
    a, b = two_datasets
    out = tmp_path / "nf"
    _train(a, out, 10)
    # rows a killed run logged after its last save (steps 15, 20) and a line cut mid-write
    with open(out / LOG_NAME, "a") as f:
        f.write('{"step": 15, "l1": 1}\n{"step": 20, "l1": 1}\n{"step": 2')
    before = (out / "config.json").read_bytes()
    with pytest.raises(InputError, match="was trained on other data"):
        _train(b, out, 20)
    with pytest.raises(InputError, match=r"another network \(width 16 -> 24\)"):
        _train(a, out, 20, width=24)
    assert (out / "config.json").read_bytes() == before  # refused before anything was written
    _train(a, out, 20)
    steps = [json.loads(line)["step"] for line in (out / LOG_NAME).read_text().splitlines()]
    assert steps == [5, 10, 15, 20]
    record = json.loads((out / "training_record.json").read_text())
    assert [r["step"] for r in record["loss_log"]] == steps
    with pytest.raises(InputError, match="model.resolution 24 is not the data's"):
        _train(a, tmp_path / "res", 5, resolution=24)


def test_diverged_weights_replace_neither_the_resume_state_nor_the_checkpoint(tmp_path, two_datasets):
    import torch

    from weightspace.generators.neural_field.model import NeuralFieldGenerator
    from weightspace.generators.neural_field.train import STATE_NAME, _save

    out = tmp_path / "nf"
    _train(two_datasets[0], out, 10)
    before = {name: (out / name).read_bytes() for name in (STATE_NAME, "model.safetensors", "config.json")}
    gen = NeuralFieldGenerator.from_checkpoint(*load_checkpoint(out))
    with torch.no_grad():
        next(gen.net.parameters()).fill_(float("nan"))
    opt = torch.optim.Adam(gen.net.parameters())
    with pytest.raises(InputError, match="not saved: tensor 'net."):
        _save(out, gen, None, opt, 11, 1.0, torch.zeros(gen.cfg.n_codes, dtype=torch.int64), {})
    assert {name: (out / name).read_bytes() for name in before} == before


def test_fresh_leaves_nothing_of_the_earlier_run_to_resume(tmp_path, two_datasets, monkeypatch):
    """--fresh stopped before its first save: the earlier run's resume state used to stay beside the new run's
    log, and the next plain command resumed that run (at step 10 of a 5-step run) as if it were the new one."""
    from weightspace.generators.neural_field import train as train_module

    data, _ = two_datasets
    out = tmp_path / "run"
    _train(data, out, 10)
    (out / "notes.txt").write_text("keep me")

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    tc = TrainConfig(minutes=2.0, steps=5, points_per_shape=32, bank_size=256, log_every=5, warmup_steps=5)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != LOCK_NAME}
    # Ctrl-C while the fresh run builds its sample bank, before its checks are done: nothing is deleted yet
    monkeypatch.setattr(train_module, "build_bank", stopped)
    with pytest.raises(KeyboardInterrupt):
        train_neural_field(data, out, model_cfg=FieldConfig(**TINY), train_cfg=tc, resume=False, log=lambda s: None)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != LOCK_NAME} == before
    # Ctrl-C once the earlier run is deleted, before the first save: nothing of either run is left to resume
    monkeypatch.setattr(train_module, "data_parallel", stopped)
    with pytest.raises(KeyboardInterrupt):
        train_neural_field(data, out, model_cfg=FieldConfig(**TINY), train_cfg=tc, resume=False, log=lambda s: None)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "notes.txt"]
    _train(data, out, 5)
    assert load_checkpoint(out)[1]["train_state"]["step"] == 5


def test_a_refused_fresh_run_leaves_the_earlier_run_whole(tmp_path, two_datasets):
    """--fresh deleted the earlier run once the data had loaded, before the model settings were checked: a run then
    refused (a model.resolution the data contradicts) left the folder without either run."""
    data, _ = two_datasets
    out = tmp_path / "run"
    _train(data, out, 10)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != LOCK_NAME}
    tc = TrainConfig(minutes=2.0, steps=5, points_per_shape=32, bank_size=256, log_every=5, warmup_steps=5)
    with pytest.raises(InputError, match="model.resolution"):
        train_neural_field(data, out, model_cfg=FieldConfig(**{**TINY, "resolution": 64}), train_cfg=tc, resume=False,
                           log=lambda s: None)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != LOCK_NAME} == before


def test_both_trainers_offer_the_same_fresh_option():
    import typer

    from weightspace.cli import _register, app

    _register()
    train = typer.main.get_command(app).commands["train"]
    options = {name: {p.name: p for p in cmd.params} for name, cmd in train.commands.items()}
    assert set(options) == {"latent-diffusion", "neural-field"}
    fresh = [(o["fresh"].opts, o["fresh"].help, o["fresh"].default) for o in options.values()]
    assert fresh[0] == fresh[1] and fresh[0][0] == ["--fresh"] and fresh[0][2] is False

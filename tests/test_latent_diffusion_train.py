"""A tiny end-to-end train of the latent diffusion generator on a tiny procedural data set, resume, and CLI errors."""

import json

import pytest
import torch
from typer.testing import CliRunner

from weightspace.cli import _register, app
from weightspace.generators import load_generator
from weightspace.generators.latent_diffusion.config import ModelConfig, TrainConfig
from weightspace.generators.latent_diffusion.train import LOSS_LOG, TRAIN_STATE, train_latent_diffusion
from weightspace.runtime.errors import InputError

TINY_MODEL = dict(ae_channels=[8, 16], latent_channels=2, patch=2, width=32, depth=1, heads=2,
                  cond_dim=8, timesteps=50, sample_steps=3)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from weightspace.data.make import make_dataset

    folder = tmp_path_factory.mktemp("ld_data")
    make_dataset(folder, family="all", count=20, resolution=16, seed=0, n_points=256, progress=False)
    return folder


def test_tiny_train_resume_and_load(tiny_data, tmp_path):
    out = tmp_path / "ck"
    tc = TrainConfig(minutes=0.04, ae_batch=4, diffusion_batch=4, train_points=64, log_every=1, checkpoint_seconds=30.0)
    gen = train_latent_diffusion(tiny_data, out, model=ModelConfig(**TINY_MODEL), train=tc, stage="all", echo=lambda s: None)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "latent-diffusion" and cfg["model"]["resolution"] == 16
    p1 = cfg["progress"]
    assert p1["ae_steps"] > 0 and p1["diffusion_steps"] > 0 and p1["diffusion_done"]
    assert (out / TRAIN_STATE).is_file()
    rows = [json.loads(line) for line in (out / LOSS_LOG).read_text().splitlines()]
    assert {r["stage"] for r in rows} == {"ae", "diffusion"}
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)
    # latent statistics were set from the data (not left at 0 / 1)
    assert not torch.allclose(gen.net.latent_std, torch.ones_like(gen.net.latent_std))

    # resume: more diffusion steps continue the step count and the log
    tc2 = TrainConfig(minutes=0.02, diffusion_batch=4, train_points=64, log_every=1, checkpoint_seconds=30.0)
    train_latent_diffusion(tiny_data, out, train=tc2, stage="diffusion", echo=lambda s: None)
    p2 = json.loads((out / "config.json").read_text())["progress"]
    assert p2["ae_steps"] == p1["ae_steps"] and p2["diffusion_steps"] > p1["diffusion_steps"]
    assert len((out / LOSS_LOG).read_text().splitlines()) > len(rows)
    record = json.loads((out / "training_record.json").read_text())
    assert [r["stage"] for r in record["invocations"]] == ["all", "diffusion"]
    assert record["steps"]["diffusion"] == p2["diffusion_steps"] and len(record["loss_log"]) == len((out / LOSS_LOG).read_text().splitlines())
    assert record["wall_minutes"] == pytest.approx(sum(r["wall_minutes"] for r in record["invocations"]))

    loaded = load_generator(out)
    with torch.no_grad():
        grid = loaded.sdf_grid(loaded.condition(family=["torus"]), [0])
    assert grid.shape == (1, 16, 16, 16) and torch.isfinite(grid).all()

    # a resume on other data, or with another model, is refused before anything is written
    from weightspace.data.make import make_dataset

    other = tmp_path / "other"
    make_dataset(other, family="all", count=20, resolution=16, seed=3, n_points=256, progress=False)
    before = (out / "config.json").read_bytes()
    with pytest.raises(InputError, match="was trained on other data"):
        train_latent_diffusion(other, out, train=tc2, stage="diffusion", echo=lambda s: None)
    with pytest.raises(InputError, match=r"another model \(width 32 -> 48\)"):
        train_latent_diffusion(tiny_data, out, model=ModelConfig(**{**TINY_MODEL, "width": 48}), train=tc2, stage="diffusion",
                               echo=lambda s: None)
    assert (out / "config.json").read_bytes() == before
    # each logged step once per stage
    keys = [(r["stage"], r["step"], "val_iou" in r) for r in map(json.loads, (out / LOSS_LOG).read_text().splitlines())]
    assert len(keys) == len(set(keys))


def test_train_cli_rejects_bad_config(tiny_data, tmp_path):
    _register()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"minutes": "ten"}}))
    result = CliRunner().invoke(app, ["train", "latent-diffusion", "--data", str(tiny_data), "--out", str(tmp_path / "o"), "--config", str(bad)])
    assert result.exit_code != 0
    assert "minutes" in str(result.exception) or "minutes" in result.output
    bad.write_text(json.dumps({"optimizer": {}}))
    result = CliRunner().invoke(app, ["train", "latent-diffusion", "--data", str(tiny_data), "--out", str(tmp_path / "o"), "--config", str(bad)])
    assert result.exit_code != 0 and "optimizer" in str(result.exception)
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["train", "latent-diffusion", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o2")])
    assert "manifest.jsonl: not found" in str(result.exception) and not (tmp_path / "o2").exists()  # no empty --out left


@pytest.mark.parametrize("field, value", [("resolution", 24), ("truncation", 0.3), ("families", ["torus"])])
def test_a_model_field_set_from_the_data_is_refused_where_the_data_differ(tiny_data, tmp_path, field, value):
    """A config's resolution 24 on 16^3 grids trained at 16^3 without a word: it is refused, naming the field."""
    with pytest.raises(InputError, match=rf"model\.{field} .* is not the data's"):
        train_latent_diffusion(tiny_data, tmp_path / "o", model=ModelConfig(**{**TINY_MODEL, field: value}),
                               train=TrainConfig(minutes=0.01), echo=lambda s: None)


def test_diffusion_stage_needs_an_autoencoder(tiny_data, tmp_path):
    from weightspace.runtime.errors import InputError

    with pytest.raises(InputError, match="autoencoder"):
        train_latent_diffusion(tiny_data, tmp_path / "fresh", model=ModelConfig(**TINY_MODEL),
                               train=TrainConfig(minutes=0.01), stage="diffusion", echo=lambda s: None)


def test_new_run_from_a_trained_autoencoder(tiny_data, tmp_path):
    """--autoencoder-from: a new denoiser (another condition layout) on a finished autoencoder, which it keeps."""
    from weightspace.runtime.checkpoint import load_state
    from weightspace.runtime.errors import InputError

    src = tmp_path / "src"
    tc = TrainConfig(minutes=0.01, ae_steps=6, diffusion_steps=2, ae_batch=4, diffusion_batch=4, train_points=64, log_every=1)
    train_latent_diffusion(tiny_data, src, model=ModelConfig(**TINY_MODEL, cond_layout="pooled", cond_tokens=2), train=tc,
                           echo=lambda s: None)
    out = tmp_path / "new"
    tc2 = TrainConfig(minutes=0.01, diffusion_steps=4, diffusion_batch=4, train_points=64, log_every=1)
    train_latent_diffusion(tiny_data, out, model=ModelConfig(**TINY_MODEL), train=tc2, stage="diffusion",
                           autoencoder_from=src, echo=lambda s: None)
    a, b = load_state(src / "model.safetensors"), load_state(out / "model.safetensors")
    ae_keys = [k for k in a if k.startswith("ae.")]
    assert ae_keys and all(torch.equal(a[k], b[k]) for k in ae_keys)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["cond_layout"] == "grid" and cfg["progress"]["ae_steps"] == 6 and cfg["progress"]["diffusion_steps"] == 4
    assert cfg["autoencoder_from"]["ae_steps"] == 6 and cfg["autoencoder_from"]["checkpoint"] == str(src)

    with pytest.raises(InputError, match="already holds a run"):
        train_latent_diffusion(tiny_data, out, train=tc2, autoencoder_from=src, echo=lambda s: None)
    with pytest.raises(InputError, match="ae_channels"):
        train_latent_diffusion(tiny_data, tmp_path / "other", model=ModelConfig(**{**TINY_MODEL, "ae_channels": [8, 8]}), train=tc2,
                               autoencoder_from=src, echo=lambda s: None)


def test_fresh_starts_over_in_a_folder_that_holds_a_run(tiny_data, tmp_path):
    """--fresh, as the neural field's: the earlier run is not resumed (another width is no error), and neither its
    steps nor its log rows nor its invocations are carried into the new run's checkpoint and record."""
    out = tmp_path / "ck"
    tc = dict(minutes=1.0, ae_steps=3, diffusion_steps=1, ae_batch=4, diffusion_batch=4, train_points=64, log_every=1)
    train_latent_diffusion(tiny_data, out, model=ModelConfig(**TINY_MODEL), train=TrainConfig(**tc), echo=lambda s: None)
    (out / "notes.txt").write_text("keep me")
    config = tmp_path / "wider.json"
    config.write_text(json.dumps({"model": {**TINY_MODEL, "width": 48}, "train": {**tc, "ae_steps": 2}}))
    _register()
    result = CliRunner().invoke(app, ["train", "latent-diffusion", "--data", str(tiny_data), "--out", str(out),
                                      "--config", str(config), "--fresh", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "removed the earlier run's" in result.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["width"] == 48 and cfg["progress"]["ae_steps"] == 2 and cfg["progress"]["diffusion_steps"] == 1
    record = json.loads((out / "training_record.json").read_text())
    assert len(record["invocations"]) == 1 and record["steps"] == {"autoencoder": 2, "diffusion": 1}
    ae_steps = [r["step"] for r in map(json.loads, (out / LOSS_LOG).read_text().splitlines()) if r["stage"] == "ae" and "loss" in r]
    assert ae_steps == [1, 2]  # this run's rows alone
    assert (out / "notes.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="--continue-from: .* is --out itself"):  # it would be deleted before it is read
        train_latent_diffusion(tiny_data, out, train=TrainConfig(**tc), stage="diffusion", continue_from=out, resume=False,
                               echo=lambda s: None)
    assert (out / "config.json").is_file()
    # a --fresh run refused by a later check (a model setting the data contradicts) leaves the earlier run whole
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(InputError, match="model.resolution"):
        train_latent_diffusion(tiny_data, out, model=ModelConfig(**{**TINY_MODEL, "resolution": 64}), train=TrainConfig(**tc),
                               resume=False, echo=lambda s: None)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_the_record_says_imported_meshes_are_as_given(tmp_path):
    """The checkpoint and training record of a run on imported meshes said pose "random", though nothing turned them."""
    import trimesh

    from weightspace.data.importer import import_meshes

    for k in range(2):
        trimesh.creation.torus(0.6, 0.2 + 0.05 * k, 32, 16).export(tmp_path / f"ring{k}.obj")
    import_meshes([tmp_path / "ring0.obj", tmp_path / "ring1.obj"], tmp_path / "data", resolution=16, n_points=256, progress=False)
    tc = TrainConfig(minutes=1.0, ae_steps=1, diffusion_steps=1, ae_batch=2, diffusion_batch=2, train_points=64, log_every=1)
    train_latent_diffusion(tmp_path / "data", tmp_path / "ld", model=ModelConfig(**TINY_MODEL), train=tc, echo=lambda s: None)
    assert json.loads((tmp_path / "ld" / "config.json").read_text())["data"]["pose"] == "as given"
    assert json.loads((tmp_path / "ld" / "training_record.json").read_text())["data"]["pose"] == "as given"


def test_the_console_prints_the_loss_the_log_records(tiny_data, tmp_path):
    """The progress line's `loss` was a running mean of the steps (restarted by a resume) while
    loss_log.jsonl holds the logged step's loss: the two disagreed at every row."""
    import re

    lines = []
    tc = TrainConfig(ae_steps=6, diffusion_steps=6, ae_batch=2, diffusion_batch=2, train_points=32, log_every=2)
    train_latent_diffusion(tiny_data, tmp_path / "ck", model=ModelConfig(**TINY_MODEL), train=tc, echo=lines.append)
    printed = [(m[1].strip(), int(m[2]), float(m[3])) for m in
               (re.match(r"\[(\w+) *\].* step +(\d+)/\d+  loss ([\d.]+)", line) for line in lines) if m]
    rows = [json.loads(line) for line in (tmp_path / "ck" / LOSS_LOG).read_text().splitlines()]
    assert len(printed) == 6
    assert printed == [(r["stage"], r["step"], pytest.approx(r["loss"], abs=5e-5)) for r in rows if "loss" in r]


def test_run_shorter_than_one_log_row_still_writes_its_record(tiny_data, tmp_path):
    tc = TrainConfig(ae_steps=1, diffusion_steps=1, ae_batch=2, diffusion_batch=2, train_points=32, log_every=25)
    train_latent_diffusion(tiny_data, tmp_path / "ae", model=ModelConfig(**TINY_MODEL), train=tc, stage="ae", echo=lambda s: None)
    out = tmp_path / "short"  # a new denoiser on that autoencoder, stopped before its first log row
    train_latent_diffusion(tiny_data, out, model=ModelConfig(**TINY_MODEL), train=tc, stage="diffusion",
                           autoencoder_from=tmp_path / "ae", device="cpu", echo=lambda s: None)
    assert not (out / LOSS_LOG).exists()
    record = json.loads((out / "training_record.json").read_text())
    assert record["steps"] == {"autoencoder": 1, "diffusion": 1} and record["device"] == "cpu"
    assert record["loss_log"] == []


def test_a_finished_run_continues_as_a_new_piece(tiny_data, tmp_path):
    """--continue-from: a later piece starts from the checkpoint's weights and counters, and its record
    lists the earlier pieces too (a shipped checkpoint trained across sessions)."""
    src = tmp_path / "src"
    tc = TrainConfig(ae_steps=3, diffusion_steps=4, ae_batch=4, diffusion_batch=4, train_points=64, log_every=1)
    train_latent_diffusion(tiny_data, src, model=ModelConfig(**TINY_MODEL), train=tc, stage="all", echo=lambda s: None,
                           command="weightspace train latent-diffusion (first piece)")
    before = json.loads((src / "config.json").read_text())["progress"]
    # a row added by hand for a piece stopped before it wrote its own (the shipped record has one): counted, not fatal
    src_record = json.loads((src / "training_record.json").read_text())
    src_record["invocations"].append({"command": "stopped by hand", "stage": "diffusion", "started_utc": "2026-01-01T00:00:00+00:00",
                                      "stopped_utc": "2026-01-01T00:10:00+00:00"})
    (src / "training_record.json").write_text(json.dumps(src_record))
    out = tmp_path / "next"
    tc2 = TrainConfig(diffusion_steps=7, diffusion_batch=4, train_points=64, log_every=1)
    gen = train_latent_diffusion(tiny_data, out, train=tc2, stage="diffusion", continue_from=src, echo=lambda s: None,
                                 command="weightspace train latent-diffusion (second piece)")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["progress"]["ae_steps"] == before["ae_steps"] == 3
    assert cfg["progress"]["diffusion_steps"] == 7 and cfg["continued_from"]["diffusion_steps"] == 4
    record = json.loads((out / "training_record.json").read_text())
    assert [r["command"] for r in record["invocations"]][-3:] == ["weightspace train latent-diffusion (first piece)",
                                                                  "stopped by hand",
                                                                  "weightspace train latent-diffusion (second piece)"]
    assert record["wall_minutes"] >= 10.0
    assert record["command"] == "weightspace train latent-diffusion (first piece)"
    src_state = load_generator(src).net.state_dict()
    assert torch.equal(gen.net.state_dict()["ae.decoder.stem.weight"], src_state["ae.decoder.stem.weight"])  # the AE is kept
    with pytest.raises(Exception, match="--stage diffusion"):
        train_latent_diffusion(tiny_data, tmp_path / "bad", train=tc2, stage="all", continue_from=src, echo=lambda s: None)
    # a step budget the checkpoint has reached trained no step and wrote a copy of it without a word
    with pytest.raises(InputError, match="train.diffusion_steps: 4 counts the run's steps"):
        train_latent_diffusion(tiny_data, tmp_path / "none", train=tc, stage="diffusion", continue_from=src, echo=lambda s: None)
    assert not (tmp_path / "none" / "model.safetensors").exists()


@pytest.mark.parametrize("schedule", ["run", "piece"])
def test_a_continued_piece_takes_the_runs_lr_position_or_its_own(tiny_data, tmp_path, schedule):
    """lr_schedule run: a continued piece goes on at the run's cosine position (how the shipped pieces
    were trained); piece: it gets its own warm-up and cosine, from where it began (saved with the progress,
    so a resumed piece keeps it)."""
    from weightspace.generators.latent_diffusion.train import _lr

    src = tmp_path / "src"
    tc = TrainConfig(ae_steps=3, diffusion_steps=4, ae_batch=4, diffusion_batch=4, train_points=64, log_every=1)
    train_latent_diffusion(tiny_data, src, model=ModelConfig(**TINY_MODEL), train=tc, stage="all", echo=lambda s: None)
    tc2 = TrainConfig(diffusion_steps=8, diffusion_batch=4, train_points=64, log_every=1, diffusion_lr=1e-3, lr_schedule=schedule)
    out = tmp_path / "next"
    train_latent_diffusion(tiny_data, out, train=tc2, stage="diffusion", continue_from=src, echo=lambda s: None)
    rows = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in rows if r.get("stage") == "diffusion" and "lr" in r}
    # the row of step k + 1 holds the lr step k trained at; the piece runs steps 4..7
    want = {k + 1: (_lr(1e-3, k / 8, k) if schedule == "run" else _lr(1e-3, (k - 4) / 4, k - 4)) for k in range(4, 8)}
    assert {k: lrs[k] for k in want} == pytest.approx(want)
    assert json.loads((out / "config.json").read_text())["progress"]["diffusion_piece_from_steps"] == 4


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_self_conditioned_training_moves_the_estimate_path(tiny_data, tmp_path, prediction):
    out = tmp_path / "sc"
    tc = TrainConfig(minutes=0.03, ae_batch=4, diffusion_batch=4, train_points=64, log_every=1, checkpoint_seconds=30.0,
                     self_condition_prob=1.0)
    gen = train_latent_diffusion(tiny_data, out, model=ModelConfig(**TINY_MODEL, self_condition=True, prediction=prediction), train=tc, stage="all",
                                 echo=lambda s: None)
    saved = json.loads((out / "config.json").read_text())["model"]
    assert saved["self_condition"] is True and saved["prediction"] == prediction
    assert gen.net.denoiser.self_cond_in.weight.abs().sum() > 0  # started at zero; trained on every batch
    loaded = load_generator(out)
    assert loaded.cfg.self_condition and loaded.net.prediction == prediction
    with torch.no_grad():
        grid = loaded.sdf_grid(loaded.condition(family=["torus"]), [0])
    assert torch.isfinite(grid).all()


def test_a_signal_stops_training_after_its_step_saved_and_recorded(tiny_data, tmp_path, monkeypatch):
    """SIGTERM (a scheduler's preemption, `kill`) or Ctrl-C mid-run: the step in flight finishes, the
    checkpoint and the record row are written there, and rerunning the command ends where an
    uninterrupted run ends."""
    import signal

    from weightspace.generators.latent_diffusion import train as train_module
    from weightspace.runtime.distributed import Stopped

    tc = TrainConfig(ae_steps=2, diffusion_steps=6, ae_batch=2, diffusion_batch=2, train_points=32, log_every=1, checkpoint_seconds=1e6)
    model = ModelConfig(**TINY_MODEL)
    straight = train_latent_diffusion(tiny_data, tmp_path / "straight", model=model, train=tc, stage="all", echo=lambda s: None)

    draw = train_module.item_generator

    def signalled_draw(seed, name, step):  # the signal arrives while diffusion step 3 is being computed
        if name == "diffusion" and step == 3:
            signal.raise_signal(signal.SIGTERM)
        return draw(seed, name, step)

    out = tmp_path / "stopped"
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(train_module, "item_generator", signalled_draw)
    with pytest.raises(Stopped):
        train_latent_diffusion(tiny_data, out, model=model, train=tc, stage="all", echo=lambda s: None)
    monkeypatch.setattr(train_module, "item_generator", draw)
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is gone with the loop
    progress = json.loads((out / "config.json").read_text())["progress"]
    assert progress["diffusion_steps"] == 4 and not progress["diffusion_done"]  # step 3 finished, then saved
    record = json.loads((out / "training_record.json").read_text())
    assert "stopped" in record["invocations"][-1] and record["steps"]["diffusion"] == 4

    resumed = train_latent_diffusion(tiny_data, out, model=model, train=tc, stage="all", echo=lambda s: None)
    record = json.loads((out / "training_record.json").read_text())
    assert len(record["invocations"]) == 2 and "stopped" not in record["invocations"][-1]
    assert record["steps"]["diffusion"] == 6
    for k, v in straight.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[k], v, msg=k)  # the same weights as without the stop


def _mean_kl(gen, data_dir) -> float:
    """Mean KL (per latent element) of the trained encoder's posterior to N(0, I) over the data's training grids."""
    from weightspace.generators.latent_diffusion.losses import gaussian_kl
    from weightspace.generators.latent_diffusion.train import load_training_data

    grids = load_training_data(data_dir).grids[:8]  # (8, R, R, R) world units
    with torch.no_grad():
        mean, logvar = gen.net.ae.posterior((grids / gen.cfg.truncation).clamp(-1, 1))  # (8, C, r, r, r) each
    return float(gaussian_kl(mean, logvar).mean())


def test_a_gaussian_latent_trains_on_draws_and_its_kl_term_regularises_it(tiny_data, tmp_path):
    """latent_posterior gaussian: the encoder gives a mean and a log-variance, `encode` the mean; the KL
    weight pulls the posterior towards N(0, I); an autoencoder of the other kind is not adopted."""
    from weightspace.runtime.errors import InputError

    model = ModelConfig(**TINY_MODEL, latent_posterior="gaussian")
    runs = {}
    for w in (0.0, 10.0):
        tc = TrainConfig(ae_steps=25, diffusion_steps=2, ae_batch=4, diffusion_batch=4, train_points=64, log_every=5, kl_weight=w)
        runs[w] = train_latent_diffusion(tiny_data, tmp_path / f"kl{w}", model=model, train=tc, stage="all", echo=lambda s: None)
    gen = runs[10.0]
    assert gen.net.ae.encoder.out[-1].out_channels == 2 * TINY_MODEL["latent_channels"]
    x = torch.zeros(2, 16, 16, 16)
    with torch.no_grad():
        mean, logvar = gen.net.ae.posterior(x)
        assert torch.equal(gen.net.ae.encode(x), mean) and mean.shape == logvar.shape == (2, 2, 4, 4, 4)
    assert _mean_kl(runs[10.0], tiny_data) < 0.5 * _mean_kl(runs[0.0], tiny_data)
    loaded = load_generator(tmp_path / "kl10.0")  # the config round trip keeps the posterior (else the weights would not load)
    assert loaded.cfg.latent_posterior == "gaussian"
    with torch.no_grad():
        assert torch.isfinite(loaded.sdf_grid(loaded.condition(family=["torus"]), [0])).all()

    tc = TrainConfig(diffusion_steps=2, diffusion_batch=4, train_points=64, log_every=1)
    with pytest.raises(InputError, match="latent_posterior"):
        train_latent_diffusion(tiny_data, tmp_path / "point", model=ModelConfig(**TINY_MODEL), train=tc, stage="diffusion",
                               autoencoder_from=tmp_path / "kl0.0", echo=lambda s: None)


def test_a_run_records_the_families_its_data_held_and_samples_only_those(tmp_path):
    from weightspace.data.make import make_dataset

    data = tmp_path / "tori"
    make_dataset(data, family="torus", count=8, resolution=16, seed=0, n_points=128, progress=False)
    tc = TrainConfig(ae_steps=2, diffusion_steps=2, ae_batch=2, diffusion_batch=2, train_points=32, log_every=1)
    gen = train_latent_diffusion(data, tmp_path / "ck", model=ModelConfig(**TINY_MODEL), train=tc, echo=lambda s: None)
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["data"]["families"] == ["torus"]
    loaded = load_generator(tmp_path / "ck")
    assert loaded.families == ["torus"] and gen.families == ["torus"]
    with pytest.raises(InputError, match="no training shapes of family 'chair'"):
        loaded.condition(family=["chair"])


def test_last_validation_row_not_written_twice(tiny_data, tmp_path):
    """A stage whose last step is also a validation step (here step 8 with log_every 1) logs that step's
    val_iou once: the end-of-stage validation reuses the loop's row instead of adding a second one."""
    out = tmp_path / "ck"
    tc = TrainConfig(ae_steps=8, ae_batch=4, train_points=64, log_every=1, checkpoint_seconds=30.0)
    train_latent_diffusion(tiny_data, out, model=ModelConfig(**TINY_MODEL), train=tc, stage="ae", echo=lambda s: None)
    rows = [json.loads(line) for line in (out / LOSS_LOG).read_text().splitlines()]
    validated = [r["step"] for r in rows if "val_iou" in r]
    assert validated == [8]


def test_a_fresh_continued_piece_keeps_the_sources_record(tiny_data, tmp_path):
    """--fresh --continue-from into a folder holding another run: the piece's record lists the source's pieces and
    its log their rows; clear_run deleted them (the earlier run's files kept them from being copied, or it removed
    the copies)."""
    tc = TrainConfig(ae_steps=2, diffusion_steps=2, ae_batch=2, diffusion_batch=2, train_points=32, log_every=1)
    src, out = tmp_path / "src", tmp_path / "out"
    train_latent_diffusion(tiny_data, src, model=ModelConfig(**TINY_MODEL), train=tc, echo=lambda s: None, command="first piece")
    train_latent_diffusion(tiny_data, out, model=ModelConfig(**TINY_MODEL), train=tc, echo=lambda s: None, command="other run")
    tc2 = TrainConfig(diffusion_steps=3, diffusion_batch=2, train_points=32, log_every=1)
    train_latent_diffusion(tiny_data, out, train=tc2, stage="diffusion", continue_from=src, resume=False, echo=lambda s: None,
                           command="second piece")
    record = json.loads((out / "training_record.json").read_text())
    assert [r["command"] for r in record["invocations"]] == ["first piece", "second piece"]
    src_rows = (src / LOSS_LOG).read_text().splitlines()
    assert (out / LOSS_LOG).read_text().splitlines()[: len(src_rows)] == src_rows

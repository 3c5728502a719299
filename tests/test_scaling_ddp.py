"""Training under torchrun (issue 18, part 3): 2 gloo processes give the loss curve and weights of 1
process with the same global batch, for the neural field and for latent diffusion through a resume.

Ranks started with different settings are refused by all of them at once, before training (a rank
with more steps than rank 0 used to wait for it forever).

Tolerance: every rank draws the whole batch from the same seeded generator and computes its share,
and DDP averages the shares' gradients, so the two runs differ only in the order float32 sums are
taken (one sum over the batch against two half sums and an all-reduce): a relative difference of a
few float32 epsilons (1.2e-7) per gradient, which Adam's normalised steps carry into the weights at
about that size per step. Over the tens of steps here that is far below 1e-4 (measured: about 1e-7 for
the field, 1e-6 for latent diffusion, where the log rounds the loss to 6 digits), while any real
difference (one rank's share dropped, shares double-counted, unsynchronised learning rates) moves
the loss by percents.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TINY_FIELD = {"model": {"d_z": 8, "width": 16, "depth": 3, "skip": 1},
              "train": {"minutes": 10, "steps": 16, "points_per_shape": 32, "bank_size": 256, "log_every": 2, "warmup_steps": 4}}
TINY_LD = {"model": {"ae_channels": [8, 16], "latent_channels": 2, "patch": 2, "width": 32, "depth": 1, "heads": 2, "cond_dim": 8,
                     "timesteps": 50, "sample_steps": 3},
           "train": {"minutes": 10, "ae_steps": 5, "diffusion_steps": 4, "ae_batch": 4, "diffusion_batch": 6, "train_points": 64,
                     "log_every": 1, "threads": 1}}
RTOL = 1e-4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from weightspace.data.make import make_dataset

    folder = tmp_path_factory.mktemp("ddp_data")
    make_dataset(folder, family="all", count=14, resolution=16, seed=0, n_points=256, progress=False)
    return folder


def _train(kind: str, data: Path, out: Path, config: dict, processes: int, *extra: str) -> None:
    cfg = out.parent / f"{out.name}-{len(list(out.parent.glob(out.name + '-*.json')))}.json"
    cfg.write_text(json.dumps(config))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)] if processes > 1 \
        else [sys.executable]
    argv = [*launcher, "-m", "weightspace", "train", kind, "--data", str(data), "--out", str(out), "--config", str(cfg),
            "--device", "cpu", *extra]
    env = {**os.environ, "WEIGHTSPACE_QUIET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _log(out: Path, name: str = "loss_log.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines() if line.strip()]


def _same_curve(a: list[dict], b: list[dict]) -> None:
    assert [(r.get("stage"), r["step"]) for r in a] == [(r.get("stage"), r["step"]) for r in b]  # rank 0 alone logged
    for ra, rb in zip(a, b):
        if "loss" in ra:
            assert rb["loss"] == pytest.approx(ra["loss"], rel=RTOL, abs=2e-6), (ra, rb)


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=RTOL, atol=1e-5, msg=k)


def test_two_gloo_processes_train_the_field_as_one(data, tmp_path):
    _train("neural-field", data, tmp_path / "one", TINY_FIELD, 1, "--threads", "1")
    _train("neural-field", data, tmp_path / "two", TINY_FIELD, 2, "--threads", "1")
    one, two = _log(tmp_path / "one", "loss_log.jsonl"), _log(tmp_path / "two", "loss_log.jsonl")
    assert len(one) == 8 and one[-1]["loss"] < one[0]["loss"]
    _same_curve(one, two)
    _same_weights(tmp_path / "one", tmp_path / "two")
    assert json.loads((tmp_path / "two" / "training_record.json").read_text())["processes"] == 2


def test_two_gloo_processes_train_latent_diffusion_as_one_through_a_resume(data, tmp_path):
    longer = {**TINY_LD, "train": {**TINY_LD["train"], "diffusion_steps": 7}}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        _train("latent-diffusion", data, out, TINY_LD, n)
        _train("latent-diffusion", data, out, longer, n, "--stage", "diffusion")  # resumes at diffusion step 4 of 7
    one, two = _log(tmp_path / "p1"), _log(tmp_path / "p2")
    assert [r["step"] for r in one if r.get("stage") == "diffusion"] == [1, 2, 3, 4, 5, 6, 7]
    _same_curve(one, two)
    _same_weights(tmp_path / "p1", tmp_path / "p2")
    record = json.loads((tmp_path / "p2" / "training_record.json").read_text())
    assert [r["processes"] for r in record["invocations"]] == [2, 2]


def test_two_gloo_processes_train_a_gaussian_latent_autoencoder_as_one(data, tmp_path):
    """The posterior's draws are made for the whole batch and each rank takes its rows, and the KL term is
    scaled like the reconstruction terms, so two ranks step as one process does."""
    config = {"model": {**TINY_LD["model"], "latent_posterior": "gaussian"}, "train": {**TINY_LD["train"], "kl_weight": 0.1}}
    for n in (1, 2):
        _train("latent-diffusion", data, tmp_path / f"p{n}", config, n, "--stage", "ae")
    one, two = _log(tmp_path / "p1"), _log(tmp_path / "p2")
    assert [r["step"] for r in one if "loss" in r] == [1, 2, 3, 4, 5]
    _same_curve(one, two)
    _same_weights(tmp_path / "p1", tmp_path / "p2")


def _two_ranks(kind: str, data: Path, out: Path, configs: list[dict], extra: tuple[str, ...] = ()) -> list[tuple[int, str]]:
    """(exit code, stderr) of rank 0 and rank 1 of one gloo run, each started with its own config (the
    environment two torchrun launchers joining one job give their workers), or a failure when either hangs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank, config in enumerate(configs):
        cfg = out.parent / f"{out.name}-rank{rank}.json"
        cfg.write_text(json.dumps(config))
        env = {**os.environ, "WEIGHTSPACE_QUIET": "1", "OMP_NUM_THREADS": "1", "RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        argv = [sys.executable, "-m", "weightspace", "train", kind, "--data", str(data), "--out", str(out), "--config", str(cfg),
                "--device", "cpu", *extra]
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env))
    try:
        errs = [p.communicate(timeout=120)[1] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("a rank hung instead of refusing settings that differ from rank 0's")
    return [(p.returncode, err) for p, err in zip(procs, errs)]


@pytest.mark.parametrize("kind, rank1, message", [
    ("neural-field", {**TINY_FIELD, "train": {**TINY_FIELD["train"], "steps": 40}}, "train.steps: rank 1 has 40, rank 0 has 16"),
    # train.threads is each machine's own: the first difference named is the one after it
    ("latent-diffusion", {**TINY_LD, "train": {**TINY_LD["train"], "threads": 2, "log_every": 2}}, "train.log_every: rank 1 has 2, rank 0 has 1"),
])
def test_ranks_started_with_different_settings_all_stop_with_the_first_difference(data, tmp_path, kind, rank1, message):
    rank0 = TINY_FIELD if kind == "neural-field" else TINY_LD
    for code, err in _two_ranks(kind, data, tmp_path / "out", [rank0, rank1]):
        assert code == 2 and f"error: {message}" in err, err[-2000:]
    assert not (tmp_path / "out" / "loss_log.jsonl").exists()  # stopped before training


def test_every_rank_refuses_a_fresh_run_continuing_its_own_out(data, tmp_path):
    """--fresh --continue-from OUT would delete its own source: rank 0 alone refused it, and rank 1 went on into
    training, waiting for a rank that had left."""
    from weightspace.generators.latent_diffusion.config import ModelConfig, TrainConfig
    from weightspace.generators.latent_diffusion.train import train_latent_diffusion

    out = tmp_path / "out"
    train_latent_diffusion(data, out, model=ModelConfig(**TINY_LD["model"]),
                           train=TrainConfig(**{**TINY_LD["train"], "ae_steps": 1, "diffusion_steps": 1}), echo=lambda s: None)
    piece = {"train": {**TINY_LD["train"], "diffusion_steps": 2}}
    for code, err in _two_ranks("latent-diffusion", data, out, [piece, piece],
                                extra=("--stage", "diffusion", "--continue-from", str(out), "--fresh")):
        assert code == 2 and "is --out itself" in err, err[-2000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the launcher's death reaches its ranks through Linux's prctl")
def test_ranks_of_a_killed_torchrun_stop_and_save_instead_of_training_on(data, tmp_path):
    """torchrun starts its ranks in sessions of their own: `kill -9` of torchrun (or `timeout -s KILL`) left them
    training, holding --out, so the rerun that should resume was refused until they finished."""
    import signal
    import time

    out, cfg = tmp_path / "out", tmp_path / "long.json"
    cfg.write_text(json.dumps({**TINY_FIELD, "train": {**TINY_FIELD["train"], "steps": 10**6, "log_every": 1}}))
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "weightspace", "train",
            "neural-field", "--data", str(data), "--out", str(out), "--config", str(cfg), "--device", "cpu", "--threads", "1"]
    launcher = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "WEIGHTSPACE_QUIET": "1", "OMP_NUM_THREADS": "1"})
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not (out / "loss_log.jsonl").is_file() or len(_log(out)) < 3:
            assert time.monotonic() < deadline and launcher.poll() is None, "training did not start"
            time.sleep(0.2)
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        ranks = [int(pid) for pid in children]
        assert len(ranks) == 2
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text() for pid in ranks):
            assert time.monotonic() < deadline, "the ranks of a killed torchrun went on training"
            time.sleep(0.2)
    finally:
        launcher.kill()
        for pid in ranks:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    record = json.loads((out / "training_record.json").read_text())
    assert record["stopped"].startswith("by a signal") and (out / "train_state.safetensors").is_file()


def test_first_difference_names_the_field_in_rank_0s_order():
    from weightspace.runtime.distributed import first_difference

    main = {"model": {"width": 16, "depth": 3}, "train": {"threads": 1, "steps": 30}}
    assert first_difference(main, main) is None
    assert first_difference(main, {**main, "model": {"depth": 4, "width": 16}}) == ("model.depth", 3, 4)
    assert first_difference(main, {**main, "model": None}) == ("model", main["model"], None)
    assert first_difference(main, {**main, "train": {"threads": 2}}, skip=("train.threads",)) == ("train.steps", 30, "(not set)")


def test_commands_other_than_train_are_refused_under_torchrun(tmp_path, monkeypatch, capsys):
    """torchrun -m weightspace population build ... would run the whole build in every process, all writing
    one folder: only train is data-parallel, so the rest say so in one line before doing anything."""
    from weightspace.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as e:
        main(["data", "make", "--family", "torus", "--count", "1", "--out", str(tmp_path / "d")])
    assert e.value.code == 2 and not (tmp_path / "d").exists()
    assert "data: runs whole in each of the 2 processes" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(SystemExit) as e:
        main(["version"])
    assert e.value.code in (0, None)

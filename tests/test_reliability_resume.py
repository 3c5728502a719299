"""Resumable jobs: a population build killed with SIGKILL at random points and resumed ends with exactly the
expected members, every file valid and every point equal to an uninterrupted build's.

Real subprocesses (`weightspace population build` on the toy generator) and real signals.
"""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile.cli import command, env
from toy_generator import make_toy, make_toy_data

from weightspace.runtime.checkpoint import load_state, state_metadata
from weightspace.runtime.io import is_temp_file
from weightspace.space.population import PopulationConfig, build_population
from weightspace.space.store import Population

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


MEMBERS = 6
STEPS = 30
OPTIONS = {"rank": 2, "alpha": 8.0, "targets": "mid", "form": "factors"}  # what the CLI passes for these flags


def _argv(data: Path, out: Path) -> list[str]:
    return ["population", "build", "--checkpoint", "toy", "--parameterisation", "lora", "--rank", "2", "--targets", "mid",
            "--data", str(data), "--out", str(out), "--members", str(MEMBERS), "--steps", str(STEPS), "--fit", "grid"]


def _start(data: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(command(*_argv(data, out), toy=True), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**env(), "PYTHONUNBUFFERED": "1"})


def _check_valid(out: Path, expected_ids: list[str]) -> list[str]:
    """Every recorded member is expected, unique, and its shard loads with the layout's length."""
    pop = Population(out)
    ids = [r["id"] for r in pop.rows]
    assert len(ids) == len(set(ids)), f"duplicate members {ids}"
    assert set(ids) <= set(expected_ids)
    for i in range(len(pop)):
        assert pop.point(i).shape == (pop.frame.layout.size,)
        assert torch.isfinite(pop.point(i)).all()
    return ids


@pytest.mark.parametrize("kills,seed", [(2, 0), pytest.param(8, 1, marks=pytest.mark.slow), pytest.param(8, 2, marks=pytest.mark.slow)])
def test_population_build_survives_sigkill_and_resumes_exactly(tmp_path, kills, seed):
    data = make_toy_data(tmp_path / "data", count=MEMBERS, resolution=8, points=64)
    expected_ids = [json.loads(line)["id"] for line in (data / "manifest.jsonl").read_text().splitlines()]
    # the reference: one uninterrupted build, in process
    cfg = PopulationConfig(checkpoint="toy", parameterisation="lora", data=str(data), out=str(tmp_path / "ref"),
                           options=OPTIONS, members=MEMBERS, steps=STEPS, fit="grid")
    ref = build_population(cfg, generator=functools.partial(make_toy, seed=0))

    out = tmp_path / "pop"
    rng = np.random.default_rng(seed)
    trials = 0
    for _ in range(kills):
        proc = _start(data, out)
        done = len(Population(out)) if (out / "config.json").is_file() else 0
        wait_members = int(rng.integers(0, max(1, MEMBERS - done - 1)))
        seen = 0
        while seen < wait_members:
            line = proc.stdout.readline()
            if not line:
                break
            seen += ": loss " in line
        time.sleep(float(rng.uniform(0.0, 0.4)))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        if proc.returncode == 0:  # it finished before the kill; nothing left to interrupt
            break
        assert proc.returncode == -signal.SIGKILL, err
        trials += 1
        if (out / "config.json").is_file():
            _check_valid(out, expected_ids)  # after every kill the folder reads back cleanly
    print(f"\n[resume] population build: {trials} SIGKILLs, then resumed to completion")
    assert trials >= 1
    final = _start(data, out)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    assert "Traceback" not in err

    ids = _check_valid(out, expected_ids)
    assert ids == expected_ids  # exactly the expected members, in order, no duplicates
    pop = Population(out)
    for i in range(MEMBERS):
        torch.testing.assert_close(pop.point(i), ref.point(i), rtol=0, atol=1e-6)
    # no file a loader could trip on: every shard is a named member or a hidden temp file
    shards = {p.name for p in (out / "shards").iterdir() if not is_temp_file(p)}
    assert shards == {Path(r["shard"]).name for r in pop.rows}
    for r in pop.rows:
        load_state(out / r["shard"])


def test_ctrl_c_during_a_population_build_says_what_is_saved(tmp_path):
    """SIGINT (Ctrl-C) ends the build with status 130 and one line: how many members are saved, where, and
    that the same command resumes (typer alone turned it into a silent 130)."""
    data = make_toy_data(tmp_path / "data", count=MEMBERS, resolution=8, points=64)
    out = tmp_path / "pop"
    argv = _argv(data, out)
    argv[argv.index("--steps") + 1] = "400"  # members of a second or more: the signal lands mid-build
    # SIGINT as a terminal delivers it: a suite run as a background job (`make test &`) hands its children
    # SIGINT ignored, and Python then installs no KeyboardInterrupt for it
    proc = subprocess.Popen(command(*argv, toy=True), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env(), "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert ": loss " in proc.stdout.readline()  # one member saved
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    saved = len(Population(out))
    assert proc.returncode == 130 and saved < MEMBERS, err
    assert err.strip() == f"interrupted: {saved} of {MEMBERS} members are saved in {out}; run the same command again to resume"


# --- trainers ---------------------------------------------------------------------------------------------
NF_MODEL = {"d_z": 8, "width": 16, "depth": 3, "skip": 1}
NF_TRAIN = {"steps": 80, "points_per_shape": 32, "bank_size": 512, "log_every": 5, "warmup_steps": 5, "minutes": 30.0,
            "save_every_minutes": 0.001}  # a checkpoint about every 60 ms, so a kill finds one to resume from


@pytest.fixture(scope="module")
def nf_data(tmp_path_factory):
    from weightspace.data.make import make_dataset

    folder = tmp_path_factory.mktemp("nf_resume_data")
    make_dataset(folder, family="all", count=10, resolution=16, seed=0, n_points=128, progress=False)
    return folder


def _saved_step(out: Path) -> int:
    try:
        return int(json.loads((out / "config.json").read_text())["train_state"]["step"])
    except (OSError, ValueError, KeyError):
        return 0


def _kill_when(argv: list[str], ready, delay: float = 0.0) -> subprocess.Popen:
    """Start the CLI, wait (at most 120 s) until ready() or the process ends, wait `delay` more, SIGKILL it."""
    proc = subprocess.Popen(command(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    deadline = time.time() + 120
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return proc


def test_neural_field_training_killed_and_resumed_matches_uninterrupted(nf_data, tmp_path):
    from weightspace.generators.neural_field.config import FieldConfig, TrainConfig
    from weightspace.generators.neural_field.train import train_neural_field

    cfg = tmp_path / "nf.json"
    cfg.write_text(json.dumps({"model": NF_MODEL, "train": NF_TRAIN}))
    train_neural_field(nf_data, tmp_path / "ref", model_cfg=FieldConfig(**NF_MODEL), train_cfg=TrainConfig(**NF_TRAIN),
                       log=lambda s: None)
    out = tmp_path / "ck"
    argv = ["train", "neural-field", "--data", str(nf_data), "--out", str(out), "--config", str(cfg), "--threads", "1"]
    proc = _kill_when(argv, lambda: _saved_step(out) >= 20)
    killed_at = _saved_step(out)
    assert proc.returncode == -signal.SIGKILL and 0 < killed_at < NF_TRAIN["steps"], killed_at
    resumed = subprocess.run(command(*argv), capture_output=True, text=True, env=env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    a, b = load_state(tmp_path / "ref" / "model.safetensors"), load_state(out / "model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=f"{k} differs after a resume at step {killed_at}")
    print(f"\n[resume] neural field: SIGKILL after step {killed_at} of {NF_TRAIN['steps']}, resumed, weights match")


LD_MODEL = {"ae_channels": [8, 16], "latent_channels": 2, "patch": 2, "width": 32, "depth": 1, "heads": 2,
            "cond_dim": 8, "timesteps": 50, "sample_steps": 3}
LD_TRAIN = {"minutes": 0.08, "ae_steps": 150, "diffusion_steps": 150, "ae_batch": 4, "diffusion_batch": 4, "train_points": 64, "log_every": 1, "checkpoint_seconds": 0.2,
            "threads": 1}


@pytest.mark.slow  # about a minute on the shared CPUs: `make bench` (or `pytest -m slow`) runs it
def test_latent_diffusion_training_killed_and_resumed_matches_uninterrupted(nf_data, tmp_path):
    from weightspace.generators.latent_diffusion.config import ModelConfig, TrainConfig
    from weightspace.generators.latent_diffusion.train import train_latent_diffusion

    cfg = tmp_path / "ld.json"
    cfg.write_text(json.dumps({"model": LD_MODEL, "train": LD_TRAIN}))
    train_latent_diffusion(nf_data, tmp_path / "ref", model=ModelConfig(**LD_MODEL), train=TrainConfig(**LD_TRAIN),
                           echo=lambda s: None)
    out = tmp_path / "ck"
    argv = ["train", "latent-diffusion", "--data", str(nf_data), "--out", str(out), "--config", str(cfg)]
    caught = []  # the progress each kill interrupted
    for delay in (0.3, 0.8, 0.8):  # three kills: early (autoencoder stage), then wherever the run has got to
        _kill_when(argv, (out / "train_state.safetensors").is_file, delay)
        caught.append(json.loads(state_metadata(out / "train_state.safetensors")["config"])["progress"])
    assert any(not (c["ae_done"] and c["diffusion_done"]) for c in caught), f"every kill came after the run had finished: {caught}"
    resumed = subprocess.run(command(*argv), capture_output=True, text=True, env=env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    ref_cfg = json.loads((tmp_path / "ref" / "config.json").read_text())
    got_cfg = json.loads((out / "config.json").read_text())
    assert got_cfg["progress"]["ae_steps"] == ref_cfg["progress"]["ae_steps"]
    assert got_cfg["progress"]["diffusion_steps"] == ref_cfg["progress"]["diffusion_steps"]
    a, b = load_state(tmp_path / "ref" / "model.safetensors"), load_state(out / "model.safetensors")
    bad = [k for k in a if not torch.allclose(b[k], a[k], rtol=1e-4, atol=1e-5)]
    assert not bad, f"{len(bad)} of {len(a)} tensors differ: {bad[:8]}"

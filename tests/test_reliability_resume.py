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

from weightspace.runtime.checkpoint import load_state
from weightspace.runtime.io import is_temp_file
from weightspace.weightspace.population import PopulationConfig, build_population
from weightspace.weightspace.store import Population

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
        assert pop.point(i).shape == (pop.layout.size,)
        assert torch.isfinite(pop.point(i)).all()
    return ids


@pytest.mark.parametrize("kills,seed", [(2, 0), pytest.param(8, 1, marks=pytest.mark.slow), pytest.param(8, 2, marks=pytest.mark.slow)])
def test_population_build_survives_sigkill_and_resumes_exactly(tmp_path, kills, seed):
    data = make_toy_data(tmp_path / "data", count=MEMBERS, resolution=8, points=64)
    expected_ids = [json.loads(line)["id"] for line in (data / "manifest.jsonl").read_text().splitlines()]
    # the reference: one uninterrupted build, in process
    cfg = PopulationConfig(checkpoint="toy", parameterisation="lora", data=str(data), out=str(tmp_path / "ref"),
                           options=OPTIONS, members=MEMBERS, steps=STEPS, fit="grid")
    torch.set_num_threads(1)
    ref = build_population(cfg, loader=functools.partial(make_toy, seed=0))

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

"""Populations on Ray (issue 18): the same members as the process pool, a killed worker or driver loses
nothing, and a member that keeps failing is recorded while the build goes on; an address where no
cluster answers, or whose cluster wants a token this command does not send, is bad input, named within
seconds."""

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_generator import make_toy, make_toy_data

from weightspace.runtime.errors import InputError
from weightspace.runtime.executors import ProcessPoolExecutorBackend
from weightspace.space import population as population_module
from weightspace.space.population import PopulationConfig, build_population, read_failures
from weightspace.space.store import Population

ray = pytest.importorskip("ray")

LOADER = functools.partial(make_toy, seed=0)


class ExitOnceInAWorker:
    """A generator loader whose first call in a worker process ends that process (os._exit, as a killed
    or crashed worker), once per marker file; the driver and every later worker load the toy."""

    def __init__(self, marker: Path) -> None:
        self.marker, self.driver = str(marker), os.getpid()

    def __call__(self):
        if os.getpid() != self.driver and not os.path.exists(self.marker):
            Path(self.marker).write_text("killed")
            os._exit(1)
        return make_toy(seed=0)

    def __repr__(self) -> str:
        return f"ExitOnceInAWorker({self.marker})"


def _gcs_running() -> bool:
    """Whether a Ray cluster runs on this machine (`auto` would join it)."""
    import psutil  # a dependency of Ray

    return any(p.info["name"] == "gcs_server" for p in psutil.process_iter(["name"]))


# These run before the module's local instance starts (`ray_executor`): ray.init joins no cluster while one is up.
@pytest.mark.parametrize("address", ["127.0.0.1:1", "auto"])
def test_an_address_where_no_cluster_answers_is_bad_input_within_seconds(address, monkeypatch):
    from weightspace.runtime import ray_executor as module

    if ray.is_initialized() or (address == "auto" and _gcs_running()):
        pytest.skip("a Ray instance is running here")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # it would replace the address
    # Ray's connection limits, down from the shipped 5 + 5 + 10 s for one attempt (over 10 minutes by Ray's defaults)
    monkeypatch.setattr(module, "CONNECT_LIMITS", {"gcs_rpc_server_connect_timeout_s": 1, "py_gcs_connect_timeout_s": 1})
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=rf"^--address {address}: could not join a Ray cluster .*ray start --head"):
        module.RayExecutor(workers=1, address=address)
    assert time.perf_counter() - t0 < 15
    assert not ray.is_initialized()


def test_the_cli_answers_an_unknown_host_with_one_line_and_exit_2(tmp_path, capsys):
    from weightspace.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["population", "build", "--data", str(tmp_path), "--out", str(tmp_path / "pop"), "--executor", "ray",
              "--address", "nosuchhost.invalid:1234"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: --address nosuchhost.invalid:1234: host 'nosuchhost.invalid' is not known here")
    assert "ray start --head" in err and "leave out --address" in err


FORM = "--address must be auto or HOST:PORT (the head's GCS port, 6379 by default), got"


@pytest.mark.parametrize(("address", "says"), [
    ("127.0.0.1:99999", f"{FORM} '127.0.0.1:99999': the port must be from 1 to 65535"),
    ("127.0.0.1:0", f"{FORM} '127.0.0.1:0': the port must be from 1 to 65535"),
    ("ray://127.0.0.1:10001", f"{FORM} 'ray://127.0.0.1:10001': a URL such as ray://HOST:10001 (Ray Client) is not supported; "
                              "run the command on a node of the cluster with --address auto or HEAD_IP:6379"),
])
def test_the_cli_refuses_a_port_out_of_range_or_a_ray_client_url_at_once(address, says, tmp_path, capsys):
    from weightspace.cli import main

    if ray.is_initialized():
        pytest.skip("a Ray instance is running in this process: the executor would not connect")
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as stop:
        main(["population", "build", "--data", str(tmp_path), "--out", str(tmp_path / "pop"), "--executor", "ray",
              "--address", address])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err == f"error: {says}\n"
    assert time.perf_counter() - t0 < 5 and not ray.is_initialized()


def test_a_driver_with_token_authentication_on_but_no_token_is_told_where_ray_looks(tmp_path, monkeypatch):
    """RAY_AUTH_MODE=token and a token file that is not there: Ray's AuthenticationError, before it connects."""
    from ray._raylet import Config

    from weightspace.runtime.ray_executor import RayExecutor

    if ray.is_initialized():
        pytest.skip("a Ray instance is running in this process: the executor would not connect")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "no-token"))
    try:
        with pytest.raises(InputError, match=r"^--address 127\.0\.0\.1:1: token authentication failed "
                                             r"\(RAY_AUTH_TOKEN_PATH is set but file cannot be opened or is empty: .*no-token\); "
                                             r"RAY_AUTH_MODE=token is set here.*RAY_AUTH_TOKEN_PATH.*docs/scaling\.md$"):
            RayExecutor(workers=1, address="127.0.0.1:1")
    finally:
        monkeypatch.undo()
        Config.initialize("")  # Ray's C++ side reads RAY_AUTH_MODE when initialised: back to this environment's mode
    assert not ray.is_initialized()


@pytest.mark.parametrize("gpus", [-1.0, float("nan"), float("inf")])
def test_a_gpu_count_that_is_no_count_names_gpus_per_task(gpus):
    from weightspace.runtime.executors import make_executor

    with pytest.raises(InputError, match=r"^--gpus-per-task must be a number of GPUs >= 0 .*, got (-1\.0|nan|inf)$"):
        make_executor("ray", workers=1, num_gpus=gpus)


STARTED: list[str] = []  # what Ray logged as the module's local instance started


@pytest.fixture(scope="module")
def ray_executor():
    """The local Ray instance of the tests below, started where ray.init on its own would join another
    cluster (RAY_ADDRESS names one, as `ray start` on this machine leaves one for it to find) and with
    Ray's token authentication on by default (RAY_AUTH_MODE unset)."""
    import logging

    from weightspace.runtime.ray_executor import RayExecutor

    seen = logging.Handler()
    seen.emit = lambda record: STARTED.append(record.getMessage())
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_ADDRESS", "127.0.0.1:1")
        env.delenv("RAY_AUTH_MODE", raising=False)
        logging.getLogger("ray").addHandler(seen)  # where Ray's handler writes to the terminal
        try:
            ex = RayExecutor(workers=2, max_retries=2)
        finally:
            logging.getLogger("ray").removeHandler(seen)
    yield ex
    ex.close()


def test_a_local_instance_starts_whatever_cluster_runs_here_and_says_nothing_of_tokens(ray_executor):
    assert ray.cluster_resources()["CPU"] == 2  # its own --workers CPUs: no other cluster joined
    assert not [line for line in STARTED if "Token authentication" in line], STARTED


def test_gpus_per_task_on_a_local_instance_without_gpus_is_bad_input_not_a_wait_forever(ray_executor):
    """Ray would hold every task that asks for a GPU the instance does not have, forever, with nothing said."""
    from weightspace.runtime.ray_executor import RayExecutor

    assert ray.cluster_resources().get("GPU", 0) == 0
    with pytest.raises(InputError, match=r"^--gpus-per-task 1: the local Ray instance has 0 GPUs, so no task could start; "):
        RayExecutor(workers=1, num_gpus=1)
    assert ray.is_initialized()  # the module's instance, which this executor did not start, is left running


def test_joining_a_cluster_that_wants_a_token_without_sending_one_says_how_to(ray_executor, tmp_path):
    """The CLI in a fresh process joins this module's instance (token authentication on) by its address
    without RAY_AUTH_MODE=token: Ray's refusal becomes one line saying what to set."""
    address = ray.get_runtime_context().gcs_address
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
    code = ("import sys; from weightspace.cli import main; main(['population', 'build', '--data', sys.argv[1], "
            "'--out', sys.argv[2], '--executor', 'ray', '--address', sys.argv[3]])")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(tmp_path / "pop"), address], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"error: --address {address}: token authentication failed (RPC error: InvalidAuthToken: "
                                  "Authentication token is missing or incorrect); the cluster uses token authentication"), done.stderr
    assert "set RAY_AUTH_MODE=token" in done.stderr and done.stderr.strip().endswith("see docs/scaling.md")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_toy_data(tmp_path_factory.mktemp("data"), count=4, resolution=10)


def _config(data, out, **kw):
    base = dict(checkpoint="toy", parameterisation="lora", data=str(data), out=str(out),
                options={"rank": 2, "alpha": 4.0, "targets": "mid|vol"}, steps=4, lr=0.02)
    return PopulationConfig(**(base | kw))


def _same(a: Population, b: Population) -> None:
    assert [r["id"] for r in a.rows] == [r["id"] for r in b.rows]
    assert [r["loss_curve"] for r in a.rows] == [r["loss_curve"] for r in b.rows]
    assert torch.equal(a.matrix(), b.matrix())  # both run each member in a one-thread worker process: bit for bit


def test_ray_build_equals_the_process_pool_member_for_member(ray_executor, data, tmp_path):
    by_ray = build_population(_config(data, tmp_path / "ray"), generator=LOADER, executor=ray_executor)
    with ProcessPoolExecutorBackend(workers=2) as pool:
        by_pool = build_population(_config(data, tmp_path / "pool"), generator=LOADER, executor=pool)
    assert len(by_ray) == 4 and not read_failures(by_ray.folder)
    _same(by_ray, by_pool)

    # a driver killed after two members: they stay, and a rerun fits the other two only
    def interrupt(row):
        if len(Population(tmp_path / "resumed")) == 2:
            raise KeyboardInterrupt("driver killed")

    with pytest.raises(KeyboardInterrupt):
        build_population(_config(data, tmp_path / "resumed"), generator=LOADER, executor=ray_executor, on_member=interrupt)
    assert len(Population(tmp_path / "resumed")) == 2
    done = []
    resumed = build_population(_config(data, tmp_path / "resumed"), generator=LOADER, executor=ray_executor,
                               on_member=lambda r: done.append(r["id"]))
    assert len(done) == 2
    _same(resumed, by_ray)


def test_the_progress_status_counts_tasks_and_members_per_task(ray_executor, data, tmp_path, monkeypatch):
    """4 members in batches of 2 are 2 Ray tasks: the bar counts the members, the status says it counts tasks."""
    seen = []

    def spy(items, description, total=None, status=None, **kw):
        for item in items:
            yield item
            seen.append(status())

    monkeypatch.setattr(population_module, "track", spy)
    pop = build_population(_config(data, tmp_path / "pop", steps=2, batch_members=2), generator=LOADER, executor=ray_executor)
    assert len(pop) == 4 and len(seen) == 4
    assert seen[-1].startswith("2 members per task; ray: 2 tasks done, 0 failed, 0 in flight on 2 workers"), seen


def test_a_killed_ray_worker_loses_nothing(ray_executor, data, tmp_path):
    killer = ExitOnceInAWorker(tmp_path / "killed")
    pop = build_population(_config(data, tmp_path / "pop", steps=2), generator=killer, executor=ray_executor)
    assert (tmp_path / "killed").is_file()  # a worker did die mid-build; Ray ran its task again elsewhere
    assert len(pop) == 4 and not read_failures(pop.folder)
    reference = build_population(_config(data, tmp_path / "reference", steps=2), generator=LOADER)
    torch.testing.assert_close(pop.matrix(), reference.matrix(), rtol=1e-5, atol=1e-6)


def test_a_member_that_keeps_failing_is_recorded_and_the_build_goes_on(ray_executor, data, tmp_path):
    broken = shutil.copytree(data, tmp_path / "data")
    grid_file = broken / json.loads((broken / "manifest.jsonl").read_text().splitlines()[1])["grid"]
    good = np.load(grid_file, allow_pickle=False)
    bad = good.copy()
    bad[0, 0, 0] = np.nan
    np.save(grid_file, bad, allow_pickle=False)
    # the data hash is of the manifest, which is unchanged: the rerun below resumes the same population
    out = tmp_path / "pop"
    pop = build_population(_config(broken, out, steps=2), generator=LOADER, executor=ray_executor)
    failed = read_failures(out)
    assert len(pop) == 3 and [f["index"] for f in failed] == [1]
    assert "InputError" in failed[0]["error"] and grid_file.name in failed[0]["error"]
    np.save(grid_file, good, allow_pickle=False)
    pop = build_population(_config(broken, out, steps=2), generator=LOADER, executor=ray_executor)
    assert len(pop) == 4 and not read_failures(out)


def test_decode_of_a_population_and_a_subspace_on_ray_equals_decoding_here(ray_executor, data, tmp_path, one_thread):
    from weightspace.decode.sources import DecodeConfig, decode_source
    from weightspace.space.subspace import fit_subspace

    pop = build_population(_config(data, tmp_path / "pop", steps=2), generator=LOADER)
    fit_subspace(pop, 2, out=tmp_path / "sub")
    for source, extra in ((pop.folder, {}), (tmp_path / "sub", {"samples": 5, "seed": 3})):
        here, ray_out = (tmp_path / f"{source.name}-{where}" for where in ("here", "ray"))  # a decode's own folders
        rows_here = decode_source(DecodeConfig(source=str(source), out=str(here), batch_size=2, meshes=False, **extra),
                                  generator=LOADER())
        rows_ray = decode_source(DecodeConfig(source=str(source), out=str(ray_out), batch_size=2, meshes=False, **extra),
                                 generator=LOADER, executor=ray_executor)
        assert [r["id"] for r in rows_ray] == [r["id"] for r in rows_here] and [r["seed"] for r in rows_ray] == [r["seed"] for r in rows_here]
        for r in rows_here:
            a, b = (np.load(d / r["grid"], allow_pickle=False) for d in (here, ray_out))
            np.testing.assert_array_equal(a, b)


def test_the_pairs_sweep_on_ray_gives_the_paths_found_here(ray_executor, data, tmp_path, one_thread):
    from weightspace.experiments.interpolate import InterpolateConfig, run_interpolate

    base = dict(checkpoint="toy", endpoints="data", data=str(data), pairs=3, steps=3, meshes=False)
    here = run_interpolate(InterpolateConfig(out=str(tmp_path / "here"), **base), generator=LOADER())
    there = run_interpolate(InterpolateConfig(out=str(tmp_path / "ray"), executor="ray", workers=2, **base), generator=LOADER())
    a, b = (json.loads((f / "results.json").read_text()) for f in (here, there))
    assert a["pairs"] == b["pairs"] == 3 and a["decodes"] == b["decodes"]
    assert a["transitions"] == b["transitions"] and a["summary"] == b["summary"]


def test_evaluate_generator_on_ray_gives_the_figures_computed_here(ray_executor, tmp_path, one_thread):
    from test_latent_diffusion_model import tiny_generator

    from weightspace.data.make import make_dataset
    from weightspace.generators.latent_diffusion.evaluate import evaluate_generator

    data = tmp_path / "data"
    make_dataset(data, family="torus,pair", count=6, resolution=16, seed=0, n_points=256, split=(0.0, 0.0, 1.0), progress=False)
    gen = tiny_generator(seed=0)
    here = evaluate_generator(gen, data, max_shapes=6)
    there = evaluate_generator(gen, data, max_shapes=6, executor=ray_executor)
    here.pop("seconds_per_shape", None)
    there.pop("seconds_per_shape", None)
    assert here["held_out_shapes"] == 6 and there == here


def test_evaluate_a_neural_field_on_ray_gives_the_figures_computed_here(ray_executor, tmp_path, one_thread):
    """The field's held-out reconstructions (code optimisation) and family samples as Ray tasks."""
    from test_neural_field_train import _train

    from weightspace.data.make import make_dataset
    from weightspace.generators import load_generator
    from weightspace.generators.neural_field.evaluate import evaluate_generator

    data = tmp_path / "data"
    make_dataset(data, family="all", count=30, resolution=16, seed=0, n_points=256, progress=False)
    _train(data, tmp_path / "ck", steps=5)
    gen = load_generator(tmp_path / "ck")
    here = evaluate_generator(gen, data, max_shapes=4, samples_per_family=1)
    there = evaluate_generator(gen, data, max_shapes=4, samples_per_family=1, executor=ray_executor)
    assert here.pop("seconds_per_shape") > 0 and there.pop("seconds_per_shape") > 0
    assert here["held_out_shapes"] >= 3 and there == pytest.approx(here, abs=1e-9)


def test_a_ray_without_token_authentication_is_handled():
    """Ray has AuthenticationError from 2.52 on; on the older Rays the extra allows, the except clause
    that names it must catch nothing rather than raise AttributeError on every failed connection."""
    from types import SimpleNamespace

    from weightspace.runtime.ray_executor import _auth_error

    assert _auth_error(SimpleNamespace(exceptions=SimpleNamespace())) == ()
    import ray

    assert _auth_error(ray) is getattr(ray.exceptions, "AuthenticationError", ())

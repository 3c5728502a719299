"""How many workers a study's executor runs when the user names none, and that both studies agree."""

from weightspace.experiments.fit import FitConfig
from weightspace.experiments.subspace import SubspaceConfig
from weightspace.runtime.executors import executor_workers, usable_cores


def test_executor_workers_defaults_per_executor():
    assert executor_workers("inprocess", None) == 1
    assert executor_workers("process", None) == usable_cores()
    assert executor_workers("ray", None) == usable_cores()
    assert executor_workers("inprocess", 3) == 3 and executor_workers("process", 1) == 1


def test_fit_and_subspace_studies_count_workers_alike():
    for executor in ("inprocess", "process"):
        for workers in (None, 2):
            fit = FitConfig(executor=executor, workers=workers)
            sub = SubspaceConfig(executor=executor, workers=workers)
            assert fit.pool_workers() == sub.pool_workers() == executor_workers(executor, workers)


def test_the_in_process_executor_says_when_an_item_runs_in_the_caller():
    from weightspace.runtime.executors import InProcessExecutor, in_calling_process

    def boom(x):
        raise ValueError(x)

    assert not in_calling_process()
    seen = list(InProcessExecutor().map(lambda x: (x, in_calling_process()), [1, 2]))
    assert seen == [(1, True), (2, True)] and not in_calling_process()
    out = list(InProcessExecutor().map(boom, [3], errors="return"))
    assert "ValueError" in out[0].error and not in_calling_process()


def test_a_ray_option_without_the_ray_executor_names_which_option_needs_what():
    import pytest

    from weightspace.runtime.errors import InputError
    from weightspace.runtime.executors import make_executor

    with pytest.raises(InputError, match=r"^--gpus-per-task needs --executor ray \(the executor here is 'inprocess'\)$"):
        make_executor("inprocess", num_gpus=1)
    with pytest.raises(InputError, match=r"^--address needs --executor ray \(the executor here is 'process'\)$"):
        make_executor("process", workers=2, address="auto")
    with pytest.raises(InputError, match=r"^--address and --gpus-per-task need --executor ray"):
        make_executor("inprocess", address="auto", num_gpus=0.5)


def test_pool_workers_end_when_their_parent_is_killed(tmp_path):
    """A parent killed with SIGKILL (no chance to shut its pool down) leaves no worker behind: they used
    to wait for items forever, and could finish a queued item beside the rerun resuming the job."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = ("import os, sys, time\n"
              "from weightspace.runtime.executors import spawn_pool\n"
              "if __name__ == '__main__':\n"
              "    pool = spawn_pool(2)\n"
              "    pids = {pool.submit(os.getpid).result() for _ in range(8)}\n"
              "    print(' '.join(map(str, sorted(pids))), flush=True)\n"
              "    time.sleep(600)\n")
    (tmp_path / "parent.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
    finally:
        parent.kill()
        parent.wait()
    assert workers

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # a zombie of an ended worker (reaped by init later) counts as ended
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except OSError:
            return True

    deadline = time.monotonic() + 20
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in workers if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived their killed parent"

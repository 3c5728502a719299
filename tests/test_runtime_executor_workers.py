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

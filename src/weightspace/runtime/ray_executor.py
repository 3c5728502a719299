"""The Ray executor (`--executor ray`): tasks on a local Ray instance or on a cluster it joins.

Ray does the scheduling, placement, retries and transport; this class only adapts it to
`Executor.map`. Each item is one Ray task asking for one CPU and `num_gpus` GPUs, retried
`max_retries` times when its worker dies (`ray.exceptions.WorkerCrashedError` and the like); an
item whose task still fails comes back as a `TaskFailure` (`errors="return"`) or raises. At most
`2 * workers` tasks are in flight, so results stream back to the driver, which alone writes files.
Objects every task needs go through `share`: `ray.put` once, then each task carries a reference.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import closing
from typing import Any, Callable, Iterable, Iterator, TypeVar

from weightspace.runtime.errors import InputError
from weightspace.runtime.executors import Executor, OnError, Shared, TaskFailure, failure, in_flight

T = TypeVar("T")
R = TypeVar("R")

_RESOLVED: dict[str, Any] = {}  # object-store id -> object, per worker process (a worker runs many tasks)


class RayShared(Shared[T]):
    """A handle to an object in Ray's object store: pickles as a reference, fetched once per worker."""

    def __init__(self, ref: Any, label: str) -> None:
        self.ref = ref
        self.label = label

    def get(self) -> T:
        import ray

        key = self.ref.hex()
        if key not in _RESOLVED:
            _RESOLVED.clear()  # one shared object per worker at a time (one build)
            _RESOLVED[key] = ray.get(self.ref)
        return _RESOLVED[key]

    def __repr__(self) -> str:
        return self.label


def _call(fn: Callable[[T], R], item: T) -> R:
    return fn(item)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs Ray: pip install 'weightspace[ray]'") from None
    return ray


class RayExecutor(Executor):
    """Tasks on Ray: a local instance with `workers` CPUs, or the running cluster at `address`
    (`auto`, or HOST:PORT of its head; `workers` then defaults to the cluster's CPUs, or its GPUs
    over `num_gpus`). `start_seconds` is the time `ray.init` took."""

    keeps_going = True

    def __init__(self, workers: int = 2, address: str | None = None, num_gpus: float = 0.0, max_retries: int = 3,
                 **_: Any) -> None:
        ray = _import_ray()
        if workers < 1 or num_gpus < 0 or max_retries < 0:
            raise InputError(f"workers must be >= 1, num_gpus >= 0 and max_retries >= 0; got {workers}, {num_gpus}, {max_retries}")
        t0 = time.perf_counter()
        self._owns = not ray.is_initialized()
        if self._owns:
            if address is not None:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                _init_local(ray, workers, num_gpus)
        self.start_seconds = time.perf_counter() - t0
        if address is not None:
            res = ray.cluster_resources()
            per_task = int(res.get("GPU", 0) // num_gpus) if num_gpus else int(res.get("CPU", workers))
            workers = max(1, per_task)
        self.workers = workers
        self.num_gpus, self.max_retries = float(num_gpus), int(max_retries)
        self._remote = ray.remote(_call).options(num_cpus=1, num_gpus=self.num_gpus, max_retries=self.max_retries)
        self._counts = {"done": 0, "failed": 0, "running": 0}

    def share(self, obj: T) -> Shared[T]:
        import ray

        return RayShared(ray.put(obj), repr(obj))

    def status(self) -> str:
        c = self._counts
        gpus = f", {self.num_gpus:g} GPU/task" if self.num_gpus else ""
        return f"ray: {c['done']} done, {c['failed']} failed, {c['running']} in flight on {self.workers} workers{gpus}"

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, ordered: bool = True,
            errors: OnError = "raise") -> Iterator[R | TaskFailure]:
        import ray

        def first_done(refs: list[Any]) -> int:
            ready, _ = ray.wait(refs, num_returns=1)
            return next(i for i, r in enumerate(refs) if r == ready[0])

        self._counts = {"done": 0, "failed": 0, "running": 0}
        with closing(in_flight(items, lambda item: self._remote.remote(fn, item), limit=2 * self.workers, first_done=first_done,
                                     cancel=ray.cancel, ordered=ordered, on_count=lambda n: self._counts.update(running=n))) as window:
            for ref, item in window:
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:
                    self._counts["failed"] += 1
                    if errors == "raise":
                        raise _cause(e) from None
                    yield _failure(item, e)
                    continue
                self._counts["done"] += 1
                yield result

    def close(self) -> None:
        import ray

        if self._owns and ray.is_initialized():
            ray.shutdown()


def _init_local(ray: Any, workers: int, num_gpus: float) -> None:
    """A local Ray instance with `workers` CPUs whose workers import what this process imports: the
    raylet starts them with its environment, so PYTHONPATH carries this sys.path while it starts."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [*sys.path, before or ""] if p and os.path.isdir(p))
    try:
        gpus = None if num_gpus else 0
        ray.init(num_cpus=workers, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=True, logging_level="warning")
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def _cause(e: Exception) -> BaseException:
    """The task's own exception where Ray kept it (an InputError stays an InputError), else Ray's."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


def _failure(item: Any, e: Exception) -> TaskFailure:
    cause = _cause(e)
    if cause is not e:
        return failure(item, cause)
    return TaskFailure(item, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:500] if str(e).strip() else ''}", str(e)[-4000:])


__all__ = ["RayExecutor", "RayShared"]

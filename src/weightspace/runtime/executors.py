"""Executors: run one function over many items, in process or in a local process pool.

Callers only use `Executor.map(fn, items)`, which yields results in the order of `items`
as soon as each is ready (like the built-in `map`, but possibly parallel). A Ray executor
can be added later as one more class in `EXECUTORS` without touching any caller: `fn` and
the items must already be picklable for the process pool, which is what Ray needs too.
"""

from __future__ import annotations

import abc
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, Literal, TypeVar

from weightspace.runtime.errors import InputError

T = TypeVar("T")
R = TypeVar("R")

ExecutorName = Literal["inprocess", "process"]


class Executor(abc.ABC):
    """Runs `fn` over items; results come back in input order."""

    workers: int = 1

    @abc.abstractmethod
    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Yield `fn(item)` for each item, in the order of `items`."""

    def close(self) -> None:  # noqa: B027 (an optional hook: executors without workers have nothing to release)
        """Release workers (no-op for executors without any)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Runs every item in the calling process, one after another (easy to debug, no pickling)."""

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        for item in items:
            yield fn(item)


class ProcessPoolExecutorBackend(Executor):
    """A local pool of `workers` processes (spawned, so torch state is never forked).

    At most `workers + prefetch` items are in flight, so a long item list never floods the
    pool, and results are yielded in order as they complete.
    """

    def __init__(self, workers: int = 2, prefetch: int = 1) -> None:
        if workers < 1:
            raise InputError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._prefetch = max(0, prefetch)
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        pending: list[Future] = []
        iterator = iter(items)
        limit = self.workers + self._prefetch
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    try:
                        pending.append(self._pool.submit(fn, next(iterator)))
                    except StopIteration:
                        exhausted = True
                if not pending:
                    return
                yield pending.pop(0).result()
        finally:
            for f in pending:
                f.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


EXECUTORS: dict[str, type[Executor]] = {"inprocess": InProcessExecutor, "process": ProcessPoolExecutorBackend}


def make_executor(name: str = "inprocess", *, workers: int = 1) -> Executor:
    """Build an executor by name (`inprocess` or `process`); `workers` applies to pools."""
    if name not in EXECUTORS:
        raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if name == "inprocess":
        return InProcessExecutor()
    return EXECUTORS[name](workers=workers)  # type: ignore[call-arg]

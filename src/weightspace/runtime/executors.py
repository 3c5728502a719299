"""Executors: run one function over many items, in process, in a local process pool, or on Ray.

Callers only use `Executor.map(fn, items)`, which yields results in the order of `items` (or, with
`ordered=False`, as each finishes) like the built-in `map`, but possibly parallel. `fn` and the
items must be picklable. A large object every item needs (a generator, a checkpoint loader) goes
through `Executor.share` once: Ray keeps it in its object store and every task receives a
reference, instead of a pickled copy per item. With `errors="return"` an item whose task keeps
failing yields a `TaskFailure` (its error as text) and the others go on.

The Ray executor lives in `runtime.ray_executor` (the optional extra `weightspace[ray]`).
"""

from __future__ import annotations

import abc
import multiprocessing
import os
import signal
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Iterator, Literal, TypeVar

from weightspace.runtime.errors import InputError

T = TypeVar("T")
R = TypeVar("R")

ExecutorName = Literal["inprocess", "process", "ray"]
OnError = Literal["raise", "return"]


@dataclass
class TaskFailure:
    """What `map(..., errors="return")` yields for an item whose task failed (after its retries)."""

    item: Any
    error: str  # exception type and message (one line)
    detail: str = ""  # the traceback, when one came back


class Shared(Generic[T]):
    """A picklable, zero-argument handle to an object shared by every task: calling it returns the object.

    Its repr is the object's, so worker caches keyed on a loader's repr key the same whether the
    loader travels itself or through a handle.
    """

    def __init__(self, obj: T) -> None:
        self.obj = obj

    def get(self) -> T:
        return self.obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.get()(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self.obj)


class Executor(abc.ABC):
    """Runs `fn` over items; results come back in input order (or as they finish)."""

    workers: int = 1
    keeps_going: bool = False  # True: a build records an item that keeps failing and goes on (distributed runs)

    @abc.abstractmethod
    def map(self, fn: Callable[[T], R], items: Iterable[T], *, ordered: bool = True,
            errors: OnError = "raise") -> Iterator[R | TaskFailure]:
        """Yield `fn(item)` for each item: in the order of `items`, or as each finishes with
        `ordered=False`; with `errors="return"` a failed item yields a TaskFailure instead of raising."""

    def share(self, obj: T) -> Shared[T]:
        """A handle to `obj` for the items to carry (here: `obj` itself, pickled with each item)."""
        return Shared(obj)

    def status(self) -> str:
        """One line on the workers (shown beside the progress bar)."""
        return f"{self.workers} worker(s)"

    def close(self) -> None:  # noqa: B027 (an optional hook: executors without workers have nothing to release)
        """Release workers (no-op for executors without any)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_WORKER_OBJECTS: dict[str, Any] = {}


def worker_cached(key: str, build: Callable[[], T]) -> T:
    """The object `build()` made in this process under `key`, made once (a worker runs many items: a
    generator is loaded once per worker, not per item). One key at a time: a new key drops the last."""
    if key not in _WORKER_OBJECTS:
        _WORKER_OBJECTS.clear()
        _WORKER_OBJECTS[key] = build()
    return _WORKER_OBJECTS[key]


def failure(item: Any, error: BaseException) -> TaskFailure:
    return TaskFailure(item, f"{type(error).__name__}: {str(error).splitlines()[0][:500] if str(error) else ''}",
                       "".join(traceback.format_exception(error))[-4000:])


def in_flight(items: Iterable[T], submit: Callable[[T], Any], *, limit: int, first_done: Callable[[list[Any]], int],
              cancel: Callable[[Any], Any], ordered: bool = True,
              on_count: Callable[[int], None] | None = None) -> Iterator[tuple[Any, T]]:
    """Keep at most `limit` submitted items in flight and yield (handle, item) pairs: in the order of
    `items`, or, with ordered=False, the one `first_done(handles)` (an index) names. Handles still
    in flight when the consumer stops are cancelled. `on_count(n)` hears the number in flight.

    The window both pools share: a long item list never floods the workers, and results stream
    back to the one process that writes them. Consumers hold it in `contextlib.closing`, so what is
    still in flight is cancelled as soon as they stop."""
    pending: list[tuple[Any, T]] = []
    iterator, exhausted = iter(items), False
    try:
        while True:
            while not exhausted and len(pending) < limit:
                try:
                    item = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                pending.append((submit(item), item))
            if on_count is not None:
                on_count(len(pending))
            if not pending:
                return
            handle, item = pending.pop(0 if ordered else first_done([h for h, _ in pending]))
            if on_count is not None:
                on_count(len(pending))
            yield handle, item
    finally:
        for handle, _ in pending:
            cancel(handle)
        if on_count is not None:
            on_count(0)


def _first_future(futures: list[Future]) -> int:
    done, _ = wait(futures, return_when=FIRST_COMPLETED)
    return next(i for i, f in enumerate(futures) if f in done)


class InProcessExecutor(Executor):
    """Runs every item in the calling process, one after another (easy to debug, no pickling)."""

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, ordered: bool = True,
            errors: OnError = "raise") -> Iterator[R | TaskFailure]:
        global _CALLER_DEPTH
        for item in items:
            _CALLER_DEPTH += 1
            try:
                result: R | TaskFailure = fn(item)
            except Exception as e:
                if errors == "raise":
                    raise
                result = failure(item, e)
            finally:
                _CALLER_DEPTH -= 1  # not while the consumer holds the result
            yield result


_CALLER_DEPTH = 0  # > 0 while an InProcessExecutor runs an item in the calling process


def in_calling_process() -> bool:
    """True while an item runs in the process that called `map` (the in-process executor), where a task
    must leave process-wide settings alone; False in a pool or Ray worker, which only runs tasks."""
    return _CALLER_DEPTH > 0


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes for a command's items. Spawned, not forked: the parent may hold
    torch's thread pools, which a forked child inherits broken. Ctrl-C (SIGINT, sent to the whole
    process group) ends a worker at once and silently, as the system's default action: the parent
    stops and says so in one line (Python's KeyboardInterrupt printed the traceback of every worker,
    often one still importing torch). Workers write files atomically, so one stopped mid-file leaves
    only a temporary the next run removes. A worker whose parent dies (SIGKILL, an OOM kill) ends
    within a second (`_exit_with_parent`); it used to wait forever for items, holding its memory, and
    could finish a queued item beside the rerun that resumes the job."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(os.getpid(),))


def _start_worker(parent: int) -> None:
    """A `spawn_pool` worker's setup: SIGINT at its default action, and a watch on the parent `parent`."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="weightspace-parent-watch").start()


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """End this process once `parent` is no longer its parent (it died; the worker was handed to init or
    a subreaper). Polled rather than prctl(PR_SET_PDEATHSIG), which is Linux-only and fires when the
    *thread* that started the worker ends, not the process."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


class ProcessPoolExecutorBackend(Executor):
    """A local pool of `workers` processes (spawned, so torch state is never forked).

    At most `workers + prefetch` items are in flight, so a long item list never floods the
    pool, and results are yielded in order (or as they complete, `ordered=False`).
    """

    def __init__(self, workers: int = 2, prefetch: int = 1) -> None:
        if workers < 1:
            raise InputError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._prefetch = max(0, prefetch)
        self._pool = spawn_pool(workers)

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, ordered: bool = True,
            errors: OnError = "raise") -> Iterator[R | TaskFailure]:
        with closing(in_flight(items, lambda item: self._pool.submit(fn, item), limit=self.workers + self._prefetch,
                                     first_done=_first_future, cancel=Future.cancel, ordered=ordered)) as window:
            for future, item in window:
                try:
                    result = future.result()
                except Exception as e:
                    if errors == "raise":
                        raise
                    yield failure(item, e)
                    continue
                yield result

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _ray_executor(**kw: Any) -> Executor:
    from weightspace.runtime.ray_executor import RayExecutor  # ray is an optional extra

    return RayExecutor(**kw)


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "inprocess": lambda **kw: InProcessExecutor(),
    "process": lambda workers=2, **kw: ProcessPoolExecutorBackend(workers=workers),
    "ray": _ray_executor,
}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def executor_workers(executor: str, workers: int | None) -> int:
    """The workers a study's executor runs: `workers` when given, else one for the in-process executor
    and every usable core for the others."""
    if workers is not None:
        return workers
    return 1 if executor == "inprocess" else usable_cores()


def make_executor(name: str = "inprocess", *, workers: int = 1, address: str | None = None, num_gpus: float = 0.0,
                  max_retries: int = 3) -> Executor:
    """Build an executor by name: `inprocess`, `process` (`workers` processes) or `ray` (a local Ray
    instance with `workers` CPUs, or the cluster at `address`: `auto` or HOST:PORT; each task asks for
    `num_gpus` GPUs and is retried `max_retries` times when its worker dies)."""
    if name not in EXECUTORS:
        raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    if name != "ray":
        ray_only = [opt for opt, given in (("--address", address is not None), ("--gpus-per-task", bool(num_gpus))) if given]
        if ray_only:
            raise InputError(f"{' and '.join(ray_only)} {'need' if len(ray_only) > 1 else 'needs'} --executor ray "
                             f"(the executor here is {name!r})")
    return EXECUTORS[name](workers=workers, address=address, num_gpus=num_gpus, max_retries=max_retries)

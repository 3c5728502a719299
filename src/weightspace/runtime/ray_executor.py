"""The Ray executor (`--executor ray`): tasks on a local Ray instance or on a cluster it joins.

Ray does the scheduling, placement, retries and transport; this class only adapts it to
`Executor.map`. Each item is one Ray task asking for one CPU and `num_gpus` GPUs, retried
`max_retries` times when its worker dies (`ray.exceptions.WorkerCrashedError` and the like); an
item whose task still fails comes back as a `TaskFailure` (`errors="return"`) or raises. At most
`2 * workers` tasks are in flight, so results stream back to the driver, which alone writes files.
Objects every task needs go through `share`: `ray.put` once, then each task carries a reference.
An `address` where no cluster answers, or whose cluster refuses this driver's authentication token,
is an InputError, within about 21 s (`_connect`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import tempfile
import time
from contextlib import closing, contextmanager
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
        if workers < 1 or max_retries < 0:
            raise InputError(f"workers (--workers) must be >= 1 and max_retries >= 0; got {workers}, {max_retries}")
        if not 0 <= num_gpus < math.inf:  # nan too
            raise InputError(f"--gpus-per-task must be a number of GPUs >= 0 (1, or 0.25 to share one), got {num_gpus}")
        t0 = time.perf_counter()
        self._owns = not ray.is_initialized()
        if self._owns:
            if address is not None:
                _connect(ray, address)
            else:
                _init_local(ray, workers, num_gpus)
        self.start_seconds = time.perf_counter() - t0
        if address is None and num_gpus:
            self._check_gpus(ray, num_gpus)
        if address is not None:
            res = ray.cluster_resources()
            per_task = int(res.get("GPU", 0) // num_gpus) if num_gpus else int(res.get("CPU", workers))
            workers = max(1, per_task)
        self.workers = workers
        self.num_gpus, self.max_retries = float(num_gpus), int(max_retries)
        self._remote = ray.remote(_call).options(num_cpus=1, num_gpus=self.num_gpus, max_retries=self.max_retries)
        self._counts = {"done": 0, "failed": 0, "running": 0}

    def _check_gpus(self, ray: Any, num_gpus: float) -> None:
        """Refuse `num_gpus` per task on a local instance with fewer GPUs: Ray would hold every task,
        forever and silently (a cluster may yet add GPU nodes, so one is not checked)."""
        have = ray.cluster_resources().get("GPU", 0)
        if have < num_gpus:
            self.close()
            raise InputError(f"--gpus-per-task {num_gpus:g}: the local Ray instance has {have:g} GPUs, so no task could start; "
                             "leave out --gpus-per-task to run on CPUs, or join a cluster with GPUs with --address")

    def share(self, obj: T) -> Shared[T]:
        import ray

        return RayShared(ray.put(obj), repr(obj))

    def status(self) -> str:
        """Ray's counts of tasks (items of `map`: a caller that batches knows how many each holds)."""
        c = self._counts
        gpus = f", {self.num_gpus:g} GPU/task" if self.num_gpus else ""
        return f"ray: {c['done']} tasks done, {c['failed']} failed, {c['running']} in flight on {self.workers} workers{gpus}"

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


# How long joining a cluster may take. Ray's defaults try 20 times, each attempt waiting up to 5 s
# for the connection, 5 s for its pubsub and 30 s for the GCS to answer (over 10 minutes for an
# address where no cluster runs); one attempt of 5 + 5 + 10 s gives up in about 21 s. Knobs of
# RayConfig (the driver's C++ side), set only where the environment does not set RAY_<name> itself.
CONNECT_LIMITS = {"gcs_rpc_server_connect_timeout_s": 5, "py_gcs_connect_timeout_s": 10}
CONNECT_ATTEMPTS = "1"  # RAY_gcs_server_port_wait_time_s: Ray's attempts (about 1 s apart) to reach the GCS
JOIN_HINT = ("start one with `ray start --head` on its head node (docs/scaling.md), "
             "or leave out --address to start a local Ray instance with --workers CPUs")


def _connect(ray: Any, address: str) -> None:
    """Join the running cluster at `address` (`auto` or HOST:PORT) within about 21 s, or raise an
    InputError naming the address and what to do; Ray's own log lines from the attempt are dropped
    when it fails (the error says why) and shown when it succeeds."""
    _check_address(address)
    from ray._raylet import Config  # RayConfig: read from the environment at import, set again here

    limits = {k: v for k, v in CONNECT_LIMITS.items() if f"RAY_{k}" not in os.environ}
    before = os.environ.get("RAY_gcs_server_port_wait_time_s")
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", CONNECT_ATTEMPTS)
    Config.initialize(json.dumps(limits) if limits else "")
    try:
        with _stderr_kept_on_success(), _token_auth_notice_dropped():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=True,
                     logging_level="warning")
    except (ConnectionError, RuntimeError, _auth_error(ray)) as e:
        Config.initialize("")  # the environment's (Ray's default) limits again, for a later local start
        refused = _authentication_refused(e)
        if refused is not None:
            raise InputError(f"--address {address}: token authentication failed ({refused}); {_token_hint()}") from None
        raise InputError(f"--address {address}: could not join a Ray cluster ({_reason(e)}); {JOIN_HINT}") from None
    finally:
        if before is None:
            os.environ.pop("RAY_gcs_server_port_wait_time_s", None)


def _check_address(address: str) -> None:
    """Refuse at once an address `ray.init` would wait on or fail in unexpectedly: anything but `auto` or
    HOST:PORT with a port from 1 to 65535 and a host name that resolves here."""
    if address == "auto":
        return
    form = "--address must be auto or HOST:PORT (the head's GCS port, 6379 by default)"
    if "://" in address:
        raise InputError(f"{form}, got {address!r}: a URL such as ray://HOST:10001 (Ray Client) is not supported; "
                         "run the command on a node of the cluster with --address auto or HEAD_IP:6379")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"{form}, got {address!r}")
    if not 1 <= int(port) <= 65535:
        raise InputError(f"{form}, got {address!r}: the port must be from 1 to 65535")
    try:
        socket.getaddrinfo(host.strip("[]"), int(port))
    except (OSError, UnicodeError) as e:
        raise InputError(f"--address {address}: host {host!r} is not known here ({e}); {JOIN_HINT}") from None


def _auth_error(ray) -> type[BaseException] | tuple[()]:
    """Ray's AuthenticationError, which Ray has from 2.52 on (token authentication); an empty tuple,
    which catches nothing, on the older Rays the `ray` extra allows."""
    return getattr(ray.exceptions, "AuthenticationError", ())


def _authentication_refused(e: BaseException) -> str | None:
    """Ray's reason when `ray.init` failed on token authentication, else None. Ray raises its
    AuthenticationError itself when this driver has no token to send (RAY_AUTH_MODE=token); when the
    cluster refuses the driver's token, a ConnectionError caused by a RuntimeError holding its text."""
    import ray

    if isinstance(e, _auth_error(ray)):
        text = getattr(e, "message", str(e))
    else:
        _, found, text = str(e.__cause__ if e.__cause__ is not None else e).rpartition("AuthenticationError: ")
        if not found:
            return None
    lines = text.strip().splitlines()
    return lines[0].split(". ")[0].rstrip(".") if lines else "AuthenticationError"


def _token_hint() -> str:
    """What to do when a cluster refused this driver's token: send one, or the cluster's."""
    where = ("Ray reads it from RAY_AUTH_TOKEN, from the file RAY_AUTH_TOKEN_PATH names, or from ~/.ray/auth_token "
             "(`ray get-auth-token` on the head prints the cluster's); see docs/scaling.md")
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return ("the cluster uses token authentication (`ray start --head` turns it on where the head has a token): "
                f"set RAY_AUTH_MODE=token so that this command sends its token; {where}")
    return f"RAY_AUTH_MODE=token is set here, so the token found here is missing or not the cluster's; {where}"


def _reason(e: BaseException) -> str:
    """One line on why ray.init failed: its own message's first sentence, or the last line of its cause
    (a traceback in text, ending in Ray's RpcError)."""
    cause = e.__cause__
    lines = [line.strip() for line in str(cause if cause is not None else e).splitlines() if line.strip()]
    line = (lines[-1] if cause is not None else lines[0].split(". ")[0]) if lines else type(e).__name__
    return line[:300]


@contextmanager
def _stderr_kept_on_success() -> Iterator[None]:
    """Send file descriptor 2 (where Ray's C++ side logs each failed connection attempt) to a temporary
    file for the block: copied to stderr when the block succeeds, dropped when it raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        sys.stderr.write(held.read().decode(errors="replace"))


TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"  # Ray's warning on each start (docs/scaling.md)


class _DropTokenNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TOKEN_NOTICE)


@contextmanager
def _token_auth_notice_dropped() -> Iterator[None]:
    """Keep Ray's warning that the cluster it starts or joins uses token authentication off the terminal
    for the block: it comes with every `ray.init` and asks nothing of the user."""
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    drop = _DropTokenNotice()
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


def _init_local(ray: Any, workers: int, num_gpus: float) -> None:
    """A new local Ray instance with `workers` CPUs (`address="local"`: never a cluster already running
    here, nor the one RAY_ADDRESS names) whose workers import what this process imports: the raylet
    starts them with its environment, so PYTHONPATH carries this sys.path while it starts."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [*sys.path, before or ""] if p and os.path.isdir(p))
    try:
        gpus = None if num_gpus else 0
        with _token_auth_notice_dropped():
            ray.init(address="local", num_cpus=workers, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
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

"""Data-parallel training under torchrun: the process group, each rank's share of a batch, one DDP
forward per step, and the few values every rank must agree on.

`torchrun --nproc-per-node N -m weightspace train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; the
trainers call `init_ranks` and then: every rank draws the whole global batch from the step's own
generator (so draws do not depend on the number of ranks), computes the loss of its contiguous
share of it (`shard`), scaled by `share` so that DistributedDataParallel's gradient average is
the gradient of the global batch's mean loss; rank 0 alone writes checkpoints and logs. Before any
of that, `same_settings` refuses ranks started with different settings, on every rank at once (a
rank with more steps than rank 0 would otherwise wait for it forever). Without torchrun every
function here is the identity of one process.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from weightspace.runtime.checkpoint import state_metadata
from weightspace.runtime.device import pick_device
from weightspace.runtime.errors import InputError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank, world size and the rank on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints, logs and records."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_ranks(device: str = "auto") -> tuple[Ranks, torch.device]:
    """Join the process group torchrun describes in the environment (gloo on CPU, NCCL on CUDA, where
    rank r of a machine takes GPU LOCAL_RANK); one rank on `device` without torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world == 1:
        return Ranks(), dev
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    _stop_with_launcher()
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} GPU(s): "
                             f"use --nproc-per-node {torch.cuda.device_count()} at most")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=30))
    return Ranks(rank, world, local), dev


def _stop_with_launcher(poll_s: float = 1.0) -> None:
    """Under torchrun, send this rank SIGTERM once when torchrun dies. torchrun starts its ranks in
    sessions of their own, so `kill -9` of it (or `timeout -s KILL`) reached none of them and they trained
    on, holding --out; with SIGTERM they stop after the step in flight and save (`StopRequests`), as at
    Ctrl-C. A thread watches the parent process id: the kernel's parent-death signal (prctl) would come
    again at the end of each of torchrun's threads, and a later one would end the rank mid-save."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or os.name != "posix":
        return
    launcher = os.getppid()

    def watch() -> None:
        while launcher != 1 and os.getppid() == launcher:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="torchrun-watch", daemon=True).start()


def finish_ranks() -> None:
    """Leave the process group (after training, or after an error: no collective here, so a failed rank
    never waits on the others; a no-op in one process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def same_settings(settings: dict[str, Any], ranks: Ranks, *, skip: tuple[str, ...] = ()) -> None:
    """Refuse, on every rank, a run whose ranks were started with settings other than rank 0's.

    settings : what every rank must agree on, as JSON-able values; a nested dict's fields are named
        `section.field` (`train.steps`). Leave out what may differ per rank: the device, CPU threads,
        the command line and the local paths in it (compare a file's content, `runtime.io.file_digest` or
        `saved_state`, where it matters).
    skip : dotted fields of `settings` not compared (`train.threads`).

    One all-gather of every rank's settings as JSON, called before the first collective of training:
    every rank sees every rank's settings, finds the same first difference (of the lowest rank that
    differs from rank 0, in rank 0's field order) and raises the same InputError naming the field
    and both values, so no rank goes on to wait in a collective the others never reach.
    """
    if not ranks.distributed:
        return
    gathered: list[Any] = [None] * ranks.world
    dist.all_gather_object(gathered, json.dumps(settings, default=str))  # one JSON string per rank
    main = json.loads(gathered[0])
    for r in range(1, ranks.world):
        found = first_difference(main, json.loads(gathered[r]), skip=skip)
        if found is not None:
            field, at_main, at_r = found
            raise InputError(f"{field}: rank {r} has {_shown(at_r)}, rank 0 has {_shown(at_main)}; every rank of a torchrun run "
                             "must start with the same settings (--config, --stage, data and the state in --out)")


_UNSET = "(not set)"


def first_difference(a: Any, b: Any, field: str = "", skip: tuple[str, ...] = ()) -> tuple[str, Any, Any] | None:
    """(dotted field, value in a, value in b) of the first field, in a's order, where JSON values a and
    b differ (a field only one of them has counts as differing; `skip` names fields not compared);
    None where they agree."""
    if field in skip:
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        for k in [*a, *(k for k in b if k not in a)]:
            found = first_difference(a.get(k, _UNSET), b.get(k, _UNSET), f"{field}.{k}" if field else str(k), skip)
            if found is not None:
                return found
        return None
    return None if a == b else (field, a, b)


def _shown(value: Any, limit: int = 160) -> str:
    text = value if value == _UNSET else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def saved_state(path: str | os.PathLike) -> dict[str, Any] | str | None:
    """What a rank would resume from: the metadata of the safetensors resume state at `path` (its
    header alone is read), JSON values parsed; None where there is no file."""
    if not os.path.isfile(path):
        return None
    try:
        meta = state_metadata(path)
    except InputError as e:
        return f"unreadable ({e})"
    parsed: dict[str, Any] = {}
    for k, v in meta.items():
        try:
            parsed[k] = json.loads(v)
        except json.JSONDecodeError:
            parsed[k] = v
    return parsed


def shard(n: int, ranks: Ranks) -> slice:
    """Rank r's contiguous rows [r n / W, (r + 1) n / W) of a global batch of n."""
    if n < ranks.world:
        raise InputError(f"a global batch of {n} cannot be shared by {ranks.world} processes; use a batch of at least {ranks.world}")
    return slice(ranks.rank * n // ranks.world, (ranks.rank + 1) * n // ranks.world)


def share(n: int, ranks: Ranks) -> float:
    """W n_r / n: the factor on rank r's mean loss under which DDP's average of the ranks' gradients
    is the gradient of the mean over all n rows (1 in one process; 1 when n divides evenly)."""
    s = shard(n, ranks)
    return ranks.world * (s.stop - s.start) / n


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def from_main(value: float, ranks: Ranks) -> float:
    """Rank 0's value on every rank (a wall-clock reading that schedules or ends a run, so every rank
    takes the same learning rate and stops at the same step)."""
    if not ranks.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, 0)
    return float(t.item())


def mean_over_ranks(value: torch.Tensor, ranks: Ranks) -> float:
    """The sum over ranks of `value` / W: with each rank's loss scaled by `share`, the global batch's
    mean loss (for the log; gradients are DDP's)."""
    if not ranks.distributed:
        return float(value.detach())
    t = value.detach().reshape(1).to(torch.float64).clone()
    dist.all_reduce(t)
    return float(t.item()) / ranks.world


class StepLoss(torch.nn.Module):
    """One step's loss as one forward of a module that holds the trained network, so that
    DistributedDataParallel sees a single forward per backward however many calls into the network
    the loss makes (condition encoders, denoiser)."""

    def __init__(self, net: torch.nn.Module, loss: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self.loss = loss

    def forward(self, *args: Any) -> torch.Tensor:
        return self.loss(*args)


def data_parallel(net: torch.nn.Module, loss: Callable[..., torch.Tensor], ranks: Ranks, device: torch.device, *,
                  find_unused: bool = True) -> Callable[..., torch.Tensor]:
    """`loss` itself in one process; under torchrun, `loss` run as the forward of a DDP module over
    `net`, whose backward averages the gradients of `net`'s trained parameters across ranks.

    find_unused : parameters a rank's share may not reach in a step (a condition encoder no item of
        it uses) are allowed, at the cost of one walk over the autograd graph per step; False where
        every step reaches every trained parameter (the neural field).
    """
    if not ranks.distributed:
        return loss
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(StepLoss(net, loss), device_ids=ids, find_unused_parameters=find_unused)


STOPPED_NOTE = "by a signal, after a step; saved there, and a rerun of the command resumes"  # a stopped run's record


class Stopped(KeyboardInterrupt):
    """A loop under `StopRequests` stopped at a signal after saving its last step (a KeyboardInterrupt, so
    whatever does not catch it ends as Ctrl-C does)."""


class StopRequests:
    """While open (a `with` block), SIGINT and SIGTERM (Ctrl-C, `kill`, a scheduler's preemption) set
    `requested` instead of raising at once, so a training loop can finish the step it is in, save a
    consistent checkpoint and stop; `check(ranks)` is rank 0's flag on every rank, so all ranks stop at
    the same step. Outside the main thread, where Python cannot install handlers, it never sets."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}

    def check(self, ranks: Ranks) -> bool:
        return from_main(float(self.requested), ranks) > 0


__all__ = ["STOPPED_NOTE", "Ranks", "StopRequests", "Stopped", "barrier", "data_parallel", "finish_ranks",
           "first_difference", "from_main", "init_ranks", "mean_over_ranks", "same_settings", "saved_state", "shard", "share"]

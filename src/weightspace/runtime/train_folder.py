"""A training run's --out folder: refused when it holds something else, written by one run at a time,
its loss log cut back to the step a resume starts from."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_write_text

LOCK_NAME = ".train.lock"


def check_out(out: Path, data_dir: Path, kind: str, state_files: Iterable[str], *, fresh: bool = False) -> None:
    """Refuse an --out that is a file, the data folder itself, a folder whose config.json is not a
    checkpoint of this trainer (it would be overwritten), or a finished checkpoint without the resume
    state beside it (a shipped or downloaded one: training would start over and replace it; `fresh`
    asks for exactly that). Other files in the folder (a log the user pointed there, .gitkeep) are
    left alone and do not stop a run."""
    out, data_dir = Path(out), Path(data_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} is a file; give a folder (new, or one holding a run to resume)")
    if out.exists() and out.resolve() == data_dir.resolve():
        raise InputError(f"--out: {out} is the data folder; give the checkpoint its own folder")
    config = out / "config.json"
    if not config.is_file():
        return
    try:
        found = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        found = None
    other = found.get("kind") if isinstance(found, dict) else None
    if other != kind:
        what = f"a {other} checkpoint" if isinstance(other, str) else "a config.json that is not a weightspace checkpoint's"
        raise InputError(f"--out: {out} holds {what}, not a {kind} run to resume; choose a new or empty folder")
    if not fresh and not any((out / name).is_file() for name in state_files):
        raise InputError(f"--out: {out} holds a finished {kind} checkpoint without its resume state (a shipped or "
                         f"copied one): training there would start over and replace it. Choose a new --out"
                         + (" (with --continue-from this checkpoint to train a next piece of it), or --fresh to replace it" if kind == "latent-diffusion"
                            else ", or --fresh to replace it"))


def clear_run(out: Path, names: Iterable[str]) -> list[str]:
    """Delete the files of an earlier run in `out` (`names`: the trainer's checkpoint, resume state, loss log
    and training record) for a run that starts over (`--fresh`); returns the names removed.

    Overwriting them at the first save is not enough: a training record appends this run's invocation to the
    earlier ones, and a run stopped before its first save would leave the earlier run's resume state beside
    this run's log, for the next command to resume as if it were this run. Other files stay."""
    removed = []
    for name in names:
        path = Path(out) / name
        if path.is_file():
            path.unlink()
            removed.append(name)
    return removed


class TrainLock:
    """One writer per --out: an exclusive, non-blocking lock on `out/.train.lock` for as long as the run
    lasts (the kernel drops it when the process ends, even by SIGKILL). A second run on the same folder,
    or a data-parallel rank orphaned by a killed launcher, is named instead of writing over the first.
    Taken by rank 0 alone. POSIX only (fcntl); elsewhere no lock is taken."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK_NAME
        self.fd: int | None = None
        self.created = False
        # a plain run, or rank 0 of a torchrun launch, locks; the other ranks write nothing (as init_ranks:
        # WORLD_SIZE 1 is one process whatever RANK says)
        single = os.environ.get("WORLD_SIZE", "1").strip() in ("", "1")
        self.active = single or os.environ.get("RANK", "0").strip() in ("", "0")

    def __enter__(self) -> "TrainLock":
        try:
            import fcntl
        except ImportError:  # not POSIX: nothing to lock with
            return self
        if not self.active:
            return self
        self.created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # a filesystem without flock
                os.close(fd)  # (some NFS, Lustre, FUSE mounts): train unlocked, as before this lock existed
                return self
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InputError(f"--out: {self.path.parent} is being written by another training run (process {holder}); "
                             f"wait for it, stop it, or choose another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock; the file stays, empty of meaning
            self.fd = None
            folder = self.path.parent
            if self.created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:  # a run refused before it wrote
                self.path.unlink()
                folder.rmdir()


def trim_log(path: Path, keep: Callable[[Mapping[str, Any]], bool]) -> int:
    """Rewrite a JSONL loss log with only the rows `keep` accepts (a resume keeps the rows up to the step it
    starts from: rows logged after the last save are logged again); returns how many were dropped. A line
    that is not a JSON object is dropped too (a write cut by a kill)."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and keep(row):
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return dropped


def check_resume(out: Path, *, data_was: str | None, data_now: str, data_folder: Any, data_dir: Path, what: str,
                 arch: list[str], settings: list[str], start_over: str, echo: Callable[[str], None]) -> None:
    """What every trainer checks before it resumes the run in `out`: the data (its hash `data_was`, when
    the run recorded one, against this folder's `data_now`) and the architecture (`arch`, the fields
    changed, as `changed` gives them) must be the run's own, refused otherwise, naming `start_over`
    (how to begin again instead); changed training `settings` go on and are said in one line."""
    if data_was is not None and data_was != data_now:
        raise InputError(f"--out: {out} was trained on other data ({data_folder}, hash {data_was}); {data_dir} hashes "
                         f"to {data_now}. Resume with the same data folder, or {start_over}")
    if arch:
        raise InputError(f"--out: {out} holds a run of another {what} ({'; '.join(arch[:4])}); its weights cannot take "
                         f"that shape. Resume without the change, or {start_over}")
    if settings:
        echo(f"resuming with changed settings: {'; '.join(settings)}")


def changed(old: Mapping[str, Any], new: Mapping[str, Any], skip: Iterable[str] = ()) -> list[str]:
    """`field old -> new` for every field of `new` whose value in `old` (as saved JSON) differs."""
    skip = set(skip)
    out = []
    for k, v in new.items():
        v = json.loads(json.dumps(v))  # tuples as lists, as the saved config has them
        if k not in skip and k in old and old[k] != v:
            out.append(f"{k} {old[k]!r} -> {v!r}")
    return out

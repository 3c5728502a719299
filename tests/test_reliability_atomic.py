"""Atomic writes: a writer killed with SIGKILL mid-write leaves the old file or the new one, never a torn one.

Each trial forks a child process that rewrites large artefacts in a loop (versions 1, 2, 3, ...),
kills it with SIGKILL after a random delay, and then reads every artefact back through the
project's own loaders. Fork, not spawn: the child needs no import time, so a trial costs tens of
milliseconds and the kill lands at a random point of a write.
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
import torch

from weightspace.data.importer import expand_paths
from weightspace.data.make import save_npy, write_manifest
from weightspace.runtime.checkpoint import load_checkpoint, save_checkpoint
from weightspace.runtime.io import atomic_path, atomic_write_json, is_temp_file, read_json, read_npy, remove_stale_temps

N_FLOATS = 1_000_000  # a 4 MB grid file and a 4 MB checkpoint per version
TRIALS = 8


def _write_forever(folder, kind: str, tensors: list[torch.Tensor]) -> None:
    """The child: rewrite one artefact kind, version after version, until killed."""
    v = 0
    while True:
        v += 1
        if kind == "npy":
            save_npy(folder / "grid.npy", np.full(N_FLOATS, v, dtype=np.float32))
        elif kind == "checkpoint":
            save_checkpoint(folder / "ck", {"w": tensors[v % len(tensors)]}, {"kind": "test", "version": v % len(tensors)})
        elif kind == "json":
            atomic_write_json(folder / "results.json", {"version": v, "rows": [v] * 20_000, "pad": "x" * 4_000_000})
        elif kind == "manifest":
            write_manifest(folder / "manifest.jsonl", [{"id": f"s{i}", "version": v, "pad": "x" * 4000} for i in range(1_000)])
        else:  # raw bytes through atomic_path, the primitive under all of the above
            with atomic_path(folder / "blob.bin") as tmp:
                with open(tmp, "wb") as f:
                    for _ in range(64):
                        f.write(bytes([v % 256]) * 131072)


def _check(folder, kind: str) -> bool:
    """True when the artefact exists and is one whole version; raises AssertionError if torn."""
    if kind == "npy":
        if not (folder / "grid.npy").exists():
            return False
        a = read_npy(folder / "grid.npy")
        assert a.shape == (N_FLOATS,) and a[0] >= 1 and (a == a[0]).all(), "torn grid"
    elif kind == "checkpoint":
        if not (folder / "ck" / "model.safetensors").exists():
            return False
        state, config = load_checkpoint(folder / "ck")
        assert torch.equal(state["w"], torch.full((N_FLOATS,), float(config["version"]))), "weights and config from different saves"
    elif kind == "json":
        if not (folder / "results.json").exists():
            return False
        r = read_json(folder / "results.json")
        assert r["rows"] == [r["version"]] * 20_000, "torn json"
    elif kind == "manifest":
        if not (folder / "manifest.jsonl").exists():
            return False
        rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
        assert len(rows) == 1_000 and len({r["version"] for r in rows}) == 1, "torn manifest"
    else:
        if not (folder / "blob.bin").exists():
            return False
        b = (folder / "blob.bin").read_bytes()
        assert len(b) == 64 * 131072 and b.count(b[:1]) == len(b), "torn blob"
    return True


def _wait_for_temp(folder, timeout: float) -> None:
    """Poll until the writer has a temporary file open (or the timeout passes).

    A random delay alone misses the write window where writes are fast (CI's disk: 0 of 24
    random kills landed in the manifest's window), so every other kill waits for the window.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(is_temp_file(p) for p in folder.rglob("*")):
            return
        time.sleep(0.0002)


@pytest.mark.parametrize("kind", ["npy", "checkpoint", "json", "manifest", "bytes"])
def test_sigkill_mid_write_leaves_old_or_new(tmp_path, kind):
    rng = np.random.default_rng(0)
    tensors = [torch.full((N_FLOATS,), float(i)) for i in range(3)]
    stats = {"whole": 0, "absent": 0, "temps_left": 0}
    folder = tmp_path / kind
    folder.mkdir()
    trial = 0
    # at least TRIALS kills, and more (up to 3x) until one has landed mid-write (a temp file left behind)
    while trial < TRIALS or (stats["temps_left"] == 0 and trial < 3 * TRIALS):
        trial += 1
        pid = os.fork()
        if pid == 0:  # child: write until killed; never return into pytest
            try:
                _write_forever(folder, kind, tensors)
            finally:
                os._exit(1)
        if trial % 2:
            time.sleep(float(rng.uniform(0.01, 0.35)))  # a random point of the write loop
        else:
            _wait_for_temp(folder, timeout=2.0)  # inside a write: a fast disk leaves a window of a few ms
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        stats["whole" if _check(folder, kind) else "absent"] += 1
        temps = [p for p in folder.rglob("*") if p.is_file() and is_temp_file(p)]
        stats["temps_left"] += bool(temps)
        # loaders never pick a temp file up: the mesh/grid globbing ignores them
        assert not any(is_temp_file(p) for p in expand_paths([folder]))
    # the kills really landed mid-write (a temp file was left) and the artefact usually survived whole
    assert stats["temps_left"] >= 1, stats
    assert stats["whole"] >= 1, stats
    removed = remove_stale_temps(folder)
    assert not any(is_temp_file(p) for p in folder.rglob("*")), removed
    assert _check(folder, kind)  # cleaning never touches the real artefact


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"v": 1})
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "a.json", {"v": float("nan")})  # refused by allow_nan=False mid-write
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("writer crashed")
    assert read_json(tmp_path / "a.json") == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_files_get_ordinary_permissions(tmp_path):
    """Also for a checkpoint, whose weights safetensors writes by replacing the temporary file (it came out 0600)."""
    from weightspace.runtime.checkpoint import save_checkpoint

    atomic_write_json(tmp_path / "a.json", {})
    save_checkpoint(tmp_path / "ck", {"w": torch.zeros(2)}, {"kind": "test"})
    umask = os.umask(0)
    os.umask(umask)
    for path in (tmp_path / "a.json", tmp_path / "ck" / "model.safetensors", tmp_path / "ck" / "config.json"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_kill_while_the_temp_file_is_half_written(tmp_path):
    """Deterministic variant: the child signals once half the new bytes are on disk, then is killed."""
    target = tmp_path / "blob.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"old" * 1000)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            with atomic_path(target) as tmp:
                with open(tmp, "wb") as f:
                    f.write(b"new" * 500)
                    f.flush()
                    os.write(w, b"1")
                    time.sleep(60)
                    f.write(b"new" * 500)
        finally:
            os._exit(1)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert target.read_bytes() == b"old" * 1000
    temps = [p for p in tmp_path.iterdir() if is_temp_file(p)]
    assert len(temps) == 1 and temps[0].read_bytes() == b"new" * 500  # the torn bytes exist only in the temp file
    assert remove_stale_temps(tmp_path) == temps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin"]

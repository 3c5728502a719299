"""Atomic file writes (temporary file in the same folder, then rename) and safe JSON reads.

Guarantees (see docs/reliability.md): a reader sees either the old file or the new one,
never a torn one, even when the writer is killed with SIGKILL; a killed writer can leave
only a hidden temporary file `.<name>.<random>.tmp` beside the target, which no loader picks
up (they open named files or glob by their own suffix) and `remove_stale_temps` deletes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from weightspace.runtime.errors import InputError

if TYPE_CHECKING:  # numpy is imported where arrays are read, not when the CLI starts
    import numpy as np

TEMP_SUFFIX = ".tmp"


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any thread runs
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`.

    A reader sees either the old file or the new one, never a torn one. On an exception the
    temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
            # the mode a plain open() would give: mkstemp makes the file 0600, and so does a writer
            # that replaces it (safetensors does), so set it once the writer is done
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (the directory entry) where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def is_temp_file(path: str | os.PathLike) -> bool:
    """True for a temporary file `atomic_path` makes (`.<name>.<random>.tmp`)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def remove_stale_temps(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Delete temporary files left by writers that were killed; returns what was removed.

    Call it only when no writer is running on `folder` (e.g. when a job resumes): a live
    writer's temporary file looks the same.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(f".*{TEMP_SUFFIX}") if recursive else folder.glob(f".*{TEMP_SUFFIX}")
    removed = []
    for p in sorted(found):
        if p.is_file() and is_temp_file(p):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file raises InputError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot be read ({e})") from None
    return parse_json(text, str(path))


def file_digest(path: str | os.PathLike) -> str | None:
    """The first 16 hex digits of the SHA-256 of a file's bytes (what a checkpoint or population records
    of its data's manifest.jsonl), None where there is no readable file."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """The rows of a JSON-lines file (a manifest) as (line number, object), blank lines skipped; a
    line that is not UTF-8, not JSON or not an object raises InputError naming the file and line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror or e})") from None
    rows = []
    for n, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{path}:{n}: not UTF-8 text") from None
        if not line.strip():
            continue
        row = parse_json(line, f"{path}:{n}")
        if not isinstance(row, dict):
            raise InputError(f"{path}:{n}: expected a JSON object per line")
        rows.append((n, row))
    return rows


def parse_json(text: str, where: str) -> Any:
    """`json.loads` whose every failure is an InputError naming `where` (file, or file:line).

    Besides malformed text this covers what `json.loads` raises outside JSONDecodeError: a
    RecursionError for nesting thousands deep, and a ValueError for an integer of more than
    4300 digits (found by the hostile-config corpus).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:
        raise InputError(f"{where}: not valid JSON ({str(e)[:120]})") from None


def safe_child(root: str | os.PathLike, relative: str, *, where: str | None = None) -> Path:
    """Resolve `relative` under `root`, refusing paths that escape it (manifests are untrusted).

    Refused: a non-string, an empty string, an absolute path (POSIX or Windows drive), a NUL
    byte, `..` that climbs out, and a symlink inside `root` that points outside it (the check
    is made on the resolved path). `where` names the manifest (and line) for the message.
    """
    root = Path(root).resolve()
    src = f" in {where}" if where else " in a manifest"
    if not isinstance(relative, str) or not relative:
        raise InputError(f"path {relative!r}{src} must be a non-empty string relative to {root.name}/")
    if "\x00" in relative:
        raise InputError(f"path {relative!r}{src} contains a NUL byte")
    if os.path.isabs(relative) or re.match(r"^[A-Za-z]:[\\/]|^[\\/]", relative):
        raise InputError(f"path {relative!r}{src} must be relative to {root.name}/")
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise InputError(f"path {relative!r}{src} escapes its folder {root.name}/")
    return target


def read_npy(path: str | os.PathLike, *, what: str = "array", mmap: bool = False) -> "np.ndarray":
    """Read a `.npy` file safely: no pickles, and a header that must match the file's size.

    `np.load(allow_pickle=False)` alone refuses object arrays, but believes the header: a
    200-byte file claiming shape (10^4, 10^4, 10^4) makes it try to allocate terabytes. This
    checks the header first. Errors name the file (`what` says what it should have held).
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            major, _minor = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = reader(f, max_header_size=10_000)
            offset = f.tell()
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise InputError(f"{path}: not a .npy {what} ({type(e).__name__}: {str(e)[:120]})") from None
    if dtype.hasobject:
        raise InputError(f"{path}: the {what} holds Python objects (dtype {dtype}), which would need unpickling; refused")
    count = 1
    for n in shape:
        count *= int(n)
    need = count * dtype.itemsize
    if need > size - offset:
        raise InputError(f"{path}: truncated {what}: its header says shape {tuple(shape)} of {dtype} "
                         f"({need} bytes) but the file holds {size - offset}")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: cannot read the {what} ({type(e).__name__}: {str(e)[:120]})") from None


def read_npz(path: str | os.PathLike, keys: tuple[str, ...], *, what: str = "arrays",
             max_bytes: int = 2**30) -> dict[str, "np.ndarray"]:
    """Read named arrays from a `.npz` with the checks of `read_npy` applied to each member.

    Raises InputError naming the file when it is not a zip of .npy members, a key is missing,
    a member holds Python objects, a member's header claims more data than it holds, or a
    member would unpack to more than `max_bytes` (a compressed member can claim gigabytes).
    """
    import zipfile

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            for key in keys:
                member = f"{key}.npy"
                if member not in names:
                    raise InputError(f"{path}: no array named {key!r} (found {sorted(n.removesuffix('.npy') for n in names)})")
                size = z.getinfo(member).file_size
                if size > max_bytes:
                    raise InputError(f"{path}: array {key!r} unpacks to {size} bytes, more than the {max_bytes} allowed")
                with z.open(member) as f:
                    major, _minor = np.lib.format.read_magic(f)
                    reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, fortran, dtype = reader(f, max_header_size=10_000)
                    if dtype.hasobject:
                        raise InputError(f"{path}: array {key!r} holds Python objects (dtype {dtype}); refused")
                    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
                    if need > size:
                        raise InputError(f"{path}: array {key!r} is truncated: header says shape {tuple(shape)} of {dtype}, "
                                         f"member holds {size} bytes")
                    data = f.read(need)
                arr = np.frombuffer(data, dtype=dtype, count=need // dtype.itemsize if dtype.itemsize else 0)
                out[key] = arr.reshape(shape, order="F" if fortran else "C").copy()
    except InputError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, SyntaxError, TypeError, KeyError) as e:
        raise InputError(f"{path}: not a .npz of {what} ({type(e).__name__}: {str(e)[:120]})") from None
    return out

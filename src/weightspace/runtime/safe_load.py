"""The one place that reads a foreign PyTorch (pickle) file, and the format sniffing every weights loader uses.

weightspace stores weights only as safetensors. A `.pt` / `.pth` / `.bin` file from elsewhere is
read here, and only when the user explicitly imports it (`convert_to_safetensors`), in two
independent layers:

1. the pickle stream is scanned with `pickletools.genops` (which decodes opcodes and runs
   nothing) and every global it references must be on a short allow-list of tensor-rebuilding
   functions, storages, dtypes and `collections.OrderedDict`; anything else (`os.system`,
   `builtins.exec`, ...) is refused with a message naming it, before any unpickling;
2. only then is it read with `torch.load(..., weights_only=True)`, PyTorch's restricted
   unpickler, whose refusals also become `InputError` (saying what the file holds, not PyTorch's
   advice to load it unrestricted). A plain `pickle.dump` file, which that loader cannot read, is
   named as one before it is tried.

The result must be a flat mapping of names to tensors (optionally under one `state_dict` or
`model` key).

A PyTorch Lightning checkpoint (`load_lightning_checkpoint`) may also hold objects of the training
run (hyper-parameters, callback states, numpy scalars). The same scan classifies every global: a
tensor-rebuilding one is allowed; one that can run code (`os`, `subprocess`, `builtins.exec`,
`eval`, `getattr`, ...) refuses the file; any other becomes an inert placeholder, a class of ours
named like the original that only stores the arguments and state the pickle gives it. The original
is never imported or called; the placeholders are reported and only `state_dict` (and an EMA state
dict) is taken from the file. Everything else in the project (checkpoints, adapters, populations, subspaces)
goes through `weightspace.runtime.checkpoint.load_state`, which refuses pickles outright.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle  # only for the exception type torch.load(weights_only=True) raises; nothing is unpickled here
import pickletools
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

import torch

from weightspace.runtime.errors import InputError

FileFormat = Literal["empty", "safetensors", "torch-zip", "pickle", "npy", "zip", "json", "unknown"]

# torch.save's own vocabulary: what a plain state dict (or an optimiser state) needs, nothing more.
_ALLOWED_EXACT = {
    ("collections", "OrderedDict"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch.storage", "UntypedStorage"),
    ("torch.storage", "TypedStorage"),
}
_DTYPE_NAMES = {str(d).removeprefix("torch.") for d in vars(torch).values() if isinstance(d, torch.dtype)}
PICKLE_LIMIT = 64 * 2**20  # bytes of pickle stream scanned (a state dict's stream is kilobytes)


def _allowed(module: str, name: str) -> bool:
    if (module, name) in _ALLOWED_EXACT:
        return True
    return module == "torch" and (name.endswith("Storage") or name in _DTYPE_NAMES)


def sniff(path: str | os.PathLike) -> FileFormat:
    """What a file holds, from its first bytes (never from its name)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "empty"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as z:
                return "torch-zip" if any(n.endswith("data.pkl") for n in z.namelist()) else "zip"
        except zipfile.BadZipFile:
            return "unknown"
    # safetensors first: its 8-byte header length can begin 0x80 0x02, which looks like a pickle
    n = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    if head[8:9] == b"{" and 0 < n <= path.stat().st_size - 8:
        return "safetensors"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    if head[:1] in (b"(", b"]", b"}", b"c", b"l", b"d", b"N"):  # protocol 0/1 pickles open with an opcode
        with open(path, "rb") as f:
            start = f.read(4096)
        try:
            ops = pickletools.genops(start)
            for _ in range(2):
                next(ops)
            return "pickle"
        except Exception:
            pass
    return "unknown"


def pickle_globals(stream: bytes) -> list[tuple[str, str]]:
    """Every (module, name) a pickle stream would import, found without unpickling anything.

    Handles GLOBAL / INST (protocols 0-3) and STACK_GLOBAL (4-5, whose two strings are the
    last strings pushed, directly or through the memo).
    """
    found: list[tuple[str, str]] = []
    strings: list[str] = []
    memo: dict[int, object] = {}
    last: object = None
    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            found.append((module, attr))
        elif name == "STACK_GLOBAL":
            if len(strings) < 2:
                found.append(("?", "?"))
            else:
                found.append((strings[-2], strings[-1]))
        elif isinstance(arg, str) and "UNICODE" in name or name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
            strings.append(str(arg))
            last = str(arg)
            continue
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = last
        elif name == "MEMOIZE":
            memo[len(memo)] = last
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            value = memo.get(int(arg))
            if isinstance(value, str):
                strings.append(value)
                last = value
                continue
        last = None
    return found


def _pickle_streams(path: Path, kind: FileFormat) -> list[bytes]:
    if kind == "torch-zip":
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(".pkl")]
            if any(z.getinfo(n).file_size > PICKLE_LIMIT for n in names):
                raise InputError(f"{path}: pickle stream larger than {PICKLE_LIMIT >> 20} MiB; refused")
            return [z.read(n) for n in names]
    # legacy torch.save format: several pickles one after another, then raw storage bytes
    data = path.read_bytes()[:PICKLE_LIMIT]
    streams, buf = [], io.BytesIO(data)
    for _ in range(5):
        start = buf.tell()
        if start >= len(data):
            break
        try:
            *_, (_op, _arg, end) = pickletools.genops(buf)
        except Exception:
            break
        streams.append(data[start : buf.tell()])
        if end is None:
            break
    return streams


def check_pickle(path: str | os.PathLike) -> None:
    """Refuse a pickle-based file that references anything but tensor-rebuilding globals.

    Raises InputError naming the file and the first forbidden global; nothing is executed.
    """
    path = Path(path)
    kind = sniff(path)
    if kind not in ("torch-zip", "pickle"):
        raise InputError(f"{path}: not a PyTorch file (it looks like {kind})")
    streams = _pickle_streams(path, kind)
    if not streams:
        raise InputError(f"{path}: no readable pickle stream inside")
    for stream in streams:
        try:
            refs = pickle_globals(stream)
        except Exception as e:  # genops raises ValueError and others on a corrupt stream
            raise InputError(f"{path}: corrupt pickle stream ({type(e).__name__}: {e})") from None
        bad = [f"{m}.{n}" for m, n in refs if not _allowed(m, n)]
        if bad:
            raise InputError(
                f"{path}: refused: this file would import {bad[0]}"
                + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                + " when unpickled, which can run arbitrary code; only tensors are accepted. "
                "Ask for a .safetensors file instead."
            )


def load_torch_object(path: str | os.PathLike) -> object:
    """Read a PyTorch file after `check_pickle`, with `torch.load(weights_only=True)` on CPU.

    For trainer states (nested dicts of tensors, numbers and lists). Errors name the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    check_pickle(path)
    kind = sniff(path)
    if not _written_by_torch_save(kind, _pickle_streams(path, kind)):
        raise InputError(f"{path}: {PLAIN_PICKLE}; weightspace will not unpickle it: {SAVE_HINT}")
    try:
        with _protocol_warning_silenced():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refusal(path, e) from None
    except Exception as e:  # a torn or foreign file: torch raises RuntimeError, EOFError, ...
        raise InputError(f"{path}: cannot be read as a PyTorch file ({type(e).__name__}: {str(e)[:200]})") from None


PLAIN_PICKLE = "a plain Python pickle (pickle.dump), not a file torch.save wrote"
SAVE_HINT = "save a state dict of torch tensors with torch.save (its default protocol), or as .safetensors"


def _written_by_torch_save(kind: FileFormat, streams: list[bytes]) -> bool:
    """Whether a pickle-based file is torch.save's: a zip archive, or the legacy format whose first pickle is
    PyTorch's magic number (read as an opcode argument, nothing unpickled). PyTorch's loader reads no other."""
    if kind == "torch-zip" or not streams:
        return True
    try:
        return any(arg == torch.serialization.MAGIC_NUMBER for _, arg, _ in pickletools.genops(streams[0]))
    except Exception:  # a corrupt stream: PyTorch's loader names it
        return True


@contextmanager
def _protocol_warning_silenced() -> Iterator[None]:
    """PyTorch warns on a pickle protocol above 2 before its loader refuses the file; the refusal says why."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        yield


def _refusal(path: Path, e: pickle.UnpicklingError) -> InputError:
    """PyTorch's weights-only refusal in one line: its reason, without its advice to load the file unsafely."""
    text = str(e)
    _, found, detail = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (detail if found else text).splitlines() if line.strip()]
    reason = lines[0].split(". ")[0].rstrip(".")[:200] if lines else type(e).__name__
    if reason == "Unsupported operand 149":  # FRAME, which pickle protocols 4 and 5 write
        return InputError(f"{path}: refused by PyTorch's safe loader ({reason}): the file was pickled with protocol 4 "
                          f"or above, which that loader does not read; {SAVE_HINT}")
    return InputError(f"{path}: refused by PyTorch's safe loader ({reason}): the file holds objects outside its "
                      f"weights-only allow-list (NumPy arrays, say), which weightspace will not unpickle; {SAVE_HINT}")


def _held(names: list[str]) -> str:
    """Globals a file names, for a message: the first three, and what NumPy's are."""
    listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return listed + (": NumPy arrays" if any(n.startswith("numpy") for n in names) else "")


def load_torch_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A foreign state dict (.pt / .pth / .bin) the user explicitly imports: name -> tensor.

    Accepts a flat mapping of names to tensors, or one wrapped under `state_dict` or `model`.
    """
    path = Path(path)
    obj = load_torch_object(path)
    if isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in ("state_dict", "model"):
        obj = next(iter(obj.values()))
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{path}: expected a state dict (names -> tensors), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"{path}: entry {bad[0]!r} is not a named tensor; expected a flat state dict")
    return {k: v.detach().contiguous() for k, v in obj.items()}


def convert_to_safetensors(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Import a foreign PyTorch state dict `src` into the safetensors file `dst` (atomic).

    This is the explicit import step: after it, weightspace only ever reads `dst`.
    """
    from safetensors.torch import save_file

    from weightspace.runtime.io import atomic_path

    state = load_torch_weights(src)
    dst = Path(dst)
    # tensors that share storage cannot be saved by safetensors; give each its own copy
    state = {k: v.clone() for k, v in state.items()}
    with atomic_path(dst) as tmp:
        save_file(state, str(tmp), metadata={"imported_from": Path(src).name})
    return dst


# Modules and builtins whose import or call can run code or touch the system: a checkpoint naming one is refused.
_CODE_MODULES = {
    "os", "posix", "nt", "sys", "subprocess", "socket", "shutil", "importlib", "pickle", "_pickle", "marshal", "types",
    "runpy", "code", "codeop", "ctypes", "pty", "webbrowser", "multiprocessing", "asyncio", "signal", "threading",
    "_thread", "io", "_io", "tempfile", "glob", "operator", "functools", "inspect", "pydoc", "timeit", "cProfile",
    "profile", "pdb", "bdb", "trace", "linecache", "zipimport", "pkgutil", "site", "sysconfig", "distutils", "setuptools",
    "pip", "commands", "popen2", "platform", "uuid", "http", "urllib", "ftplib", "smtplib", "telnetlib", "xmlrpc",
}
_SAFE_BUILTINS = {"set", "frozenset", "slice", "range", "complex", "bytearray", "bytes", "int", "float", "str", "bool",
                  "tuple", "list", "dict", "object", "NoneType"}


def _classify(module: str, name: str) -> Literal["allowed", "code", "unknown"]:
    """How the Lightning reader treats a global: a tensor rebuild (allowed), code (refused), or anything else (placeholder)."""
    if _allowed(module, name):
        return "allowed"
    top = module.split(".")[0]
    if top in ("builtins", "__builtin__"):
        return "allowed" if name in _SAFE_BUILTINS else "code"
    if top in _CODE_MODULES or module == "?":
        return "code"
    return "unknown"


class Placeholder:
    """An object a checkpoint names but weightspace does not know (a callback, a namespace, a numpy scalar).

    It records the arguments and the state the pickle gives it and does nothing else: the original
    class or function is never imported or called.
    """

    origin = "?"

    def __new__(cls, *args, **kwargs):
        inst = object.__new__(cls)
        inst.args, inst.state = args, None
        return inst

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder for {self.origin}>"


def _placeholders(names: list[tuple[str, str]]) -> list[tuple[type, str]]:
    out = []
    for module, name in dict.fromkeys(names):
        cls = type(name.split(".")[-1], (Placeholder,), {"origin": f"{module}.{name}", "__module__": "weightspace.placeholder"})
        out.append((cls, f"{module}.{name}"))
    return out


@dataclasses.dataclass
class LightningCheckpoint:
    """What weightspace takes from a Lightning checkpoint: the weights, an EMA copy if present, and what it left inert."""

    state_dict: dict[str, torch.Tensor]
    ema_state_dict: dict[str, torch.Tensor] | None
    placeholders: list[str]          # "module.name" of every unknown object, made inert
    top_level_keys: list[str]


def _tensor_dict(obj: object, path: Path, key: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{path}: {key!r} must be a non-empty mapping of names to tensors, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        value = obj[bad[0]]
        if isinstance(value, Placeholder):
            numpy = " (a NumPy array)" if value.origin.startswith("numpy") else ""
            raise InputError(f"{path}: {key}[{bad[0]!r}] is not a tensor but a {value.origin} object{numpy}, which "
                             f"weightspace does not unpickle; {SAVE_HINT}")
        raise InputError(f"{path}: {key}[{bad[0]!r}] is not a tensor ({type(value).__name__})")
    return {k: v.detach().contiguous() for k, v in obj.items()}


def strip_compile_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the `_orig_mod` path component that torch.compile leaves in key names (`autoencoder._orig_mod.x` -> `autoencoder.x`)."""
    return {".".join(p for p in k.split(".") if p != "_orig_mod"): v for k, v in state.items()}


def load_lightning_checkpoint(path: str | os.PathLike, *, strip_compile: bool = True) -> LightningCheckpoint:
    """Read `state_dict` (and `state_dict_ema`, keys without their `module.` prefix) from a Lightning `.ckpt`, running no code.

    Globals that can run code refuse the file (InputError naming the first); unknown objects become
    `Placeholder`s, listed in the result. A missing, empty or truncated file raises InputError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    kind = sniff(path)
    if kind == "empty":
        raise InputError(f"{path}: empty file")
    if kind not in ("torch-zip", "pickle"):
        with open(path, "rb") as f:
            zipped = f.read(2) == b"PK"
        raise InputError(f"{path}: truncated or corrupt checkpoint (an incomplete zip archive)" if zipped
                         else f"{path}: not a PyTorch/Lightning checkpoint (it looks like {kind})")
    streams = _pickle_streams(path, kind)
    if not streams:
        raise InputError(f"{path}: no readable pickle stream inside (truncated?)")
    refs: list[tuple[str, str]] = []
    for stream in streams:
        try:
            refs += pickle_globals(stream)
        except Exception as e:  # genops raises on a corrupt or cut stream
            raise InputError(f"{path}: truncated or corrupt pickle stream ({type(e).__name__}: {e})") from None
    code = [f"{m}.{n}" for m, n in refs if _classify(m, n) == "code"]
    if code:
        raise InputError(f"{path}: refused: this checkpoint would import {code[0]}"
                         + (f" (and {len(code) - 1} more)" if len(code) > 1 else "")
                         + " when unpickled, which can run code; nothing was loaded")
    unknown = [(m, n) for m, n in refs if _classify(m, n) == "unknown"]
    holders = _placeholders(unknown)
    if not _written_by_torch_save(kind, streams):
        held = f"; it holds objects outside PyTorch's weights-only allow-list ({_held([n for _, n in holders])})" if holders else ""
        raise InputError(f"{path}: {PLAIN_PICKLE}{held}; weightspace will not unpickle it: {SAVE_HINT}")
    try:
        with _protocol_warning_silenced(), torch.serialization.safe_globals(holders):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refusal(path, e) from None
    except Exception as e:  # torn storage records: RuntimeError, EOFError, ...
        raise InputError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(obj, dict) or "state_dict" not in obj:
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise InputError(f"{path}: not a Lightning checkpoint: no 'state_dict' (top level: {keys})")
    state = _tensor_dict(obj["state_dict"], path, "state_dict")
    ema = None
    if obj.get("state_dict_ema") is not None:
        ema = {k.removeprefix("module."): v for k, v in _tensor_dict(obj["state_dict_ema"], path, "state_dict_ema").items()}
    if strip_compile:
        state = strip_compile_prefix(state)
        ema = strip_compile_prefix(ema) if ema is not None else None
    return LightningCheckpoint(state, ema, [name for _, name in holders], [str(k) for k in obj])


__all__ = ["sniff", "pickle_globals", "check_pickle", "load_torch_object", "load_torch_weights", "convert_to_safetensors", "load_lightning_checkpoint",
           "LightningCheckpoint", "Placeholder", "strip_compile_prefix"]

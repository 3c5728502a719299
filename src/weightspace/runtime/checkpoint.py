"""Checkpoint I/O: `model.safetensors` plus `config.json` in one folder. Never pickle."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_path, atomic_write_json, read_json

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def save_checkpoint(folder: str | os.PathLike, state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Path:
    """Write `state` and `config` atomically into `folder` (weights first, then config).

    Each file is replaced atomically, and the pair is too: the weights file carries a copy of
    the config and the weights' hash in its metadata, and config.json carries the same
    `weights_hash`. A save killed between the two renames leaves new weights beside an old
    config.json; `load_checkpoint` sees the hashes differ and uses the copy that travelled with
    the weights, so a reader always gets one save's weights with that save's config.
    """
    folder = Path(folder)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    refuse_non_finite(tensors, folder)  # load_state refuses such weights, so a save must not write them
    folder.mkdir(parents=True, exist_ok=True)
    config = {**dict(config), "weights_hash": state_hash(tensors)}
    text = json.dumps(config, sort_keys=True, allow_nan=False)
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"config": text, "weights_hash": config["weights_hash"]})
    atomic_write_json(folder / CONFIG_NAME, config)
    return folder


def refuse_non_finite(tensors: Mapping[str, torch.Tensor], folder: str | os.PathLike) -> None:
    """InputError naming the first tensor (CPU) with a NaN or infinite value: a save into `folder` must not
    replace what is there with diverged weights (trainers call this before their resume state too)."""
    for name, t in tensors.items():
        bad = _non_finite(t)
        if bad:
            raise InputError(f"{folder}: not saved: tensor {name!r} has {bad} NaN or infinite value(s) "
                             f"(the weights diverged); any earlier save there is kept")


def _non_finite(t: torch.Tensor) -> int:
    """How many NaN or infinite values a CPU tensor holds. Counted in NumPy where it can: a save may
    run in a forked worker, where a torch kernel can wait forever on the parent's OpenMP pool."""
    if not (t.is_floating_point() or t.is_complex()):
        return 0
    if t.dtype == torch.bfloat16:  # NumPy has no bfloat16
        t = t.float()
    return int(t.numel() - np.count_nonzero(np.isfinite(t.numpy())))


def refuse_pickle(path: Path) -> None:
    """Refuse, as a pickle, a file expected to be safetensors that is one (a PyTorch `.pt` renamed, or
    anything else that could run code when unpickled); it is never unpickled."""
    from weightspace.runtime.safe_load import sniff

    kind = sniff(path)
    if kind in ("pickle", "torch-zip"):
        raise InputError(
            f"{path}: is a Python pickle ({'PyTorch zip' if kind == 'torch-zip' else 'raw pickle'}), not safetensors; "
            "weightspace never unpickles weights because a pickle can run code. Import a trusted PyTorch file "
            "explicitly with weightspace.runtime.safe_load.convert_to_safetensors."
        )


def load_state(path: str | os.PathLike, *, finite: bool = True) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or foreign file raises InputError naming it.

    A pickle (a PyTorch `.pt` renamed, or anything else that could run code when unpickled) is
    refused without being unpickled. With `finite` (the default), a floating tensor holding NaN
    or infinity is refused too, naming the tensor: weights like that are corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    refuse_pickle(path)
    try:
        state = load_file(str(path))
    except Exception as e:  # SafetensorError, OSError, and others on foreign bytes
        raise InputError(f"{path}: not a valid safetensors file ({type(e).__name__}: {str(e)[:200]})") from None
    if finite:
        for name, t in state.items():
            bad = _non_finite(t)
            if bad:
                raise InputError(f"{path}: tensor {name!r} has {bad} NaN or infinite value(s) of {t.numel()}")
    return state


def state_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none); a bad file raises InputError naming it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # SafetensorError, OSError, and others on foreign bytes
        raise InputError(f"{path}: not a valid safetensors file ({type(e).__name__}: {str(e)[:200]})") from None


def _embedded_config(path: Path) -> tuple[str | None, dict[str, Any] | None]:
    """(weights_hash, config) stored in a weights file's metadata by `save_checkpoint`, if any."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # load_state reports a bad file with its own message
        return None, None
    try:
        embedded = json.loads(meta["config"]) if "config" in meta else None
    except json.JSONDecodeError:
        embedded = None
    return meta.get("weights_hash"), embedded if isinstance(embedded, dict) else None


def load_checkpoint(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint folder: (state dict, config), always from the same save (see `save_checkpoint`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: checkpoint folder not found (expected {WEIGHTS_NAME} and {CONFIG_NAME})")
    state = load_state(folder / WEIGHTS_NAME)
    weights_hash, embedded = _embedded_config(folder / WEIGHTS_NAME)
    if not (folder / CONFIG_NAME).is_file() and embedded is not None:
        return state, embedded  # the first save was interrupted before config.json
    config = read_json(folder / CONFIG_NAME)
    if not isinstance(config, dict):
        raise InputError(f"{folder / CONFIG_NAME}: expected a JSON object")
    recorded = config.get("weights_hash")
    if weights_hash is not None and embedded is not None and recorded is not None and recorded != weights_hash:
        return state, embedded  # config.json is from an older save than the weights beside it
    # a config.json with no weights_hash was written or edited by hand: it is what its user means
    return state, config


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """A content hash of a state dict (names, shapes, dtypes and bytes), for layouts to name their base."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # reshape: 0-dim tensors cannot be viewed as bytes
    return h.hexdigest()[:16]


def check_state_matches(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], against: str,
                        where: str = "model.safetensors") -> None:
    """Refuse a checkpoint's tensors `state` that are not the network's `expected` state dict (named
    `against`, e.g. "config.json model"): missing or unexpected names, another shape, or an integer
    or bool tensor where the network holds real numbers (it loaded silently, cast to float, and the
    generator then sampled noise), each named with the tensor."""
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InputError(f"{where} does not match {against}: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                         f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
    for name, tensor in expected.items():
        got = state[name]
        if tuple(got.shape) != tuple(tensor.shape):
            raise InputError(f"{where}: tensor {name!r} has shape {tuple(got.shape)}, {against} implies {tuple(tensor.shape)}")
        if tensor.is_floating_point() and not got.is_floating_point():
            raise InputError(f"{where}: tensor {name!r} holds {str(got.dtype).removeprefix('torch.')} values, "
                             f"{against} has real numbers ({str(tensor.dtype).removeprefix('torch.')}) there")

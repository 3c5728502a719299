"""`weightspace convert wala`: a released WaLa folder (args.json + checkpoint.ckpt or model.safetensors) -> a weightspace checkpoint (kind `wala`).

The Lightning checkpoint is read once, through the vetted reader; the weights inference uses are
checked against args.json by building the model, and written as safetensors in their stored dtype
(or cast, on request), with args.json inside config.json. Every later command reads only that.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from weightspace.generators.wala.config import WALA_GUIDANCE, CastName, check_steps, read_args, read_checkpoint_config
from weightspace.generators.wala.network import build, normalise_keys
from weightspace.runtime.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_state, save_checkpoint
from weightspace.runtime.errors import InputError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _check_out(folder: Path, out: Path, overwrite: bool) -> None:
    """Refuse an --out that is a file, the WaLa folder itself, or a folder already holding a checkpoint (unless overwrite)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out is a file; give a folder to write the checkpoint into")
    if out.is_dir() and out.resolve() == folder.resolve():
        raise InputError(f"{out}: --out is the WaLa folder being converted; write the checkpoint to another folder")
    held = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if (out / name).exists()]
    if held and not overwrite:
        raise InputError(f"{out}: already holds a checkpoint ({', '.join(held)}); pass --overwrite to replace it")


def convert_wala(folder: str | os.PathLike, out: str | os.PathLike, *, dtype: CastName = "keep", ema: bool = False,
                 steps: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Convert; returns a report: parameter count, dtypes written, placeholders left inert, unused keys, EMA presence.

    folder : args.json and checkpoint.ckpt (read when present) or model.safetensors; `~` is expanded, as in `out`.
    ema : take the EMA weights (`state_dict_ema`) instead of `state_dict` (WaLa's own loader never does).
    steps : the sampling steps the checkpoint will use by default, 2..diffusion_step (WaLa's CLI: PC 8, VX 5,
        UN 1000); None keeps args.json's diffusion_rescale_timestep.
    overwrite : replace the checkpoint already in `out` (refused otherwise).
    """
    folder, out = Path(folder).expanduser(), Path(out).expanduser()
    if dtype != "keep" and dtype not in _DTYPES:
        raise InputError(f"--dtype must be one of {['keep', *_DTYPES]}, got {dtype!r}")
    if not folder.is_dir():
        raise InputError(f"{folder}: WaLa folder not found (expected args.json and checkpoint.ckpt or model.safetensors)")
    _check_out(folder, out, overwrite)
    cfg, args = read_args(folder / "args.json")
    check_steps(steps, cfg, "--steps")  # before the weights are read: WaLa's spacing needs 1 < K <= T
    report: dict[str, Any] = {"placeholders": [], "ema_present": False}
    ckpt = folder / "checkpoint.ckpt"
    if ckpt.is_file():
        from weightspace.runtime.safe_load import load_lightning_checkpoint

        read = load_lightning_checkpoint(ckpt)
        report.update(placeholders=read.placeholders, ema_present=read.ema_state_dict is not None)
        if ema and read.ema_state_dict is None:
            raise InputError(f"{ckpt}: --ema asked for, but the checkpoint holds no state_dict_ema")
        state, source = (read.ema_state_dict if ema else read.state_dict), ckpt
    elif (folder / "model.safetensors").is_file():
        if ema:
            raise InputError(f"{folder}: --ema needs checkpoint.ckpt (model.safetensors holds one state dict)")
        state, source = load_state(folder / "model.safetensors"), folder / "model.safetensors"
    else:
        raise InputError(f"{folder}: neither checkpoint.ckpt nor model.safetensors found (a WaLa folder holds args.json and one of them)")
    state = normalise_keys(state)
    net, unused = build(cfg, state, str(source))  # checks every key inference reads against args.json
    kept = {k: state[k] for k in net.state_dict()}
    if dtype != "keep":
        kept = {k: v.to(_DTYPES[dtype]) if v.is_floating_point() else v for k, v in kept.items()}
    config = {
        "kind": "wala", "args": args,
        "sampling": {"steps": steps, "guidance": WALA_GUIDANCE},
        "source": {"folder": folder.name, "file": source.name, "ema": ema, "placeholders": report["placeholders"],
                   "unused_keys": unused[:50], "dtype_cast": dtype},
    }
    read_checkpoint_config(config, where=str(out / CONFIG_NAME))  # what every later load checks
    save_checkpoint(out, kept, config)
    report.update(out=str(out), kind=cfg.kind, parameters=sum(v.numel() for v in kept.values()),
                  dtypes=sorted({str(v.dtype).removeprefix("torch.") for v in kept.values()}), unused_keys=unused)
    return report

"""Adam's per-parameter state as flat named tensors (`opt.<parameter>.<key>`), for a safetensors resume state, and back."""

from __future__ import annotations

import os

import torch

from weightspace.runtime.errors import InputError

ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")


def adam_tensors(opt: torch.optim.Optimizer, net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`opt.<name>.<key>` for every parameter of `net` that `opt` holds state for.

    `step` becomes a (1,) tensor (Adam keeps it as a 0-d tensor, or a number in old PyTorch);
    the moments keep the parameter's shape and device.
    """
    names = {id(p): n for n, p in net.named_parameters()}
    state = {}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                state[f"opt.{names[id(p)]}.{key}"] = torch.as_tensor(value).reshape(-1) if key == "step" else value
    return state


def restore_adam(opt: torch.optim.Optimizer, net: torch.nn.Module, state: dict[str, torch.Tensor],
                 where: str | os.PathLike) -> None:
    """Set `opt`'s state of each parameter of `net` that `state` (from `adam_tensors`) has keys for.

    An incomplete or misshapen entry raises InputError naming `where`, the file it was read from.
    """
    for name, p in net.named_parameters():
        keys = {k.rsplit(".", 1)[1]: v for k, v in state.items() if k.startswith(f"opt.{name}.") and k.count(".") == name.count(".") + 2}
        if not keys:
            continue
        missing = sorted(set(ADAM_KEYS) - set(keys))
        if missing or keys["exp_avg"].shape != p.shape or keys["exp_avg_sq"].shape != p.shape:
            raise InputError(f"{where}: the optimiser state of {name!r} is incomplete or has the wrong shape "
                             f"(missing {missing}): the resume state is damaged; train into a new --out")
        # Adam keeps `step` on the CPU and its moments beside the parameter
        opt.state[p] = {"step": keys["step"].reshape(()).clone(), "exp_avg": keys["exp_avg"].to(p.device, copy=True),
                        "exp_avg_sq": keys["exp_avg_sq"].to(p.device, copy=True)}

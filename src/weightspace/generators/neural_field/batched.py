"""Decoding K weight sets of the neural field at once: grouped matmuls, `vmap` of `functional_call`, or a loop.

The field is an MLP, so K weight sets evaluated on the same grid points are K independent
matmul chains; `field_forward` already runs them as one grouped matmul (`baddbmm`) when every
weight carries a leading K axis. `torch.func.vmap` over `functional_call` is the generic
alternative. `benchmarks/bench_neural_field.py` times all three against each other; the default
`method` is the one that won there (see `DEFAULT_METHOD`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Mapping

import torch
from torch.func import functional_call, vmap

from weightspace.data.grid import grid_points
from weightspace.generators.lowrank import StackedLowRank, is_low_rank, merge_low_rank
from weightspace.generators.neural_field.network import field_forward
from weightspace.runtime.errors import InputError

if TYPE_CHECKING:
    from weightspace.generators.neural_field.model import NeuralFieldGenerator

Method = Literal["grouped", "vmap", "loop", "loop_dense"]
METHODS = ("grouped", "vmap", "loop", "loop_dense")
# Measured by benchmarks/bench_neural_field.py (K = 16 at 32^3, 1 thread, shared CPU): a loop of
# `sdf_grid` won: grouped baddbmm and vmap ran at 0.29-0.72x and 0.35-0.95x its throughput. The loop also
# gets the coarse-to-fine decode under no_grad; `loop_dense` is the like-for-like dense loop.
DEFAULT_METHOD: Method = "loop"
# The method of `training_loss_batched` (population fits). Measured by benchmarks/batched_members.py (one fit
# step of 8 LoRA members of default-field, 2 draws of 4096 points, 1 thread, shared 2-core CPU): a loop of
# functional_calls 1.01x one-at-a-time steps, vmap 0.80-0.83x, grouped 0.62-0.78x: each member's step is
# already large matmuls and memory-bound LayerNorm/ReLU passes, and stacking members only grows the working set.
DEFAULT_FIT_METHOD: Method = "loop"
# The method for LoRA factors kept factored (`generators.lowrank`: no full weight gradient per member). Measured
# by benchmarks/batched_members.py (8 members, 1 thread, shared 2-core CPU): member by member 1.17x one-at-a-time
# steps, grouped over all members' points 0.96x (the stacked activations outgrow the cache).
LOW_RANK_FIT_METHOD: Method = "loop"


def check_params_batch(gen: "NeuralFieldGenerator", params_batch: Mapping[str, torch.Tensor], K: int) -> None:
    """Every name must be a parameter of `gen.net` and every tensor (K, *shape of that parameter)."""
    own = dict(gen.net.named_parameters())
    for name, value in params_batch.items():
        if name not in own:
            raise InputError(f"params_batch: {name!r} is not a parameter of the neural field; valid: {', '.join(own)}")
        want = (K, *own[name].shape)
        got = (value.members, *value.weight.shape) if isinstance(value, StackedLowRank) else tuple(value.shape)
        if got != want:
            raise InputError(f"params_batch[{name!r}]: expected shape {want}, got {got}")


def batched_sdf_grid(
    gen: "NeuralFieldGenerator",
    params_batch: Mapping[str, torch.Tensor],
    conditions: torch.Tensor,
    resolution: int,
    *,
    method: Method = DEFAULT_METHOD,
    chunk: int | None = None,
) -> torch.Tensor:
    """Grids of K weight sets: params_batch name -> (K, ...) (others: the base weights), conditions (K, d_z) -> (K, R, R, R).

    Equal to K separate `gen.sdf_grid` calls (up to float rounding), differentiable in both inputs.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    K = conditions.shape[0]
    check_params_batch(gen, params_batch, K)
    dev = gen.device
    params_batch = {k: v.to(dev, torch.float32) for k, v in params_batch.items()}
    R = int(resolution)
    clamp = gen.cfg.clamp
    if method in ("loop", "loop_dense"):
        grids = [
            gen.sdf_grid(conditions[k : k + 1], [k], params={n: v[k] for n, v in params_batch.items()}, resolution=R,
                         adaptive=None if method == "loop" else False)
            for k in range(K)
        ]
        return torch.cat(grids)
    step = int(chunk or gen.cfg.chunk)
    x = torch.from_numpy(grid_points(R)).to(dev).reshape(1, -1, 3)  # (1, R^3, 3)
    outs = [batched_field(gen, params_batch, c.expand(K, -1, -1), conditions, method=method) for c in x.split(step, dim=1)]
    return torch.cat(outs, dim=1).clamp(-clamp, clamp).reshape(K, R, R, R)


def batched_field(
    gen: "NeuralFieldGenerator", params_batch: Mapping[str, torch.Tensor], x: torch.Tensor, z: torch.Tensor, *,
    method: Method = "grouped",
) -> torch.Tensor:
    """f(x, z) of K weight sets, each at its own points: params_batch name -> (K, ...) or StackedLowRank
    (others: the base weights), x (K, P, 3), z (K, d_z) -> (K, P). `loop` and `loop_dense` both run one
    `functional_call` per set; factored weights run through `field_forward` directly (grouped or member by
    member), any other method gets them merged."""
    net, K = gen.net, z.shape[0]
    if is_low_rank(params_batch) and method in ("grouped", "loop"):
        # factored LoRA weights: per layer a matmul with the fixed base weights (no gradient to them) plus
        # the members' rank-r terms (`generators.lowrank`), over all K P rows at once or member by member
        base = {k: v.detach() for k, v in net.param_map().items()}
        kw = dict(depth=net.depth, skip=net.skip, pe_freqs=net.pe_freqs)
        if method == "grouped":
            return field_forward({**base, **params_batch}, x, z, **kw)  # (K, P)
        return torch.cat([field_forward({**base, **{n: v.member(k) for n, v in params_batch.items()}}, x[k : k + 1], z[k : k + 1], **kw)
                          for k in range(K)])  # (K, P)
    params_batch = merge_low_rank(params_batch)
    if method == "grouped":
        # swapped weights (K, ...) run as grouped matmuls; the base ones stay unbatched (one matmul over
        # all K P rows, LayerNorm with its fused affine), which `field_forward` takes as they are
        p = {**net.param_map(), **params_batch}
        return field_forward(p, x, z, depth=net.depth, skip=net.skip, pe_freqs=net.pe_freqs)  # (K, P)
    if method == "vmap":
        def one(p: dict[str, torch.Tensor], zk: torch.Tensor, xk: torch.Tensor) -> torch.Tensor:
            return functional_call(net, p, (xk[None], zk[None]))[0]  # (P,)

        return vmap(one)(dict(params_batch), z, x)  # (K, P)
    return torch.cat([functional_call(net, {n: v[k] for n, v in params_batch.items()}, (x[k : k + 1], z[k : k + 1]))
                      for k in range(K)])  # (K, P)

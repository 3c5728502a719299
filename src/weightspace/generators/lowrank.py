"""Stacked low-rank weights: K weight sets W + s B_k A_k of one Linear layer, kept factored.

A batched LoRA fit (`population.fit_members`) runs K members' adapters on one shared base weight.
Through autograd, a merged weight W + s B_k A_k costs a full weight gradient dY_k^T X_k per member and
layer (a matmul as large as the forward) only to project it onto A_k and B_k. Factored (LoRA, Hu et al.
2021, eq. 3),

    h_k (W + s B_k A_k)^T = h_k W^T + s (h_k A_k^T) B_k^T

no gradient reaches the fixed W, and those of A_k and B_k are thin products of rank r. Two forms:
`low_rank_hooks` adds the second term to a module's own output, so the first is one matmul over every
member's rows (latent diffusion: 256 rows per member); `StackedLowRank.linear` runs the forward
through the merged weight (cheap to form) and only the backward through the factors (the neural
field, whose members run one after another). A generator that takes these in `training_loss_batched`
says so with `accepts_low_rank = True`; the others get `merge_low_rank(params_batch)`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping

import torch
from torch import nn


@dataclass(frozen=True)
class StackedLowRank:
    """K weight sets W + scaling * B_k A_k of one Linear layer.

    weight : (out, in) float, the shared base weight (fixed: no gradient reaches it)
    A : (K, r, in) float
    B : (K, out, r) float
    """

    weight: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    scaling: float

    @property
    def members(self) -> int:
        return int(self.A.shape[0])

    def merged(self) -> torch.Tensor:
        """The K full weights (K, out, in), as `LoraParameterisation.params_batch` makes them."""
        return self.weight + self.scaling * torch.bmm(self.B, self.A)  # (K, out, in)

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x (K, n, in) -> x_k (W + s B_k A_k)^T + bias (K, n, out); bias (out,) or (K, out). The gradient
        reaches A and B through thin products, never a full weight gradient per member."""
        return _LowRankLinear.apply(x, self.weight, bias, self.A, self.B, self.scaling)  # (K, n, out)

    def member(self, k: int) -> "StackedLowRank":
        """Member k alone (K = 1)."""
        return StackedLowRank(self.weight, self.A[k : k + 1], self.B[k : k + 1], self.scaling)

    def columns(self, cols: slice) -> "StackedLowRank":
        """The weights' input columns `cols`: W[:, cols] + s B_k A_k[:, cols]."""
        return StackedLowRank(self.weight[:, cols], self.A[:, :, cols], self.B, self.scaling)


def _factor_grads(x: torch.Tensor, xa_t: torch.Tensor, dy: torch.Tensor, B: torch.Tensor, s: float):
    """The thin gradients of the factors of s (x A^T) B^T: (dY B)^T (K, r, n), dA = s (dY B)^T x (K, r, in)
    and dB = s dY^T (x A^T) (K, out, r), from x (K, n, in), xa_t = (x A^T)^T (K, r, n) and dY (K, n, out)."""
    g_t = torch.bmm(B.transpose(1, 2), dy.transpose(1, 2))  # (K, r, n)
    return g_t, torch.bmm(g_t, x).mul_(s), torch.bmm(xa_t, dy).mul_(s).transpose(1, 2)


class _LowRankAdd(torch.autograd.Function):
    """y = out + s (x A^T) B^T per member, with every product ordered rank-first: (K, r, n) results
    of `bmm` run several times faster on this CPU than the same products with a trailing r (K, n, r)."""

    @staticmethod
    def forward(ctx, out, x, A, B, scaling):
        xa_t = torch.bmm(A, x.transpose(1, 2))  # (K, r, n) = (x A^T)^T
        ctx.save_for_backward(x, xa_t, A, B)
        ctx.scaling = scaling
        return torch.baddbmm(out, xa_t.transpose(1, 2), B.transpose(1, 2), alpha=scaling)  # (K, n, out)

    @staticmethod
    def backward(ctx, dy):
        x, xa_t, A, B = ctx.saved_tensors
        s = ctx.scaling
        g_t, dA, dB = _factor_grads(x, xa_t, dy, B, s)
        dx = torch.bmm(g_t.transpose(1, 2), A).mul_(s) if ctx.needs_input_grad[1] else None  # (K, n, in)
        return dy, dx, dA, dB, None


class _LowRankLinear(torch.autograd.Function):
    """y = x (W + s B A)^T per member, forward through the merged weight (cheap to form: out in r), backward
    through the factors: dA = s (dY B)^T x and dB = s dY^T (x A^T) are thin products, where autograd through
    the merged weight would form the full dW = dY^T x (a matmul as large as the forward) and project it."""

    @staticmethod
    def forward(ctx, x, weight, bias, A, B, scaling):
        w = weight + scaling * torch.bmm(B, A)  # (K, out, in), as LoraParameterisation.params_batch
        ctx.save_for_backward(x, w, A, B)
        ctx.scaling, ctx.bias_shape = scaling, None if bias is None else bias.shape
        if bias is None:
            return torch.bmm(x, w.transpose(1, 2))  # (K, n, out)
        return torch.baddbmm(bias.unsqueeze(-2), x, w.transpose(1, 2))  # (K, n, out), bias (out,) or (K, out)

    @staticmethod
    def backward(ctx, dy):
        x, w, A, B = ctx.saved_tensors
        s = ctx.scaling
        _, dA, dB = _factor_grads(x, torch.bmm(A, x.transpose(1, 2)), dy, B, s)
        db = None
        if ctx.needs_input_grad[2]:
            db = dy.sum(dim=1) if len(ctx.bias_shape) == 2 else dy.sum(dim=(0, 1))  # (K, out) or (out,)
        dx = torch.bmm(dy, w) if ctx.needs_input_grad[0] else None  # (K, n, in); none for the field's points
        return dx, None, db, dA, dB, None


def low_rank_add(out: torch.Tensor, x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
    """out (K, n, out) + scaling * (x A_k^T) B_k^T for x (K, n, in), A (K, r, in), B (K, out, r)."""
    return _LowRankAdd.apply(out, x, A, B, float(scaling))


def merge_low_rank(params_batch: Mapping[str, torch.Tensor | StackedLowRank]) -> dict[str, torch.Tensor]:
    """params_batch with every StackedLowRank replaced by its merged weights (K, out, in)."""
    return {k: v.merged() if isinstance(v, StackedLowRank) else v for k, v in params_batch.items()}


def is_low_rank(params_batch: Mapping[str, object]) -> bool:
    """Whether every entry is a StackedLowRank (the factored fast paths need nothing else)."""
    return bool(params_batch) and all(isinstance(v, StackedLowRank) for v in params_batch.values())


@contextmanager
def low_rank_hooks(net: nn.Module, params_batch: Mapping[str, StackedLowRank], members: int) -> Iterator[None]:
    """Inside: every targeted nn.Linear of `net` (entry `name.weight`) adds member k's s (x A_k^T) B_k^T
    to its base output, for inputs whose leading axis is K members times any number of items each,
    member-major ((K n, ..., in)). The base output is whatever the module computes (its own weight, or
    a detached one under `functional_call`)."""
    modules = dict(net.named_modules())

    def hook(delta: StackedLowRank):
        def add(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            x = args[0].reshape(members, -1, args[0].shape[-1])  # (K, n, in)
            return low_rank_add(out.reshape(members, -1, out.shape[-1]), x, delta.A, delta.B, delta.scaling).reshape(out.shape)
        return add

    handles = []
    try:
        for name, delta in params_batch.items():
            module = modules.get(name.removesuffix(".weight"))
            assert isinstance(module, nn.Linear) and name.endswith(".weight"), name
            handles.append(module.register_forward_hook(hook(delta)))
        yield
    finally:
        for h in handles:
            h.remove()

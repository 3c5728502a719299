"""The DeepSDF-style field network f(x, z) -> sdf, its latent codes and code-prior buffers, as one module.

Layout of `FieldNet` (d_x = 3 + 6 L input features of a point, d_z the code size):

    layers.0      Linear(d_x + d_z -> width)        reads [gamma(x), z]
    layers.i      Linear(width -> width)            i != skip
    layers.skip   Linear(width + d_x + d_z -> width) re-reads [h, gamma(x), z] (DeepSDF's latent skip)
    norms.i       LayerNorm(width), then ReLU
    out           Linear(width -> 1)
    codes         (N, d_z) one latent code per training shape (the auto-decoder's codes)
    buffers       global_mean (d_z,), global_chol (d_z, d_z), family_mean (F, d_z), family_chol (F, d_z, d_z)

Normalisation: DeepSDF uses weight normalisation; we use its documented alternative, LayerNorm
after each hidden Linear. That keeps every weight a plain `nn.Linear` parameter with its usual
name (`layers.0.weight`), so `torch.func.functional_call` with a dict of plain tensors and PEFT's
LoRA (which wraps `nn.Linear`) both work unchanged, which weight-norm parametrisations would not.

The z columns of `layers.0` and `layers.skip` act on a per-shape constant, so the forward pass
applies them once per shape as a bias shift W_z z (the "effective weights" of a code) instead
of once per point.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from weightspace.generators.lowrank import StackedLowRank


def encoded_dim(pe_freqs: int) -> int:
    """Width d_x of gamma(x): xyz plus a sine and cosine per axis and octave."""
    return 3 + 6 * pe_freqs


def positional_encoding(x: torch.Tensor, pe_freqs: int) -> torch.Tensor:
    """gamma(x) = [x, sin(2^k pi x), cos(2^k pi x)]_{k<L} (NeRF's encoding): (..., 3) -> (..., d_x)."""
    if pe_freqs == 0:
        return x
    freqs = math.pi * 2.0 ** torch.arange(pe_freqs, dtype=x.dtype, device=x.device)  # (L,)
    xf = (x.unsqueeze(-1) * freqs).flatten(-2)  # (..., 3L)
    return torch.cat([x, torch.sin(xf), torch.cos(xf)], dim=-1)  # (..., 3 + 6L)


def _mT(w: torch.Tensor) -> torch.Tensor:
    return w.transpose(-1, -2)


def _linear(h: torch.Tensor, w: torch.Tensor | StackedLowRank, b: torch.Tensor | None = None) -> torch.Tensor:
    """h (B, P, in) @ w^T (+ b): one weight set (w (out, in)) uses fused addmm, K stacked sets (w (K, out, in)) baddbmm,
    K factored sets (StackedLowRank) one matmul with the shared weight plus their rank-r terms; b is (out,) or, stacked, (K, out)."""
    if isinstance(w, StackedLowRank):
        return w.linear(h, b)  # (K, P, out)
    if w.dim() == 2:
        return F.linear(h, w) + b.unsqueeze(-2) if b is not None and b.dim() == 2 else F.linear(h, w, b)
    if b is None:
        return torch.bmm(h, _mT(w))
    return torch.baddbmm(b.unsqueeze(-2), h, _mT(w))


def _columns(w: torch.Tensor | StackedLowRank, cols: slice) -> torch.Tensor | StackedLowRank:
    return w.columns(cols) if isinstance(w, StackedLowRank) else w[..., cols]


def _code_term(zr: torch.Tensor, w: torch.Tensor | StackedLowRank) -> torch.Tensor:
    """z W_z^T for codes zr (B, 1, d_z): (B, 1, width)."""
    return w.linear(zr) if isinstance(w, StackedLowRank) else zr @ _mT(w)


def _layer_norm(a: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last axis with gain g and bias b of shape (width,) or (K, width)."""
    if g.dim() == 1:
        return F.layer_norm(a, a.shape[-1:], g, b)
    return F.layer_norm(a, a.shape[-1:]) * g.unsqueeze(-2) + b.unsqueeze(-2)


def field_forward(
    p: Mapping[str, torch.Tensor], x: torch.Tensor, z: torch.Tensor, *, depth: int, skip: int, pe_freqs: int
) -> torch.Tensor:
    """Evaluate f(x, z) from a parameter mapping.

    Works for one weight set (weights (out, in); x (B, P, 3); z (B, d_z)) and, unchanged, for K
    stacked weight sets (weights (K, out, in); x (K, P, 3); z (K, d_z)): the stacked case is a
    grouped matmul (`baddbmm`) over the leading dimension.

    Returns (B, P) or (K, P) float signed distances.
    """
    gx = positional_encoding(x, pe_freqs)  # (B, P, d_x)
    d_x = gx.shape[-1]
    zr = z.unsqueeze(-2)  # (B, 1, d_z)
    h = gx
    for i in range(depth):
        w, b = p[f"layers.{i}.weight"], p[f"layers.{i}.bias"]  # (out, in), (out,)
        if i == 0:
            # [gamma(x), z] @ W^T = gamma(x) @ W_x^T + (z @ W_z^T + b): the code's bias shift, once per shape
            shift = _code_term(zr, _columns(w, slice(d_x, None))) + b.unsqueeze(-2)  # (B, 1, width)
            a = _linear(gx, _columns(w, slice(None, d_x))) + shift  # (B, P, width)
        elif i == skip:
            wd = h.shape[-1]
            shift = _code_term(zr, _columns(w, slice(wd + d_x, None))) + b.unsqueeze(-2)  # (B, 1, width)
            a = _linear(h, _columns(w, slice(None, wd))) + _linear(gx, _columns(w, slice(wd, wd + d_x))) + shift  # (B, P, width)
        else:
            a = _linear(h, w, b)  # (B, P, width)
        h = torch.relu(_layer_norm(a, p[f"norms.{i}.weight"], p[f"norms.{i}.bias"]))
    return _linear(h, p["out.weight"], p["out.bias"]).squeeze(-1)  # (B, P)


class FieldNet(nn.Module):
    """f(x, z) -> sdf with its training codes and code-prior buffers (see the module docstring)."""

    def __init__(self, *, n_codes: int, d_z: int, width: int, depth: int, skip: int, pe_freqs: int, n_families: int):
        super().__init__()
        self.d_z, self.width, self.depth, self.skip, self.pe_freqs = d_z, width, depth, skip, pe_freqs
        d_x = encoded_dim(pe_freqs)
        dims_in = [d_x + d_z] + [width + (d_x + d_z if i == skip else 0) for i in range(1, depth)]
        self.layers = nn.ModuleList(nn.Linear(d, width) for d in dims_in)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.out = nn.Linear(width, 1)
        with torch.no_grad():  # start with outputs near the clamp scale, not O(1) (LayerNorm makes h O(1))
            self.out.weight.mul_(0.1)
        # DeepSDF initialises codes from N(0, 1/d_z)
        self.codes = nn.Parameter(torch.randn(n_codes, d_z) / math.sqrt(d_z))  # (N, d_z)
        self.register_buffer("global_mean", torch.zeros(d_z))  # (d_z,)
        self.register_buffer("global_chol", torch.eye(d_z))  # (d_z, d_z) lower Cholesky factor
        self.register_buffer("family_mean", torch.zeros(n_families, d_z))  # (F, d_z)
        self.register_buffer("family_chol", torch.eye(d_z).repeat(n_families, 1, 1))  # (F, d_z, d_z)

    def param_map(self) -> dict[str, torch.Tensor]:
        """The field's weights by name, read by attribute so `functional_call` substitutions are seen."""
        p: dict[str, torch.Tensor] = {"out.weight": self.out.weight, "out.bias": self.out.bias}
        for i in range(self.depth):
            p[f"layers.{i}.weight"], p[f"layers.{i}.bias"] = self.layers[i].weight, self.layers[i].bias
            p[f"norms.{i}.weight"], p[f"norms.{i}.bias"] = self.norms[i].weight, self.norms[i].bias
        return p

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x (B, P, 3) world units, z (B, d_z) -> sdf (B, P)."""
        return field_forward(self.param_map(), x, z, depth=self.depth, skip=self.skip, pe_freqs=self.pe_freqs)

    def code_shift(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The effective biases a code induces: b + W_z z for `layers.0` and `layers.skip`, each (B, width)."""
        d_x = encoded_dim(self.pe_freqs)
        out = {}
        for i, start in ((0, d_x), (self.skip, self.width + d_x)):
            lin = self.layers[i]
            out[f"layers.{i}.bias"] = z @ lin.weight[:, start:].T + lin.bias  # (B, width)
        return out

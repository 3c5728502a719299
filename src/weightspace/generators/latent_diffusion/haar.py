"""One level of the orthonormal 3D Haar wavelet transform in torch (the WaLa front end).

Written here (not PyWavelets) because it must run inside the autograd graph on batched
tensors; one level of Haar is an exact, orthonormal 2x2x2 block transform.
"""

from __future__ import annotations

import math

import torch

_H1 = torch.tensor([[1.0, 1.0], [1.0, -1.0]]) / math.sqrt(2.0)  # (2, 2) 1D Haar analysis matrix


def _haar_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    h = _H1.to(dtype=dtype, device=device)
    return torch.einsum("ai,bj,ck->abcijk", h, h, h).reshape(8, 8)  # (8 subbands, 8 block voxels)


def haar3d(x: torch.Tensor) -> torch.Tensor:
    """Forward transform: (B, C, R, R, R) with even R -> (B, 8C, R/2, R/2, R/2) subbands.

    Subband 0 of each channel is the low-pass (scaled mean of each 2x2x2 block); the other 7
    are the detail bands. The transform is orthonormal, so `ihaar3d(haar3d(x)) == x`.
    """
    B, C, D, H, W = x.shape
    if D % 2 or H % 2 or W % 2:
        raise ValueError(f"haar3d needs even sizes, got {tuple(x.shape[2:])}")
    blocks = x.reshape(B, C, D // 2, 2, H // 2, 2, W // 2, 2)  # (B, C, d, 2, h, 2, w, 2)
    blocks = blocks.permute(0, 1, 2, 4, 6, 3, 5, 7).reshape(B, C, D // 2, H // 2, W // 2, 8)  # (B, C, d, h, w, 8)
    bands = blocks @ _haar_matrix(x.dtype, x.device).T  # (B, C, d, h, w, 8)
    return bands.permute(0, 1, 5, 2, 3, 4).reshape(B, C * 8, D // 2, H // 2, W // 2)  # (B, 8C, d, h, w)


def ihaar3d(y: torch.Tensor) -> torch.Tensor:
    """Inverse transform: (B, 8C, d, h, w) subbands -> (B, C, 2d, 2h, 2w)."""
    B, C8, d, h, w = y.shape
    if C8 % 8:
        raise ValueError(f"ihaar3d needs a multiple of 8 channels, got {C8}")
    C = C8 // 8
    bands = y.reshape(B, C, 8, d, h, w).permute(0, 1, 3, 4, 5, 2)  # (B, C, d, h, w, 8)
    blocks = bands @ _haar_matrix(y.dtype, y.device)  # (B, C, d, h, w, 8) orthonormal: inverse = transpose
    blocks = blocks.reshape(B, C, d, h, w, 2, 2, 2).permute(0, 1, 2, 5, 3, 6, 4, 7)  # (B, C, d, 2, h, 2, w, 2)
    return blocks.reshape(B, C, 2 * d, 2 * h, 2 * w)  # (B, C, 2d, 2h, 2w)

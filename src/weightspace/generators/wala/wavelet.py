"""WaLa's wavelet side: the coefficient shape list, unpacking the decoded volume, and the inverse 3-D DWT.

The transform is a separable 3-D inverse DWT with mode `zero` (J levels, bior6.8 in the released
models): each 1-D synthesis step is `conv_transpose(lo, g0) + conv_transpose(hi, g1)` with stride 2
and padding Lf - 2, where g0, g1 are the synthesis filters (PyWavelets' `rec_lo`, `rec_hi`, read from
the checkpoint's `dwt_inverse_3d` buffers) used unmirrored. Bands along the 7-axis are ordered
(hll, lhl, hhl, llh, hlh, lhh, hhh), the first letter naming the depth axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weightspace.runtime.errors import InputError

BIOR68_LENGTH = 18  # filter length Lf of bior6.8


def shape_list(resolution: int, levels: int = 3, filter_length: int = BIOR68_LENGTH) -> list[int]:
    """Edges S_0 = resolution, S_{j+1} = floor((S_j + Lf - 1) / 2) (PyWavelets' dwt_coeff_len, mode zero)."""
    sizes = [int(resolution)]
    for _ in range(levels):
        sizes.append((sizes[-1] + filter_length - 1) // 2)
    return sizes


def present_levels(max_training_level: int, levels: int = 3) -> list[int]:
    """Detail levels j (0 = finest) that carry channels: block exponent k = J-1-j < Lv."""
    return [j for j in range(levels) if levels - 1 - j < max_training_level]


def check_shapes(resolution: int, grid_size: int, max_training_level: int, *, where: str = "args.json") -> None:
    """Refuse a resolution / grid size pair WaLa cannot decode (the decoder edge must be S_3, crops even)."""
    S = shape_list(resolution)
    s = 4 * grid_size - 2
    if s != S[3]:
        raise InputError(f"{where}: grid_size {grid_size} decodes to edge 4g-2 = {s}, but resolution {resolution} needs "
                         f"the coarsest wavelet edge {S[3]} (shape list {S})")
    for j in present_levels(max_training_level):
        n = 2 ** (2 - j)
        if (s * n - S[j + 1]) % 2:
            raise InputError(f"{where}: resolution {resolution}: level {j} would need an odd crop "
                             f"({s}*{n} - {S[j + 1]}); WaLa cannot decode it")


def unpack(volume: torch.Tensor, resolution: int, max_training_level: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Decoded volume (B, 8**Lv, s, s, s) -> low (B, 1, s, s, s) and highs[j] (B, 1, 7, S_{j+1}^3), j = 0 finest.

    Level j (sub-block edge n = 2**(2-j)) takes 7 n^3 channels, finest present level first; channel
    1 + offset + ((px*7 + band)*n + py)*n + pz at (x, y, z) is full[band, x*n+px, y*n+py, z*n+pz],
    then centre-cropped to S_{j+1}. Absent levels are zeros.
    """
    B, C, s = volume.shape[0], volume.shape[1], volume.shape[-1]
    if C != 8 ** max_training_level:
        raise InputError(f"decoded volume has {C} channels; max_training_level {max_training_level} needs {8 ** max_training_level}")
    S = shape_list(resolution)
    low = volume[:, :1]  # (B, 1, s, s, s)
    highs, offset = [], 1
    for j in range(3):
        size = S[j + 1]
        if j not in present_levels(max_training_level):
            highs.append(volume.new_zeros(B, 1, 7, size, size, size))
            continue
        n = 2 ** (2 - j)
        block = volume[:, offset : offset + 7 * n**3]  # (B, 7 n^3, s, s, s)
        offset += 7 * n**3
        block = block.reshape(B, n, 7, n, n, s, s, s)  # (B, px, band, py, pz, x, y, z)
        full = block.permute(0, 2, 5, 1, 6, 3, 7, 4).reshape(B, 7, s * n, s * n, s * n)  # (B, band, x n + px, ...)
        pad = (s * n - size) // 2
        highs.append(full[:, :, pad : pad + size, pad : pad + size, pad : pad + size].unsqueeze(1))
    return low, highs


def _synthesis(lo: torch.Tensor, hi: torch.Tensor, g0: torch.Tensor, g1: torch.Tensor, axis: int) -> torch.Tensor:
    """1-D synthesis of (lo, hi) (N, 1, D, H, W) along spatial `axis` (0 depth, 1 height, 2 width)."""
    Lf = g0.numel()
    shape = [1, 1, 1, 1, 1]
    shape[2 + axis] = Lf
    stride, padding = [1, 1, 1], [0, 0, 0]
    stride[axis], padding[axis] = 2, Lf - 2
    k0, k1 = g0.reshape(shape).to(lo.dtype), g1.reshape(shape).to(lo.dtype)
    return F.conv_transpose3d(lo, k0, stride=stride, padding=padding) + F.conv_transpose3d(hi, k1, stride=stride, padding=padding)


def inverse_dwt(low: torch.Tensor, highs: list[torch.Tensor], g0: torch.Tensor, g1: torch.Tensor) -> torch.Tensor:
    """low (B, 1, s, s, s), highs[j] (B, 1, 7, S, S, S) (j = 0 finest) -> (B, 1, R, R, R).

    Coarsest level first; before each level, `ll` drops its last index on any axis where it is
    longer than that level's highs (odd shape-list entries).
    """
    ll = low
    for high in reversed(highs):
        size = high.shape[-3:]
        ll = ll[..., : size[0], : size[1], : size[2]]
        bands = high[:, 0].unbind(1)  # 7 x (B, S, S, S)
        hll, lhl, hhl, llh, hlh, lhh, hhh = (b.unsqueeze(1) for b in bands)
        # depth, then height, then width
        a = _synthesis(ll, hll, g0, g1, 0)
        b = _synthesis(lhl, hhl, g0, g1, 0)
        c = _synthesis(llh, hlh, g0, g1, 0)
        d = _synthesis(lhh, hhh, g0, g1, 0)
        lo = _synthesis(a, b, g0, g1, 1)
        hi = _synthesis(c, d, g0, g1, 1)
        ll = _synthesis(lo, hi, g0, g1, 2)
    return ll

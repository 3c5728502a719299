"""PCA solvers over (N, D) point matrices: exact SVD, a streaming Gram-matrix solver and a streaming randomised one.

The streaming solvers read the data in column blocks (all N rows, b columns at a time), so an
(N, D) float32 array on disk, memory-mapped, is never copied whole: a column block holds every
row of its columns, so the column means (and standard deviations) are exact within the block and
centring needs no separate pass. Blocks of a memory map are read with positioned file reads, so
the resident memory stays near one block plus the (k, D) basis.

Gram solver (N << D): G = Xc Xc^T (N x N) accumulated over blocks; G = U diag(s^2) U^T; the
components are V_k = diag(1 / s_k) U_k^T Xc, formed in a second pass. (The "method of
snapshots"; we write it ourselves because NumPy/SciPy/scikit-learn have no block-streaming
form of it.)
Randomised solver (k << min(N, D)): the range finder of Halko, Martinsson & Tropp (2011,
Alg. 4.4, subspace iteration) on Xc, with the random test matrix regenerated per block from a
seed (never stored), then the Gram solver restricted to the found range.
"""

from __future__ import annotations

import mmap
import os
import sys
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np

from weightspace.runtime.errors import InputError

Solver = Literal["auto", "exact", "gram", "randomized"]
SOLVERS = ("auto", "exact", "gram", "randomized")


@dataclass
class PCAResult:
    """mean (D,) f32, scale (D,) f32 or None, basis (k, D) f32 orthonormal rows, singular_values (k,) f64,
    explained_variance (k,) f64 = s^2 / (N - 1), explained_variance_ratio (k,) f64, total_variance f64."""

    mean: np.ndarray
    scale: np.ndarray | None
    basis: np.ndarray
    singular_values: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    total_variance: float
    n: int
    solver: str


def choose_solver(n: int, d: int, k: int) -> str:
    """`auto`: Gram when N << D (D >= 4 N), randomised when k << min(N, D) (k <= min / 10), else exact."""
    if d >= 4 * n:
        return "gram"
    if k <= min(n, d) // 10:
        return "randomized"
    return "exact"


class _FileColumns:
    """Reads column blocks of a C-ordered np.memmap with positioned reads (os.preadv), not page faults.

    Touching a memory map maps whole page-cache folios into the process (often megabytes per
    fault), so slicing columns out of a wide memmap makes nearly the whole file resident; reading
    the same bytes with `preadv` into a block buffer keeps the resident set at one block.
    """

    def __init__(self, x: np.memmap) -> None:
        self.x = x
        self.fd = os.open(x.filename, os.O_RDONLY)
        # file offset of x[0, 0]: the mapping starts at the granularity-aligned offset below x.offset
        base = np.frombuffer(x._mmap, dtype=np.uint8).ctypes.data
        map_start = x.offset - x.offset % mmap.ALLOCATIONGRANULARITY
        self.origin = map_start + (x.ctypes.data - base)

    def read(self, cols: slice) -> np.ndarray:
        n, item = self.x.shape[0], self.x.itemsize
        out = np.empty((n, cols.stop - cols.start), dtype=self.x.dtype)  # (N, b)
        for i in range(n):
            offset = self.origin + i * self.x.strides[0] + cols.start * item
            got = os.preadv(self.fd, [memoryview(out[i]).cast("B")], offset)
            if got != out[i].nbytes:
                raise InputError(f"{self.x.filename}: short read at row {i} (file truncated?)")
        return out

    def close(self) -> None:
        os.close(self.fd)


def _file_reader(x: np.ndarray) -> _FileColumns | None:
    """A positioned-read reader for a row-major memmap with contiguous rows, else None (slice in memory)."""
    mm = getattr(x, "_mmap", None)
    if not isinstance(x, np.memmap) or not isinstance(mm, mmap.mmap) or not getattr(x, "filename", None):
        return None
    if x.ndim != 2 or x.strides[1] != x.itemsize or x.dtype.byteorder not in ("=", "|", "<" if sys.byteorder == "little" else ">"):
        return None
    return _FileColumns(x)


class _Blocks:
    """Column blocks of X, centred (and standardised), as float64 (N, b)."""

    def __init__(self, x: np.ndarray, standardize: bool, block_bytes: int) -> None:
        self.x, self.standardize = x, standardize
        self.n, self.d = x.shape
        self.b = max(1, block_bytes // (8 * self.n))
        self.reader = _file_reader(x)
        self.mean = np.empty(self.d, dtype=np.float32)
        self.scale = np.empty(self.d, dtype=np.float32) if standardize else None
        self.total = 0.0

    def __iter__(self) -> Iterator[tuple[slice, np.ndarray]]:
        total = 0.0
        for j0 in range(0, self.d, self.b):
            cols = slice(j0, min(self.d, j0 + self.b))
            raw = self.reader.read(cols) if self.reader is not None else self.x[:, cols]
            blk = np.array(raw, dtype=np.float64)  # (N, b) one copy of this block
            mu = blk.mean(axis=0)  # (b,)
            blk -= mu
            self.mean[cols] = mu
            if self.standardize:
                sd = np.sqrt((blk * blk).mean(axis=0))  # (b,) population std
                sd[sd == 0] = 1.0
                blk /= sd
                self.scale[cols] = sd
            total += float(np.einsum("ij,ij->", blk, blk))
            yield cols, blk
        self.total = total


def _flip_signs(u: np.ndarray) -> np.ndarray:
    """Signs (k,) making the largest-magnitude entry of each column of U positive (deterministic output)."""
    idx = np.argmax(np.abs(u), axis=0)
    return np.sign(u[idx, np.arange(u.shape[1])]) + (u[idx, np.arange(u.shape[1])] == 0)


def _basis_pass(blocks: _Blocks, u_k: np.ndarray, s_k: np.ndarray) -> np.ndarray:
    if s_k[-1] <= 1e-12 * max(s_k[0], 1e-300):
        raise InputError(f"the points span fewer than k = {len(s_k)} dimensions; ask for fewer components")
    basis = np.empty((u_k.shape[1], blocks.d), dtype=np.float32)  # (k, D)
    for cols, blk in blocks:
        basis[:, cols] = (u_k.T @ blk) / s_k[:, None]  # (k, b)
    return basis


def _gram(blocks: _Blocks, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.zeros((blocks.n, blocks.n))  # (N, N) float64
    for _, blk in blocks:
        g += blk @ blk.T  # NumPy uses a symmetric rank-k update (syrk) for a @ a.T
    lam, u = np.linalg.eigh(g)  # ascending
    lam, u = lam[::-1][:k], u[:, ::-1][:, :k]
    s = np.sqrt(np.clip(lam, 0.0, None))  # (k,)
    u = u * _flip_signs(u)
    return u, s, _basis_pass(blocks, u, s)


def _randomized(blocks: _Blocks, k: int, *, oversamples: int, iters: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = blocks.n
    l = min(n, k + oversamples)
    y = np.zeros((n, l))  # (N, l) = Xc Omega
    for cols, blk in blocks:
        # (b, l), regenerated, never stored; SeedSequence takes entries >= 0, so a negative seed wraps (two's complement)
        omega = np.random.default_rng([seed % 2**64, cols.start]).standard_normal((blk.shape[1], l))
        y += blk @ omega
    q = np.linalg.qr(y)[0]  # (N, l)
    for _ in range(iters):  # subspace iteration: Q <- orth(Xc Xc^T Q)
        y = np.zeros((n, l))
        for _, blk in blocks:
            y += blk @ (blk.T @ q)
        q = np.linalg.qr(y)[0]
    h = np.zeros((l, l))  # Q^T Xc Xc^T Q
    for _, blk in blocks:
        qb = q.T @ blk  # (l, b)
        h += qb @ qb.T
    lam, w = np.linalg.eigh(h)
    lam, w = lam[::-1][:k], w[:, ::-1][:, :k]
    s = np.sqrt(np.clip(lam, 0.0, None))
    u = q @ w  # (N, k)
    u = u * _flip_signs(u)
    return u, s, _basis_pass(blocks, u, s)


def pca(x: np.ndarray, k: int, *, solver: str = "auto", standardize: bool = False, seed: int = 0,
        oversamples: int = 10, iters: int = 4, block_bytes: int = 64 * 2**20) -> PCAResult:
    """Principal components of the rows of x.

    Parameters
    ----------
    x : (N, D) float array (float32 memory map welcome: streamed in column blocks by gram/randomized).
    k : components, 1 <= k <= min(N - 1, D) (centred data has rank at most N - 1).
    solver : auto | exact | gram | randomized.
    standardize : divide each column by its standard deviation after centring.
    """
    if solver not in SOLVERS:
        raise InputError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if x.ndim != 2:
        raise InputError(f"points must be a matrix (N, D), got shape {x.shape}")
    n, d = x.shape
    if n < 2:
        raise InputError(f"PCA needs at least 2 points, got {n}")
    if not 1 <= k <= min(n - 1, d):
        raise InputError(f"components must be between 1 and min(N - 1, D) = {min(n - 1, d)}, got {k}")
    chosen = choose_solver(n, d, k) if solver == "auto" else solver
    blocks = _Blocks(x, standardize, block_bytes)
    if chosen == "exact":
        if blocks.reader is not None:  # the exact solver reads x whole, never in blocks
            blocks.reader.close()
        xc = np.asarray(x, dtype=np.float64)
        mean = xc.mean(axis=0)
        xc = xc - mean
        scale = None
        if standardize:
            scale = np.sqrt((xc * xc).mean(axis=0))
            scale[scale == 0] = 1.0
            xc /= scale
        u, s_all, vt = np.linalg.svd(xc, full_matrices=False)
        signs = _flip_signs(u[:, :k])
        s, basis = s_all[:k], (vt[:k] * signs[:, None]).astype(np.float32)
        total = float((s_all**2).sum())
        blocks.mean[:] = mean
        if standardize:
            blocks.scale[:] = scale
    else:
        try:
            if chosen == "gram":
                _, s, basis = _gram(blocks, k)
            else:
                _, s, basis = _randomized(blocks, k, oversamples=oversamples, iters=iters, seed=seed)
        finally:
            if blocks.reader is not None:
                blocks.reader.close()
        total = blocks.total
    ev = s**2 / (n - 1)
    return PCAResult(blocks.mean, blocks.scale, basis, s, ev, s**2 / total if total > 0 else np.zeros_like(s),
                     total / (n - 1), n, chosen)

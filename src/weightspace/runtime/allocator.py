"""The C allocator of a fitting process: keep freed memory instead of returning it to the OS.

glibc's malloc hands large blocks back to the kernel when they are freed (blocks above its mmap
threshold are unmapped; free memory at the top of the heap above the trim threshold is released).
A fit step allocates and frees the same few-megabyte activations every step, so each step touches
fresh pages again: measured on this 2-core CPU, one thread, 4,000 to 13,000 page faults per member
step, 21% (latent diffusion) and 35% (neural field) of a batched LoRA fit step's CPU time and 17% of
a one-member field step (docs/scaling.md, "Batched fitting"). Raising both thresholds keeps the pages in the process; its
resident memory then stays at its peak, which a worker that only fits members can afford.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20  # bytes: blocks below this come from the heap and are reused
TRIM_THRESHOLD = 1 << 30  # bytes: free memory at the heap top kept before any is returned

_retained = False


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once). True where they are set; False
    elsewhere (another C library, or no mallopt), where nothing changes."""
    global _retained
    if _retained:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _retained = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _retained

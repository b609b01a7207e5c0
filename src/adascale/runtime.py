"""Process-wide settings a command makes once, at start: torch's CPU threads and, for long
inference loops on one system (MD, timing), glibc's handling of freed memory.

Nothing here runs on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP_TOP = 2**31 - 1  # bytes of free heap top kept instead of returned to the kernel (the int maximum)


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed memory for large tensors instead of returning it to the kernel.

    glibc serves every block above 32 MiB with a fresh ``mmap`` and unmaps it on ``free``, so
    each force call on a large system pays page faults to map and zero its per-edge tensors
    again (10^5 edges x 64 features x 3 components in float32 is already 77 MB). Serving
    them from the heap and keeping the freed top makes the cost per atom flat from 1,496 to
    5,984 atoms (measured for the 3.5 Å branch and for MACE alike; ``benchmarks/speed.py``),
    at the price of a higher peak resident set: freed blocks are not returned, so work whose
    tensor sizes vary can fragment the heap (MACE r_max 6.0 training with it exceeded 24 GiB and
    was killed). Meant for a fixed system evaluated many times (MD, timing); not used in
    training. Returns False (and changes nothing) where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_TOP))


def set_threads(threads: int | None) -> None:
    """torch's CPU threads for this command (None keeps torch's default)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)

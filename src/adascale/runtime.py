"""Process-wide settings a command makes once, at start: torch's CPU threads and, for long
inference loops on one system (MD, timing), glibc's handling of freed memory; and the device
(CPU or a CUDA GPU) a command computes on.

Nothing here runs on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import TYPE_CHECKING

from adascale.errors import AdaScaleError

if TYPE_CHECKING:
    import torch

#: What ``--device`` and ``device=`` accept: ``cpu``, ``cuda`` or ``cuda:N`` (None or ``auto``: CUDA when available).
DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda when a GPU is available, else cpu; docs/devices.md)."

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


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The torch device called ``name``: ``cpu``, ``cuda``, ``cuda:N``; None or ``auto`` picks
    CUDA when a GPU is available, else the CPU. A GPU that is not there raises AdaScaleError."""
    import torch

    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise AdaScaleError(f"device must be cpu, cuda or cuda:N, got {str(name)!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AdaScaleError(f"device {str(name)!r}: CUDA is not available here (no GPU, or a CPU build of torch); use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AdaScaleError(f"device {str(name)!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def check_precision(device: torch.device, dtype: torch.dtype) -> None:
    """Refuse float64 on a GPU: adascale's models run in float32 there (GPUs are many times slower
    in float64, and a silent downcast would change the numbers a float64 run promises)."""
    import torch

    if device.type == "cuda" and dtype == torch.float64:
        raise AdaScaleError(f"float64 on {device}: models run in float32 on GPUs; use float32, or the cpu device for float64")

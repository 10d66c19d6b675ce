"""Keep glibc's allocator from returning NumPy temporaries to the kernel after every array operation.

The NumPy engines create many short-lived arrays of 0.1-10 MB per mini-batch. glibc serves blocks above
``M_MMAP_THRESHOLD`` (128 kB by default, raised dynamically) with a fresh ``mmap`` and trims the heap above
``M_TRIM_THRESHOLD``, so each temporary costs page faults on first touch: measured on the 64^2 x 144 CPU benchmark,
LSQML took 59 ms an iteration with the defaults and 27 ms with the thresholds below (DM 32 -> 17 ms).

:func:`keep_freed_memory` raises both thresholds once per process (glibc only; elsewhere, or with the
benchmark switch ``PTYCHOPY_BENCH_HOST_MALLOC=0``, it does nothing). The cost: up to ``TRIM_THRESHOLD_BYTES`` of
freed heap stays mapped to the process instead of going back to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

from .bench_switches import bench_switch_on

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's upper limit for this parameter on 64-bit systems
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when they were set."""
    if not bench_switch_on("HOST_MALLOC") or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))

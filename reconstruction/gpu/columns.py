"""The split 2-D transform of ``kernels/columns.cu`` (fast ePIE): cuFFT transforms the rows (1-D, batched), one
kernel does the column transforms with the modulus projection between them, cuFFT's inverse rows finish: four
launches a position instead of six on ePIE's sequential chain."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..bench_switches import bench_switch_on
from . import runtime as rt

SPLIT = {64: 8, 128: 16, 256: 16, 512: 32}  # n -> N1: threads per column (n = N1 x N2, N1 >= N2)
COLS_PER_BLOCK = 4  # as in kernels/columns.cu
SHARED_LIMIT_BYTES = 48 * 1024


def shared_bytes(n: int, modes: int) -> int:
    """Dynamic shared memory of one block: every mode of its columns, complex64."""
    return modes * n * COLS_PER_BLOCK * 8


def applies(n: int, modes: int, switch: str, sizes: tuple[int, ...] = tuple(SPLIT)) -> bool:
    """True when the kernel handles n x n patterns with ``modes`` modes and the benchmark switch ``switch``
    (:mod:`reconstruction.bench_switches`) is not 0."""
    return n in sizes and n in SPLIT and shared_bytes(n, modes) <= SHARED_LIMIT_BYTES \
        and bench_switch_on(switch)


@functools.lru_cache(maxsize=8)
def _twiddles_on(device: int, n: int) -> Any:
    k = np.arange(n, dtype=np.float64)
    return rt.cupy().asarray(np.exp(-2j * np.pi * k / n).astype(np.complex64))


def twiddles(n: int) -> Any:
    """(n,) complex64 exp(-2 pi i k / n) on the current device (computed in float64)."""
    return _twiddles_on(rt.device_id(), n)


def launch_shape(n: int, modes: int) -> tuple[int, int, int]:
    """(column blocks, threads a block, shared bytes) for n x n patterns with ``modes`` modes."""
    return n // COLS_PER_BLOCK, COLS_PER_BLOCK * SPLIT[n], shared_bytes(n, modes)

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
DEFAULT_SHARED_BYTES = 48 * 1024  # shared memory (static + dynamic) a block gets without opting in


def shared_bytes(n: int, modes: int) -> int:
    """Dynamic shared memory of one block: every mode of its columns, complex64."""
    return modes * n * COLS_PER_BLOCK * 8


def applies(n: int, modes: int, switch: str, sizes: tuple[int, ...] = tuple(SPLIT),
            limit_bytes: int | None = None) -> bool:
    """True when the kernel handles n x n patterns with ``modes`` modes and the benchmark switch ``switch``
    (:mod:`reconstruction.bench_switches`) is not 0.

    ``limit_bytes``: the dynamic shared memory a block may have (default: :func:`max_dynamic_shared_bytes` of
    the current device)."""
    if n not in sizes or n not in SPLIT or not bench_switch_on(switch):
        return False
    limit = max_dynamic_shared_bytes() if limit_bytes is None else limit_bytes
    return shared_bytes(n, modes) <= limit


def max_dynamic_shared_bytes() -> int:
    """The most dynamic shared memory one ``epie_cols`` block can have on the current device: the per-block
    opt-in limit (227 KiB on the H100) less the kernel's static shared memory (its block reduction)."""
    return _max_dynamic_on(rt.device_id())


@functools.lru_cache(maxsize=8)
def _max_dynamic_on(device: int) -> int:
    props = rt.cupy().cuda.runtime.getDeviceProperties(device)
    optin = int(props.get("sharedMemPerBlockOptin") or props["sharedMemPerBlock"])
    return optin - int(rt.kernel("epie_cols").shared_size_bytes)


def reserve_shared(n: int, modes: int) -> None:
    """Let ``epie_cols`` launch with ``modes`` modes of n x n patterns (before any graph capture).

    A block's static plus dynamic shared memory above 48 KiB needs the kernel's opt-in attribute: without it the
    launch fails, which inside a graph capture invalidates the capture (cudaErrorStreamCaptureInvalidated: 12
    modes at 128^2 and 6 at 256^2 need exactly 48 KiB dynamic, plus the reduction's 256 bytes static)."""
    kern = rt.kernel("epie_cols")
    need = shared_bytes(n, modes)
    if need + int(kern.shared_size_bytes) > DEFAULT_SHARED_BYTES and kern.max_dynamic_shared_size_bytes < need:
        kern.max_dynamic_shared_size_bytes = need


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

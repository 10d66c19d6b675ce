"""CuPy plumbing of the fast paths: the compiled kernel module, cached cuFFT plans, launch helpers, graphs.

Imported only when the backend is CuPy; nothing here imports CuPy at module import time.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

BLOCK = 256
KERNEL_DIR = Path(__file__).with_name("kernels")
KERNEL_OPTIONS = ("--std=c++17", "--use_fast_math")  # NVRTC's (CuPy's RawModule); nvcc takes the same spelling


def kernel_source() -> str:
    """The one CUDA translation unit: ``kernels/common.cuh`` then every ``kernels/*.cu`` in name order."""
    parts = [KERNEL_DIR / "common.cuh", *sorted(KERNEL_DIR.glob("*.cu"))]
    return "\n".join(f"// ---- {p.name}\n{p.read_text()}" for p in parts)


def cupy() -> Any:
    import cupy as cp  # type: ignore[import-not-found]

    return cp


def kernel_names() -> list[str]:
    """Names of the ``__global__`` functions in ``kernels/*.cu``."""
    return re.findall(r"__global__\s+void\s+(\w+)\s*\(", kernel_source())


def device_id() -> int:
    return int(cupy().cuda.Device().id)


@functools.lru_cache(maxsize=16)
def _module_on(device: int) -> Any:
    cp = cupy()
    with cp.cuda.Device(device):
        mod = cp.RawModule(code=kernel_source(), options=KERNEL_OPTIONS)
        for name in kernel_names():
            mod.get_function(name)
    return mod


def module() -> Any:
    """The RawModule holding every kernel of ``kernels/``, compiled and loaded once per process and device
    (before any graph capture): engines on several GPUs each launch their own device's functions."""
    return _module_on(device_id())


@functools.lru_cache(maxsize=1024)
def _kernel_on(device: int, name: str) -> Any:
    return _module_on(device).get_function(name)


def kernel(name: str) -> Any:
    return _kernel_on(device_id(), name)


@functools.lru_cache(maxsize=1)
def sm_count() -> int:
    cp = cupy()
    return int(cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["multiProcessorCount"])


def grid_for(work: int, block: int = BLOCK, waves: int = 8) -> int:
    """Blocks for a grid-stride loop over ``work`` items: enough to fill the chip, no more than needed."""
    return int(max(1, min(-(-work // block), sm_count() * waves)))


def launch(name: str, work: int, args: tuple[Any, ...], grid_y: int = 1, block: int = BLOCK) -> None:
    kernel(name)((grid_for(work, block), grid_y), (block,), args)


def launch_jp(name: str, positions: int, n2: int, args: tuple[Any, ...], block: int = BLOCK) -> None:
    """A kernel over (position, pixel) pairs: x blocks stride over the pixels of a window, y over positions;
    about eight blocks per multiprocessor in all (each thread visits several positions)."""
    gx = grid_for(n2, block)
    gy = int(max(1, min(positions, 65535, (sm_count() * 8) // gx)))
    kernel(name)((gx, gy), (block,), args)


def i32(v: int) -> np.int32:
    return np.int32(v)


def i64(v: int) -> np.int64:
    return np.int64(v)


def f32(v: float) -> np.float32:
    return np.float32(v)


class FFTPlans:
    """Cached unnormalised batched C2C cuFFT plans (2-D, or 1-D along rows); executed in place, no allocation."""

    def __init__(self) -> None:
        self._plans: dict[tuple[int, int, bool], Any] = {}

    def get(self, batch: int, n: int, rows_only: bool = False) -> Any:
        """The plan of ``batch`` 2-D n x n transforms, or with ``rows_only`` of ``batch`` 1-D length-n rows."""
        key = (batch, n, rows_only)
        plan = self._plans.get(key)
        if plan is None:
            cp = cupy()
            from cupyx.scipy import fft as cpx_fft  # type: ignore[import-not-found]

            shape = (batch, n) if rows_only else (batch, n, n)
            shape_probe = cp.empty(shape, dtype=cp.complex64)
            plan = cpx_fft.get_fft_plan(shape_probe, axes=(-1,) if rows_only else (-2, -1), value_type="C2C")
            del shape_probe
            self._plans[key] = plan
        return plan

    def forward_rows(self, buf: Any, rows: int, n: int) -> None:
        from cupy.cuda import cufft  # type: ignore[import-not-found]

        self.get(rows, n, rows_only=True).fft(buf, buf, cufft.CUFFT_FORWARD)

    def inverse_rows(self, buf: Any, rows: int, n: int) -> None:
        from cupy.cuda import cufft  # type: ignore[import-not-found]

        self.get(rows, n, rows_only=True).fft(buf, buf, cufft.CUFFT_INVERSE)

    def forward(self, buf: Any, batch: int, n: int) -> None:
        from cupy.cuda import cufft  # type: ignore[import-not-found]

        self.get(batch, n).fft(buf, buf, cufft.CUFFT_FORWARD)

    def inverse(self, buf: Any, batch: int, n: int) -> None:
        from cupy.cuda import cufft  # type: ignore[import-not-found]

        self.get(batch, n).fft(buf, buf, cufft.CUFFT_INVERSE)

    def forward_into(self, src: Any, dst: Any, batch: int, n: int) -> None:
        """``dst`` = the forward transforms of ``batch`` n x n images in ``src``, out of place (``src`` kept)."""
        from cupy.cuda import cufft  # type: ignore[import-not-found]

        self.get(batch, n).fft(src, dst, cufft.CUFFT_FORWARD)


def mask_args(valid: Any, n2: int, dummy: Any) -> tuple[Any, np.int32, np.int32]:
    """(pointer, has_mask, per-frame stride) for a None, (n, n) or (N, n, n) bool mask."""
    if valid is None:
        return dummy, i32(0), i32(0)
    stride = 0 if valid.ndim == 2 else n2
    return valid, i32(1), i32(stride)


class GraphRunner:
    """Captures a sequence of launches once as CUDA graphs and replays them.

    ``record(fn)`` calls ``fn()`` under stream capture on a private stream; ``replay()`` launches the graph on
    that stream, ordered after the current stream's earlier work and before its later work.
    """

    def __init__(self) -> None:
        cp = cupy()
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.graphs: list[Any] = []

    def record(self, fn: Any) -> None:
        cp = cupy()
        self.stream.wait_event(cp.cuda.get_current_stream().record())
        with self.stream:
            self.stream.begin_capture()
            try:
                fn()
            finally:
                graph = self.stream.end_capture()
        upload = getattr(graph, "upload", None)
        if upload is not None:
            upload(self.stream)
        self.graphs.append(graph)

    def replay(self) -> None:
        cp = cupy()
        current = cp.cuda.get_current_stream()
        self.stream.wait_event(current.record())
        for g in self.graphs:
            g.launch(self.stream)
        current.wait_event(self.stream.record())

"""Diffraction amplitudes streamed from pinned host memory through a device ring (the fast ePIE and LSQML).

A streamed run (``reconstruction/memory_plan.py`` decides) keeps the float32 intensities (N, n, n) in host
memory: the caller's C-contiguous array is registered with the CUDA driver in place (pinned and mapped: no second
host copy), and ``RING_SLOTS`` device slots of ``chunk`` patterns each receive the amplitudes sqrt(I) of the next
chunk of the visiting order. The ``stream_fill`` kernel gathers those patterns straight from the mapped host
memory by index (the order lives on the device, so a CUDA graph captured once serves every new random order) on
a copy stream, while the compute stream works on the current slot; CUDA events order the two, and inside a graph
capture the same events become graph edges. Nothing here synchronises the host.

The engines use three calls: :meth:`AmplitudeStream.fill` (on the compute stream: the first chunk of an epoch),
:meth:`AmplitudeStream.prefetch` (on the copy stream, after the compute work issued so far) and
:meth:`AmplitudeStream.wait` (the compute stream waits for the last prefetch into a slot).
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

import numpy as np

from ..errors import DeviceMemoryError
from ..memory_plan import RING_SLOTS
from . import runtime as rt
from .runtime import i32

HOST_REGISTER_MAPPED = 2  # cudaHostRegisterMapped: the pinned pages are also addressable from the device
ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712  # cudaErrorHostMemoryAlreadyRegistered
# stream_fill's grid: 32 blocks keep ~0.5 MB of 16-byte loads in flight (the host link's 45-48 GB/s) and leave the
# SMs to compute; measured on an H100 at 50,000 x 256^2 (benchmarks/RESULTS.md): 32 / 64 / 128 / 256 blocks gave
# ePIE 761 / 875 / 1062 / 1155 ms and LSQML 383 / 393 / 425 / 557 ms per epoch, the copy path alone 42-48 GB/s
FILL_BLOCKS = 32


def upload_amplitudes(intensities: np.ndarray) -> Any:
    """(N, n, n) float32 device amplitudes sqrt(I) from C-contiguous float32 host intensities (N, n, n).

    The host array is pinned in place for the copy and unpinned after it, so the copy runs at the host link's
    rate without a pinned staging copy of the whole data in host memory (what ``cupy.array`` makes); an array
    that cannot be pinned (or already is) is copied as it is."""
    cp = rt.cupy()
    out = cp.empty(intensities.shape, dtype=cp.float32)
    ptr, nbytes = int(intensities.ctypes.data), int(intensities.nbytes)
    pinned = False
    if nbytes:
        try:
            cp.cuda.runtime.hostRegister(ptr, nbytes, 0)
            pinned = True
        except cp.cuda.runtime.CUDARuntimeError:
            pass
    try:
        out.set(intensities)
    finally:
        if pinned:
            cp.cuda.runtime.hostUnregister(ptr)
    cp.sqrt(out, out=out)  # in place: no second data-sized buffer on the device
    return out


def _unregister(ptr: int) -> None:
    if not ptr:
        return
    with contextlib.suppress(Exception):  # at interpreter exit the CUDA context may already be gone
        rt.cupy().cuda.runtime.hostUnregister(ptr)


class AmplitudeStream:
    """The intensities of a streamed run: host (N, n, n) float32, pinned and mapped; a device ring of
    ``slots`` buffers of ``chunk`` (n, n) float32 amplitude patterns each.

    ``shape`` and ``dtype`` describe the whole data set (what ``EngineState`` reads for N and n). The host array
    must stay alive and unchanged while the stream exists; :meth:`close` (or garbage collection) unpins it.
    """

    def __init__(self, intensities: np.ndarray, chunk: int, slots: int = RING_SLOTS):
        a = intensities
        if a.ndim != 3 or a.dtype != np.float32 or not a.flags.c_contiguous:
            raise ValueError(f"streamed intensities must be a C-contiguous float32 (N, n, n) array, not "
                             f"{a.dtype} {a.shape} (contiguous: {a.flags.c_contiguous})")
        if chunk < 1 or slots < 2:
            raise ValueError(f"chunk={chunk}, slots={slots}: need chunk >= 1 and at least two slots")
        cp = rt.cupy()
        self.host = a
        self.shape = a.shape
        self.dtype = a.dtype
        self.n2 = int(a.shape[1] * a.shape[2])
        self.chunk = int(min(chunk, a.shape[0]))
        self.host_bytes = int(a.nbytes)
        self._ptr = int(a.ctypes.data)
        owner = True
        try:
            cp.cuda.runtime.hostRegister(self._ptr, self.host_bytes, HOST_REGISTER_MAPPED)
        except cp.cuda.runtime.CUDARuntimeError as exc:
            if getattr(exc, "status", None) != ERROR_HOST_MEMORY_ALREADY_REGISTERED:
                raise DeviceMemoryError(
                    f"could not pin the {self.host_bytes / 2**30:.2f} GiB of intensities in host memory for "
                    f"streaming ({exc}); free host memory or raise the GPU memory cap so the data fit on the device",
                    self.host_bytes) from exc
            owner = False  # already pinned (e.g. by another run on the same array): leave it to its owner
        self._finalizer = weakref.finalize(self, _unregister, self._ptr if owner else 0)
        self.device_ptr = int(cp.cuda.runtime.pointerGetAttributes(self._ptr).devicePointer)
        self.vec = 1 if self.n2 % 4 == 0 and self.device_ptr % 16 == 0 else 0
        self.ring = [cp.empty(self.chunk * self.n2, dtype=cp.float32) for _ in range(slots)]
        self.copy_stream = cp.cuda.Stream(non_blocking=True)
        self._forked = [cp.cuda.Event(disable_timing=True) for _ in range(slots)]
        self._filled = [cp.cuda.Event(disable_timing=True) for _ in range(slots)]
        rt.module()  # compiled before any graph capture

    @property
    def key(self) -> int:
        """Identity of the data for the engines' graph cache."""
        return self._ptr

    @property
    def slots(self) -> int:
        return len(self.ring)

    def fill(self, slot: int, order: Any, s0: int, cnt: int) -> None:
        """On the current stream: ``ring[slot][k] = sqrt(host[order[s0 + k]])`` for k < cnt (cnt <= chunk).
        order: device int32 (N,) visiting order."""
        if not 0 < cnt <= self.chunk:
            raise ValueError(f"cnt={cnt}: a ring slot holds 1 to {self.chunk} patterns")
        n4 = self.n2 // 4 if self.vec else self.n2
        gx = max(1, min(-(-n4 // rt.BLOCK), 4))
        gy = max(1, min(cnt, FILL_BLOCKS // gx))
        rt.kernel("stream_fill")((gx, gy), (rt.BLOCK,), (np.uint64(self.device_ptr), order, i32(s0), i32(cnt),
                                                        i32(self.n2), i32(self.vec), self.ring[slot]))

    def prefetch(self, slot: int, order: Any, s0: int, cnt: int) -> None:
        """Fill ``ring[slot]`` on the copy stream once the work issued so far on the current stream is done
        (which must include the last reads of that slot)."""
        current = rt.cupy().cuda.get_current_stream()
        current.record(self._forked[slot])
        self.copy_stream.wait_event(self._forked[slot])
        with self.copy_stream:
            self.fill(slot, order, s0, cnt)
        self.copy_stream.record(self._filled[slot])

    def wait(self, slot: int) -> None:
        """The current stream waits for the last :meth:`prefetch` into ``ring[slot]``."""
        rt.cupy().cuda.get_current_stream().wait_event(self._filled[slot])

    def measure_fill_s(self, order: Any, repeats: int = 1) -> float:
        """Seconds (CUDA events on the copy stream, median of ``repeats``) to fill every chunk of one epoch in
        ``order`` alone, without compute beside it: the copy path's own rate is N n^2 4 bytes over this."""
        cp = rt.cupy()
        n_pos = self.shape[0]
        times = []
        for _ in range(repeats):
            with self.copy_stream:
                start, stop = cp.cuda.Event(), cp.cuda.Event()
                start.record(self.copy_stream)
                for k, s0 in enumerate(range(0, n_pos, self.chunk)):
                    self.fill(k % self.slots, order, s0, min(self.chunk, n_pos - s0))
                stop.record(self.copy_stream)
            stop.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
        return float(np.median(times))

    def close(self) -> None:
        """Unpin the host memory and free the ring (idempotent); waits for the device to finish first."""
        rt.cupy().cuda.Device().synchronize()
        self._finalizer()
        self.ring = []

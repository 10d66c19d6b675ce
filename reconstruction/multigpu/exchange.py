"""Sharing between regions: a :class:`Communicator` (in-place all-reduce sums) and the overlap/probe exchange.

Every rank (region) runs in its own thread and calls the collective with its own buffer; the call returns
when the buffer holds the sum over all ranks. :class:`LocalCommunicator` does this in one process for NumPy
"devices" (or CuPy arrays on one GPU); :class:`NcclCommunicator` uses NCCL through ``cupy.cuda.nccl``, one GPU
per rank. Sums over region windows are taken in global object coordinates: each rank pastes its window into
a zero (..., H, W) buffer, so one contiguous all-reduce serves any layout of regions.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ..backend import is_cupy_array
from .partition import Window


class Communicator(Protocol):
    """Collectives over ``size`` ranks; each rank calls from its own thread."""

    size: int

    def allreduce_sum(self, rank: int, buf: Any) -> None:
        """Replace ``buf`` (float32 or complex64, contiguous) by its sum over all ranks, in place."""

    def abort(self) -> None:
        """Release every rank blocked in a collective (they raise); used when one rank fails."""


class CommunicatorAborted(RuntimeError):
    """Another rank failed while this one waited in a collective."""


def _synchronize(a: Any) -> None:
    """Wait for the work queued on ``a``'s device by this thread (CuPy), so another thread may read it."""
    if is_cupy_array(a):
        import cupy  # type: ignore[import-not-found]

        cupy.cuda.get_current_stream().synchronize()


def _device_id(a: Any) -> int | None:
    return int(a.device.id) if is_cupy_array(a) else None


class _Rendezvous:
    """Ranks meet at a barrier with their buffers; rank 0 performs the collective for all; they meet again."""

    def __init__(self, size: int, timeout_s: float | None):
        if size < 1:
            raise ValueError(f"size={size}: must be >= 1")
        self.size = int(size)
        self._barrier = threading.Barrier(self.size, timeout=timeout_s)
        self._slots: list[Any] = [None] * self.size

    def _meet(self, rank: int, item: Any, leader: Any) -> None:
        """Deposit ``item``, let rank 0 run ``leader(items)``, return once it is done."""
        self._slots[rank] = item
        self._wait()
        if rank == 0:
            try:
                leader(list(self._slots))
            except BaseException:
                self.abort()
                raise
        self._wait()

    def _wait(self) -> None:
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError as exc:
            raise CommunicatorAborted("a region failed or timed out during a collective") from exc

    def abort(self) -> None:
        self._barrier.abort()


class LocalCommunicator(_Rendezvous):
    """Single-process all-reduce over ``size`` ranks in threads: rank 0 forms the sum in rank order
    (deterministic), on the device when every buffer lives on the same one, else through the host."""

    def __init__(self, size: int, timeout_s: float | None = 600.0):
        super().__init__(size, timeout_s)
        self._total: Any = None

    def allreduce_sum(self, rank: int, buf: Any) -> None:
        if self.size == 1:
            return
        _synchronize(buf)
        self._meet(rank, buf, self._sum)
        total = self._total
        if is_cupy_array(buf) and _device_id(total) != _device_id(buf):
            import cupy

            total = cupy.asarray(cupy.asnumpy(total) if is_cupy_array(total) else total)
        elif not is_cupy_array(buf) and is_cupy_array(total):
            total = total.get()
        buf[...] = total  # rank 0 replaces the total only after every rank reached the next collective
        _synchronize(buf)

    def _sum(self, bufs: list[Any]) -> None:
        if len({_device_id(b) for b in bufs}) == 1:
            total = bufs[0].copy()
            for b in bufs[1:]:
                total += b
            _synchronize(total)
        else:
            total = bufs[0].get() if is_cupy_array(bufs[0]) else np.array(bufs[0])
            for b in bufs[1:]:
                total += b.get() if is_cupy_array(b) else np.asarray(b)
        self._total = total


class NcclCommunicator(_Rendezvous):
    """NCCL all-reduce over one GPU per rank (``devices[rank]``), single process, one thread per rank.

    CuPy's single-process communicator (``NcclCommunicator.initAll``) switches ranks with a shared
    ``setCurrentComm``, so the ranks do not call NCCL themselves: each hands over its buffer and its current
    stream, and rank 0 enqueues every rank's all-reduce in one NCCL group, each on its rank's stream (so it
    runs after the work that rank queued before). Sets NCCL_NVLS_ENABLE=0 before the communicators exist.
    """

    def __init__(self, devices: Sequence[int], timeout_s: float | None = 600.0):
        super().__init__(len(devices), timeout_s)
        if len(set(devices)) != len(devices):
            raise ValueError(f"devices={list(devices)}: NCCL needs one distinct GPU per rank")
        os.environ["NCCL_NVLS_ENABLE"] = "0"
        from cupy.cuda import nccl  # type: ignore[import-not-found]

        self._nccl = nccl
        self.devices = [int(d) for d in devices]
        self._comm: Any = nccl.NcclCommunicator.initAll(len(self.devices), self.devices) if self.size > 1 else None

    def allreduce_sum(self, rank: int, buf: Any) -> None:
        import cupy

        if self.size == 1:
            return
        flat = as_float32_view(buf)
        self._meet(rank, (flat, cupy.cuda.get_current_stream().ptr), self._group_allreduce)

    def _group_allreduce(self, items: list[tuple[Any, int]]) -> None:
        import cupy

        nccl, comm = self._nccl, self._comm
        comm.groupStart()
        try:
            for rank, (flat, stream_ptr) in enumerate(items):
                with cupy.cuda.Device(self.devices[rank]):
                    comm.setCurrentComm(rank)
                    comm.allReduce(flat.data.ptr, flat.data.ptr, int(flat.size), nccl.NCCL_FLOAT32, nccl.NCCL_SUM,
                                   stream_ptr)
        finally:
            comm.groupEnd()


def as_float32_view(buf: Any) -> Any:
    """A float32 view of a contiguous float32 or complex64 array (complex as interleaved pairs)."""
    if buf.dtype == np.complex64:
        return buf.view(np.float32)
    if buf.dtype != np.float32:
        raise TypeError(f"collective buffers must be float32 or complex64, not {buf.dtype}")
    return buf


def paste(xp: Any, global_shape: tuple[int, int], window: Window, values: Any, dtype: Any = None) -> Any:
    """(..., H, W) zeros with ``values`` (..., h, w) pasted at ``window``."""
    out = xp.zeros(values.shape[:-2] + tuple(global_shape), dtype=dtype or values.dtype)
    out[..., window.r0:window.r1, window.c0:window.c1] = values
    return out


def share_object(xp: Any, comm: Communicator, rank: int, obj: Any, weight: Any, window: Window,
                 global_shape: tuple[int, int]) -> None:
    """In place: ``obj`` (h, w) becomes the ``weight``-weighted average over the regions holding each pixel.

    weight: (h, w) float, this region's illumination. Pixels no region illuminates keep their own value.
    """
    buf = xp.zeros((3,) + tuple(global_shape), dtype=xp.float32)
    win = (slice(None),) + window.slices
    buf[win] = xp.stack([weight * obj.real, weight * obj.imag, weight]).astype(xp.float32)
    comm.allreduce_sum(rank, buf)
    local = buf[win]
    den = local[2]
    lit = den > 1e-12 * float(xp.max(buf[2]))
    avg = (local[0] + 1j * local[1]) / xp.where(lit, den, 1)
    obj[...] = xp.where(lit, avg, obj).astype(obj.dtype)


def share_probe(xp: Any, comm: Communicator, rank: int, probe: Any) -> None:
    """In place: ``probe`` (M, n, n) complex64 becomes the mean of the regions' probes."""
    buf = xp.ascontiguousarray(probe.astype(xp.complex64))
    comm.allreduce_sum(rank, buf)
    probe[...] = buf / comm.size

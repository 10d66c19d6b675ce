"""NcclCommunicator's calls, against a recording stand-in for ``cupy.cuda.nccl`` (no GPU here): one NCCL group
per collective, each rank's own buffer, count, stream and device, in-place sums, NVLS off."""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from reconstruction.multigpu.exchange import NcclCommunicator

_ptrs = itertools.count(1000, 1000)


class FakeDeviceArray:
    """Just enough of a CuPy array: dtype, size, view, data.ptr, backed by a NumPy array."""

    registry: dict[int, FakeDeviceArray] = {}

    def __init__(self, host: np.ndarray, ptr: int | None = None):
        self.host = host
        self.data = types.SimpleNamespace(ptr=ptr if ptr is not None else next(_ptrs))
        FakeDeviceArray.registry[self.data.ptr] = self

    dtype = property(lambda self: self.host.dtype)
    size = property(lambda self: self.host.size)

    def view(self, dtype) -> FakeDeviceArray:
        return FakeDeviceArray(self.host.view(dtype), ptr=self.data.ptr + 1)


class FakeComm:
    def __init__(self, devices: list[int]):
        self.devices = devices
        self.current = None
        self.calls: list[tuple] = []
        self.in_group = False
        self.groups = 0

    def groupStart(self) -> None:  # noqa: N802 - CuPy's names
        self.in_group = True
        self.pending = []

    def setCurrentComm(self, rank: int) -> None:  # noqa: N802
        self.current = rank

    def allReduce(self, send, recv, count, dtype, op, stream) -> None:  # noqa: N802
        assert self.in_group and send == recv
        self.calls.append((self.current, _current_device[0], send, count, dtype, op, stream))
        self.pending.append(recv)

    def groupEnd(self) -> None:  # noqa: N802
        arrays = [FakeDeviceArray.registry[p].host for p in self.pending]
        total = np.sum(arrays, axis=0)
        for a in arrays:
            a[...] = total
        self.in_group = False
        self.groups += 1


_current_device = [None]
_stream_of_thread: dict[int, int] = {}


@contextlib.contextmanager
def _device(d: int):
    before = _current_device[0]
    _current_device[0] = d
    try:
        yield
    finally:
        _current_device[0] = before


@pytest.fixture
def fake_cupy(monkeypatch):
    made: list[FakeComm] = []

    def init_all(ndev, devlist):
        assert ndev == len(devlist)
        made.append(FakeComm(list(devlist)))
        return made[-1]

    nccl = types.SimpleNamespace(NCCL_FLOAT32=7, NCCL_SUM=0,
                                 NcclCommunicator=types.SimpleNamespace(initAll=init_all))
    stream = lambda: types.SimpleNamespace(ptr=_stream_of_thread.get(threading.get_ident(), 0))  # noqa: E731
    cuda = types.SimpleNamespace(nccl=nccl, Device=_device, get_current_stream=stream)
    cupy = types.SimpleNamespace(cuda=cuda)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", nccl)
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")  # forced to 0 by the communicator, restored afterwards
    return made


def test_rank_zero_enqueues_every_rank_in_one_group(fake_cupy) -> None:
    import os

    comm = NcclCommunicator([2, 0, 3])
    assert os.environ["NCCL_NVLS_ENABLE"] == "0"
    (fake,) = fake_cupy
    assert fake.devices == [2, 0, 3]
    bufs = [FakeDeviceArray(np.full((2, 3), 1 + 1j * r, np.complex64)) for r in range(3)]

    def rank_fn(rank: int) -> None:
        _stream_of_thread[threading.get_ident()] = 500 + rank
        comm.allreduce_sum(rank, bufs[rank])
        comm.allreduce_sum(rank, bufs[rank])

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(rank_fn, range(3)))
    assert fake.groups == 2
    first = fake.calls[:3]
    assert [c[0] for c in first] == [0, 1, 2]  # ranks
    assert [c[1] for c in first] == [2, 0, 3]  # each call under its rank's device
    assert [c[2] for c in first] == [b.data.ptr + 1 for b in bufs]  # the rank's own (float32 view of its) buffer
    assert all(c[3] == 12 and c[4] == 7 and c[5] == 0 for c in first)  # 6 complex = 12 float32, FLOAT32, SUM
    assert [c[6] for c in first] == [500, 501, 502]  # the rank's stream
    for b in bufs:
        np.testing.assert_allclose(b.host, 3 * (3 + 3j))


def test_nccl_needs_distinct_devices(fake_cupy) -> None:
    with pytest.raises(ValueError, match="distinct"):
        NcclCommunicator([0, 0])

"""What the three fast engines share: the buffers every engine needs, graph capture and replay, the metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bench_switches import bench_switch_on
from ..engines.base import EngineSettings, EngineState, IterationMetrics
from . import runtime as rt


def graphs_enabled() -> bool:
    return bench_switch_on("GPU_GRAPHS")


def lerp_c64(mean: Any, new: Any, weight: float) -> None:
    """mean += weight (new - mean) in one pass, in place: contiguous complex64 CuPy arrays of one shape (any)."""
    size = int(mean.size)
    rt.launch("lerp_c64", size, (mean, new, rt.f32(weight), rt.i64(size)))


class FastMixin:
    """Buffers and helpers shared by the three fast engines."""

    state: EngineState
    settings: EngineSettings
    order: Any
    _order_host: np.ndarray

    def _setup_common(self) -> None:
        cp = rt.cupy()
        st = self.state
        self.cp = cp
        self.n = st.size_px
        self.n2 = self.n * self.n
        self.width = int(st.obj.shape[1])
        self.obj_size = int(st.obj.size)
        self.rows32 = cp.ascontiguousarray(st.rows.astype(cp.int32))
        self.cols32 = cp.ascontiguousarray(st.cols.astype(cp.int32))
        self.err = cp.zeros(2, dtype=cp.float64)
        self.slots = cp.zeros(4, dtype=cp.uint32)
        self._dummy_mask = cp.zeros(1, dtype=cp.uint8)
        self.mask = rt.mask_args(st.valid, self.n2, self._dummy_mask)
        self.plans = rt.FFTPlans()
        self._runner: rt.GraphRunner | None = None
        self._runner_key: tuple[Any, ...] | None = None
        rt.module()

    def _buffers_key(self, m: int, update_probe: bool) -> tuple[Any, ...]:
        st = self.state
        amp = st.amplitudes  # a device array, or an AmplitudeStream (gpu/streaming.py) with its own key
        amp_key = amp.key if hasattr(amp, "key") else amp.data.ptr
        return (m, bool(update_probe), st.obj.data.ptr, st.probe.data.ptr, amp_key)

    def _run(self, m: int, update_probe: bool, launches: Any) -> None:
        """Run ``launches()`` through a cached graph (or eagerly when graphs are off)."""
        if not graphs_enabled():
            launches()
            return
        key = self._buffers_key(m, update_probe)
        if self._runner is None or self._runner_key != key:
            self._runner = None
            runner = rt.GraphRunner()
            self._capture(runner, m, update_probe)
            self._runner, self._runner_key = runner, key
        self._runner.replay()

    def _capture(self, runner: rt.GraphRunner, m: int, update_probe: bool) -> None:
        runner.record(lambda: self._launch_all(m, update_probe))

    def _launch_all(self, m: int, update_probe: bool) -> None:
        raise NotImplementedError

    def _metrics(self) -> IterationMetrics:
        sq_err, sq_amp = (float(v) for v in self.err.get())
        return IterationMetrics(sq_err=sq_err, sq_amp=sq_amp)

    def _upload_order(self, order: np.ndarray) -> None:
        self._order_host[...] = order.astype(np.int32)
        self.order.set(self._order_host)


def pinned_int32(n: int) -> np.ndarray:
    """(n,) int32 in page-locked host memory: the source of the per-iteration uploads (visiting order, sample)."""
    import cupyx  # type: ignore[import-not-found]

    return cupyx.empty_pinned((n,), dtype=np.int32)

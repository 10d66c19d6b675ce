"""Fast CuPy implementations of ePIE, DM and LSQML.

Each class subclasses the reference engine (``reconstruction/engines``), computes the same update in fewer
passes over memory, and is checked against it in ``tests/gpu``. Per iteration they:

- run fused RawKernels from ``kernels.cu`` (gather-and-multiply, modulus with the error sums, atomic scatter-add
  of the object update) on preallocated buffers, with unnormalised cuFFT plans created once (the orthonormal
  scale folded into the kernels); nothing is allocated inside the loop;
- (ePIE, LSQML, DM) replay a CUDA graph captured once per (active modes, probe update on/off): ePIE's graph
  holds every per-position step of an epoch, its kernels read the visiting index from a device array, so each
  new random order (drawn on the host from the same generator as the reference, 4 bytes a position) replays
  the same graph;
- bring back two float64 error sums per iteration (16 bytes) for the progress report.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..engines.base import EngineSettings, EngineState, IterationMetrics
from ..engines.dm import DM, REGULARISATION
from ..engines.epie import EPIE
from ..engines.lsqml import LSQML
from . import runtime as rt
from .runtime import f32, i32, i64

LS_DOTS_BLOCKS = 64  # blocks per position in ls_dots: each adds 5 sums atomically to its position's slots
EPIE_STEPS_PER_GRAPH = 2048  # per-position steps captured in one graph (bounds capture memory for huge scans)


def graphs_enabled() -> bool:
    return os.environ.get("PTYCHOPY_GPU_GRAPHS", "1") != "0"


class _FastMixin:
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
        return (m, bool(update_probe), st.obj.data.ptr, st.probe.data.ptr, st.amplitudes.data.ptr)

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


def _pinned_int32(n: int) -> np.ndarray:
    import cupyx  # type: ignore[import-not-found]

    return cupyx.empty_pinned((n,), dtype=np.int32)


class FastEPIE(_FastMixin, EPIE):
    """True sequential ePIE: five launches a position (gather, FFT, modulus, inverse FFT, update), one graph."""

    def __init__(self, state: EngineState, settings: EngineSettings):
        super().__init__(state, settings)
        self._setup_common()
        cp, st = self.cp, self.state
        mt = int(st.probe.shape[0])
        self.order = cp.zeros(st.n_positions, dtype=cp.int32)
        self._order_host = _pinned_int32(st.n_positions)
        self.psi = cp.empty((mt, self.n, self.n), dtype=cp.complex64)
        self.opatch = cp.empty((self.n, self.n), dtype=cp.complex64)
        self.fused = os.environ.get("PTYCHOPY_EPIE_FUSED", "1") != "0"
        if self.fused:  # ping-pong partners of psi, opatch and the probe for epie_update_gather
            self.psi_b = cp.empty_like(self.psi)
            self.opatch_b = cp.empty_like(self.opatch)
            self.probe_b = cp.empty_like(st.probe)
        self.err_blocks = rt.grid_for(self.n2)  # epie_modulus's grid: one partial error pair per block
        self.err_partial = cp.zeros(2 * self.err_blocks, dtype=cp.float64)

    def iterate(self, iteration: int, update_probe: bool) -> IterationMetrics:
        st = self.state
        self._upload_order(st.rng.permutation(st.n_positions))  # the reference engine's draw
        m = st.modes_active
        self.plans.get(m, self.n)
        self._run(m, update_probe, lambda: self._launch_steps(0, st.n_positions, m, update_probe))
        return self._metrics()

    def _capture(self, runner: rt.GraphRunner, m: int, update_probe: bool) -> None:
        n_pos = self.state.n_positions
        for s0 in range(0, n_pos, EPIE_STEPS_PER_GRAPH):
            s1 = min(n_pos, s0 + EPIE_STEPS_PER_GRAPH)
            runner.record(lambda s0=s0, s1=s1: self._launch_steps(s0, s1, m, update_probe))

    def _launch_steps(self, s0: int, s1: int, m: int, update_probe: bool) -> None:
        if self.fused:
            self._launch_steps_fused(s0, s1, m, update_probe)
            return
        st, n, n2 = self.state, self.n, self.n2
        if s0 == 0:
            self.err_partial.fill(0)
            self.slots.fill(0)
        psi = self.psi[:m]
        mask, has_mask, stride = self.mask
        up = i32(1 if update_probe else 0)
        for s in range(s0, s1):
            slot = i32(s & 1)
            rt.launch("epie_gather", n2, (st.obj, st.probe, self.rows32, self.cols32, self.order, i32(s), i32(n),
                                          i32(self.width), i32(m), psi, self.opatch, self.slots, slot))
            self.plans.forward(psi, m, n)
            rt.launch("epie_modulus", n2, (psi, st.amplitudes, mask, has_mask, stride, self.order, i32(s), i32(n2),
                                           i32(m), f32(1.0 / n), f32(1.0 / n2), self.err_partial, self.slots,
                                           i32(-1)))
            self.plans.inverse(psi, m, n)
            rt.launch("epie_update", n2, (st.obj, st.probe, psi, self.opatch, self.rows32, self.cols32, self.order,
                                          i32(s), i32(n), i32(self.width), i32(m), self.slots, slot, up))
        if s1 == st.n_positions:
            rt.kernel("sum_partials")((1,), (256,), (self.err_partial, i32(self.err_blocks), self.err))

    def _launch_steps_fused(self, s0: int, s1: int, m: int, update_probe: bool) -> None:
        """Six launches a position: FFT, modulus, inverse FFT, then the update of this step fused with the
        gather of the next; buffers alternate between steps (even steps use the state's probe)."""
        st, n, n2, w = self.state, self.n, self.n2, self.width
        n_pos = st.n_positions
        mask, has_mask, stride = self.mask
        up = i32(1 if update_probe else 0)
        psi = (self.psi[:m], self.psi_b[:m])
        opatch = (self.opatch, self.opatch_b)
        probe = (st.probe, self.probe_b)
        if s0 == 0:
            self.err_partial.fill(0)
            self.slots.fill(0)
            rt.launch("epie_gather", n2, (st.obj, st.probe, self.rows32, self.cols32, self.order, i32(0), i32(n),
                                          i32(w), i32(m), psi[0], opatch[0], self.slots, i32(0)))
        for s in range(s0, s1):
            a, b = s & 1, (s + 1) & 1
            self.plans.forward(psi[a], m, n)
            rt.launch("epie_modulus", n2, (psi[a], st.amplitudes, mask, has_mask, stride, self.order, i32(s),
                                           i32(n2), i32(m), f32(1.0 / n), f32(1.0 / n2), self.err_partial,
                                           self.slots, i32(b)))
            self.plans.inverse(psi[a], m, n)
            if s + 1 < n_pos:
                rt.launch("epie_update_gather", n2, (st.obj, probe[a], probe[b], psi[a], opatch[a], psi[b], opatch[b],
                                                     self.rows32, self.cols32, self.order, i32(s), i32(n), i32(w),
                                                     i32(m), self.slots, up))
            else:
                rt.launch("epie_update", n2, (st.obj, probe[a], psi[a], opatch[a], self.rows32, self.cols32,
                                              self.order, i32(s), i32(n), i32(w), i32(m), self.slots, i32(a), up))
                if a == 1:
                    rt.launch("copy_c64", m * n2, (self.probe_b, st.probe, i64(m * n2)))
                rt.kernel("sum_partials")((1,), (256,), (self.err_partial, i32(self.err_blocks), self.err))


class FastDM(_FastMixin, DM):
    """DM in chunks of positions: exit waves stay resident, the far fields of a chunk share one buffer."""

    CHUNKS = 8  # positions are processed in about this many chunks (bounds the far-field buffer)

    def __init__(self, state: EngineState, settings: EngineSettings):  # noqa: D107 - no super().__init__
        self.state = state
        self.settings = settings
        self._setup_common()
        cp, st = self.cp, self.state
        n_pos, n, n2 = st.n_positions, self.n, self.n2
        self.mt = int(st.probe.shape[0])
        self.psi = cp.empty((n_pos, self.mt, n, n), dtype=cp.complex64)
        self.chunk = max(1, -(-n_pos // self.CHUNKS))
        self.buf = cp.empty(2 * self.chunk * self.mt * n2, dtype=cp.complex64)
        self.num = cp.zeros(self.obj_size, dtype=cp.complex64)
        self.den = cp.zeros(self.obj_size, dtype=cp.float32)
        self.nseg = int(min(n_pos, max(1, -(-rt.sm_count() * 2048 // n2))))
        self.pnum = cp.empty(self.nseg * self.mt * n2, dtype=cp.complex64)
        self.pden = cp.empty(self.nseg * n2, dtype=cp.float32)
        self.num_p = cp.empty(self.mt * n2, dtype=cp.complex64)
        self.den_p = cp.empty(n2, dtype=cp.float32)
        self._init_psi(1)

    def _init_psi(self, which: int) -> None:
        st = self.state
        rt.launch_jp("dm_reflect", st.n_positions, self.n2,
                  (self.psi, st.obj, st.probe, self.rows32, self.cols32, i32(0), i32(st.n_positions), i32(self.n),
                   i32(self.width), i32(self.mt), i32(self.mt), self.buf, i32(which)))

    def modes_changed(self) -> None:
        # seeding re-orthogonalised mode 0 too: restart every mode's exit waves from P O_j (see DM.modes_changed)
        self._init_psi(1)

    def rotate_modes(self, transform: Any) -> None:
        """Keep psi consistent with the orthogonalised probe (see ``engines.dm.DM.rotate_modes``)."""
        from ..physics.modes import rotate_mode_stack

        rotate_mode_stack(self.cp, self.psi, transform)

    def iterate(self, iteration: int, update_probe: bool) -> IterationMetrics:
        m = self.state.modes_active
        for j0 in range(0, self.state.n_positions, self.chunk):
            cnt = min(self.chunk, self.state.n_positions - j0)
            self.plans.get(2 * cnt * m, self.n)
            self.plans.get(cnt * m, self.n)
        self._run(m, update_probe, lambda: self._launch_all(m, update_probe))
        return self._metrics()

    def _launch_all(self, m: int, update_probe: bool) -> None:
        st, n, n2, w = self.state, self.n, self.n2, self.width
        n_pos, mt = st.n_positions, self.mt
        self.err.fill(0)
        self.slots.fill(0)
        # 1. overlap projection: object, then (when on) probe
        rt.launch_jp("dm_scatter", n_pos, n2, (self.psi, st.probe, self.rows32, self.cols32, i32(n_pos), i32(n), i32(w),
                                             i32(m), i32(mt), self.num, self.den))
        rt.launch("max_reduce", self.obj_size, (self.den, i64(self.obj_size), self.slots[0:1]))
        rt.launch("dm_obj_divide", self.obj_size, (self.num, self.den, st.obj, i64(self.obj_size),
                                                   f32(REGULARISATION), self.slots[0:1]))
        if update_probe:
            rt.launch("dm_probe_partial", n2, (self.psi, st.obj, self.rows32, self.cols32, i32(n_pos), i32(n), i32(w),
                                               i32(m), i32(mt), i32(self.nseg), self.pnum, self.pden),
                      grid_y=self.nseg)
            rt.launch("dm_probe_reduce", n2, (self.pnum, self.pden, i32(self.nseg), i32(n2), i32(m), self.num_p,
                                              self.den_p, self.slots[1:2]))
            rt.launch("dm_probe_divide", n2, (self.num_p, self.den_p, i32(n2), i32(m), f32(REGULARISATION),
                                              self.slots[1:2], st.probe))
        # 2. psi <- psi + P_M(2 phi - psi) - phi, chunk by chunk
        mask, has_mask, stride = self.mask
        for j0 in range(0, n_pos, self.chunk):
            cnt = min(self.chunk, n_pos - j0)
            both = self.buf[: 2 * cnt * m * n2]
            second = self.buf[cnt * m * n2: 2 * cnt * m * n2]
            rt.launch_jp("dm_reflect", cnt, n2, (self.psi, st.obj, st.probe, self.rows32, self.cols32, i32(j0),
                                               i32(cnt), i32(n), i32(w), i32(m), i32(mt), self.buf, i32(0)))
            self.plans.forward(both, 2 * cnt * m, n)
            rt.launch_jp("dm_modulus", cnt, n2, (self.buf, st.amplitudes, mask, has_mask, stride, i32(j0), i32(cnt),
                                               i32(n2), i32(m), f32(1.0 / n), f32(1.0 / n2), self.err))
            self.plans.inverse(second, cnt * m, n)
            rt.launch_jp("dm_psi_update", cnt, n2, (self.psi, st.obj, st.probe, self.rows32, self.cols32, i32(j0),
                                                  i32(cnt), i32(n), i32(w), i32(m), i32(mt), self.buf))


class FastLSQML(_FastMixin, LSQML):
    """LSQML (Gaussian noise model) with every mini-batch of an epoch in one graph."""

    def __init__(self, state: EngineState, settings: EngineSettings):
        super().__init__(state, settings)
        self._setup_common()
        cp, st = self.cp, self.state
        n_pos, n2 = st.n_positions, self.n2
        self.mt = int(st.probe.shape[0])
        b = self.batch_size
        self.order = cp.zeros(n_pos, dtype=cp.int32)
        self._order_host = _pinned_int32(n_pos)
        self.chi = cp.empty(b * self.mt * n2, dtype=cp.complex64)
        self.num_o = cp.zeros(self.obj_size, dtype=cp.complex64)
        self.den_o = cp.zeros(self.obj_size, dtype=cp.float32)
        self.gp = cp.zeros(self.mt * n2, dtype=cp.complex64)
        self.dp = cp.zeros(n2, dtype=cp.float32)
        self.new_probe = cp.empty(self.mt * n2, dtype=cp.complex64)
        self.acc = cp.zeros(b * 5, dtype=cp.float64)
        self.steps = cp.zeros(b * 2, dtype=cp.float32)

    def iterate(self, iteration: int, update_probe: bool) -> IterationMetrics:
        st = self.state
        self._upload_order(st.rng.permutation(st.n_positions))
        m = st.modes_active
        for b0 in range(0, st.n_positions, self.batch_size):
            self.plans.get(min(self.batch_size, st.n_positions - b0) * m, self.n)
        self._run(m, update_probe, lambda: self._launch_all(m, update_probe))
        return self._metrics()

    def _launch_all(self, m: int, update_probe: bool) -> None:
        st, s = self.state, self.settings
        n, n2, w = self.n, self.n2, self.width
        mask, has_mask, stride = self.mask
        up = i32(1 if update_probe else 0)
        beta, delta = f32(s.beta_lsq), f32(s.delta_p)
        self.err.fill(0)
        rows, cols, order = self.rows32, self.cols32, self.order
        for b0 in range(0, st.n_positions, self.batch_size):
            cnt = min(self.batch_size, st.n_positions - b0)
            chi = self.chi[: cnt * m * n2]
            self.num_o.fill(0)
            self.den_o.fill(0)
            self.acc.fill(0)
            self.slots.fill(0)
            rt.launch_jp("ls_gather", cnt, n2, (st.obj, st.probe, rows, cols, order, i32(b0), i32(cnt), i32(n), i32(w),
                                              i32(m), chi))
            self.plans.forward(chi, cnt * m, n)
            rt.launch_jp("ls_modulus", cnt, n2, (chi, st.amplitudes, mask, has_mask, stride, order, i32(b0), i32(cnt),
                                               i32(n2), i32(m), f32(1.0 / n), f32(1.0 / n2), self.err))
            self.plans.inverse(chi, cnt * m, n)
            rt.launch_jp("ls_scatter", cnt, n2, (chi, st.probe, rows, cols, order, i32(b0), i32(cnt), i32(n), i32(w),
                                               i32(m), self.num_o, self.den_o))
            if update_probe:
                rt.launch("ls_probe_reduce", n2, (chi, st.obj, rows, cols, order, i32(b0), i32(cnt), i32(n), i32(w),
                                                  i32(m), self.gp, self.dp, self.slots[1:2]))
            rt.launch("max_reduce", self.obj_size, (self.den_o, i64(self.obj_size), self.slots[0:1]))
            rt.launch("ls_dots", min(n2, rt.BLOCK * LS_DOTS_BLOCKS),
                      (chi, st.obj, st.probe, self.num_o, self.den_o, self.gp, self.dp, rows, cols, order, i32(b0),
                       i32(n), i32(w), i32(m), delta, self.slots, up, self.acc), grid_y=cnt)
            rt.launch("ls_steps", cnt, (self.acc, i32(cnt), up, self.steps), block=128)
            if update_probe:
                rt.launch("ls_probe_update", n2, (chi, st.obj, st.probe, self.dp, rows, cols, order, i32(b0),
                                                  i32(cnt), i32(n), i32(w), i32(m), beta, delta, self.slots,
                                                  self.steps, self.new_probe))
            rt.launch_jp("ls_obj_update", cnt, n2, (chi, st.probe, self.den_o, rows, cols, order, i32(b0), i32(cnt),
                                                  i32(n), i32(w), i32(m), beta, delta, self.slots, self.steps,
                                                  st.obj))
            if update_probe:
                rt.launch("copy_c64", m * n2, (self.new_probe, st.probe, i64(m * n2)))


FAST_ENGINES: dict[str, Any] = {"ePIE": FastEPIE, "DM": FastDM, "LSQML": FastLSQML}

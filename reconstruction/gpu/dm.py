"""Fast difference map: exit waves resident on the device, fused reflect / modulus / update kernels."""

from __future__ import annotations

from typing import Any

from ..engines.base import EngineSettings, EngineState, IterationMetrics
from ..engines.dm import DM, REGULARISATION
from . import runtime as rt
from .common import FastMixin
from .runtime import f32, i32, i64


class FastDM(FastMixin, DM):
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

"""Fast LSQML: every mini-batch of an epoch in one CUDA graph.

The plain run (Gaussian noise, whole-pixel windows, no per-position fits) runs the kernels of ``kernels/lsqml.cu``;
sub-pixel windows, position refinement, the flux fit and the Poisson noise model run those of
``kernels/lsqml_fits.cu`` (:mod:`.lsqml_fits`)."""

from __future__ import annotations

from ..engines.base import EngineSettings, EngineState, IterationMetrics
from ..engines.lsqml import LSQML
from . import runtime as rt
from .common import FastMixin, pinned_int32
from .lsqml_fits import LSQMLFitsMixin, fits_used
from .runtime import f32, i32, i64
from .streaming import AmplitudeStream

LS_DOTS_BLOCKS = 64  # blocks per position in ls_dots: each adds 5 sums atomically to its position's slots


class FastLSQML(FastMixin, LSQMLFitsMixin, LSQML):
    """LSQML with every mini-batch of an epoch in one graph."""

    def __init__(self, state: EngineState, settings: EngineSettings):
        super().__init__(state, settings)
        self._setup_common()
        cp, st = self.cp, self.state
        n_pos, n2 = st.n_positions, self.n2
        self.mt = int(st.probe.shape[0])
        b = self.batch_size
        self.order = cp.zeros(n_pos, dtype=cp.int32)
        self._order_host = pinned_int32(n_pos)
        self._fits, shift = fits_used(settings, st.positions_px, st.rows, st.cols, cp)
        # position refinement transforms the two moved exit waves beside psi: three planes
        planes = 3 if self._fits and settings.position_refinement_from > 0 else 1
        self.chi = cp.empty(planes * b * self.mt * n2, dtype=cp.complex64)
        self.num_o = cp.zeros(self.obj_size, dtype=cp.complex64)
        self.den_o = cp.zeros(self.obj_size, dtype=cp.float32)
        self.gp = cp.zeros(self.mt * n2, dtype=cp.complex64)
        self.dp = cp.zeros(n2, dtype=cp.float32)
        self.new_probe = cp.empty(self.mt * n2, dtype=cp.complex64)
        self.acc = cp.zeros(b * 5, dtype=cp.float64)
        # streamed run: each mini-batch's amplitudes arrive in a device ring slot (gpu/streaming.py)
        self.stream = st.amplitudes if isinstance(st.amplitudes, AmplitudeStream) else None
        if self.stream is not None and self.stream.chunk < min(b, n_pos):
            raise ValueError(f"the streaming ring holds {self.stream.chunk} patterns a slot, fewer than the "
                             f"mini-batch of {b}")
        self._refine_now = False
        if self._fits:
            self._setup_fits(shift)

    def iterate(self, iteration: int, update_probe: bool) -> IterationMetrics:
        st = self.state
        self._upload_order(st.rng.permutation(st.n_positions))
        m = st.modes_active
        self._refine_now = 0 < self.settings.position_refinement_from <= iteration
        if self._fits:
            self._fit_plans(m, self._refine_now)
        else:
            for b0 in range(0, st.n_positions, self.batch_size):
                self.plans.get(min(self.batch_size, st.n_positions - b0) * m, self.n)
        self._run(m, update_probe, lambda: self._launch_all(m, update_probe))
        metrics = self._metrics()
        self._adapt_step(metrics.error)  # -betaDecay: the next epoch's graph takes the new beta
        return metrics

    def _buffers_key(self, m: int, update_probe: bool) -> tuple[object, ...]:
        return (*super()._buffers_key(m, update_probe), self._refine_now, self.beta)  # beta: a graph argument

    def _launch_all(self, m: int, update_probe: bool) -> None:
        """One epoch: per mini-batch gather (which also resets the batch's sums), FFT, modulus, inverse FFT, scatter,
        probe sums (with the max of the object's normalisation), the five dot products per position, probe and
        object updates (each computing the optimal steps it needs). The probe alternates between the state's
        buffer and ``new_probe`` from batch to batch; an odd number of batches ends with one copy back."""
        if self._fits:
            self._launch_fits(m, update_probe, self._refine_now)
            return
        st, s = self.state, self.settings
        n, n2, w = self.n, self.n2, self.width
        mask, has_mask, stride = self.mask
        up = i32(1 if update_probe else 0)
        beta, delta = f32(self.beta), f32(s.delta_p)
        self.err.fill(0)
        rows, cols, order = self.rows32, self.cols32, self.order
        n_pos, bs, sm = st.n_positions, self.batch_size, self.stream
        probes = (st.probe, self.new_probe)
        if sm is not None:  # the epoch's first mini-batch, on the compute stream
            sm.fill(0, order, 0, min(bs, n_pos))
        for i, b0 in enumerate(range(0, n_pos, bs)):
            cnt = min(bs, n_pos - b0)
            probe = probes[i % 2] if update_probe else st.probe
            amp, amp_from = st.amplitudes, -1
            if sm is not None:  # this batch reads slot i % slots; the copy stream fills the next batch meanwhile
                amp, amp_from = sm.ring[i % sm.slots], b0
                if b0 + bs < n_pos:
                    sm.prefetch((i + 1) % sm.slots, order, b0 + bs, min(bs, n_pos - b0 - bs))
            chi = self.chi[: cnt * m * n2]
            rt.launch_jp("ls_gather", cnt, n2, (st.obj, probe, rows, cols, order, i32(b0), i32(cnt), i32(n), i32(w),
                                              i32(m), chi, self.num_o, self.den_o, self.acc, self.slots))
            self.plans.forward(chi, cnt * m, n)
            if sm is not None and i > 0:
                sm.wait(i % sm.slots)
            rt.launch_jp("ls_modulus", cnt, n2, (chi, amp, mask, has_mask, stride, order, i32(b0), i32(cnt),
                                               i32(n2), i32(m), f32(1.0 / n), f32(1.0 / n2), self.err,
                                               i32(amp_from)))
            self.plans.inverse(chi, cnt * m, n)
            rt.launch_jp("ls_scatter", cnt, n2, (chi, probe, rows, cols, order, i32(b0), i32(cnt), i32(n), i32(w),
                                               i32(m), self.num_o, self.den_o))
            if update_probe:
                rt.launch("ls_probe_reduce", n2, (chi, st.obj, self.den_o, rows, cols, order, i32(b0), i32(cnt),
                                                  i32(n), i32(w), i32(m), self.gp, self.dp, self.slots))
            else:
                rt.launch_jp("ls_den_max", cnt, n2, (self.den_o, rows, cols, order, i32(b0), i32(cnt), i32(n), i32(w),
                                                   self.slots))
            rt.launch("ls_dots", min(n2, rt.BLOCK * LS_DOTS_BLOCKS),
                      (chi, st.obj, probe, self.num_o, self.den_o, self.gp, self.dp, rows, cols, order, i32(b0),
                       i32(n), i32(w), i32(m), delta, self.slots, up, self.acc), grid_y=cnt)
            if update_probe:
                rt.launch("ls_probe_update", n2, (chi, st.obj, probe, self.dp, rows, cols, order, i32(b0),
                                                  i32(cnt), i32(n), i32(w), i32(m), beta, delta, self.slots,
                                                  self.acc, probes[(i + 1) % 2]))
            rt.launch_jp("ls_obj_update", cnt, n2, (chi, probe, self.den_o, rows, cols, order, i32(b0), i32(cnt),
                                                  i32(n), i32(w), i32(m), beta, delta, self.slots, self.acc, up,
                                                  st.obj))
        n_batches = -(-n_pos // bs)
        if update_probe and n_batches % 2 == 1:  # the last batch wrote new_probe
            rt.launch("copy_c64", m * n2, (self.new_probe, st.probe, i64(m * n2)))

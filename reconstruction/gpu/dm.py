"""Fast difference map: exit waves resident on the device, two transforms an iteration, fused kernels.

Per iteration (one CUDA graph): the probe update from the partial sums the previous iteration's psi update left
behind (probe first, with the current object), the object scatter-add with the new probe, the Fourier error of
phi on this iteration's eighth of the positions (``engines.dm.error_sample``), then chunk by chunk:
reflect (2 P O_j - psi), forward FFT, exact modulus projection with per-pattern error sums, inverse FFT, and one
update kernel that applies the relaxed weight, writes the new exit waves and (up to four probe modes) the next
probe update's partial sums. The chunks alternate between two streams (``PTYCHOPY_BENCH_DM_LANES=1``: one).
Equivalent to ``engines.dm.DM`` up to float32 rounding. Sub-pixel windows and position refinement: the kernels read
each window's moved probe through a window stride, and ``gpu/window_fits.py`` makes those probes, the probe
update's moved-back sums and the positions' steps. The flux fit (after the object update) and the Poisson model
(in place of the modulus projection): ``gpu/flux_noise.py``.
"""

from __future__ import annotations

from typing import Any

from ..bench_switches import bench_switch
from ..engines.base import EngineSettings, EngineState, IterationMetrics
from ..engines.dm import DM, REGULARISATION, error_sample_span, set_position_step
from . import runtime as rt
from .common import FastMixin, pinned_int32
from .flux_noise import FluxNoiseMixin
from .lsqml_fits import LF_SLOTS
from .runtime import f32, i32, i64
from .window_fits import DMWindowsMixin

FUSED_PROBE_MODES = 4  # dm_psi_update keeps this many modes' probe partial sums in registers
MODULUS_PIXELS_PER_THREAD = 16  # dm_modulus reduces per position: enough pixels a thread to amortise it


class FastDM(FastMixin, DMWindowsMixin, FluxNoiseMixin, DM):
    """DM in chunks of positions: exit waves stay resident, the far fields of a chunk share one buffer."""

    CHUNKS = 8  # positions are processed in about this many chunks (bounds the far-field buffers)

    def __init__(self, state: EngineState, settings: EngineSettings):  # noqa: D107 - no super().__init__
        self.state = state
        self.settings = settings
        self._setup_common()
        cp, st = self.cp, self.state
        n_pos, n, n2 = st.n_positions, self.n, self.n2
        self.mt = int(st.probe.shape[0])
        self.psi = cp.empty((n_pos, self.mt, n, n), dtype=cp.complex64)
        self.chunk = max(1, -(-n_pos // self.CHUNKS))
        self.starts = list(range(0, n_pos, self.chunk))
        # chunks alternate between lanes (a stream, a far-field buffer and FFT plans each) so that one chunk's
        # transforms overlap the other's element-wise kernels; PTYCHOPY_BENCH_DM_LANES=1 runs them in sequence
        self.lanes = max(1, min(2, int(bench_switch("DM_LANES", "2")), len(self.starts)))
        self.sample_size = error_sample_span(n_pos, 1)[0]  # the error sample uses the first lane's buffer
        size = max(self.chunk, self.sample_size) * self.mt * n2
        self.bufs = [cp.empty(size, dtype=cp.complex64) for _ in range(self.lanes)]
        self.buf = self.bufs[0]
        self.lane_plans = [self.plans] + [rt.FFTPlans() for _ in range(self.lanes - 1)]
        self.lane_streams = [cp.cuda.Stream(non_blocking=True) for _ in range(self.lanes)]
        self._fork = cp.cuda.Event(disable_timing=True)
        self._joins = [cp.cuda.Event(disable_timing=True) for _ in range(self.lanes)]
        self.acc4 = cp.zeros(4 * self.obj_size, dtype=cp.float32)  # object sums: num re, im, den, padding
        self.errp = cp.zeros(2 * n_pos, dtype=cp.float64)
        # one probe-partial segment per (chunk, y block) of dm_psi_update; the same y grid for every chunk
        self.gx = rt.grid_for(n2)
        last = n_pos - self.starts[-1]
        self.gy = int(max(1, min(last, 65535, (rt.sm_count() * 8) // self.gx)))
        self.nseg = len(self.starts) * self.gy
        self.pnum = cp.empty(self.nseg * self.mt * n2, dtype=cp.complex64)
        self.pden = cp.empty(self.nseg * n2, dtype=cp.float32)
        self.num_p = cp.empty(self.mt * n2, dtype=cp.complex64)
        self.den_p = cp.empty(n2, dtype=cp.float32)
        self.sample_start = cp.zeros(1, dtype=cp.int32)
        self._sample_host = pinned_int32(1)
        self._partials_fresh = False
        if settings.variable_intensity and st.intensity_scale is None:  # as engines.dm.DM
            st.intensity_scale = cp.ones(n_pos, dtype=cp.float32)
        self._setup_flux_noise(n_pos, self.chunk)  # the flux fit, the Poisson model (gpu/flux_noise.py)
        self.ident = cp.arange(n_pos, dtype=cp.int32)  # positions in their own order (the far-field kernels)
        # sub-pixel windows and position refinement (gpu/window_fits.py); the refiner as the reference DM's
        self.refiner = self._make_refiner()
        self._setup_windows()
        self._init_psi(1)

    def _init_psi(self, which: int) -> None:
        st = self.state
        if self._shift:  # the probe may have changed (modes seeded) since the moved probes were made
            self._moved_probes()
        rt.launch_jp("dm_reflect", st.n_positions, self.n2,
                     (self.psi, st.obj, *self._probe_args(), self.rows32, self.cols32, i32(0), i32(st.n_positions),
                      i32(self.n), i32(self.width), i32(self.mt), i32(self.mt), self.buf, i32(which)))
        self._partials_fresh = False

    def _positions_moved(self, old_corners: Any = None) -> None:
        """After the refiner moved positions: roll the exit waves of windows a gradient step moved (``old_corners``
        given; see ``engines.dm.DM._positions_moved``) and update the kernels' window corners."""
        if old_corners is not None:
            self._roll_exit_waves(old_corners)
        self._sync_corners()
        self._partials_fresh = False

    def _buffers_key(self, m: int, update_probe: bool) -> tuple[object, ...]:
        return (*super()._buffers_key(m, update_probe), self._refine_now)

    def modes_changed(self) -> None:
        # seeding re-orthogonalised mode 0 too: restart every mode's exit waves from P O_j (see DM.modes_changed)
        self._init_psi(1)

    def rotate_modes(self, transform: Any) -> None:
        """Keep psi consistent with the orthogonalised probe (see ``engines.dm.DM.rotate_modes``)."""
        from ..physics.modes import rotate_mode_stack

        rotate_mode_stack(self.cp, self.psi, transform)
        self._partials_fresh = False

    def object_changed(self) -> None:
        """The driver changed the object between iterations (phase constraint): recompute the probe sums."""
        self._partials_fresh = False

    def _fused(self, m: int) -> bool:
        return m <= FUSED_PROBE_MODES and not self._shift

    def iterate(self, iteration: int, update_probe: bool) -> IterationMetrics:
        m = self.state.modes_active
        refine = self.refiner is not None and self.refiner.refining(iteration)
        if refine and self.refiner.begin_epoch(self.state.lit_probes):  # a coarse move takes its exit waves along
            self._positions_moved()
        if refine:  # as engines.dm.DM.iterate: the probe held in the affine phase, the step's share by that
            update_probe = update_probe and not self.refiner.holds_probe(iteration)
            set_position_step(self.refiner, update_probe)
        for c, j0 in enumerate(self.starts):
            self.lane_plans[c % self.lanes].get(min(self.chunk, self.state.n_positions - j0) * m, self.n)
        self.plans.get(self.sample_size * m, self.n)
        if self._shift:
            self._plan_windows(m)
        # the kernels' step terms only in an epoch that steps and fits no deformation (that epoch takes the
        # reference's terms: window_fits.DMWindowsMixin._end_refining_epoch)
        self._refine_now = refine and self.refiner.collecting() and not self.refiner.affine_phase()
        self._sample_host[0] = error_sample_span(self.state.n_positions, iteration)[1]
        self.sample_start.set(self._sample_host)
        if update_probe and self._fused(m) and not self._partials_fresh:
            self._probe_partials(m)
        self._run(m, update_probe, lambda: self._launch_all(m, update_probe))
        self._partials_fresh = True
        if refine:
            self._end_refining_epoch()
        return self._metrics()

    def _probe_partials(self, m: int) -> None:
        st = self.state
        rt.launch("dm_probe_partial", self.n2,
                  (self.psi, st.obj, self.rows32, self.cols32, i32(st.n_positions), i32(self.n), i32(self.width),
                   i32(m), i32(self.mt), i32(self.nseg), self.pnum, self.pden, self._scale_arg()), grid_y=self.nseg)

    def _launch_all(self, m: int, update_probe: bool) -> None:
        st, n, n2, w = self.state, self.n, self.n2, self.width
        n_pos, mt = st.n_positions, self.mt
        fused = self._fused(m)
        self.err.fill(0)
        self.errp.fill(0)
        self.slots.fill(0)
        if self._fits:
            self.noise_acc.fill(0)
            if self._flux:
                self.flux_sums.fill(0)
        # 1. overlap projection: probe (from the partial sums of the current exit waves and object), then object
        if update_probe:
            if not fused:
                self._probe_partials(m)
            rt.launch("dm_probe_reduce", n2, (self.pnum, self.pden, i32(self.nseg), i32(n2), i32(m), self.num_p,
                                              self.den_p, self.slots[1:2]))
            num_p = self._moved_back_probe_sum(m) if self._shift else self.num_p
            rt.launch("dm_probe_divide", n2, (num_p, self.den_p, i32(n2), i32(m), f32(REGULARISATION),
                                              self.slots[1:2], st.probe))
        if self._shift:
            self._moved_probes()
        probe = self._probe_args()
        rt.launch_jp("dm_scatter", n_pos, n2, (self.psi, *probe, self.rows32, self.cols32, i32(n_pos), i32(n),
                                               i32(w), i32(m), i32(mt), self.acc4))
        rt.launch("dm_den_max", self.obj_size, (self.acc4, i64(self.obj_size), self.slots[0:1]))
        rt.launch("dm_obj_divide", self.obj_size, (self.acc4, st.obj, i64(self.obj_size), f32(REGULARISATION),
                                                   self.slots[0:1]))
        if self._flux:  # c_j fitted to the exit waves, mean 1; the probe (and the moved probes) take the mean
            rt.launch_jp("nf_dm_flux_sums", n_pos, n2, (self.psi, st.obj, probe[0], probe[1], self.rows32,
                                                        self.cols32, i32(n_pos), i32(n), i32(w), i32(m), i32(mt),
                                                        self.flux_sums))
            self._normalise_flux(True, *([(self.pj, int(self.pj.size))] if self._shift else []))
        # 2. the Fourier error of phi on this iteration's sample of positions
        mask, has_mask, stride = self.mask
        cnt = self.sample_size
        rt.launch_jp("dm_sample_gather", cnt, n2, (st.obj, *probe, self.rows32, self.cols32, self.sample_start,
                                                   i32(n_pos), i32(cnt), i32(n), i32(w), i32(m), self.buf))
        self.plans.forward(self.buf[: cnt * m * n2], cnt * m, n)
        rt.launch_jp("dm_sample_error", cnt, n2, (self.buf, st.amplitudes, mask, has_mask, stride, self.sample_start,
                                                  i32(n_pos), i32(cnt), i32(n2), i32(m), f32(1.0 / n), self.err))
        # 3. psi <- psi + P_R(2 phi - psi) - phi, chunk by chunk, the chunks alternating between the lanes
        relax2 = f32(self.settings.dm_relax ** 2)
        main = self.cp.cuda.get_current_stream()
        main.record(self._fork)
        for lane in self.lane_streams:
            lane.wait_event(self._fork)
        for c, j0 in enumerate(self.starts):
            lane = c % self.lanes
            cnt = min(self.chunk, n_pos - j0)
            buf, plans = self.bufs[lane], self.lane_plans[lane]
            with self.lane_streams[lane]:
                rt.launch_jp("dm_reflect", cnt, n2, (self.psi, st.obj, *probe, self.rows32, self.cols32, i32(j0),
                                                     i32(cnt), i32(n), i32(w), i32(m), i32(mt), buf, i32(0)))
                plans.forward(buf[: cnt * m * n2], cnt * m, n)
                gx = max(1, -(-n2 // (rt.BLOCK * MODULUS_PIXELS_PER_THREAD)))
                gy = int(max(1, min(cnt, 65535, (rt.sm_count() * 8) // gx)))
                if self._poisson:  # the likelihood step (gpu/flux_noise.py): buf then holds F[Psi alpha g] / n2
                    self._far_field_step(buf, self.ident, j0, cnt, m, st.amplitudes, -1, False, cnt * m * n2,
                                         self.noise_acc[j0 * LF_SLOTS:], self.noise_err, lane)
                else:
                    rt.kernel("dm_modulus")((gx, gy), (rt.BLOCK,), (buf, st.amplitudes, mask, has_mask, stride,
                                                                    i32(j0), i32(cnt), i32(n2), i32(m),
                                                                    f32(1.0 / n), f32(1.0 / n2), self.errp))
                plans.inverse(buf[: cnt * m * n2], cnt * m, n)
                rt.kernel("dm_psi_update")(
                    (self.gx, self.gy), (rt.BLOCK,),
                    (self.psi, st.obj, *probe, self.rows32, self.cols32, i32(j0), i32(cnt), i32(n), i32(w), i32(m),
                     i32(mt), buf, self.errp, relax2, i32(1 if fused else 0), i32(c * self.gy), self.pnum,
                     self.pden, i32(1 if self._poisson else 0)))
                if self._refine_now:  # this chunk's position-step terms from phi = P_j O_j
                    self._step_terms(lane, j0, cnt, m)
        for lane, done in zip(self.lane_streams, self._joins, strict=True):
            lane.record(done)
            main.wait_event(done)

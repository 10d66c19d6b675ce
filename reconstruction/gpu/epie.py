"""Fast true-sequential ePIE: every per-position step of an epoch in CUDA graphs replayed with each new order."""

from __future__ import annotations

from typing import Any

from ..bench_switches import bench_switch_on
from ..engines.base import EngineSettings, EngineState, IterationMetrics
from ..engines.epie import EPIE
from ..memory_plan import EPIE_STEPS_PER_GRAPH  # bounds capture memory for huge scans
from . import columns
from . import runtime as rt
from .common import FastMixin, pinned_int32
from .flux_noise import FluxNoiseMixin
from .lsqml_fits import LF_SLOTS
from .runtime import f32, i32, i64
from .streaming import AmplitudeStream
from .window_fits import EPIEWindowsMixin

COLS_SIZES = (64, 128, 256)  # the split transform is faster for ePIE up to 256^2, slower at 512^2 (RESULTS.md)


class FastEPIE(FastMixin, EPIEWindowsMixin, FluxNoiseMixin, EPIE):
    """True sequential ePIE, one CUDA graph per chunk of steps. Launches a position: four for 64^2-256^2 (cuFFT
    rows, ``epie_cols``, cuFFT inverse rows, update fused with the next gather), six at other sizes (cuFFT's 2-D
    transforms and ``epie_modulus`` instead of the middle three), five with ``PTYCHOPY_BENCH_EPIE_FUSED=0``; with
    sub-pixel windows or position refinement the steps of ``gpu/window_fits.py``; with the flux fit or the Poisson
    model the far-field step of ``gpu/flux_noise.py`` (2-D transforms, the update taking the difference)."""

    def __init__(self, state: EngineState, settings: EngineSettings):
        super().__init__(state, settings)
        self._setup_common()
        cp, st = self.cp, self.state
        mt = int(st.probe.shape[0])
        self.order = cp.zeros(st.n_positions, dtype=cp.int32)
        self._order_host = pinned_int32(st.n_positions)
        self.psi = cp.empty((mt, self.n, self.n), dtype=cp.complex64)
        self.opatch = cp.empty((self.n, self.n), dtype=cp.complex64)
        self.fused = bench_switch_on("EPIE_FUSED")
        if self.fused:  # ping-pong partners of psi, opatch and the probe for epie_update_gather
            self.psi_b = cp.empty_like(self.psi)
            self.opatch_b = cp.empty_like(self.opatch)
            self.probe_b = cp.empty_like(st.probe)
        self.err_blocks = rt.grid_for(self.n2)  # epie_modulus's grid: one partial error pair per block
        self._setup_flux_noise(st.n_positions, 1)  # the flux fit, the Poisson model (gpu/flux_noise.py)
        # the modulus fused with the column half of the transform (kernels/columns.cu): 4 launches a position
        self.cols = self.fused and not self._fits and columns.applies(self.n, mt, "EPIE_COLS", COLS_SIZES)
        if self.cols:
            self.twiddles = columns.twiddles(self.n)
            columns.reserve_shared(self.n, mt)
        self.err_partial = cp.zeros(2 * self.err_blocks, dtype=cp.float64)
        # streamed run: amplitudes arrive chunk by chunk in a device ring, one graph per chunk
        self.stream = st.amplitudes if isinstance(st.amplitudes, AmplitudeStream) else None
        self.chunk = self.stream.chunk if self.stream is not None else EPIE_STEPS_PER_GRAPH
        self._setup_windows()  # sub-pixel windows and position refinement (gpu/window_fits.py)

    def iterate(self, iteration: int, update_probe: bool) -> IterationMetrics:
        st = self.state
        refine, update_probe, done = self._refining_epoch(iteration, update_probe)
        if done is not None:  # an epoch that fits the scan's deformation: the reference step ran
            return done
        self._upload_order(st.rng.permutation(st.n_positions))  # the reference engine's draw
        m = st.modes_active
        self.plans.get(m, self.n)
        if refine:
            self.plans.get(3 * m, self.n)
        if self.cols:
            self.plans.get(m * self.n, self.n, rows_only=True)
        self._refine_now = refine
        self._run(m, update_probe, lambda: self._launch_chunks(m, update_probe))
        if refine:
            self._end_refining_epoch()
        return self._metrics()

    def _buffers_key(self, m: int, update_probe: bool) -> tuple[object, ...]:
        return (*super()._buffers_key(m, update_probe), self._refine_now)

    def _chunks(self) -> list[tuple[int, int]]:
        n_pos = self.state.n_positions
        return [(s0, min(n_pos, s0 + self.chunk)) for s0 in range(0, n_pos, self.chunk)]

    def _capture(self, runner: rt.GraphRunner, m: int, update_probe: bool) -> None:
        for s0, s1 in self._chunks():
            runner.record(lambda s0=s0, s1=s1: self._launch_chunk(s0, s1, m, update_probe))

    def _launch_chunks(self, m: int, update_probe: bool) -> None:
        for s0, s1 in self._chunks():
            self._launch_chunk(s0, s1, m, update_probe)

    def _launch_chunk(self, s0: int, s1: int, m: int, update_probe: bool) -> None:
        """Steps s0..s1-1. Streamed: their amplitudes are in ring slot k % slots (k = s0 // chunk; the first chunk
        of an epoch is filled here on the compute stream), and the copy stream fills the next chunk meanwhile;
        the chunk ends by waiting for that fill, so each chunk's graph is self-contained."""
        sm = self.stream
        n_pos = self.state.n_positions
        if sm is None:
            self._launch_steps(s0, s1, m, update_probe, self.state.amplitudes, -1)
        else:
            k = s0 // self.chunk
            slot, nxt = k % sm.slots, (k + 1) % sm.slots
            if s0 == 0:
                sm.fill(slot, self.order, s0, s1 - s0)
            if s1 < n_pos:
                sm.prefetch(nxt, self.order, s1, min(n_pos, s1 + self.chunk) - s1)
            self._launch_steps(s0, s1, m, update_probe, sm.ring[slot], s0)
            if s1 < n_pos:
                sm.wait(nxt)
        if s1 == n_pos and self._flux:  # the factors' mean goes into the probe (engines.base.normalise_flux)
            self._normalise_flux(False)

    def _launch_steps(self, s0: int, s1: int, m: int, update_probe: bool, amp: Any, amp_from: int) -> None:
        """amp: (N, n, n) device amplitudes (amp_from = -1) or a ring slot holding steps amp_from.. (streamed)."""
        if self._shift:
            self._launch_steps_windows(s0, s1, m, update_probe, amp, amp_from)
            return
        if self.fused:
            self._launch_steps_fused(s0, s1, m, update_probe, amp, amp_from)
            return
        st, n, n2 = self.state, self.n, self.n2
        if s0 == 0:
            self._reset_epoch_sums()
        psi = self.psi[:m]
        up = i32(1 if update_probe else 0)
        for s in range(s0, s1):
            slot = i32(s & 1)
            rt.launch("epie_gather", n2, (st.obj, st.probe, self.rows32, self.cols32, self.order, i32(s), i32(n),
                                          i32(self.width), i32(m), psi, self.opatch, self.slots, slot))
            self.plans.forward(psi, m, n)
            self._modulus(psi, m, s, -1, amp, amp_from)
            self.plans.inverse(psi, m, n)
            self._update((st.obj, st.probe, psi, self.opatch, self.rows32, self.cols32, self.order, i32(s), i32(n),
                          i32(self.width), i32(m), self.slots, slot, up))
        if s1 == st.n_positions and not self._fits:
            rt.kernel("sum_partials")((1,), (256,), (self.err_partial, i32(self.err_blocks), self.err))

    def _reset_epoch_sums(self) -> None:
        """Zero the epoch's error sums, the maxima slots and (flux fit, Poisson) the steps' sums."""
        self.err_partial.fill(0)
        self.slots.fill(0)
        if self._fits:
            self.err.fill(0)
            self.noise_acc.fill(0)
            if self._flux:
                self.flux_sums.fill(0)

    def _update(self, args: tuple[Any, ...]) -> None:
        """Step s's update (the arguments of epie_update): the plain kernel, or with the flux fit or the Poisson
        model epie_update_fit, which also takes the factors (or null) and diff = 1 (psi holds the difference D of
        gpu/flux_noise.py). The plain kernels are compiled without those arguments: their branches and registers
        cost plain ePIE 2.6 % on the H100 (RESULTS.md)."""
        if self._fits:
            rt.launch("epie_update_fit", self.n2, (*args, self._scale_arg(), i32(1)))
        else:
            rt.launch("epie_update", self.n2, args)

    def _update_gather(self, args: tuple[Any, ...]) -> None:
        """Step s's update fused with step s+1's gather (the arguments of epie_update_gather): the plain kernel
        or epie_update_gather_fit, as in ``_update``."""
        if self._fits:
            rt.launch("epie_update_gather_fit", self.n2, (*args, self._scale_arg(), i32(1)))
        else:
            rt.launch("epie_update_gather", self.n2, args)

    def _modulus(self, psi: Any, m: int, s: int, reset_slot: int, amp: Any, amp_from: int) -> None:
        """Step s's far-field step on the spectra ``psi`` (m planes), resetting maxima slot ``reset_slot`` (>= 0)
        for the next step: epie_modulus, or with the flux fit or the Poisson model the step of gpu/flux_noise.py,
        which leaves the difference."""
        n, n2 = self.n, self.n2
        if not self._fits:
            rt.launch("epie_modulus", n2, (psi, amp, *self.mask, self.order, i32(s), i32(n2), i32(m), f32(1.0 / n),
                                           f32(1.0 / n2), self.err_partial, self.slots, i32(reset_slot),
                                           i32(amp_from)))
            return
        if reset_slot >= 0:
            self.slots[2 * reset_slot:2 * reset_slot + 2].fill(0)
        if self._flux:
            self._epie_flux_fit(psi, m * n2, self.order, s, m, amp, amp_from)
        self._far_field_step(psi, self.order, s, 1, m, amp, amp_from, False, m * n2,
                             self.noise_acc[s * LF_SLOTS:], self.err)

    def _launch_steps_fused(self, s0: int, s1: int, m: int, update_probe: bool, amp: Any, amp_from: int) -> None:
        """Per position the transform and modulus (four launches with the column kernel, else cuFFT 2-D forward,
        modulus, inverse), then the update of this step fused with the gather of the next; buffers alternate
        between steps (even steps use the state's probe)."""
        st, n, n2, w = self.state, self.n, self.n2, self.width
        n_pos = st.n_positions
        up = i32(1 if update_probe else 0)
        psi = (self.psi[:m], self.psi_b[:m])
        opatch = (self.opatch, self.opatch_b)
        probe = (st.probe, self.probe_b)
        if s0 == 0:
            self._reset_epoch_sums()
            rt.launch("epie_gather", n2, (st.obj, st.probe, self.rows32, self.cols32, self.order, i32(0), i32(n),
                                          i32(w), i32(m), psi[0], opatch[0], self.slots, i32(0)))
        for s in range(s0, s1):
            a, b = s & 1, (s + 1) & 1
            if self.cols:
                self._modulus_by_columns(psi[a], m, s, b, amp, amp_from, 0)
            else:
                self.plans.forward(psi[a], m, n)
                self._modulus(psi[a], m, s, b, amp, amp_from)
                self.plans.inverse(psi[a], m, n)
            if s + 1 < n_pos:
                self._update_gather((st.obj, probe[a], probe[b], psi[a], opatch[a], psi[b], opatch[b], self.rows32,
                                     self.cols32, self.order, i32(s), i32(n), i32(w), i32(m), self.slots, up))
            else:
                self._update((st.obj, probe[a], psi[a], opatch[a], self.rows32, self.cols32, self.order, i32(s),
                              i32(n), i32(w), i32(m), self.slots, i32(a), up))
                if a == 1:
                    rt.launch("copy_c64", m * n2, (self.probe_b, st.probe, i64(m * n2)))
                if not self._fits:
                    rt.kernel("sum_partials")((1,), (256,), (self.err_partial, i32(self.err_blocks), self.err))

    def _modulus_by_columns(self, psi: Any, m: int, s: int, reset_slot: int, amp: Any, amp_from: int,
                            mode: int) -> None:
        """Row transforms (cuFFT, 1-D), then epie_cols: the column transforms, the modulus and the inverse column
        transforms in one launch; then the inverse row transforms. ``mode`` 1 stops after the forward column
        transforms (psi then holds the unnormalised 2-D transform; for tests)."""
        n = self.n
        mask, has_mask, stride = self.mask
        self.plans.forward_rows(psi, m * n, n)
        blocks, threads, shared = columns.launch_shape(n, m)
        rt.kernel("epie_cols")((blocks,), (threads,),
                               (psi, amp, mask, has_mask, stride, self.order, i32(s), i32(n), i32(m), f32(1.0 / n),
                                f32(1.0 / self.n2), self.err_partial, self.slots, i32(reset_slot), i32(amp_from),
                                self.twiddles, i32(mode)), shared_mem=shared)
        if mode == 0:
            self.plans.inverse_rows(psi, m * n, n)

"""Sub-pixel windows and position refinement of the fast ePIE and DM (kernels/window_fits.cu, with the kernels of
kernels/lsqml_fits.cu that the fast LSQML uses for the same options: lf_shift, lf_gather, lf_modulus, lf_gp_sum).

Both keep the semantics of the reference engines (``engines/epie.py``, ``engines/dm.py``) and their
:class:`~reconstruction.engines.position_refiner.PositionRefiner`, which runs on the device through CuPy: the
kernels gather each position's step terms (Re<P dO, chi> and what the moduli see of a move, by Parseval from the
far fields already in hand: ``LF_SLOTS`` 5-8 of lf_modulus), and the refiner takes the steps at the epoch's end
(median damping, the clip, the held affine terms removed), runs the coarse whole-pixel search at the start of its
first epochs, and fits the scan's affine deformation. An ePIE epoch that fits the deformation runs the reference
ePIE step on CuPy: it needs each window's 12 x 12 Gauss-Newton terms (``physics/position_update.py``), which the
kernels do not gather. DM fits no deformation (``engines/dm.py``).

- DM: after the probe update, the moved probes of every window (the probe's spectrum times each window's ramp,
  one inverse transform per window and mode), which the DM kernels read through a window stride; the probe update
  moves each window's conj(O_j) psi_j back in Fourier space and sums them (lf_gp_sum); with refinement, each
  chunk's step terms from phi = P_j O_j after its exit-wave update, on the chunk's lane (lf_gather, one transform
  of phi and its two moved gradients, lf_modulus).
- ePIE: the probe is kept as its unnormalised spectrum during the epoch. Each step moves it by the position's
  ramp (one inverse transform), gathers psi (and with refinement its two moved gradients), transforms them at once,
  lf_modulus returns the difference psi' - psi and the step terms, and the update's probe step, transformed, goes
  back into the spectrum through the conjugate ramp (wf_spectrum_add); at the epoch's end the probe is the
  spectrum's inverse transform. As the reference ePIE's, the step weighs the moved gradients by the share of the
  light the other windows bring (wf_epie_gather, from the refiner's ``step_illumination``).

Whole-pixel positions without refinement keep the plain kernels (:func:`.lsqml_fits.windows_shift`): bit for
bit the run without sub-pixel windows. Agreement with the reference engines: ``tests/gpu/test_window_fits.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..engines.dm import DM, set_step_cadence
from ..engines.epie import EPIE
from ..physics import patches
from . import runtime as rt
from .lsqml_fits import FIT_BLOCKS, LF_SLOTS, windows_shift
from .runtime import f32, i32, i64

#: the run options (run_plan.RUN_OPTIONS) this module adds to the fast ePIE and DM
WINDOW_OPTIONS = frozenset({"subpixel_windows", "position_refinement", "position_affine", "coarse_search"})


def collect_step_terms(refiner: Any, idx: Any, fit_acc: Any) -> None:
    """Hand the step terms of positions ``idx`` (N,) in ``fit_acc`` (N * LF_SLOTS, row q of position idx[q]) to the
    refiner, whose ``end_epoch`` then moves them all at once."""
    acc = fit_acc[: len(idx) * LF_SLOTS].reshape(len(idx), LF_SLOTS)
    refiner.collect(idx, acc[:, 5:7], acc[:, 7:9])


class WindowsMixin:
    """What both engines' sub-pixel paths share: whether windows move the probe, the corners' int32 copies."""

    state: Any
    settings: Any
    cp: Any
    rows32: Any
    cols32: Any
    refiner: Any

    def _setup_shift(self) -> bool:
        st, cp = self.state, self.cp
        self._shift = windows_shift(self.settings, st.positions_px, st.rows, st.cols, cp)
        self._refine_now = False
        self._null = np.uint64(0)
        if self._shift:
            for name in ("rows", "cols"):  # the refiner writes the corners in place, the kernels read rows32/cols32
                setattr(st, name, cp.ascontiguousarray(getattr(st, name)))
        return self._shift

    def _sync_corners(self) -> None:
        """The kernels' int32 window corners after the refiner moved positions (in place: graphs hold them)."""
        self.rows32[...] = self.state.rows
        self.cols32[...] = self.state.cols


class DMWindowsMixin(WindowsMixin):
    """The fast DM's sub-pixel windows and position refinement (see the module docstring); mixed into FastDM."""

    n: int
    n2: int
    mt: int
    width: int
    obj_size: int
    plans: Any
    psi: Any
    starts: list[int]
    chunk: int
    bufs: list[Any]
    buf: Any
    lane_plans: list[Any]
    mask: Any
    _positions_moved: Any  # FastDM's: roll the exit waves of moved windows, update the corners
    _lit_probes: Any  # engines.dm.DM's: the moved probes times the factors c_j
    ident: Any  # FastDM's: (N,) int32 0 .. N-1, the positions in their own order
    _scale_arg: Any  # gpu/flux_noise.py's FluxNoiseMixin: the factors or a null pointer

    def _setup_windows(self) -> None:
        if not self._setup_shift():
            return
        cp, st = self.cp, self.state
        n_pos, size = st.n_positions, self.mt * self.n2
        self.pj = cp.empty(n_pos * size, dtype=cp.complex64)  # the moved probes, or the probe update's terms
        self.pspec = cp.empty(size, dtype=cp.complex64)
        self.gspec = cp.empty(size, dtype=cp.complex64)
        if self.refiner is not None:
            self.fit_acc = cp.zeros(n_pos * LF_SLOTS, dtype=cp.float64)
            self.phi_sums = cp.zeros(2, dtype=cp.float64)  # ||psi - phi||^2, ||phi||^2 at a refining epoch's end
            self._scratch = (cp.empty(self.obj_size, dtype=cp.complex64), cp.empty(self.obj_size, dtype=cp.float32),
                             cp.zeros(4, dtype=cp.uint32), cp.zeros(2, dtype=cp.float64))
            self.bufs = [cp.empty(3 * b.size, dtype=cp.complex64) for b in self.bufs]  # phi and its two moves
            self.buf = self.bufs[0]
        self._plan_windows(1)
        self._moved_probes()

    def _probe_args(self) -> tuple[Any, Any, Any]:
        """(probe, window stride, amplitude factors) as the DM kernels read it: the moved probes, or the probe
        (stride 0); the factors c_j (-variableIntensity) or a null pointer."""
        scale = self._scale_arg()
        if self._shift:
            return self.pj, i64(self.mt * self.n2), scale
        return self.state.probe, i64(0), scale

    def _chunks(self) -> list[tuple[int, int, int]]:
        n_pos = self.state.n_positions
        return [(c, j0, min(self.chunk, n_pos - j0)) for c, j0 in enumerate(self.starts)]

    def _plan_windows(self, m: int) -> None:
        """Create (outside any capture) the cuFFT plans of the sub-pixel path with ``m`` active modes."""
        n = self.n
        self.plans.get(self.mt, n)
        self.plans.get(m, n)
        for c, _, cnt in self._chunks():
            self.plans.get(cnt * self.mt, n)
            self.plans.get(cnt * m, n)
            if self.refiner is not None:
                self.lane_plans[c % len(self.lane_plans)].get(3 * cnt * m, n)

    def _moved_probes(self) -> None:
        """pj[j] = every probe mode moved by position j's fraction: ifft(fft(P) ramp_j)."""
        st, n, n2, mt = self.state, self.n, self.n2, self.mt
        rt.launch("copy_c64", mt * n2, (st.probe, self.pspec, i64(mt * n2)))
        self.plans.forward(self.pspec, mt, n)
        rt.launch_jp("lf_shift", st.n_positions, n2, (self.pspec, st.positions_px, self.rows32, self.cols32,
                                                      self.ident, i32(0), i32(st.n_positions), i32(n), i32(mt),
                                                      f32(1.0 / n2), self.pj))
        for _, j0, cnt in self._chunks():
            self.plans.inverse(self.pj[j0 * mt * n2:(j0 + cnt) * mt * n2], cnt * mt, n)

    def _moved_back_probe_sum(self, m: int) -> Any:
        """(m n2) the probe update's numerator sum_j F^-1[F(conj(O_j) psi_j) conj(ramp_j)] (the moved probes'
        buffer holds the windows' terms meanwhile; the moved probes are made again after the update)."""
        st, n, n2, w = self.state, self.n, self.n2, self.width
        for _, j0, cnt in self._chunks():
            g = self.pj[j0 * m * n2:(j0 + cnt) * m * n2]
            rt.launch("wf_dm_conj_obj", cnt * n2, (self.psi, st.obj, self.rows32, self.cols32, i32(j0), i32(cnt),
                                                     i32(n), i32(w), i32(m), i32(self.mt), g, self._scale_arg()))
            self.plans.forward(g, cnt * m, n)
        rt.launch("lf_gp_sum", n2, (self.pj, st.positions_px, self.rows32, self.cols32, self.ident, i32(0),
                                    i32(st.n_positions), i32(n), i32(m), f32(1.0 / n2), self._null, i32(0),
                                    self.gspec))
        self.plans.inverse(self.gspec[: m * n2], m, n)
        return self.gspec

    def _step_terms(self, lane: int, j0: int, cnt: int, m: int) -> None:
        """The step terms of positions j0..j0+cnt-1 from phi = P_j O_j (on the chunk's lane, after its update)."""
        st, n, n2 = self.state, self.n, self.n2
        mask, has_mask, stride = self.mask
        buf, plans = self.bufs[lane], self.lane_plans[lane]
        plane = cnt * m * n2
        num_s, den_s, slots_s, err_s = self._scratch
        acc = self.fit_acc[j0 * LF_SLOTS:]
        rt.launch_jp("lf_gather", cnt, n2, (st.obj, self.pj[j0 * self.mt * n2:], i64(self.mt * n2), self._scale_arg(),
                                            self.rows32, self.cols32, self.ident, i32(j0), i32(cnt), i32(n),
                                            i32(self.width), i32(m), i32(1), i64(plane), buf, num_s, den_s, acc,
                                            slots_s, self._null))  # DM's steps are not weighed (engines/dm.py)
        plans.forward(buf[: 3 * plane], 3 * cnt * m, n)
        rt.kernel("lf_modulus")((min(FIT_BLOCKS, -(-n2 // rt.BLOCK)), cnt), (rt.BLOCK,), (
            buf, st.amplitudes, mask, has_mask, stride, self.ident, i32(j0), i32(n2), i32(m), f32(1.0 / n),
            f32(1.0 / n2), err_s, i32(-1), i32(1), i64(plane), i32(0), self._null, acc))

    def _window_probes(self, m: int) -> Any:
        """(N, m, n, n) the moved probes (before the factors c_j) of each window now (a view of ``pj``;
        ``engines.dm``)."""
        if not self._shift:
            return self.state.probe[None, :m]
        return self.pj.reshape(self.state.n_positions, self.mt, self.n, self.n)[:, :m]

    def _end_refining_epoch(self) -> None:
        """Every position takes its step (the refiner, on the device; in every epoch or, while the exit waves' memory
        is large, every 8th: ``engines.dm.set_step_cadence``); as in ``engines.dm.DM._refine_positions``, moved windows
        roll their exit waves' memory psi - phi and the overlap-consistent part phi follows each move. Two passes over
        the exit waves (wf_dm_phi_add: psi - phi with the memory's share, then + phi at the new places) where the
        reference rolls phi too and takes its difference. An epoch fitting the deformation takes the reference's
        terms (the kernels' are not computed). An epoch that moves no position (no steps: the cadence; no fit) reads
        the exit waves once for the memory's share, writes nothing and makes no moved probes: the positions and so
        phi are where they were (where the reference adds new_phi - old_phi = 0)."""
        st, cp = self.state, self.cp
        m = st.modes_active
        if self.refiner.affine_phase():
            obj_patches = patches.extract_patches(cp, st.obj, st.window_idx())
            lit = self._lit_probes(m)  # times c_j with the flux fit, as engines.dm.DM's phi
            DM._collect_position_terms(self, lit * obj_patches[:, None], obj_patches, lit)  # type: ignore[arg-type]
        elif self._refine_now:
            collect_step_terms(self.refiner, self.ident, self.fit_acc)
        moves = self.refiner.end_epoch_moves()
        corners = cp.stack([st.rows, st.cols], axis=1) if moves else None
        self.phi_sums.fill(0)
        self._phi_add(m, -1.0, self.phi_sums, store=moves)
        memory, phi = (float(v) for v in self.phi_sums.get())
        set_step_cadence(self.refiner, float(np.sqrt(memory)) / (float(np.sqrt(phi)) + 1e-30))  # the next epoch's
        self.refiner.end_epoch()
        if not moves:
            return
        self._positions_moved(corners)  # the memory of moved windows rolled, the kernels' corners
        self._moved_probes()  # at the new positions, for the new phi
        self._phi_add(m, 1.0, self._null)

    def _phi_add(self, m: int, sign: float, sums: Any, store: bool = True) -> None:
        """psi[:, :m] += sign phi, phi = c_j P_j O_j at the windows' corners now (wf_dm_phi_add; ``sums`` (2,) float64
        or a null pointer: ||psi - phi||^2 and ||phi||^2 added; ``store`` False: the sums only, psi unchanged)."""
        st = self.state
        probe, stride, scale = self._probe_args()
        n_pos = st.n_positions
        rt.launch("wf_dm_phi_add", n_pos * self.n2, (self.psi, probe, stride, st.obj, self.rows32, self.cols32,
                                                     i32(n_pos), i32(self.n), i32(self.width), i32(m), i32(self.mt),
                                                     scale, f32(sign), sums, i32(1 if store else 0)))


class EPIEWindowsMixin(WindowsMixin):
    """The fast ePIE's sub-pixel windows and position refinement (see the module docstring); mixed into FastEPIE."""

    n: int
    n2: int
    width: int
    plans: Any
    order: Any
    opatch: Any
    slots: Any
    err: Any
    mask: Any
    _flux: bool  # gpu/flux_noise.py's FluxNoiseMixin: the flux fit, the far-field step
    flux_sums: Any
    _epie_flux_fit: Any
    _far_field_step: Any
    _scale_arg: Any

    def _setup_windows(self) -> None:
        if not self._setup_shift():
            return
        cp, st = self.cp, self.state
        size = int(st.probe.shape[0]) * self.n2
        self.pspec = cp.empty(size, dtype=cp.complex64)  # the probe's unnormalised spectrum during an epoch
        self.pj1 = cp.empty(size, dtype=cp.complex64)  # this step's moved probe
        self.pstep = cp.empty(size, dtype=cp.complex64)  # this step's probe step, then its spectrum
        self.psi3 = cp.empty((3 if self.refiner is not None else 1) * size, dtype=cp.complex64)
        self.fit_acc = cp.zeros(st.n_positions * LF_SLOTS, dtype=cp.float64)  # by visiting step

    def _refining_epoch(self, iteration: int, update_probe: bool) -> tuple[bool, bool, Any]:
        """Begin the epoch's refinement: (refine, update_probe, metrics). An epoch that fits the scan's deformation
        runs the reference step on CuPy (metrics not None: the epoch is done)."""
        refiner = self.refiner
        if refiner is None or not refiner.refining(iteration):
            return False, update_probe, None
        if refiner.next_epoch_fits_deformation():
            metrics = EPIE.iterate(self, iteration, update_probe)  # type: ignore[arg-type]
            self._sync_corners()
            return True, update_probe, metrics
        refiner.begin_epoch(self.state.lit_probes)
        self._sync_corners()
        return True, update_probe and not refiner.holds_probe(iteration), None

    def _end_refining_epoch(self) -> None:
        collect_step_terms(self.refiner, self.order, self.fit_acc)
        self.refiner.end_epoch()
        self._sync_corners()

    def _launch_steps_windows(self, s0: int, s1: int, m: int, update_probe: bool, amp: Any, amp_from: int) -> None:
        """Steps s0..s1-1 with moved probes (module docstring): per step lf_shift, inverse transform, gather,
        one transform of psi (and its two moved gradients), the far-field step (lf_modulus; with the flux fit or the
        Poisson model gpu/flux_noise.py's), inverse transform, update, and with the probe update the step's
        transform and wf_spectrum_add."""
        st, n, n2, w = self.state, self.n, self.n2, self.width
        refine = self._refine_now
        planes, plane = (3 if refine else 1), m * n2
        psi, pos = self.psi3[: planes * plane], st.positions_px
        corners = (self.rows32, self.cols32, self.order)
        up = i32(1 if update_probe else 0)
        # with refinement the moves' object gradients weighed by the other windows' share of the light (the refiner's
        # map, filled in place each epoch)
        illum = self.refiner.step_illumination if refine and self.refiner.weigh_steps else self._null
        if s0 == 0:
            self.err.fill(0)
            self.slots.fill(0)
            if self._flux:
                self.flux_sums.fill(0)
            rt.launch("copy_c64", plane, (st.probe, self.pspec, i64(plane)))
            self.plans.forward(self.pspec[:plane], m, n)
        for s in range(s0, s1):
            slot, acc = i32(s & 1), self.fit_acc[s * LF_SLOTS:]
            rt.launch("lf_shift", n2, (self.pspec, pos, *corners, i32(s), i32(1), i32(n), i32(m), f32(1.0 / n2),
                                       self.pj1))
            self.plans.inverse(self.pj1[:plane], m, n)
            rt.launch("wf_epie_gather", n2, (st.obj, self.pj1, *corners, i32(s), i32(n), i32(w), i32(m),
                                             i32(1 if refine else 0), i64(plane), psi, self.opatch, self.slots,
                                             slot, acc, illum))
            self.plans.forward(psi, planes * m, n)
            if self._flux:  # c_j fitted to the data, the spectra scaled by it (gpu/flux_noise.py)
                self._epie_flux_fit(psi, planes * plane, self.order, s, m, amp, amp_from)
            self._far_field_step(psi, self.order, s, 1, m, amp, amp_from, refine, plane, acc, self.err)
            self.plans.inverse(psi[:plane], m, n)
            rt.launch("wf_epie_update", n2, (st.obj, self.pj1, psi, self.opatch, *corners, i32(s), i32(n), i32(w),
                                             i32(m), self.slots, slot, up, self.pstep, self._scale_arg()))
            if update_probe:
                self.plans.forward(self.pstep[:plane], m, n)
                rt.launch("wf_spectrum_add", n2, (self.pspec, self.pstep, pos, *corners, i32(s), i32(n), i32(m)))
        if s1 == st.n_positions and update_probe:  # the probe from its spectrum
            rt.launch("copy_c64", plane, (self.pspec, self.pstep, i64(plane)))
            self.plans.inverse(self.pstep[:plane], m, n)
            rt.launch("wf_scale_c64", plane, (self.pstep, st.probe, i64(plane), f32(1.0 / n2)))

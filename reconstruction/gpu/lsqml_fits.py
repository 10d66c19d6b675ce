"""The fast LSQML's per-position options in one CUDA graph an epoch (kernels/lsqml_fits.cu): sub-pixel windows,
position refinement, the per-position flux fit (-variableIntensity) and the Poisson noise model.

The same steps as ``engines.lsqml.LSQML._update_batch``, rearranged so that nothing leaves the device and the
extra work rides on passes the plain run makes anyway:

- sub-pixel windows: the probe's spectrum (M transforms a batch) times each window's phase ramp, one inverse
  transform per window and mode: the moved probes ``pj``, which the kernels then read in place of the probe; the
  windows' probe gradients are transformed, moved back by the conjugate ramps and summed in Fourier space (one
  inverse transform per mode for the search direction, one for the step-weighted update);
- position refinement: the gather also writes the two moved exit waves P dO/drow, P dO/dcol beside psi (the
  object's gradients weighed by the share of the light the other windows bring, as the reference refiner's
  ``weigh_steps``: from the summed probe intensity of every window, which ``lf_illumination`` adds up at the
  epoch's start, in the graph), one forward transform takes all three, and the modulus kernel reduces what the
  position step needs (the moduli's view of each move and, by Parseval, Re<dpsi, chi>) while the far field is in
  registers; one small kernel per batch takes the median of the batch, moves the positions (float64, on the
  device) and their window corners;
- the flux fit: Re<psi, chi> and ||psi||^2 by Parseval in the same modulus kernel; the factors scale the probe
  inside every kernel that reads it;
- Poisson: the model intensities once, three Newton passes over (model, measured) intensities, then the step.

After the epoch one kernel removes the affine drift of the corrections and normalises the factors. Agreement with
the reference engine: ``tests/gpu/test_lsqml_fits.py``.

Two schedules of the sub-pixel path compute the same numbers (the benchmark switch ``PTYCHOPY_BENCH_LSQML_FITS_FUSED``
picks one, else :data:`FUSED_DEFAULT`: the fused one, measured faster on the H100, benchmarks/NOTES.md section 10):

- first: each kernel that needs a window's ramp computes it per pixel from the positions (two sincos); the probe
  is copied before its in-place transform; the probe sums and the first moved-back sum are two launches; one stream;
- fused: ``lf_shift_tab`` also writes the batch's separable ramp table (two length-n vectors a window), which the
  moved-back sums read instead; the probe is transformed out of place; ``lf_probe_reduce`` takes the first
  moved-back sum; and the probe's update chain (the weighted sum, its inverse transform, the new probe, the next
  batch's probe spectrum: small, latency-bound launches) runs on a second stream beside the object update and the
  position move, which read nothing it writes and write nothing it reads (it reads the table, not the positions).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bench_switches import bench_switch
from ..engines.lsqml import MAX_INTENSITY_STEP, NEWTON_STEPS
from ..engines.position_refiner import MAX_POSITION_STEP_PX
from ..physics import subpixel
from . import runtime as rt
from .runtime import f32, i32, i64

#: the run options (run_plan.RUN_OPTIONS) this path implements for the fast LSQML
FITS_OPTIONS = frozenset({"subpixel_windows", "position_refinement", "variable_intensity", "poisson_noise"})
LF_SLOTS = 17  # kernels/lsqml_fits.cu: the per-position double sums; 5, 6 the step numerators, 7, 8 denominators
FIT_BLOCKS = 64  # blocks per position of the kernels that reduce per position (one block row per position)
POSITION_DAMPING = 1.0  # position_update.damped_steps' default damping (the reference engine's)
NEWTON_PASSES = 3  # kernels/lsqml_fits.cu: LF_NEWTON
assert NEWTON_PASSES == NEWTON_STEPS, "the Poisson step's Newton steps: engines/lsqml.py and lsqml_fits.cu differ"
#: PTYCHOPY_BENCH_LSQML_FITS_FUSED's default: "0" runs the first schedule of the sub-pixel path, "1" the fused one
#: (module docstring): the fused one, 11.54-11.58 against 12.51-12.55 ms an iteration with sub-pixel windows,
#: positions and the flux fit (900 x 256^2, H100, benchmarks/RESULTS.md 2026-12-07 15:33; its tests equal the first).
FUSED_DEFAULT = "1"


def fused_schedule() -> bool:
    """Whether the sub-pixel path runs the fused schedule (the benchmark switch, else :data:`FUSED_DEFAULT`)."""
    return bench_switch("LSQML_FITS_FUSED", FUSED_DEFAULT) == "1"


def fits_used(settings: Any, positions_px: Any, rows: Any, cols: Any, xp: Any) -> tuple[bool, bool]:
    """(fits, shift): whether an LSQML run needs the fits kernels at all, and whether its windows move the probe
    (sub-pixel windows or refinement, and a position off the pixel grid or refinement that may move it there)."""
    if settings.position_refinement_from > 0 and (settings.position_affine or settings.coarse_search_px > 0):
        raise ValueError("the fast LSQML refines positions with every affine term held and no coarse search "
                         f"(position_affine={settings.position_affine!r}, coarse_search_px="
                         f"{settings.coarse_search_px}): the run plan sends such runs to the reference engine")
    shift = windows_shift(settings, positions_px, rows, cols, xp)
    fits = (shift or settings.position_refinement_from > 0 or settings.variable_intensity
            or settings.noise_model == "poisson")
    return fits, shift


def windows_shift(settings: Any, positions_px: Any, rows: Any, cols: Any, xp: Any) -> bool:
    """Whether a fast engine's windows move the probe: windows follow the sub-pixel positions (sub-pixel windows or
    refinement) and a position is off the pixel grid, or refinement may move it there. Whole-pixel positions keep
    the plain kernels (bit for bit the run without sub-pixel windows)."""
    if not settings.windows_follow_positions or positions_px is None:
        return False
    return settings.position_refinement_from > 0 or subpixel.any_fraction(
        xp, subpixel.fractions_px(xp, positions_px, rows, cols))


class LSQMLFitsMixin:
    """Buffers and the per-epoch launches of the fits path; mixed into ``FastLSQML``."""

    state: Any
    settings: Any
    cp: Any
    n: int
    n2: int
    width: int
    mt: int
    batch_size: int
    beta: float
    plans: Any
    chi: Any
    num_o: Any
    den_o: Any
    gp: Any
    dp: Any
    new_probe: Any
    err: Any
    slots: Any
    mask: Any
    rows32: Any
    cols32: Any
    order: Any
    stream: Any
    refiner: Any

    #: when a list (benchmarks/lsqml_fits.py, eager runs only): (stage, CUDA event) recorded after each stage
    stage_marks: list[tuple[str, Any]] | None = None

    def _mark(self, stage: str) -> None:
        if self.stage_marks is not None:
            self.stage_marks.append((stage, self.cp.cuda.get_current_stream().record()))

    def _setup_fits(self, shift: bool) -> None:
        cp, st = self.cp, self.state
        b, mt, n2 = self.batch_size, self.mt, self.n2
        self._shift = shift
        self._poisson = self.settings.noise_model == "poisson"
        self._null = np.uint64(0)
        self.fit_acc = cp.zeros(b * LF_SLOTS, dtype=cp.float64)
        self.pj = cp.empty(b * mt * n2, dtype=cp.complex64) if shift else self.chi[:1]
        self.gbuf = cp.empty(b * mt * n2, dtype=cp.complex64) if shift else self.chi[:1]
        self.pspec = cp.empty(mt * n2, dtype=cp.complex64) if shift else self.chi[:1]
        self.gstep = cp.empty(mt * n2, dtype=cp.complex64) if shift else self.chi[:1]
        self.mi = cp.empty(b * n2, dtype=cp.float32) if self._poisson else self.den_o[:1]
        # the fused schedule: the batch's ramp table (cnt, 2, n), a second stream for the probe's update chain, and
        # an event pair (fork, join) per mini-batch
        self._fused = shift and fused_schedule()
        self.ramp_tab = cp.empty(b * 2 * self.n, dtype=cp.complex64) if self._fused else self._null
        self._side: Any = cp.cuda.Stream(non_blocking=True) if self._fused else None
        n_batches = -(-st.n_positions // b) if self._fused else 0
        self._forks = [cp.cuda.Event(disable_timing=True) for _ in range(n_batches)]
        self._joins = [cp.cuda.Event(disable_timing=True) for _ in range(n_batches)]
        # the summed probe intensity of every window (H, W), refilled at each refining epoch's start (lf_illumination)
        weigh = self.settings.position_refinement_from > 0 and self.refiner.weigh_steps
        self.illum = cp.empty(st.obj.size, dtype=cp.float32) if weigh else self._null
        # its fixed-point sums (zero between epochs: lf_illumination_map resets them) and the probe's largest intensity
        self.illum_acc = cp.zeros(st.obj.size, dtype=cp.uint64) if weigh else self._null
        self.illum_max = cp.zeros(1, dtype=cp.float32) if weigh else self._null
        if st.positions_px is not None:
            for name in ("rows", "cols"):  # the fits kernels write the corners (int64) in place
                setattr(st, name, cp.ascontiguousarray(getattr(st, name)))
            self._hi = (float(st.obj.shape[0] - self.n), float(st.obj.shape[1] - self.n))

    def _fit_plans(self, m: int, refine: bool) -> None:
        """Create (outside any capture) the cuFFT plans the fits path uses this epoch."""
        st, n = self.state, self.n
        for b0 in range(0, st.n_positions, self.batch_size):
            cnt = min(self.batch_size, st.n_positions - b0)
            self.plans.get((3 if refine else 1) * cnt * m, n)
            self.plans.get(cnt * m, n)
        if self._shift:
            self.plans.get(m, n)

    def _launch_fits(self, m: int, update_probe: bool, refine: bool) -> None:
        """One epoch of the fits path (see the module docstring); the probe alternates between the state's buffer
        and ``new_probe`` as in the plain path."""
        st, s = self.state, self.settings
        n, n2, w = self.n, self.n2, self.width
        mask, has_mask, stride = self.mask
        up = i32(1 if update_probe else 0)
        beta, delta = f32(self.beta), f32(s.delta_p)
        rows, cols, order, acc = self.rows32, self.cols32, self.order, self.fit_acc
        n_pos, bs, sm = st.n_positions, self.batch_size, self.stream
        shift, ref, fused = self._shift, i32(1 if refine else 0), self._fused
        scale = st.intensity_scale if st.intensity_scale is not None else self._null
        pos = st.positions_px if st.positions_px is not None else self._null
        tab = self.ramp_tab if fused else self._null
        probes = (st.probe, self.new_probe)
        main = self.cp.cuda.get_current_stream()
        joined: Any = None  # the previous batch's probe chain (fused schedule), joined before this batch's shift
        self.err.fill(0)
        illum = self.illum if refine and self.refiner.weigh_steps else self._null
        if refine and self.refiner.weigh_steps:  # engines/base.object_illumination: the epoch's start, every window,
            # summed in a fixed point (lsqml_fits.cu: the same map whatever order the atomics land in)
            rt.kernel("lf_probe_intensity_max")((1,), (1024,), (st.probe, i32(n2), i32(self.mt), self.illum_max))
            rt.launch_jp("lf_illumination", n_pos, n2, (st.probe, rows, cols, i32(n_pos), i32(n), i32(w), i32(self.mt),
                                                       self.illum_max, self.illum_acc))
            rt.launch("lf_illumination_map", st.obj.size, (self.illum_acc, self.illum_max, i64(st.obj.size),
                                                            self.illum))
        self._mark("epoch start")
        if sm is not None:
            sm.fill(0, order, 0, min(bs, n_pos))
        for i, b0 in enumerate(range(0, n_pos, bs)):
            cnt = min(bs, n_pos - b0)
            probe = probes[i % 2] if update_probe else st.probe
            if joined is not None:
                main.wait_event(joined)
                joined = None
                self._mark("probe chain joined")
            amp, amp_from = st.amplitudes, -1
            if sm is not None:
                amp, amp_from = sm.ring[i % sm.slots], b0
                if b0 + bs < n_pos:
                    sm.prefetch((i + 1) % sm.slots, order, b0 + bs, min(bs, n_pos - b0 - bs))
            plane = cnt * m * n2
            batch = (i32(b0), i32(cnt))
            if shift:  # the moved probes of the batch: the probe's spectrum times each window's ramp, inverse
                if not fused:
                    rt.launch("copy_c64", m * n2, (probe, self.pspec, i64(m * n2)))
                    self.plans.forward(self.pspec[: m * n2], m, n)
                elif i == 0:  # later batches: the previous batch's probe chain (or, probe held, batch 0's spectrum)
                    self._probe_spectrum(probe, m)
                shift_args = (self.pspec, pos, rows, cols, order, *batch, i32(n), i32(m), f32(1.0 / n2), self.pj)
                if fused:
                    rt.launch_jp("lf_shift_tab", cnt, n2, (*shift_args, tab))
                else:
                    rt.launch_jp("lf_shift", cnt, n2, shift_args)
                self.plans.inverse(self.pj[:plane], cnt * m, n)
                pr, pstride = self.pj, i64(m * n2)
                self._mark("moved probes")
            else:
                pr, pstride = probe, i64(0)
            buf = self.chi[: (3 if refine else 1) * plane]
            rt.launch_jp("lf_gather", cnt, n2, (st.obj, pr, pstride, scale, rows, cols, order, *batch, i32(n), i32(w),
                                                i32(m), ref, i64(plane), buf, self.num_o, self.den_o, acc,
                                                self.slots, illum))
            self._mark("gather")
            self.plans.forward(buf, (3 if refine else 1) * cnt * m, n)
            self._mark("forward FFT")
            if sm is not None and i > 0:
                sm.wait(i % sm.slots)
            per_position = ((min(FIT_BLOCKS, -(-n2 // rt.BLOCK)), cnt), (rt.BLOCK,))
            rt.kernel("lf_modulus")(*per_position, (
                buf, amp, mask, has_mask, stride, order, i32(b0), i32(n2), i32(m), f32(1.0 / n), f32(1.0 / n2),
                self.err, i32(amp_from), ref, i64(plane), i32(1 if self._poisson else 0), self.mi, acc))
            if self._poisson:
                for t in range(NEWTON_PASSES):
                    rt.kernel("lf_poisson_newton")(*per_position, (
                        self.mi, amp, mask, has_mask, stride, order, i32(b0), i32(n2), i32(amp_from), i32(t), acc))
                rt.kernel("lf_poisson_apply")(*per_position, (
                    buf, self.mi, amp, mask, has_mask, stride, order, i32(b0), i32(n2), i32(m), f32(1.0 / n2),
                    i32(amp_from), ref, i64(plane), acc))
            self._mark("far-field step")
            chi = self.chi[:plane]
            self.plans.inverse(chi, cnt * m, n)
            self._mark("inverse FFT")
            write_g = i32(1 if shift and update_probe else 0)
            rt.launch_jp("lf_scatter", cnt, n2, (chi, pr, pstride, scale, st.obj, rows, cols, order, *batch, i32(n),
                                                 i32(w), i32(m), write_g, self.gbuf, self.num_o, self.den_o))
            self._mark("scatter")
            if update_probe:
                if fused:  # the gradients' spectra first: lf_probe_reduce sums them moved back (unweighted)
                    self.plans.forward(self.gbuf[:plane], cnt * m, n)
                gspec = self.gbuf if fused else self._null
                rt.launch("lf_probe_reduce", n2, (chi, st.obj, scale, self.den_o, rows, cols, order, *batch, i32(n),
                                                  i32(w), i32(m), i32(0 if shift else 1), self.gp, self.dp,
                                                  self.slots, gspec, tab, f32(1.0 / n2)))
                if shift and not fused:  # the search direction's probe part, moved back into the probe's frame
                    self.plans.forward(self.gbuf[:plane], cnt * m, n)
                    rt.launch("lf_gp_sum", n2, (self.gbuf, pos, rows, cols, order, *batch, i32(n), i32(m),
                                                f32(1.0 / n2), acc, i32(0), self.gp))
                if shift:
                    self.plans.inverse(self.gp[: m * n2], m, n)
            else:
                rt.launch_jp("ls_den_max", cnt, n2, (self.den_o, rows, cols, order, *batch, i32(n), i32(w),
                                                     self.slots))
            rt.kernel("lf_dots")(*per_position, (
                chi, st.obj, pr, pstride, scale, self.num_o, self.den_o, self.gp, self.dp, rows, cols, order,
                i32(b0), i32(n), i32(w), i32(m), delta, self.slots, up, acc))
            self._mark("probe direction, dots")
            if update_probe:
                new = probes[(i + 1) % 2]
                if fused:  # the probe's update chain on the second stream, beside the object update and the move
                    main.record(self._forks[i])
                    self._side.wait_event(self._forks[i])
                    with self._side:
                        self._probe_step(probe, new, m, b0, cnt, pos, tab)
                        if b0 + bs < n_pos:
                            self._probe_spectrum(new, m)
                        self._side.record(self._joins[i])
                    joined = self._joins[i]
                elif shift:
                    self._probe_step(probe, new, m, b0, cnt, pos, tab)
                else:
                    rt.launch("lf_probe_update", n2, (chi, st.obj, scale, probe, self.dp, rows, cols, order, *batch,
                                                      i32(n), i32(w), i32(m), beta, delta, self.slots, acc, new))
            rt.launch_jp("lf_obj_update", cnt, n2, (chi, pr, pstride, scale, self.den_o, rows, cols, order, *batch,
                                                    i32(n), i32(w), i32(m), beta, delta, self.slots, acc, up,
                                                    st.obj))
            self._mark("probe, object updates")
            if refine or st.intensity_scale is not None:
                self._launch_move(b0, cnt, refine, pos, scale)
                self._mark("positions, factors")
        if joined is not None:
            main.wait_event(joined)
        n_batches = -(-n_pos // bs)
        if update_probe and n_batches % 2 == 1:
            rt.launch("copy_c64", m * n2, (self.new_probe, st.probe, i64(m * n2)))
        if refine or st.intensity_scale is not None:
            self._launch_epoch_end(refine, pos, scale)

    def _probe_spectrum(self, probe: Any, m: int) -> None:
        """pspec <- the unnormalised transform of the probe's first ``m`` modes, out of place (the fused schedule)."""
        size = m * self.n2
        self.plans.forward_into(probe.reshape(-1)[:size], self.pspec[:size], m, self.n)

    def _probe_step(self, probe: Any, new: Any, m: int, b0: int, cnt: int, pos: Any, tab: Any) -> None:
        """Sub-pixel windows: new <- probe + beta (the step-weighted gradients moved back) / (dp + delta max dp); the
        fused schedule reads the ramps from the batch's table ``tab``, the first from the positions."""
        s, n, n2 = self.settings, self.n, self.n2
        sums = (i32(m), f32(1.0 / n2), self.fit_acc, i32(1), self.gstep)
        if self._fused:
            rt.launch("lf_gp_sum_tab", n2, (self.gbuf, tab, i32(cnt), i32(n), *sums))
        else:
            rt.launch("lf_gp_sum", n2, (self.gbuf, pos, self.rows32, self.cols32, self.order, i32(b0), i32(cnt),
                                        i32(n), *sums))
        self.plans.inverse(self.gstep[: m * n2], m, n)
        rt.launch("lf_probe_add", n2, (probe, self.gstep, self.dp, i32(n2), i32(m), f32(self.beta), f32(s.delta_p),
                                       self.slots, new))

    def _corner_args(self, pos: Any) -> tuple[Any, ...]:
        st = self.state
        hi_r, hi_c = self._hi if st.positions_px is not None else (0.0, 0.0)
        rows64 = st.rows if st.positions_px is not None else self._null
        cols64 = st.cols if st.positions_px is not None else self._null
        return np.float64(hi_r), np.float64(hi_c), pos, self.rows32, self.cols32, rows64, cols64

    def _launch_move(self, b0: int, cnt: int, refine: bool, pos: Any, scale: Any) -> None:
        rt.kernel("lf_move")((1,), (rt.BLOCK,), (
            self.fit_acc, self.order, i32(b0), i32(cnt), i32(1 if refine else 0), f32(POSITION_DAMPING),
            f32(MAX_POSITION_STEP_PX), f32(MAX_INTENSITY_STEP), *self._corner_args(pos), scale))

    def _launch_epoch_end(self, refine: bool, pos: Any, scale: Any) -> None:
        start = self.refiner.start_px if refine else self._null
        rt.kernel("lf_epoch_end")((1,), (1024,), (
            start, i32(self.state.n_positions), i32(1 if refine else 0), *self._corner_args(pos), scale))

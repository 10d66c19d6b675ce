"""Difference map (Thibault et al. 2009) with probe refinement, all positions in parallel.

Keeps one exit wave per position and mode, psi (N, M, n, n). Each iteration:
  1. overlap projection: (from ``update_probe_from`` on) P_k = sum_j conj(O_j) psi_jk / sum_j |O_j|^2 with the
     current object, then O = sum_j sum_k conj(P_k) psi_jk / sum_j sum_k |P_k|^2 with that probe;
  2. phi = P O_j;  psi <- psi + P_R(2 phi - psi) - phi, with P_R the relaxed Fourier-modulus projection
     (``physics.modulus.relaxed_modulus_factor``): a pattern already within ``dm_relax`` (relative rms) of its
     measured amplitudes is left alone, one further away moves only onto that noise ball.

Sub-pixel windows (``subpixel_windows``): P above is, for window j, the probe moved by position j's fraction
(``physics/subpixel.py``: P_j); the object update uses P_j, and the probe update sums the conj(O_j) psi_jk moved
back into the probe's frame (their adjoint) over sum_j |O_j|^2 taken in the windows' frames (the half-pixel move
of that smooth sum is left out). Whole-pixel positions take the steps above unchanged.

Position refinement (``position_refinement_from`` > 0: -refinePositions from iteration -PPS): windows follow
sub-pixel positions; after step 2 every position takes half the Gauss-Newton step (the whole step while the
probe is held) that fits the modulus projection of its phi (chi = P_M(phi) - phi;
``engines/position_refiner.py``, ``physics/position_update.py``), damped by the median over all positions (1 times
it, 0.3 while the probe is held: :func:`set_position_step`) and at most 0.5 px per axis, after a coarse whole-pixel
search in the first refining epochs. While DM's memory psi - phi is large against phi (a guessed probe, errors of
pixels) the steps are taken only in every 8th epoch: the memory feeds each move back into the next steps for about
6 iterations, and with a weak pull towards the truth that ran the positions away (:data:`MEMORY_SHARE_SETTLE`,
:func:`set_step_cadence`; the share measured at an epoch's end sets the next epoch's cadence, so that the fast DM
knows before an epoch whether it steps, and spends nothing on step terms in the epochs that do not). The exit
waves psi = phi + (psi - phi) split at a gradient move: the overlap-consistent part phi is taken anew at the new
place, DM's memory psi - phi stays with its pattern (a window whose corner moves by k pixels has it rolled by -k, so
its content stays where it was in the object); a coarse move takes psi along unrolled (``_positions_moved``). The
scan's affine fit (-positionAffine) adds a smooth cubic warp of the scan (:data:`WARP_DEGREE`): DM's steps leave a
smooth error that its object follows, and the windows' content shows it as the affine error; the exit waves follow
the deformation as they follow a gradient move (the object is resampled first, phi taken anew). In that affine
phase the fit and the steps are read not on DM's object but on an error-reduction view of it (:data:`VIEW_PASSES`,
:func:`error_reduction_pass`: chi = P_M(P V_j) - P V_j of the view V, kept through the phase and resampled with the
object): DM's average follows the scan's error within its noise ball, the view pulls towards the data.

Per-position flux (``variable_intensity``: -variableIntensity): the windows' model is c_j P O_j (c_j an amplitude
factor, ``EngineState.intensity_scale``, mean 1). The overlap projection is the least-squares fit of the exit waves
psi by the model, min over P, O, c of sum_j ||psi_j - c_j P O_j||^2; it alternates, each step in closed form:
P = sum_j c_j conj(O_j) psi_j / sum_j c_j^2 |O_j|^2, then O = sum_j c_j conj(P) psi_j / sum_j c_j^2 |P|^2, then
c_j = Re<P O_j, psi_j> / ||P O_j||^2 every iteration, and the factors are divided by their mean, the probe multiplied
by it (``base.normalise_flux``). Why the exit waves and not the measured data, as ePIE does: in DM the data enter only
through the Fourier step, and psi is what the overlap step fits; a flux fitted to the data would need a third
transform of every pattern, and by Parseval Re<P O_j, psi_j> = Re<F(P O_j), F psi_j>, which is the amplitude least
squares sum A |Psi| of ePIE wherever psi's far field has the measured moduli and the model's phases.

Poisson noise model (``noise_model="poisson"``): the Fourier step P_R(2 phi - psi) becomes the Poisson likelihood
step Psi (1 + alpha_j g) of the far field Psi of 2 phi - psi (derived in ``engines/epie.py``; alpha_j from its line
search). It is not a projection, so ``dm_relax`` (-fourierRelax) does not apply: the line search takes its place.

Probe-first ordering and the relaxed projection keep DM from drifting on a noisy raster scan
(benchmarks/NOTES.md, section 5). The reported error is the Fourier-magnitude error of phi, the current
overlap-consistent estimate, measured on a rotating eighth of the positions (:func:`error_sample`): the full
measurement would cost a third transform of every pattern, half again the update's two.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..physics import modes, modulus, patches, propagation, subpixel
from .base import EngineSettings, EngineState, IterationMetrics, normalise_flux
from .position_refiner import PositionRefiner

REGULARISATION = 1e-3  # relative to the maximum of each normaliser, avoids division by ~0 outside the scan
ERROR_SAMPLES = 8  # the Fourier error of phi is measured on one of this many position subsets per iteration
REFINE_CHUNK = 256  # positions whose step terms are computed at once (position refinement)
# share of each position step DM takes. While psi kept the old placement, whole steps ran away (+-1.5 px errors:
# 1.2 -> 2.8 px RMS in 60 iterations) and a third was taken (0.40 px). Since the overlap-consistent part of psi
# follows each move (DM._follow_positions), half steps converge further: 1.21 -> 0.34 px with the probe updated
# (a third: 0.38; 0.75 of a step: 0.80 px and whole steps: 0.83 px, both ran away: the probe takes up part of each
# move). With the probe held nothing co-adapts, and whole steps converge fastest (+-3 px + 1 % + 0.5 degrees, probe
# known, 100 iterations, with the affine fit: half steps 0.23 px RMS, NRMSE 1.14x the true positions' run; whole
# steps 0.175 px, 1.09x)
POSITION_GAIN = 0.5
POSITION_GAIN_PROBE_HELD = 1.0
# the steps' damping (in units of the median denominator over all positions): 1 while the probe is updated (0.3
# ran its +-1.5 px test to 0.75 px instead of 0.40), 0.3 while it is held (the target scan above, with the warp
# below: 0.133 px RMS with 1, 0.119 px with 0.3)
POSITION_DAMPING = 1.0
POSITION_DAMPING_PROBE_HELD = 0.3
# the affine fit of DM adds a smooth warp of this degree (position_refiner.PositionRefiner.warp_degree). DM's
# per-position steps leave a smooth error the object follows (target scan: 0.175 px RMS, 0.167 px beyond affine,
# 0.118 px beyond a quadratic, 0.083 px beyond a cubic displacement); fitted from the windows' content like the
# affine terms. Read on DM's average object: 0.133 px with degree 2, 0.136 px with 3 (its terms took up DM's stretch
# bias: scale +0.37 %). Read on the error-reduction view (:data:`VIEW_PASSES`: 3 passes), whose stretch bias is gone:
# 64^2 0.084 px with 2, 0.077 px with 3 (NRMSE 1.02x either); 128^2, 12 x 12 0.197 / 0.182 px; probe guessed
# 2.221 / 2.180 px; without the view (DM's average) degree 3 with the probe guessed: 2.520 px, scale +2.5 %
WARP_DEGREE = 3
# DM's exit-wave memory psi - phi feeds a move back into the next steps: its reflection 2 phi - psi keeps writing a
# moved window's data into the object for several iterations, so the object follows the move and the next steps
# continue it (benchmarks/dm_step_response.py: 64^2, probe guessed, +-3 px, every window moved by a random d; the
# next 6 iterations' steps went +0.04, +0.21, +0.24, +0.20, +0.14, +0.11 of d further, ePIE's -0.00 in all; with the
# moved windows' memory dropped they pulled back, -0.15, -0.10, -0.05). The pull towards the truth was 30 times
# weaker than with the probe known (0.007 of the error an iteration against 0.25), so the feedback won. It comes
# with DM's memory: while that is at least MEMORY_SHARE_SETTLE of phi (||psi - phi|| / ||phi||: 0.6-0.7 with errors
# of pixels, 0.04-0.17 once the positions converge), DM takes its per-position steps in every SETTLE_EPOCHS-th
# refining epoch only,
# after the last move's transient has passed (it lasted 6 iterations). Target scan, probe guessed, -affineEpochs=20:
# 2.41 -> 4.59 px RMS with steps every epoch, 2.36 px with this (threshold 0.4 / 0.6: 2.40 / 2.52 px; every 6th /
# 10th epoch: 2.49 / 2.41 px); the +-1.5 px test with the probe updated 0.335 -> 0.251 px (its memory is 0.67 for
# 20 iterations, then falls as the positions converge); the probe known: unchanged (0.119 px)
MEMORY_SHARE_SETTLE = 0.5
SETTLE_EPOCHS = 8
# in the affine phase DM's position terms (the deformation fit and the steps) are read on an error-reduction view of
# the object, not on DM's average: VIEW_PASSES error-reduction steps a refining epoch (:func:`error_reduction_pass`,
# the probe and positions held) of a view started from DM's object when the affine phase begins and kept through it
# (resampled with the object by each deformation). Why: at DM's fixed point its phi lies within the relaxed
# projection's noise ball whatever the positions, and its average object follows a smooth error of the scan, so
# the residual P_M(phi) - phi pulled back weakly against the terms' bias (64^2 target scan, probe known: 0.120 px,
# 0.063 px of it affine, +0.22 % stretch). The view keeps every window's light (a leave-one-out object lost the edge
# windows). Measured (64^2, 100 iterations, the quadratic warp): 1 / 2 / 3 passes 0.094 / 0.086 / 0.084 px
# (affine part 0.032 / 0.024 / 0.022, scale 1.0000), NRMSE 1.03 / 1.02 / 1.02x the true positions' run; the view
# restarted from DM's object each epoch: 1 / 3 / 10 / 25 passes 0.124 / 0.108 / 0.088 / 0.082 px; the fallback to
# DM's object 1e-2 instead of 1e-3: 0.095 px, none (to 0): 0.098 px. 128^2, 12 x 12: 0.217 -> 0.197 px (3
# passes); probe guessed 2.353 -> 2.221 px. With the cubic warp it allows (:data:`WARP_DEGREE`), 1 / 3 passes:
# 0.074 / 0.077 px, 1.02x either; 128^2 0.184 / 0.182 px; guessed 2.181 / 2.180 px (NRMSE 0.175 / 0.170 against
# 0.157 before: that run fails either way). Cost: 2 transforms of every window a pass, in the affine phase's epochs
VIEW_PASSES = 1
VIEW_FALLBACK = REGULARISATION  # the view's fallback to DM's object where the windows light it little


def error_reduction_pass(xp: Any, view: Any, prior: Any, probes: Any, amplitudes: Any, valid: Any | None,
                         flat_idx: Any, fallback: float = VIEW_FALLBACK) -> Any:
    """(H, W) complex64 one error-reduction step of the object ``view`` (H, W) with the probe and positions held:
    (sum_j sum_k conj(P_jk) P_M(P_jk V_j) + w prior) / (sum_j sum_k |P_jk|^2 + w), w = ``fallback`` times the
    largest summed intensity, V_j the view's windows at ``flat_idx`` (N, n, n), P_M the modulus projection on the
    measured ``amplitudes`` (N, n, n) over ``valid`` (None, (n, n) or (N, n, n)), ``probes`` (1 or N, M, n, n) as
    they light the windows. Where the windows light the object little it falls back to ``prior`` (H, W) (DM's
    object). In chunks of :data:`REFINE_CHUNK` positions."""
    n_pos = flat_idx.shape[0]
    num = xp.zeros(view.shape, dtype=xp.complex64)
    den = xp.zeros(view.shape, dtype=xp.float32)
    for start in range(0, n_pos, REFINE_CHUNK):
        sl = slice(start, min(start + REFINE_CHUNK, n_pos))
        lit = probes if probes.shape[0] == 1 else probes[sl]
        idx = flat_idx[sl]
        far = propagation.forward(xp, lit * patches.extract_patches(xp, view, idx)[:, None])
        chunk_valid = valid if valid is None or valid.ndim == 2 else valid[sl]
        factor = modulus.modulus_factor(xp, modulus.modal_amplitude(xp, far), amplitudes[sl], chunk_valid)
        projected = propagation.backward(xp, far * factor[:, None])
        num += patches.scatter_add_patches(xp, view.shape, xp.sum(lit.conj() * projected, axis=1), idx)
        intensity = xp.sum(lit.real**2 + lit.imag**2, axis=1)
        den += patches.scatter_add_patches(xp, view.shape, xp.broadcast_to(intensity, idx.shape), idx)
    weight = fallback * xp.max(den)
    return ((num + weight * prior) / (den + weight)).astype(xp.complex64)


def position_gain(update_probe: bool) -> float:
    """The share of each position step DM takes in an epoch that updates the probe or holds it."""
    return POSITION_GAIN if update_probe else POSITION_GAIN_PROBE_HELD


def set_position_step(refiner: PositionRefiner, update_probe: bool) -> None:
    """The share (:func:`position_gain`) and damping of the steps DM's ``refiner`` takes in an epoch that updates
    the probe or holds it (the reference and the fast DM)."""
    refiner.gain = position_gain(update_probe)
    refiner.damping = POSITION_DAMPING if update_probe else POSITION_DAMPING_PROBE_HELD


def memory_share(xp: Any, psi: Any, phi: Any) -> float:
    """||psi - phi|| / ||phi|| over all windows: the size of DM's exit-wave memory against the overlap-consistent
    estimate, ``psi`` and ``phi`` (N, m, n, n) (the exit waves after this iteration's update, phi before it). A host
    float (one synchronisation a refining epoch)."""
    return float(xp.linalg.norm(psi - phi)) / (float(xp.linalg.norm(phi)) + 1e-30)


def set_step_cadence(refiner: PositionRefiner, share: float) -> None:
    """Per-position steps in every refining epoch while DM's memory ``share`` (:func:`memory_share`, measured at the
    epoch's end) is below :data:`MEMORY_SHARE_SETTLE`, else in every :data:`SETTLE_EPOCHS`-th only, from the next
    epoch on (the reference and the fast DM)."""
    refiner.step_every = 1 if share < MEMORY_SHARE_SETTLE else SETTLE_EPOCHS


def error_sample(n_positions: int, iteration: int) -> Any:
    """Positions whose Fourier error DM measures at ``iteration`` (1-based): ceil(N / 8) consecutive indices
    (wrapping around), a different eighth each iteration, so every position counts once every 8 iterations.
    A (S,) int64 NumPy array; the GPU engine takes the same start index."""
    size, start = error_sample_span(n_positions, iteration)
    return (start + np.arange(size)) % n_positions


def error_sample_span(n_positions: int, iteration: int) -> tuple[int, int]:
    """(size, first index) of :func:`error_sample`."""
    size = -(-n_positions // ERROR_SAMPLES)
    groups = -(-n_positions // size)
    return size, ((iteration - 1) % groups) * size


class DM:
    name = "DM"
    error_measure = (f"Fourier error of the overlap-consistent estimate on a rotating 1/{ERROR_SAMPLES} of the "
                     f"positions (every position counts at least once in {ERROR_SAMPLES} iterations)")

    def __init__(self, state: EngineState, settings: EngineSettings):
        self.state = state
        self.settings = settings
        xp = state.xp
        self.fractions = None  # (N, 2) fractions of the positions when any window sits between pixels
        self._ramps: Any = None  # and the (N, n, n) ramps that move the probe by them
        self.refiner: Any = self._make_refiner()
        if settings.variable_intensity and state.intensity_scale is None:
            state.intensity_scale = xp.ones(state.n_positions, dtype=xp.float32)
        self._positions_moved()
        obj_patches = patches.extract_patches(xp, state.obj, state.window_idx())
        self.psi = self._lit_probes(state.probe.shape[0]) * obj_patches[:, None, :, :]

    def iterate(self, iteration: int, update_probe: bool) -> IterationMetrics:
        st, xp = self.state, self.state.xp
        m = st.modes_active
        psi = self.psi
        if psi.shape[1] != st.probe.shape[0]:
            raise AssertionError("psi modes out of sync with the probe")
        refine = self.refiner is not None and self.refiner.refining(iteration)
        if refine:
            if self.refiner.begin_epoch(st.lit_probes):  # a coarse move takes its window's exit waves along
                self._positions_moved()
            update_probe = update_probe and not self.refiner.holds_probe(iteration)
            set_position_step(self.refiner, update_probe)
        flat_idx = st.window_idx()
        self._overlap_update(update_probe, flat_idx)
        obj_patches = patches.extract_patches(xp, st.obj, flat_idx)
        phi = self._probes * obj_patches[:, None]
        metrics = IterationMetrics()
        sample = self._error_sample(iteration)
        if sample.size:
            far_phi = propagation.forward(xp, phi[sample])
            metrics.add(xp, modulus.modal_amplitude(xp, far_phi), st.amplitudes[sample], st.valid_for(sample),
                        self.settings.compute_rms)
        far = propagation.forward(xp, 2 * phi - psi[:, :m])
        if self.settings.noise_model == "poisson":
            factor = modulus.fourier_factor(xp, modulus.modal_amplitude(xp, far), st.amplitudes, st.valid, "poisson")
        else:
            factor = modulus.relaxed_modulus_factor(xp, modulus.modal_amplitude(xp, far), st.amplitudes, st.valid,
                                                    self.settings.dm_relax)
        psi[:, :m] += propagation.backward(xp, far * factor[:, None]) - phi
        if refine:
            self._refine_positions(phi, obj_patches)
        return metrics

    def _refine_positions(self, phi: Any, obj_patches: Any) -> None:
        """Every position's step from the modulus projection of its overlap-consistent estimate phi (N, M, n, n)
        (:meth:`_collect_position_terms`; in every epoch, or only after the last move's transient while the exit
        waves' memory is large: :func:`set_step_cadence`, which this epoch's memory sets for the next); then the
        epoch's end (the affine fit), and psi follows the moves."""
        st, xp = self.state, self.state.xp
        corners = xp.stack([st.rows, st.cols], axis=1).copy()
        self._collect_position_terms(phi, obj_patches, self._probes)
        set_step_cadence(self.refiner, memory_share(xp, self.psi[:, : st.modes_active], phi))  # the next epoch's
        self.refiner.end_epoch()
        self._positions_moved(corners)
        self._follow_positions(phi, corners)

    def _collect_position_terms(self, phi: Any, obj_patches: Any, probes: Any) -> None:
        """Hand the refiner every position's Gauss-Newton terms (and, in the affine phase, the deformation terms)
        from chi = P_M(phi) - phi, in chunks of ``REFINE_CHUNK``: ``phi`` (N, M, n, n), ``obj_patches`` (N, n, n),
        ``probes`` (1 or N, M, n, n) as they light the windows. In the affine phase phi and the windows are the
        error-reduction view's instead (:meth:`_error_reduction_view`; the ones passed are not read). The fast DM
        calls it in the affine phase."""
        st, xp = self.state, self.state.xp
        if self.refiner.affine_phase():  # read on the error-reduction view, not on DM's average
            obj_patches = self._error_reduction_view(probes)
            phi = probes * obj_patches[:, None]
        for start in range(0, st.n_positions, REFINE_CHUNK):
            sl = slice(start, min(start + REFINE_CHUNK, st.n_positions))
            far_phi = propagation.forward(xp, phi[sl])
            model_amp = modulus.modal_amplitude(xp, far_phi)
            factor = modulus.modulus_factor(xp, model_amp, st.amplitudes[sl], st.valid_for(sl))
            chi = propagation.backward(xp, far_phi * (factor - 1.0)[:, None])
            lit = probes if probes.shape[0] == 1 else probes[sl]
            idx = xp.arange(sl.start, sl.stop)
            self.refiner.collect(idx, *self.refiner.terms(idx, lit, obj_patches[sl], chi, far_phi, model_amp))

    def _error_reduction_view(self, probes: Any) -> Any:
        """(N, n, n) the windows of DM's error-reduction view of the object (:data:`VIEW_PASSES`), its (H, W)
        array kept by the refiner (``PositionRefiner.carried``: resampled with the object by each epoch's
        deformation), started from DM's object in the affine phase's first epoch; ``probes`` (1 or N, M, n, n) as
        they light the windows."""
        st, xp = self.state, self.state.xp
        if not self.refiner.carried:
            self.refiner.carried.append(st.obj.copy())
        view = self.refiner.carried[0]
        flat_idx = st.window_idx()
        for _ in range(VIEW_PASSES):
            view[...] = error_reduction_pass(xp, view, st.obj, probes, st.amplitudes, st.valid, flat_idx)
        return patches.extract_patches(xp, view, flat_idx)

    def _follow_positions(self, old_phi: Any, old_corners: Any) -> None:
        """After a gradient move: psi = phi + (psi - phi), where DM's memory (psi - phi) stays with its pattern
        (rolled with the corner, as ``_positions_moved`` did) and the overlap-consistent part phi is taken anew at
        the window's new place (``old_phi`` (N, M, n, n) the phi before the move). Without this, psi kept the
        old placement for several iterations, and only a third of each step could be taken (64^2, 10 x 10, +-3 px +
        1 % + 0.5 degrees, probe known, 100 iterations: 0.42 -> 0.37 px RMS, NRMSE 1.88 -> 1.22 x true positions)."""
        st, xp = self.state, self.state.xp
        m = st.modes_active
        patches.roll_windows(xp, old_phi, old_corners - xp.stack([st.rows, st.cols], axis=1))
        new_phi = self._lit_probes(m) * patches.extract_patches(xp, st.obj, st.window_idx())[:, None]
        self.psi[:, :m] += new_phi - old_phi

    def _make_refiner(self) -> PositionRefiner | None:
        """DM's position refiner (None without -refinePositions): a share of each step, damped by the median
        denominator (:func:`set_position_step`), and the affine fit with a smooth warp (:data:`WARP_DEGREE`)."""
        if self.settings.position_refinement_from <= 0:
            return None
        refiner = PositionRefiner(self.state, self.settings, fit_alone=True)  # the fit alone moves the linear geometry
        set_position_step(refiner, True)
        refiner.warp_degree = WARP_DEGREE
        return refiner

    def _positions_moved(self, old_corners: Any = None) -> None:
        """The fractions and probe-moving ramps of the current positions (None when every window sits on whole
        pixels, or windows do not follow sub-pixel positions); with the (N, 2) corners before a move, the exit
        waves of each window whose corner a gradient step moved by k pixels are rolled by -k, so their object
        content stays where it was in the object (+-1.5 px errors, 80 iterations: 1.21 -> 0.40 px RMS rolled, 1.09
        not). A coarse move is the opposite case: the window's data belong elsewhere, so its exit waves go along
        (rolled, +-3 px errors ran away to 8 px; taken along, 2.4 -> 0.47 px)."""
        st, xp = self.state, self.state.xp
        if old_corners is not None:
            self._roll_exit_waves(old_corners)
        self.fractions = self._ramps = None
        if self.settings.windows_follow_positions and st.positions_px is not None:
            f = subpixel.fractions_px(xp, st.positions_px, st.rows, st.cols)
            if subpixel.any_fraction(xp, f):
                self.fractions, self._ramps = f, subpixel.shift_ramps(xp, f, st.size_px)

    def _roll_exit_waves(self, old_corners: Any) -> None:
        """Roll the exit waves of each window whose corner moved from ``old_corners`` (N, 2) by -k pixels."""
        st, xp = self.state, self.state.xp
        patches.roll_windows(xp, self.psi, old_corners - xp.stack([st.rows, st.cols], axis=1))

    def _overlap_update(self, update_probe: bool, flat_idx: Any) -> None:
        st, xp = self.state, self.state.xp
        m = st.modes_active
        psi = self.psi[:, :m]
        scales = st.intensity_scale  # (N,) amplitude factors c_j (-variableIntensity), or None
        if update_probe:
            obj_patches = patches.extract_patches(xp, st.obj, flat_idx)
            if scales is not None:  # d psi_j / d P = c_j O_j
                obj_patches = obj_patches * scales[:, None, None]
            if self.fractions is None:
                num_p = xp.sum(obj_patches.conj()[:, None] * psi, axis=0)
            else:
                num_p = subpixel.move_back_and_sum(xp, obj_patches.conj()[:, None] * psi, self._ramps)
            den_p = xp.sum(obj_patches.real**2 + obj_patches.imag**2, axis=0)
            num_p, den_p = self._probe_sums(num_p, den_p)
            st.probe[:m] = num_p / (den_p + REGULARISATION * xp.max(den_p))
        probe = self._probes = self._lit_probes(m)  # (1 or N, m, n, n), kept for this iteration's phi
        num = patches.scatter_add_patches(xp, st.obj.shape, xp.sum(probe.conj() * psi, axis=1), flat_idx)
        p_int = xp.sum(probe.real**2 + probe.imag**2, axis=1)
        den = patches.scatter_add_patches(xp, st.obj.shape, xp.broadcast_to(p_int, flat_idx.shape), flat_idx)
        num, den, den_max = self._object_sums(num, den)
        st.obj[...] = num / (den + REGULARISATION * den_max)
        if scales is not None:
            self._fit_flux(psi, flat_idx)

    def _fit_flux(self, psi: Any, flat_idx: Any) -> None:
        """The flux step of the overlap projection: each c_j = Re<P_j O_j, psi_j> / ||P_j O_j||^2 (the least-squares
        scale of the window's model against its exit waves psi (N, m, n, n); kept where the model is dark), then
        :func:`normalise_flux`; ``self._probes`` follows."""
        st, xp = self.state, self.state.xp
        m = psi.shape[1]
        model = self._window_probes(m) * patches.extract_patches(xp, st.obj, flat_idx)[:, None]
        num = xp.sum((model.conj() * psi).real, axis=(1, 2, 3))
        den = xp.sum(model.real**2 + model.imag**2, axis=(1, 2, 3))
        scales: Any = st.intensity_scale
        scales[...] = xp.where(den > 0, num / xp.maximum(den, 1e-30), scales).astype(xp.float32)
        normalise_flux(st)
        self._probes = self._lit_probes(m)

    def _window_probes(self, m: int) -> Any:
        """The first ``m`` probe modes as they light each window: (1, m, n, n) on whole-pixel windows, else
        (N, m, n, n) moved by each position's fraction."""
        st = self.state
        if self.fractions is None:
            return st.probe[None, :m]
        return subpixel.moved_probes(st.xp, st.probe[:m], self.fractions, self._ramps)[0]

    def _lit_probes(self, m: int) -> Any:
        """:meth:`_window_probes` times each position's amplitude factor c_j when the run fits them: (N, m, n, n)
        then, else as :meth:`_window_probes`."""
        probes = self._window_probes(m)
        scales = self.state.intensity_scale
        return probes if scales is None else probes * scales[:, None, None, None]

    def _error_sample(self, iteration: int) -> np.ndarray:
        """Indices of this engine's positions whose Fourier error is measured at ``iteration``; a run split over
        regions overrides it to take its share of the one-device sample (multigpu.shared_dm)."""
        return error_sample(self.state.n_positions, iteration)

    def _object_sums(self, num: Any, den: Any) -> tuple[Any, Any, Any]:
        """The object update's sums over this engine's positions, (H, W) each, and the maximum of ``den``.
        A run split over regions overrides this to add the other regions' sums (multigpu.shared_dm)."""
        return num, den, self.state.xp.max(den)

    def _probe_sums(self, num_p: Any, den_p: Any) -> tuple[Any, Any]:
        """The probe update's sums over this engine's positions, (M, n, n) and (n, n); see _object_sums."""
        return num_p, den_p

    def rotate_modes(self, transform: Any) -> None:
        """Apply the probe's orthogonalisation (new_k = sum_l T[k, l] P_l) to the exit waves, which are linear
        in the modes, so psi stays consistent with the probe."""
        modes.rotate_mode_stack(self.state.xp, self.psi, transform)

    def modes_changed(self) -> None:
        """Restart the exit waves of every mode from the current object and probe (P_k O_j) when extra modes are
        seeded: seeding orthogonalises mode 0 against the new modes, so its old exit waves no longer match it."""
        st, xp = self.state, self.state.xp
        obj_patches = patches.extract_patches(xp, st.obj, st.window_idx())
        self.psi[...] = self._lit_probes(st.probe.shape[0]) * obj_patches[:, None]

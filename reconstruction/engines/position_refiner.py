"""Position correction for every engine (-refinePositions): the schedule and the bookkeeping around the pure steps of
``physics/position_update.py``.

An engine that refines positions owns one :class:`PositionRefiner` and calls, in each refining epoch:

1. :meth:`PositionRefiner.begin_epoch` (first; in the first ``coarse_search_epochs`` refining epochs it tries every
   window at each whole-pixel shift within ``coarse_search_px`` and moves it to the best one);
2. :meth:`PositionRefiner.terms` for each batch it updates (the Gauss-Newton terms of each position's step, from the
   same chi as its object update; with a free affine term it also gathers the terms of the scan's deformation);
3. :meth:`PositionRefiner.move` with the steps (:func:`~reconstruction.physics.position_update.damped_steps` of
   those terms) per mini-batch (LSQML), or :meth:`PositionRefiner.collect` the terms, and the epoch's end moves
   every position at once, damped by the median over all of them (ePIE, DM);
4. :meth:`PositionRefiner.end_epoch`: the collected steps are taken; in the affine phase (``affine_epochs``
   refining epochs after the first ``affine_delay``, the probe held: :meth:`PositionRefiner.holds_probe`) the
   deformation fitted over the epoch is applied (every position moved, the object resampled, so both stay in one
   frame; with ``warp_degree`` > 1 (DM) a smooth polynomial warp with it); the held affine terms' part of all
   corrections is removed. In the affine phase only the fit moves the scan's linear geometry when the probe is
   reconstructed, and for ePIE and DM always (``fit_alone``: the linear part of the epoch's steps is removed).

Works on NumPy and CuPy alike; it keeps ``EngineState.positions_px`` (N, 2) float64 and the rounded window corners
``rows``/``cols`` in step.
"""

from __future__ import annotations

from typing import Any

from ..physics import modulus, patches, propagation
from ..physics import position_update as pu
from ..positions import window_corners
from .base import EngineSettings, EngineState, object_illumination

MAX_POSITION_STEP_PX = 0.5  # largest gradient correction of one position in one epoch, per axis
MAX_DEFORMATION = 0.02  # largest affine change applied in one epoch (2 %, about 1.1 degrees)
MAX_WARP_STEP_PX = 0.5  # largest move of a position by the smooth warp (beyond affine) in one epoch
# a coarse-search epoch that moves more than SETTLING_SHARE of the windows the one before moved, and more than
# UNSETTLED_SEARCH_SHARE of all, scores noise (a probe not formed yet): every search move is undone and the search
# stops (:func:`unsettled_search`)
UNSETTLED_SEARCH_SHARE = 0.1
SETTLING_SHARE = 0.75
# the search's consensus object falls back to the current object where the other windows light it little
# (:func:`~reconstruction.physics.position_update.consensus_regions`' prior, with this regularisation times the
# largest summed probe intensity); with 0 it fell to 0 there and the scan's edge windows moved inwards, out of the
# dark: 128^2, 12 x 12, +-3 px + 1 % + 0.5 degrees, probe known: LSQML 0.251 -> 0.208 px RMS, ePIE 0.221 -> 0.184,
# DM 0.237 -> 0.216 (64^2: DM 0.119 -> 0.129, LSQML and ePIE unchanged); 0.05: DM 0.132 px at 64^2
SEARCH_FALLBACK = 0.01
LINEAR_TERMS = tuple(t for t in pu.AFFINE_TERMS if t != "offset")

SEARCH_CHUNK = 8  # positions scored at once by the coarse search
# damping of the steps taken at the epoch's end (ePIE), in units of the median denominator over all positions:
# 1 (LSQML's, per mini-batch) halved a typical step; 0.3 (measured, ePIE, +-3 px + 1 % + 0.5 degrees, probe known,
# 100 iterations): 0.125 -> 0.096 px RMS, and it still holds back windows with a tenth of the median's structure.
# DM keeps 1 (with 0.3 its +-1.5 px test ended at 0.75 px instead of 0.40)
EPOCH_DAMPING = 0.3


def unsettled_search(moved: int, moved_before: int, n_positions: int) -> bool:
    """True when a coarse-search epoch that moved ``moved`` windows, after one that moved ``moved_before`` (of
    ``n_positions``), has not settled: it moved more than :data:`SETTLING_SHARE` of the windows the epoch before
    moved, and more than :data:`UNSETTLED_SEARCH_SHARE` of all. Against a formed object the moves fall at least by
    half an epoch (probe known: 64^2, 10 x 10: 79, 43, 17, 9, 2 (LSQML), 69, 16, 11, 4, 2 (DM); 128^2, 12 x 12: 134,
    58, 13, 7, 4); against noise they stay level or grow (probe guessed from the data, 32^2, 8 x 8, the consensus
    falling back to the current object: LSQML 24, 24, 23, 19, 17, DM 24, 19, 30, ePIE 21, 23; 64^2: LSQML 27, 41, 35).
    Without the fallback the count grew (LSQML 24, 26; 64^2: 32, 52), which the fallback hid. The share of moves
    the next epoch reverses does not tell them apart: with the probe known the second epoch reverses 19-42 % of
    its moves (it corrects the first's overshoots), with the probe guessed 4-12 %."""
    return moved > max(SETTLING_SHARE * moved_before, UNSETTLED_SEARCH_SHARE * n_positions)


class PositionRefiner:
    """Refines ``state.positions_px`` in place from iteration ``settings.position_refinement_from`` on."""

    def __init__(self, state: EngineState, settings: EngineSettings, weigh_steps: bool = False,
                 fit_alone: bool = False):
        if state.positions_px is None:
            raise ValueError("position refinement needs EngineState.positions_px (the sub-pixel positions)")
        self.state = state
        self.settings = settings
        xp = state.xp
        self.start_px: Any = state.positions_px.copy()
        free = tuple(settings.position_affine)
        self.held = tuple(t for t in pu.AFFINE_TERMS if t not in free)
        self.fit_deformation = any(t in free for t in pu.AFFINE_TERMS if t != "offset")
        self._gram: Any = None
        self._rhs: Any = None
        self._trusted: Any = None  # (H, W) where the affine fit trusts the object, in the affine phase
        self._shifts = pu.search_shifts(xp, settings.coarse_search_px) if settings.coarse_search_px > 0 else None
        self._epoch = 0  # refining epochs begun
        self.gain = 1.0  # the share of each collected step taken (DM takes less: its exit waves lag the move)
        self.damping = EPOCH_DAMPING  # of the collected steps (DM: 1 while the probe is updated)
        self.step_every = 1  # per-position steps only in every this-many-th refining epoch (DM: engines/dm.py)
        self.warp_degree = 1  # the affine fit's displacement: 1 affine; 2 or more adds a smooth warp (DM: 2)
        self._collected: list[tuple[Any, Any, Any]] = []  # (idx, num, den) kept for the epoch's end
        self.last_deformation: Any = None  # (2, 2) the deformation applied at the last epoch's end
        self._search_moves: Any = None  # (N, 2) the whole-pixel moves the coarse search made so far
        self._search_moved = 0  # windows the last search epoch moved
        self._search_stopped = False
        self._affine_trust = MAX_DEFORMATION  # largest entry of the deformation applied in the next epoch
        self._last_fitted: Any = None  # (2, 2) the deformation the last epoch's fit asked for
        self._epoch_start_px: Any = None  # (N, 2) the positions after the affine phase's epoch began
        self._moved_since_end = True  # positions set since the last end_epoch (its held terms' removal is due)
        # the per-position steps weigh the object's gradients by the share of the light the other windows bring
        # (:func:`~reconstruction.physics.position_update.others_light_share`; ePIE and LSQML, whose fast kernels do
        # too: wf_epie_gather, lf_gather)
        self.weigh_steps = weigh_steps
        # in the affine phase only the fit moves the scan's linear geometry, with the probe known too (ePIE, DM);
        # with a reconstructed probe every engine's (:meth:`probe_reconstructed`). Why: ePIE's and DM's steps carry
        # an edge bias there whose linear part the fit does not restore (64^2 target scan, probe known, DM: the
        # steps moved the scale by +1 to +8e-4 each 5 iterations, the fit took back about 40 % of it; with the
        # gradients unweighted the steps' pull was -12e-4). Removed: DM 0.129 -> 0.120 px (scale +0.31 -> +0.22 %),
        # ePIE 0.071 -> 0.071 px alone, 0.066 px (NRMSE 1.107x -> 1.099x) with its weighted steps (:meth:`terms`);
        # LSQML 0.072 -> 0.075 px, so not LSQML's (its steps move each mini-batch)
        self.fit_alone = fit_alone
        # (H, W) arrays in the object's frame that the affine phase's deformation resamples with the object (DM's
        # error-reduction view: engines/dm.py); emptied when the affine phase ends
        self.carried: list[Any] = []
        self.step_illumination: Any = None  # (H, W) float32 the summed probe intensity, kept in place (weigh_steps)

    @property
    def positions(self) -> Any:
        return self.state.positions_px

    def refining(self, iteration: int) -> bool:
        """True from iteration ``position_refinement_from`` on (1-based)."""
        return 0 < self.settings.position_refinement_from <= iteration

    def holds_probe(self, iteration: int) -> bool:
        """True in the epochs that fit the scan's affine terms: the probe is held there, or it takes up part of the
        in-window stretch and biases the fit (docs/parameters.md)."""
        s = self.settings
        start = s.position_refinement_from + s.affine_delay
        return self.fit_deformation and 0 < start <= iteration < start + s.affine_epochs

    def next_epoch_fits_deformation(self) -> bool:
        """True when the refining epoch that :meth:`begin_epoch` begins next gathers the scan's deformation terms
        (a fast engine that gathers only the translation terms runs that epoch's reference step instead)."""
        s = self.settings
        epoch = self._epoch + 1
        return self.fit_deformation and s.affine_delay < epoch <= s.affine_delay + s.affine_epochs

    def probe_reconstructed(self) -> bool:
        """True when the probe is updated before the affine phase ends (``update_probe_from`` up to its last
        iteration): its size is then free, and a probe of the wrong size reads as a stretch of the scan, so the
        fit's steps are held to a trust that shrinks while the fit keeps asking for the same deformation
        (:func:`~reconstruction.physics.position_update.trusted_deformation`), and only the fit moves the scan's
        linear geometry in the affine phase (the per-position steps' linear part is removed each epoch; for ePIE and
        DM with the probe known too: ``fit_alone``)."""
        s = self.settings
        return s.update_probe_from <= s.position_refinement_from + s.affine_delay + s.affine_epochs

    def affine_phase(self) -> bool:
        """True in the refining epochs that fit the free affine terms (from :meth:`begin_epoch` on)."""
        s = self.settings
        return self.fit_deformation and s.affine_delay < self._epoch <= s.affine_delay + s.affine_epochs

    # -- the epoch ---------------------------------------------------------------------------------------------
    def begin_epoch(self, probe_at: Any) -> bool:
        """Start a refining epoch; in the first ``coarse_search_epochs`` ones (with ``coarse_search_px`` > 0) move
        each window to its best whole-pixel shift. ``probe_at(idx)`` gives the (B, M, n, n) probe lighting the
        windows of positions ``idx`` (moved by their fractions). True when any position moved."""
        self._epoch += 1
        self._gram = self._rhs = None
        if self.fit_deformation and self._epoch > self.settings.affine_delay + self.settings.affine_epochs:
            # the affine phase is over: the geometry found is held from here on (a free probe would bias it)
            self.fit_deformation = False
            self.start_px = self.positions.copy()
            self.held = pu.AFFINE_TERMS
            self.carried = []
        moved = (self._epoch <= self.settings.coarse_search_epochs and not self._search_stopped
                 and self._coarse_search(probe_at))
        self._trusted = pu.trusted_object(self.state.xp, object_illumination(self.state)) if self.affine_phase() \
            else None
        self._epoch_start_px = self.positions.copy() if self.affine_phase() and (
            self.fit_alone or self.probe_reconstructed()) else None
        if self.weigh_steps:  # in place: the fast ePIE's captured graphs read it
            if self.step_illumination is None:
                self.step_illumination = object_illumination(self.state)
            else:
                self.step_illumination[...] = object_illumination(self.state)
        return moved

    def _coarse_search(self, probe_at: Any) -> bool:
        """Each window moved to its best whole-pixel shift within ``coarse_search_px`` (:meth:`begin_epoch`); True
        when any moved. Nothing without a search radius."""
        s = self.settings
        if self._shifts is None:
            return False
        shifts = self._shifts
        st, xp = self.state, self.state.xp
        own = [self._own_terms(xp.arange(a, min(a + SEARCH_CHUNK, st.n_positions)), probe_at)
               for a in range(0, st.n_positions, SEARCH_CHUNK)]
        all_idx = st.window_idx()
        num = patches.scatter_add_patches(xp, st.obj.shape, xp.concatenate([o[0] for o in own]), all_idx)
        den = patches.scatter_add_patches(xp, st.obj.shape, xp.concatenate([o[1] for o in own]), all_idx)
        best = []
        for k, start in enumerate(range(0, st.n_positions, SEARCH_CHUNK)):
            idx = xp.arange(start, min(start + SEARCH_CHUNK, st.n_positions))
            rows, cols = st.rows[idx], st.cols[idx]
            regions = pu.consensus_regions(xp, num, den, own[k][0], own[k][1], rows, cols, s.coarse_search_px,
                                           SEARCH_FALLBACK, prior=st.obj)
            scores = pu.coarse_shift_scores(xp, regions, probe_at(idx), st.amplitudes[idx], st.valid_for(idx),
                                            shifts)
            scores = xp.where(pu.search_inside(xp, st.obj.shape, rows, cols, st.size_px, shifts), scores, -xp.inf)
            best.append(shifts[xp.argmax(scores, axis=1)])  # (B, 2); shift 0 comes first, so ties stay put
        moves = xp.concatenate(best).astype(self.positions.dtype)  # (N, 2)
        moved = int(xp.count_nonzero(xp.any(moves != 0, axis=1)))
        if self._search_moves is None:
            self._search_moves = xp.zeros_like(moves)
        elif unsettled_search(moved, self._search_moved, st.n_positions):
            return self._undo_search()
        self._search_moved = moved
        if moved == 0:
            return False
        self._search_moves += moves
        self._set(slice(None), self.positions + moves)
        return True

    def _undo_search(self) -> bool:
        """Undo every move the coarse search made and stop it (its scores did not settle: with a probe guessed from
        the data and updated, 64^2, 10 x 10, +-3 px, LSQML's search moved 32, 52, 50, 48, 44 windows in its five
        epochs, 70 % of them the wrong way (2.41 -> 5.34 px RMS), where with the probe known it moved 79, 43, 17, 9,
        2, 90 % the right way). True when any position moved back."""
        self._search_stopped = True
        moves, self._search_moves = self._search_moves, None
        if moves is None or not bool(self.state.xp.any(moves != 0)):
            return False
        self._set(slice(None), self.positions - moves)
        return True

    def _own_terms(self, idx: Any, probe_at: Any) -> tuple[Any, Any]:
        """(B, n, n) sum_k conj(P_k) psi_k and sum_k |P_k|^2 of windows ``idx``, psi their exit waves projected on
        the measured moduli: each window's share of the overlap sums the coarse search takes out."""
        st, xp = self.state, self.state.xp
        probes = probe_at(idx)
        windows = patches.extract_patches(xp, st.obj, st.window_idx(idx))
        far = propagation.forward(xp, probes * windows[:, None])
        factor = modulus.modulus_factor(xp, modulus.modal_amplitude(xp, far), st.amplitudes[idx], st.valid_for(idx))
        psi = propagation.backward(xp, far * factor[:, None])
        return xp.sum(probes.conj() * psi, axis=1), xp.sum(probes.real**2 + probes.imag**2, axis=1)

    def terms(self, idx: Any, probes: Any, windows: Any, chi: Any, far_model: Any, model_amp: Any
              ) -> tuple[Any, Any]:
        """(B, 2) numerators and denominators of the per-position steps of a batch of positions ``idx`` (B,)
        (shapes as in ``physics/position_update.py``); with a free affine term, the batch's deformation terms are
        added to the epoch's, the object's gradients weighted by where the scan lights it well
        (:func:`~reconstruction.physics.position_update.trusted_object`). With ``weigh_steps`` the steps weigh the
        object's gradients by the share of the light the other windows bring; in the affine phase, with
        ``fit_alone`` too (ePIE), by that share times the trusted area (there the steps were the deformation terms'
        translation block, the trusted area only: ePIE, 64^2 target scan, 0.071 -> 0.066 px with ``fit_alone``,
        NRMSE 1.107x -> 1.099x the run given the true positions; the share alone 0.076 px, 1.13x)."""
        st, xp = self.state, self.state.xp
        idx = xp.asarray(idx)
        if not self.affine_phase():
            return pu.translation_terms(xp, probes, windows, chi, far_model, model_amp,
                                        self._light_share(idx, probes))
        centre = pu.probe_centre_px(xp, st.probe[: st.modes_active])
        trusted = patches.extract_patches(xp, self._trusted, st.window_idx(idx))
        gram, rhs = pu.deformation_terms(xp, probes, windows, chi, far_model, model_amp, centre, trusted)
        if self._gram is None:
            self._gram, self._rhs = gram, rhs
        else:
            self._gram = xp.concatenate([self._gram, gram])
            self._rhs = xp.concatenate([self._rhs, rhs])
        if self.weigh_steps and self.fit_alone:  # the trusted area's gradients weighed by the others' light, as in
            # the other epochs (ePIE; LSQML, whose steps keep their linear part, keeps the deformation terms' block)
            return pu.translation_terms(xp, probes, windows, chi, far_model, model_amp,
                                        trusted * self._light_share(idx, probes))
        return rhs[:, :2], xp.stack([gram[:, 0, 0], gram[:, 1, 1]], axis=1)

    def _light_share(self, idx: Any, probes: Any) -> Any:
        """(B, n, n) the share of the light the other windows bring to positions ``idx`` (B,) lit by ``probes``
        (:func:`~reconstruction.physics.position_update.others_light_share`; the probe without the position's flux
        factor, as the illumination map), or None without ``weigh_steps``."""
        if not self.weigh_steps:
            return None
        st, xp = self.state, self.state.xp
        lit = patches.extract_patches(xp, self.step_illumination, st.window_idx(idx))
        own = probes if st.intensity_scale is None else probes / st.intensity_scale[idx][:, None, None, None]
        return pu.others_light_share(xp, own, lit)

    def collecting(self) -> bool:
        """True when the refining epoch begun last (:meth:`begin_epoch`) keeps per-position step terms: every
        ``step_every``-th (the fast DM computes its step terms only then)."""
        return self._epoch % self.step_every == 0

    def end_epoch_moves(self) -> bool:
        """True when :meth:`end_epoch` may move positions now: steps collected, an affine fit under way, or held
        affine terms to remove. False: the positions stay exactly where they are (the fast DM then skips its
        exit waves' follow-the-move passes)."""
        held_due = bool(self.held) and self._moved_since_end
        return bool(self._collected) or self._gram is not None or self._epoch_start_px is not None or held_due

    def collect(self, idx: Any, num: Any, den: Any) -> None:
        """Keep the step terms (B, 2) of positions ``idx`` (B,) for :meth:`end_epoch`, which moves every position
        at once, damped by the median over all of them; nothing outside every ``step_every``-th epoch."""
        if not self.collecting():
            return
        self._collected.append((self.state.xp.asarray(idx), num, den))

    def move(self, idx: Any, steps_px: Any) -> None:
        """Positions ``idx`` moved by ``steps_px`` (B, 2), each axis clipped to +-``MAX_POSITION_STEP_PX``."""
        xp = self.state.xp
        clipped = xp.clip(steps_px, -MAX_POSITION_STEP_PX, MAX_POSITION_STEP_PX)
        self._set(idx, self.positions[idx] + clipped)

    def end_epoch(self) -> None:
        """Apply the deformation fitted over the epoch (when an affine term is free), then remove the held terms'
        part of all corrections since the start."""
        xp = self.state.xp
        if self._collected:
            idx, num, den = (xp.concatenate(parts) for parts in zip(*self._collected, strict=True))
            self._collected = []
            self.move(idx, self.gain * pu.damped_steps(xp, num, den, self.damping))
        if self._epoch_start_px is not None:  # the affine phase: the fit alone moves the scan's linear geometry
            self._set(slice(None), pu.remove_affine_terms(xp, self._epoch_start_px, self.positions, LINEAR_TERMS))
        if self._gram is not None:
            free = tuple(t for t in pu.AFFINE_TERMS if t not in self.held)
            if self.warp_degree > 1:
                self._apply_warp(free)
            else:
                d = pu.solve_deformation(xp, self._gram, self._rhs, free)
                self._apply_deformation(self._limited_deformation(d))
            self._gram = self._rhs = None
        if self.held and self._moved_since_end:  # nothing moved since the last removal: it would change nothing
            self._set(slice(None), pu.remove_affine_terms(xp, self.start_px, self.positions, self.held))
        self._moved_since_end = False

    def _limited_deformation(self, fitted: Any) -> Any:
        """The (2, 2) share of the ``fitted`` deformation applied this epoch: each entry clipped to
        ``MAX_DEFORMATION``, or with the probe reconstructed held to the fit's trust
        (:func:`~reconstruction.physics.position_update.trusted_deformation`; the trust kept here)."""
        xp = self.state.xp
        if not self.probe_reconstructed():
            return xp.clip(fitted, -MAX_DEFORMATION, MAX_DEFORMATION)
        step, self._affine_trust = pu.trusted_deformation(self.state.xp, fitted, self._last_fitted,
                                                          self.last_deformation, self._affine_trust)
        self._last_fitted = fitted
        return step

    def _apply_deformation(self, d: Any) -> None:
        """The data show each window's content moved by D (y - c) against the object: the scan is distorted by
        M = I + D about its centre c. Positions move by M^-1 and the object is resampled by M, about c."""
        st, xp = self.state, self.state.xp
        m = xp.eye(2) + d
        y0 = pu.probe_centre_px(xp, st.probe[: st.modes_active])
        centre = xp.mean(self.positions, axis=0) + y0
        moved = (self.positions + y0[None] - centre[None]) @ xp.linalg.inv(m).T + centre[None] - y0[None]
        st.obj[...] = pu.resample_affine(xp, st.obj, m, centre)
        for extra in self.carried:
            extra[...] = pu.resample_affine(xp, extra, m, centre)
        self._set(slice(None), moved)
        self.last_deformation = d

    def _apply_warp(self, free: tuple[str, ...]) -> None:
        """The affine fit with a smooth warp of degree ``warp_degree`` (``physics/position_update.py``: solve_warp):
        the window centres q (positions plus the probe's centre) show a displacement u(x) = D (x - c) + sum_m
        c_m (s^m(x) - mean over the windows), s = (x - c) / the scan's half width, c the windows' mean. The object
        is resampled as O(x + u(x)) and every window centre moves to x with x + u(x) = q, so both stay in one frame
        (for an affine u this is :meth:`_apply_deformation`). The warp moves no position by more than
        ``MAX_WARP_STEP_PX`` an epoch."""
        st, xp = self.state, self.state.xp
        y0 = pu.probe_centre_px(xp, st.probe[: st.modes_active])
        q = self.positions + y0[None]
        origin = xp.mean(q, axis=0)
        scale = float(xp.max(xp.abs(q - origin[None]))) + 1e-9
        degree = self.warp_degree
        d, coef = pu.solve_warp(xp, self._gram, self._rhs, free, pu.warp_jacobians(xp, q, origin, scale, degree))
        d = self._limited_deformation(d)
        mean = xp.mean(pu.warp_monomials(xp, q, origin, scale, degree), axis=0)

        def displacement(points: Any, warp: Any) -> Any:
            smooth = (pu.warp_monomials(xp, points, origin, scale, degree) - mean[None]) @ warp
            return (points - origin[None]) @ d.T + smooth

        largest = float(xp.max(xp.abs(displacement(q, coef) - (q - origin[None]) @ d.T)))
        if largest > MAX_WARP_STEP_PX:
            coef = coef * (MAX_WARP_STEP_PX / largest)
        h, w = st.obj.shape
        grid = xp.stack([a.ravel() for a in xp.meshgrid(xp.arange(h, dtype=xp.float64),
                                                        xp.arange(w, dtype=xp.float64), indexing="ij")], axis=1)
        src = grid + displacement(grid, coef)
        st.obj[...] = pu.resample_at(xp, st.obj, src[:, 0].reshape(h, w), src[:, 1].reshape(h, w))
        for extra in self.carried:
            extra[...] = pu.resample_at(xp, extra, src[:, 0].reshape(h, w), src[:, 1].reshape(h, w))
        moved = q - displacement(q, coef)
        for _ in range(4):  # x = q - u(x): u moves by a fraction of a pixel, each pass gains a factor |du/dx|
            moved = q - displacement(moved, coef)
        self._set(slice(None), moved - y0[None])
        self.last_deformation = d

    def _set(self, idx: Any, positions_px: Any) -> None:
        """Store (B, 2) ``positions_px`` for ``idx``, clipped so each window stays inside the object, and their
        rounded corners."""
        st, xp = self.state, self.state.xp
        n = st.size_px
        hi = xp.asarray([st.obj.shape[0] - n, st.obj.shape[1] - n], dtype=positions_px.dtype)
        positions_px = xp.clip(positions_px, 0, hi[None])
        self.positions[idx] = positions_px
        self._moved_since_end = True
        corners = window_corners(positions_px, xp, st.rows.dtype)
        st.rows[idx] = corners[:, 0]
        st.cols[idx] = corners[:, 1]

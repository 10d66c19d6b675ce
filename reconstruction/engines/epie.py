"""ePIE (Maiden & Rodenburg 2009): sequential per-position object and probe updates.

Each epoch visits every position once in a new random order. For position j with window O_j:
  psi_k = P_k O_j,  psi'_k = F^-1[ F(psi_k) * A_j / sqrt(sum_k |F psi_k|^2) ],  D_k = psi'_k - psi_k
  O_j += sum_k conj(P_k) D_k / max(sum_k |P_k|^2)
  P_k += conj(O_j) D_k / max|O_j|^2          (from iteration ``update_probe_from`` on)
Mixed-state probes update every active mode with its own difference.

Sub-pixel windows (``subpixel_windows``): P_k above is the probe moved by position j's fraction
(``physics/subpixel.py``), and the probe update is moved back before it is added; a whole-pixel position runs the
steps above unchanged.

Position refinement (``position_refinement_from`` > 0: -refinePositions from iteration -PPS): windows follow
sub-pixel positions; each visit also gathers the terms of the position's Gauss-Newton step from its difference
D (``engines/position_refiner.py``, ``physics/position_update.py``), and at the end of the epoch every position takes
its step (damped by the median over all positions, at most 0.5 px per axis), after a coarse whole-pixel search in
the first refining epochs and before the scan's affine fit.
"""

from __future__ import annotations

from typing import Any

from ..physics import modulus, propagation, subpixel
from .base import EngineSettings, EngineState, IterationMetrics
from .position_refiner import PositionRefiner


class EPIE:
    name = "ePIE"
    error_measure = "Fourier error of every position, each just before its own update during the epoch"

    def __init__(self, state: EngineState, settings: EngineSettings):
        self.state = state
        self.settings = settings
        self.refiner: Any = PositionRefiner(state, settings) if settings.position_refinement_from > 0 else None

    def iterate(self, iteration: int, update_probe: bool) -> IterationMetrics:
        st, xp = self.state, self.state.xp
        n = st.size_px
        m = st.modes_active
        metrics = IterationMetrics()
        refine = self.refiner is not None and self.refiner.refining(iteration)
        if refine:
            self.refiner.begin_epoch(self.state.lit_probes)
            update_probe = update_probe and not self.refiner.holds_probe(iteration)
        order = st.rng.permutation(st.n_positions)
        rows = st.rows.tolist() if hasattr(st.rows, "tolist") else list(st.rows)
        cols = st.cols.tolist() if hasattr(st.cols, "tolist") else list(st.cols)
        fractions = self._fractions()
        for j in order.tolist():
            r, c = rows[j], cols[j]
            window = st.obj[r:r + n, c:c + n]
            ramps = None if fractions is None or not any(fractions[j]) else \
                subpixel.shift_ramps(xp, fractions[j:j + 1], n)
            probe = st.probe[:m] if ramps is None else subpixel.shift_by_ramps(xp, st.probe[:m], ramps)[0]
            obj_patch = window.copy()
            psi = probe * obj_patch[None]
            far = propagation.forward(xp, psi)
            model_amp = modulus.modal_amplitude(xp, far)
            amp = st.amplitudes[j]
            valid = st.valid_for(j)
            metrics.add(xp, model_amp[None], amp[None], None if valid is None else valid[None],
                        self.settings.compute_rms)
            factor = modulus.modulus_factor(xp, model_amp, amp, valid)
            diff = propagation.backward(xp, far * factor[None]) - psi
            if refine:  # the terms of this position's step, from the same difference as its update
                self.refiner.collect([j], *self.refiner.terms(probe[None], obj_patch[None], diff[None], far[None],
                                                              model_amp[None]))
            p_int = xp.sum(probe.real**2 + probe.imag**2, axis=0)
            # multiplying by the reciprocal: NumPy divides complex by real as complex by complex (several x slower)
            window += xp.sum(probe.conj() * diff, axis=0) * (1.0 / xp.max(p_int))
            if update_probe:
                o_int = obj_patch.real**2 + obj_patch.imag**2
                step = obj_patch.conj()[None] * diff * (1.0 / xp.max(o_int))
                st.probe[:m] += step if ramps is None else subpixel.shift_by_ramps(xp, step, ramps, inverse=True)[0]
        if refine:  # every position's step at once, damped by the median over all of them
            self.refiner.end_epoch()
        return metrics

    def _fractions(self) -> list[tuple[float, float]] | None:
        """Each position's fraction (row, col) on the host when windows follow sub-pixel positions, else None."""
        st = self.state
        if not self.settings.windows_follow_positions or st.positions_px is None:
            return None
        f = subpixel.fractions_px(st.xp, st.positions_px, st.rows, st.cols)
        return [tuple(v) for v in (f.tolist() if hasattr(f, "tolist") else f)]

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

Per-position flux (``variable_intensity``: -variableIntensity): the exit wave of position j is c_j P O_j, c_j an
amplitude factor for the flux that reached it (``EngineState.intensity_scale``, mean 1; the relative flux is c_j^2).
Each visit refits c_j in closed form to the measured pattern, given the current P and O_j (|Psi| the model's modal
amplitude at c = 1, sums over valid pixels; ``physics.modulus.flux_factor``):
  gaussian: c_j = sum A |Psi| / sum |Psi|^2     (least squares of the amplitudes, min_c sum (A - c |Psi|)^2)
  poisson:  c_j^2 = sum I / sum |Psi|^2         (the Poisson maximum likelihood: measured over modelled photons)
Why amplitudes and not intensities for the Gaussian model: the square root of a Poisson count has a variance of
about 1/4 whatever the count, so an amplitude fit weighs every pixel alike, and it is the cost the modulus
projection itself minimises; a least-squares fit of intensities weighs each pixel by its count, i.e. it trusts most
the bright central pixels whose noise is largest, and is the optimum of neither noise model. The update then runs
with c_j P as the probe: O_j += sum_k conj(c P_k) D_k / max(sum_k |c P_k|^2), and, since d psi / d P = c_j O_j,
P_k += conj(O_j) D_k / (c_j max|O_j|^2). After each epoch the factors are divided by their mean and the probe
multiplied by it (``base.normalise_flux``): the model is unchanged, the probe carries the mean flux.

Poisson noise model (``noise_model="poisson"``: -noise=poisson) replaces the modulus projection by a step of the
Poisson likelihood. With I the counts and Psi_k = F(P_k O_j) the modes' far fields (|Psi|^2 = sum_k |Psi_k|^2), the
negative log-likelihood of pattern j is L_j = sum_q |Psi_q|^2 - I_q log |Psi_q|^2 (+ const). Its Wirtinger gradient
is dL_j / dPsi_k* = Psi_k (1 - I / |Psi|^2), so steepest descent moves every mode by the same real factor:
  Psi_k' = Psi_k (1 + alpha_j g),  g = I / |Psi|^2 - 1  (0 on pixels not valid),
with alpha_j in [0, 1] minimising L_j along g: Newton steps from alpha = 1 on
  L_j(a) = sum |Psi|^2 s^2 - I log(|Psi|^2 s^2),  s = 1 + a g,  L' = sum 2 g (|Psi|^2 s - I / s),
  L'' = sum 2 g^2 (|Psi|^2 + I / s^2)
(``physics.modulus.poisson_step``, LSQML's far-field step; Thibault & Guizar-Sicairos 2012, Odstrcil et al. 2018).
D = F^-1[Psi'] - psi then enters the object and probe updates above, so an epoch is a stochastic gradient descent
on sum_j L_j. For comparison, the amplitude model L_j = sum (|Psi| - A)^2 has the gradient Psi (1 - A / |Psi|), whose
whole step is the modulus projection A / |Psi|. Both likelihoods are maximised pixel by pixel at |Psi|^2 = I, so
a projection is the same for both; they differ in how a step weighs the pixels. The Poisson step moves a pixel
that is nearly fitted (A / |Psi| = 1 + e) by about 2 alpha e, with alpha 0.3-0.5 measured, and a pixel that
counted nothing only to (1 - alpha) Psi, not to 0: a partial projection weighted by the likelihood. At low dose it
keeps single noisy patterns from throwing the probe and object about (64^2, 8 x 8, 1e3 photons a pattern, probe
updated from epoch 10, 60 epochs, four scans: object NRMSE 0.36 against 0.50-0.79 with the projection, whose probe
updates wander); at higher dose the projection converges faster (1e4 photons, 30 epochs: 0.26-0.28 against
0.22-0.24). docs/parameters.md has the figures.
"""

from __future__ import annotations

from typing import Any

from ..physics import modulus, propagation, subpixel
from .base import EngineSettings, EngineState, IterationMetrics, normalise_flux
from .position_refiner import PositionRefiner


class EPIE:
    name = "ePIE"
    error_measure = "Fourier error of every position, each just before its own update during the epoch"

    def __init__(self, state: EngineState, settings: EngineSettings):
        self.state = state
        self.settings = settings
        # the steps weighed by the others' light: 128^2, 12 x 12, +-3 px + 1 % + 0.5 degrees, probe known: 0.184 ->
        # 0.154 px; the affine fit alone moves the linear geometry (PositionRefiner.fit_alone)
        self.refiner: Any = PositionRefiner(state, settings, weigh_steps=True, fit_alone=True) \
            if settings.position_refinement_from > 0 else None
        if settings.variable_intensity and state.intensity_scale is None:
            state.intensity_scale = state.xp.ones(state.n_positions, dtype=state.xp.float32)

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
        scales: Any = st.intensity_scale  # (N,) amplitude factors c_j (-variableIntensity), or None
        noise = self.settings.noise_model
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
            flux = 1.0
            if scales is not None:  # this position's flux, fitted to its data; the model is then c_j P O_j
                fitted = float(modulus.flux_factor(xp, model_amp, amp, valid, noise))
                flux = fitted if fitted > 0 else float(scales[j])
                scales[j] = flux
                probe, psi, far, model_amp = probe * flux, psi * flux, far * flux, model_amp * flux
            metrics.add(xp, model_amp[None], amp[None], None if valid is None else valid[None],
                        self.settings.compute_rms)
            factor = modulus.fourier_factor(xp, model_amp, amp, valid, noise)
            diff = propagation.backward(xp, far * factor[None]) - psi
            if refine:  # the terms of this position's step, from the same difference as its update
                self.refiner.collect([j], *self.refiner.terms([j], probe[None], obj_patch[None], diff[None],
                                                              far[None], model_amp[None]))
            p_int = xp.sum(probe.real**2 + probe.imag**2, axis=0)
            # multiplying by the reciprocal: NumPy divides complex by real as complex by complex (several x slower)
            window += xp.sum(probe.conj() * diff, axis=0) * (1.0 / xp.max(p_int))
            if update_probe:
                o_int = obj_patch.real**2 + obj_patch.imag**2
                # d psi / d P = c_j O_j: the step conj(c O) D / max |c O|^2 = conj(O) D / (c max |O|^2)
                step = obj_patch.conj()[None] * diff * (1.0 / (xp.max(o_int) if scales is None else
                                                               flux * xp.max(o_int)))
                st.probe[:m] += step if ramps is None else subpixel.shift_by_ramps(xp, step, ramps, inverse=True)[0]
        if refine:  # every position's step at once, damped by the median over all of them
            self.refiner.end_epoch()
        if scales is not None:
            normalise_flux(st)
        return metrics

    def _fractions(self) -> list[tuple[float, float]] | None:
        """Each position's fraction (row, col) on the host when windows follow sub-pixel positions, else None."""
        st = self.state
        if not self.settings.windows_follow_positions or st.positions_px is None:
            return None
        f = subpixel.fractions_px(st.xp, st.positions_px, st.rows, st.cols)
        return [tuple(v) for v in (f.tolist() if hasattr(f, "tolist") else f)]

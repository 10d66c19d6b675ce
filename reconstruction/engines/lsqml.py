"""LSQML (Odstrcil, Menzel & Guizar-Sicairos 2018): least-squares maximum-likelihood with mini-batches.

For each mini-batch of positions:
  1. far-field update direction chi_hat from the noise model:
       gaussian: chi_hat = Psi (A / |Psi| - 1)
       poisson:  chi_hat = alpha_j Psi (I / |Psi|^2 - 1), alpha_j from a few Newton steps on the Poisson
                 likelihood of position j (clipped to [0, 1]);
     chi = F^-1 chi_hat (per mode);
  2. preconditioned object and probe directions
       dO = sum_j sum_k conj(P_k) chi_jk / (sum_j sum_k |P_k|^2 + delta max)   (scattered into the object)
       dP_k = sum_j conj(O_j) chi_jk / (sum_j |O_j|^2 + delta max);
  3. per position the optimal steps (a_O,j, a_P,j) minimise || chi_j - a_O dO_j P - a_P O_j dP ||^2 (a 2x2
     least-squares problem); each position's contribution is weighted by its own step, damped by beta = 0.9
     (with ``beta_decay`` (-betaDecay) halved after each epoch whose error stalled, down to 0.1):
       O += beta sum_j a_O,j conj(P) chi_j / (sum_j |P|^2 + delta max),
       P += beta sum_j a_P,j conj(O_j) chi_j / (sum_j |O_j|^2 + delta max).

Sub-pixel windows (``subpixel_windows``, and always with refinement): a mini-batch with any fractional position
moves the probe of each window by its fraction and moves the probe gradient back before it is summed (below); a
batch of whole-pixel positions runs the steps above unchanged.

Probe-position refinement (``position_refinement_from`` > 0: -refinePositions from iteration -PPS): windows
follow sub-pixel positions (the probe of window j is moved by the fraction of its position,
``physics/subpixel.py``; the probe gradient is moved back before it is summed), and from that iteration on each
visited position takes a damped Gauss-Newton step per axis (``physics/position_update.py``: the far-field
amplitude change a move would make, fitted to the measured one), at most 0.5 px an epoch, from the same chi as the
object and probe updates; the schedule, the coarse search and the scan's affine fit are
``engines/position_refiner.py``'s, shared with ePIE and DM. As ePIE's, the step weighs the object's gradients by
the share of the light the other windows bring (``position_update.others_light_share``; the fast kernel lf_gather
too): where a window alone lights the object, the object holds that window's own data and pulls it to stay.

Variable intensity (``variable_intensity``: -variableIntensity, as the original's MLs always did): the exit wave
of position j is c_j P O_j, with c_j an amplitude factor for the flux that reached it; each visit multiplies c_j
by 1 + Re<psi_j, chi_j> / ||psi_j||^2 (the least-squares scale of the update, clipped to +-20 % a visit), and after
each epoch the factors are divided by their mean (the overall scale belongs to the probe).
"""

from __future__ import annotations

from typing import Any

from ..physics import modulus, patches, position_update, propagation, subpixel
from .base import EngineSettings, EngineState, IterationMetrics
from .position_refiner import PositionRefiner

NEWTON_STEPS = modulus.NEWTON_STEPS  # the Poisson step's Newton steps (lsqml_fits.cu has its own)
MAX_INTENSITY_STEP = 0.2  # largest relative change of a position's amplitude factor in one visit
BETA_FLOOR = 0.1  # the lowest step damping -betaDecay halves beta_lsq to


class LSQML:
    name = "LSQML"
    error_measure = "Fourier error of every position, each mini-batch just before its update during the epoch"

    def __init__(self, state: EngineState, settings: EngineSettings):
        self.state = state
        self.settings = settings
        n_pos = state.n_positions
        self.batch_size = settings.batch_size or default_batch_size(n_pos)
        self.subpixel = settings.windows_follow_positions
        if self.subpixel and state.positions_px is None:
            raise ValueError("sub-pixel windows and position refinement need EngineState.positions_px (the "
                             "sub-pixel positions)")
        # the steps weighed by the others' light: 128^2, 12 x 12, +-3 px + 1 % + 0.5 degrees, probe known: 0.208 ->
        # 0.156 px (benchmarks/RESULTS.md)
        self.refiner: Any = PositionRefiner(state, settings, weigh_steps=True) \
            if settings.position_refinement_from > 0 else None
        if settings.variable_intensity and state.intensity_scale is None:
            state.intensity_scale = state.xp.ones(n_pos, dtype=state.xp.float32)
        self.beta = settings.beta_lsq  # the step damping in force: halved on stalled epochs by -betaDecay
        self._last_error: float | None = None

    def iterate(self, iteration: int, update_probe: bool) -> IterationMetrics:
        st = self.state
        metrics = IterationMetrics()
        refine = self.refiner is not None and self.refiner.refining(iteration)
        if refine:
            self.refiner.begin_epoch(self.state.lit_probes)
            update_probe = update_probe and not self.refiner.holds_probe(iteration)
        order = st.rng.permutation(st.n_positions)
        for start in range(0, st.n_positions, self.batch_size):
            idx = order[start:start + self.batch_size]
            self._update_batch(st.xp.asarray(idx), metrics, update_probe, refine)
        if refine:
            self.refiner.end_epoch()
        if st.intensity_scale is not None:
            st.intensity_scale /= st.xp.mean(st.intensity_scale)
        self._adapt_step(metrics.error)
        return metrics

    def _adapt_step(self, error: float) -> None:
        """-betaDecay: halve the step damping (down to :data:`BETA_FLOOR`) after an epoch whose Fourier error fell by
        less than ``settings.beta_decay`` (a fraction) from the epoch before. Mini-batches that each take a full
        step fight over the data the model cannot fit (a measured scan's partial coherence, its noise): the error
        stalls at a floor set by the step; a smaller step lowers it (benchmarks/RESULTS.md, "LSQML's stochastic
        floor on measured data")."""
        decay = self.settings.beta_decay
        if decay > 0 and self._last_error is not None and error > self._last_error * (1.0 - decay):
            self.beta = max(0.5 * self.beta, min(BETA_FLOOR, self.settings.beta_lsq))
        self._last_error = error

    def _update_batch(self, idx: Any, metrics: IterationMetrics, update_probe: bool, refine: bool = False) -> None:
        st, xp, s = self.state, self.state.xp, self.settings
        m = st.modes_active
        flat_idx = st.window_idx(idx)
        obj_p = patches.extract_patches(xp, st.obj, flat_idx)  # (B, n, n)
        ramps = self._shift_ramps(idx) if self.subpixel else None  # None too when no window of the batch moves
        # the probe of each window: (1, M, n, n) on whole-pixel windows, (B, M, n, n) moved by sub-pixel fractions
        probe = st.probe[:m][None] if ramps is None else subpixel.shift_by_ramps(xp, st.probe[:m], ramps)
        factors: Any = st.intensity_scale  # (N,) amplitude factors, or None
        scale = None if factors is None else factors[idx]  # (B,)
        if scale is not None:
            probe = probe * scale[:, None, None, None]  # the probe as it lit each window
        probe_conj = probe.conj()
        psi = probe * obj_p[:, None]  # (B, M, n, n)
        far = propagation.forward(xp, psi)
        model_amp = modulus.modal_amplitude(xp, far)
        amp = st.amplitudes[idx]
        valid = st.valid_for(idx)
        metrics.add(xp, model_amp, amp, valid, s.compute_rms)
        far_model = far.copy() if refine else None
        far *= self._far_field_step(model_amp, amp, valid)[:, None]
        chi = propagation.backward(xp, far)

        if refine:
            position_steps = position_update.damped_steps(
                xp, *self.refiner.terms(idx, probe, obj_p, chi, far_model, model_amp))
        if scale is not None:
            scale_steps = _intensity_steps(xp, psi, chi)

        # preconditioned search directions
        p_int = xp.sum(probe.real**2 + probe.imag**2, axis=1)  # (1 or B, n, n)
        grad_o = chi[:, 0] * probe_conj[:, 0] if m == 1 else xp.sum(probe_conj * chi, axis=1)  # (B, n, n)
        den_o = patches.scatter_add_patches(xp, st.obj.shape, xp.broadcast_to(p_int, flat_idx.shape), flat_idx)
        den_o += s.delta_p * xp.max(den_o)
        inv_den_o = 1.0 / den_o  # complex * real is ~9x faster than complex / real in NumPy
        d_obj = patches.scatter_add_patches(xp, st.obj.shape, grad_o, flat_idx)
        d_obj *= inv_den_o
        a = patches.extract_patches(xp, d_obj, flat_idx)[:, None] * probe  # object-step exit-wave change
        if update_probe:
            lit_obj = obj_p if scale is None else obj_p * scale[:, None, None]  # d psi_j / d P = c_j O_j
            grad_p = lit_obj.conj()[:, None] * chi  # (B, M, n, n), in each window's frame
            if ramps is not None:  # moved back into the probe's own frame in Fourier space, summed there
                grad_p = propagation.forward(xp, grad_p)
                grad_p *= ramps.conj()[:, None]
            den_p = xp.sum(lit_obj.real**2 + lit_obj.imag**2, axis=0)
            den_p += s.delta_p * xp.max(den_p)
            inv_den_p = 1.0 / den_p
            # probe-step exit-wave change, for the step sizes only (on sub-pixel windows the probe step is not
            # moved by each window's fraction here: the 2x2 fit of two scalars barely notices half a pixel)
            b = lit_obj[:, None] * (self._probe_frame_sum(grad_p, ramps) * inv_den_p)[None]
            step_o, step_p = _optimal_steps(xp, chi, a, b)
            grad_p *= step_p[:, None, None, None]
            st.probe[:m] += self._probe_frame_sum(grad_p, ramps) * (self.beta * inv_den_p)
        else:
            step_o = _optimal_step(xp, chi, a)
        # each position's contribution weighted by its own optimal step
        grad_o *= step_o[:, None, None]
        weighted = patches.scatter_add_patches(xp, st.obj.shape, grad_o, flat_idx)
        inv_den_o *= self.beta
        weighted *= inv_den_o
        st.obj += weighted
        if refine:
            self.refiner.move(idx, position_steps)
        if scale is not None:
            factors[idx] = scale * (1.0 + scale_steps)

    # -- sub-pixel positions ------------------------------------------------------------------------------
    def _probe_frame_sum(self, grad_p: Any, ramps: Any | None) -> Any:
        """(M, n, n) sum over the batch of probe gradients (B, M, n, n): as they are on whole-pixel windows, or
        their spectra already moved into the probe's frame (one inverse transform per mode, not per window)."""
        xp = self.state.xp
        total = xp.sum(grad_p, axis=0)
        return total if ramps is None else propagation.backward(xp, total).astype(xp.complex64)

    def _shift_ramps(self, idx: Any) -> Any:
        """(B, n, n) ramps moving the probe by the fractional part of positions ``idx``, or None when every one
        of them sits on whole pixels (the batch then runs the whole-pixel steps, bit for bit)."""
        st, xp = self.state, self.state.xp
        positions: Any = st.positions_px  # (N, 2), present whenever windows follow positions
        fractions = subpixel.fractions_px(xp, positions[idx], st.rows[idx], st.cols[idx])
        if not subpixel.any_fraction(xp, fractions):
            return None
        return subpixel.shift_ramps(xp, fractions, st.size_px)

    def _far_field_step(self, model_amp: Any, amp: Any, valid: Any | None) -> Any:
        """(B, n, n) real factor g with chi_hat = Psi * g, for the chosen noise model."""
        xp = self.state.xp
        if self.settings.noise_model == "poisson":
            return modulus.poisson_step(xp, model_amp, amp, valid)
        return modulus.modulus_factor(xp, model_amp, amp, valid) - 1.0


def _intensity_steps(xp: Any, psi: Any, chi: Any) -> Any:
    """(B,) relative change of each position's amplitude factor: the least-squares scale Re<psi, chi> / ||psi||^2
    of the exit-wave update along the exit waves (B, M, n, n), clipped to +-``MAX_INTENSITY_STEP``."""
    step = _re_dot(xp, psi, chi) / (_re_dot(xp, psi, psi) + 1e-30)
    return xp.clip(step, -MAX_INTENSITY_STEP, MAX_INTENSITY_STEP).astype(xp.float32)


def _re_dot(xp: Any, u: Any, v: Any) -> Any:
    """(B,) real part of <u_j, v_j> summed over modes and pixels, for contiguous complex64 (B, M, n, n)."""
    b = u.shape[0]
    return xp.einsum("bi,bi->b", u.reshape(b, -1).view(xp.float32), v.reshape(b, -1).view(xp.float32))


def _optimal_steps(xp: Any, chi: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """(B,) per-position least-squares steps for the object (a) and probe (b) terms, clipped to [0, 2]."""
    a11 = _re_dot(xp, a, a)
    a22 = _re_dot(xp, b, b)
    a12 = _re_dot(xp, a, b)
    y1 = _re_dot(xp, a, chi)
    y2 = _re_dot(xp, b, chi)
    lam = 1e-6 * (a11 + a22) + 1e-30
    det = (a11 + lam) * (a22 + lam) - a12 * a12
    step_o = ((a22 + lam) * y1 - a12 * y2) / det
    step_p = ((a11 + lam) * y2 - a12 * y1) / det
    return xp.clip(step_o, 0.0, 2.0).astype(xp.float32), xp.clip(step_p, 0.0, 2.0).astype(xp.float32)


def _optimal_step(xp: Any, chi: Any, a: Any) -> Any:
    """(B,) per-position least-squares object steps, clipped to [0, 2]."""
    a11 = _re_dot(xp, a, a)
    y1 = _re_dot(xp, a, chi)
    return xp.clip(y1 / (a11 + 1e-30), 0.0, 2.0).astype(xp.float32)


def default_batch_size(n_positions: int) -> int:
    """About N/40 positions per mini-batch (at least 1): small batches converge faster per epoch."""
    return max(1, min(n_positions, -(-n_positions // 40)))

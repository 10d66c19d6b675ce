"""The Fourier constraints (the modulus projection, the Poisson likelihood step, the per-position flux fit) and
the error metrics measured on the way. Every function takes a stack (..., n, n) of patterns; per-pattern sums run
over the last two axes and over valid pixels only."""

from __future__ import annotations

from typing import Any

EPS = 1e-12
NEWTON_STEPS = 3  # Newton steps of the Poisson line search (poisson_step)
NOISE_MODELS = ("gaussian", "poisson")


def modal_amplitude(xp: Any, far_field: Any) -> Any:
    """sqrt(sum over modes |Psi_k|^2): (..., M, n, n) -> (..., n, n) float32."""
    return xp.sqrt(xp.sum(far_field.real**2 + far_field.imag**2, axis=-3))


def modulus_factor(xp: Any, model_amplitude: Any, measured_amplitude: Any, valid: Any | None) -> Any:
    """Per-pixel factor A / |Psi| (1 where the pixel is not valid): (..., n, n) float32."""
    factor = measured_amplitude / (model_amplitude + EPS)
    if valid is not None:
        factor = xp.where(valid, factor, 1.0).astype(factor.dtype)
    return factor


def error_terms(xp: Any, model_amplitude: Any, measured_amplitude: Any, valid: Any | None) -> tuple[Any, Any, Any]:
    """Per-position sums: (sum (|Psi| - A)^2, sum A^2, sum |A - |Psi||) over valid pixels, each (N,)."""
    diff = model_amplitude - measured_amplitude
    a = measured_amplitude
    if valid is not None:
        diff = xp.where(valid, diff, 0)
        a = xp.where(valid, a, 0)
    return (xp.sum(diff * diff, axis=(-2, -1)), xp.sum(a * a, axis=(-2, -1)), xp.sum(xp.abs(diff), axis=(-2, -1)))


def relaxed_modulus_factor(xp: Any, model_amplitude: Any, measured_amplitude: Any, valid: Any | None,
                           relax: float) -> Any:
    """Per-pixel factor of the relaxed (noise-ball) modulus projection: (N, n, n) float32.

    For each pattern j with e_j = sum (|Psi| - A)^2 and a_j = sum A^2 over valid pixels, the far field moves only
    onto the ball e <= relax^2 a_j around the measurement: Psi' = s_j Psi + (1 - s_j) P_M(Psi) with
    s_j = sqrt(min(1, relax^2 a_j / e_j)), i.e. not at all when it is already inside. ``relax`` = 0 gives the exact
    projection A / |Psi|.
    """
    if relax <= 0:
        return modulus_factor(xp, model_amplitude, measured_amplitude, valid)
    sq, a2, _ = error_terms(xp, model_amplitude, measured_amplitude, valid)
    return relaxed_factor_from_sums(xp, model_amplitude, measured_amplitude, valid, sq, a2, relax)


def relaxed_factor_from_sums(xp: Any, model_amplitude: Any, measured_amplitude: Any, valid: Any | None,
                             sq_err: Any, sq_amp: Any, relax: float) -> Any:
    """:func:`relaxed_modulus_factor` given the per-pattern sums (N,) of :func:`error_terms` already computed."""
    factor = modulus_factor(xp, model_amplitude, measured_amplitude, valid)
    if relax <= 0:
        return factor
    s = relax_weight(xp, sq_err, sq_amp, relax)[:, None, None]
    return (s + (1 - s) * factor).astype(factor.dtype)


def relax_weight(xp: Any, sq_err: Any, sq_amp: Any, relax: float) -> Any:
    """s_j = sqrt(min(1, relax^2 a_j / e_j)) per pattern (1 where e_j = 0): the share of the far field kept."""
    bound = (relax * relax) * sq_amp
    return xp.sqrt(xp.minimum(1.0, bound / xp.maximum(sq_err, 1e-30))).astype(xp.float32)


def poisson_step(xp: Any, model_amplitude: Any, measured_amplitude: Any, valid: Any | None) -> Any:
    """(..., n, n) float32 real factor alpha_j g with g = I / |Psi|^2 - 1: the far-field step
    Psi' = Psi (1 + alpha_j g) of the Poisson likelihood L_j = sum |Psi|^2 - I log |Psi|^2 of each pattern j.

    g is the steepest-descent direction of L_j in Psi (dL/dPsi* = Psi (1 - I / |Psi|^2), so -dL/dPsi* = Psi g), and
    alpha_j in [0, 1] the minimiser of L_j along it (:func:`poisson_line_search`); g = 0 on pixels not valid, so
    they keep the model. I = A^2 with A = ``measured_amplitude``; |Psi| = ``model_amplitude`` (modal).
    """
    model_int = model_amplitude * model_amplitude
    g = (measured_amplitude * measured_amplitude) / (model_int + EPS) - 1.0
    if valid is not None:
        g = xp.where(valid, g, 0.0)
    alpha = poisson_line_search(xp, model_int, measured_amplitude * measured_amplitude, g)
    return (alpha[..., None, None] * g).astype(xp.float32)


def poisson_line_search(xp: Any, model_int: Any, measured_int: Any, g: Any) -> Any:
    """(...) step alpha in [0, 1] minimising sum |Psi|^2 (1 + a g)^2 - I log(|Psi|^2 (1 + a g)^2) per pattern
    (``NEWTON_STEPS`` Newton steps from a = 1), from the model and measured intensities and g, each (..., n, n)."""
    alpha = xp.ones(g.shape[:-2], dtype=xp.float32)
    for _ in range(NEWTON_STEPS):
        s = 1.0 + alpha[..., None, None] * g
        s = xp.maximum(s, 1e-3)
        d1 = xp.sum(2 * model_int * s * g - 2 * measured_int * g / s, axis=(-2, -1))
        d2 = xp.sum(2 * model_int * g * g + 2 * measured_int * g * g / (s * s), axis=(-2, -1))
        alpha = xp.clip(alpha - d1 / xp.maximum(d2, 1e-12), 0.0, 1.0).astype(xp.float32)
    return alpha


def fourier_factor(xp: Any, model_amplitude: Any, measured_amplitude: Any, valid: Any | None,
                   noise_model: str) -> Any:
    """(..., n, n) float32 per-pixel factor f with Psi' = f Psi, the Fourier constraint of ``noise_model``:
    "gaussian" the modulus projection A / |Psi|, "poisson" the likelihood step 1 + alpha_j g (:func:`poisson_step`).
    Pixels not valid keep the model (f = 1)."""
    if noise_model == "poisson":
        return 1.0 + poisson_step(xp, model_amplitude, measured_amplitude, valid)
    if noise_model != "gaussian":
        raise ValueError(f"noise_model={noise_model!r}: expected one of {', '.join(NOISE_MODELS)}")
    return modulus_factor(xp, model_amplitude, measured_amplitude, valid)


def flux_factor(xp: Any, model_amplitude: Any, measured_amplitude: Any, valid: Any | None,
                noise_model: str) -> Any:
    """(...) float32 amplitude factor c_j that best fits each pattern's model c_j |Psi| to its data, in closed form
    (|Psi| = ``model_amplitude`` (..., n, n), the model at c_j = 1; sums over valid pixels):

    - "gaussian" (amplitudes with equal variance): min_c sum (A - c |Psi|)^2 gives c = sum A |Psi| / sum |Psi|^2;
    - "poisson" (I ~ Poisson(c^2 |Psi|^2)): min_c sum c^2 |Psi|^2 - I log(c^2 |Psi|^2) gives
      c^2 = sum I / sum |Psi|^2 (the ratio of measured to modelled photons).

    A pattern with no modelled photons gets 0 (the caller keeps its old factor)."""
    m2 = model_amplitude * model_amplitude
    if noise_model == "poisson":
        num = measured_amplitude * measured_amplitude
    elif noise_model == "gaussian":
        num = measured_amplitude * model_amplitude
    else:
        raise ValueError(f"noise_model={noise_model!r}: expected one of {', '.join(NOISE_MODELS)}")
    if valid is not None:
        num, m2 = xp.where(valid, num, 0.0), xp.where(valid, m2, 0.0)
    num, den = xp.sum(num, axis=(-2, -1)), xp.sum(m2, axis=(-2, -1))
    c = xp.where(den > 0, num / xp.maximum(den, 1e-30), 0.0)
    return (xp.sqrt(c) if noise_model == "poisson" else c).astype(xp.float32)

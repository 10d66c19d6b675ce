"""The Fourier-modulus constraint and the error metrics measured on the way."""

from __future__ import annotations

from typing import Any

EPS = 1e-12


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

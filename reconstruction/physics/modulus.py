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

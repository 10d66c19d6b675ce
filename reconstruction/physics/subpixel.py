"""Sub-pixel windows: what every engine's sub-pixel windows (``-subpixelWindows``) and its position refinement
(``physics/position_update.py``) are built from.

A position p (row, col) in pixels splits into the integer window corner c = round(p) and the fraction
f = p - c in [-0.5, 0.5]. Inside window j the exit wave is psi_j(y) = P(y - f_j) O(c_j + y): the object window is
taken whole and the probe moves by the fraction, through a Fourier phase ramp (circular over the n x n window,
where a probe is dark). The move is unitary, so its adjoint is the inverse move, exact to float32 rounding: an
engine moves its probe update back with the conjugate ramps. A window whose fraction is zero takes the probe as it
is (no transform), so whole-pixel positions give the whole-pixel engines' results bit for bit. Why a Fourier shift
of the probe rather than an interpolation of the object: docs/parameters.md, "Sub-pixel windows".
"""

from __future__ import annotations

from typing import Any

from . import propagation


def shift_ramps(xp: Any, fractions_px: Any, n: int) -> Any:
    """(B, n, n) complex64 Fourier phase ramps exp(-2 pi i (k_r f_r + k_c f_c)) that move an (n, n) array by
    ``fractions_px`` (B, 2) pixels (row, col) when multiplied into its FFT."""
    k = xp.fft.fftfreq(n).astype(xp.float32)
    f = xp.asarray(fractions_px, dtype=xp.float32)
    rows = xp.exp((-2j * xp.pi) * (f[:, 0, None] * k[None])).astype(xp.complex64)  # (B, n): separable, so two
    cols = xp.exp((-2j * xp.pi) * (f[:, 1, None] * k[None])).astype(xp.complex64)  # 1-D ramps and one product
    return rows[:, :, None] * cols[:, None, :]


def shift_by_ramps(xp: Any, waves: Any, ramps: Any, inverse: bool = False) -> Any:
    """Waves (M, n, n) or (B, M, n, n) moved by the ramps (B, n, n) of :func:`shift_ramps` -> (B, M, n, n)
    complex64; ``inverse`` moves them back by the opposite amount."""
    r = ramps.conj() if inverse else ramps
    spectrum = propagation.forward(xp, waves)  # the orthonormal pair: NumPy's unscaled forward FFT is ~8x slower
    if spectrum.ndim == 3:
        spectrum = spectrum[None]
    return propagation.backward(xp, spectrum * r[:, None]).astype(xp.complex64)


def fractions_px(xp: Any, positions_px: Any, rows: Any, cols: Any) -> Any:
    """(B, 2) float64 fractional parts p - c of positions (B, 2) whose rounded corners are ``rows``, ``cols``."""
    return positions_px - xp.stack([rows, cols], axis=1).astype(positions_px.dtype)


def any_fraction(xp: Any, fractions: Any) -> bool:
    """True when any of the (B, 2) fractions is not zero (the windows then need the moved probe)."""
    return bool(xp.any(fractions != 0))


def moved_probes(xp: Any, probe: Any, fractions: Any, ramps: Any = None) -> tuple[Any, Any]:
    """The probe (M, n, n) as it lights each window: (B, M, n, n) complex64 moved by the (B, 2) ``fractions``, and
    the (B, n, n) ramps that moved it (for the adjoint, :func:`move_back_and_sum`; pass them in to reuse them). A
    window whose fraction is zero gets the probe unchanged (bit for bit)."""
    ramps = shift_ramps(xp, fractions, probe.shape[-1]) if ramps is None else ramps
    moved = shift_by_ramps(xp, probe, ramps)
    whole = xp.all(fractions == 0, axis=1)
    if bool(xp.any(whole)):
        moved[whole] = probe[None]
    return moved, ramps


def move_back_and_sum(xp: Any, waves: Any, ramps: Any) -> Any:
    """(M, n, n) sum over windows of the (B, M, n, n) probe-frame quantities ``waves`` moved back by each window's
    ramp (the adjoint of :func:`moved_probes`): summed as spectra, so one inverse transform per mode."""
    spectra = propagation.forward(xp, waves)
    spectra *= ramps.conj()[:, None]
    return propagation.backward(xp, xp.sum(spectra, axis=0)).astype(xp.complex64)

"""Sub-pixel windows and the position gradient: what every engine's sub-pixel windows (``-subpixelWindows``) and
LSQML's probe-position refinement are built from.

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


def window_gradients(xp: Any, windows: Any) -> tuple[Any, Any]:
    """Central differences d/d(row), d/d(col) of (B, n, n) object windows (one-sided at the window's edges)."""
    return xp.gradient(windows, axis=1), xp.gradient(windows, axis=2)


def position_steps_px(xp: Any, probes: Any, windows: Any, chi: Any, far_model: Any, model_amp: Any,
                      damping: float = 1.0) -> Any:
    """(B, 2) float32 Gauss-Newton steps (row, col) in pixels that best explain the exit-wave update ``chi``.

    probes (1 or B, M, n, n) the (shifted) probe modes of each window, windows (B, n, n) the object windows,
    chi (B, M, n, n) the exit-wave update direction from the measured moduli, far_model (B, M, n, n) the model's
    far fields F psi and model_amp (B, n, n) their modal amplitude. Moving position j by d changes psi_j by
    d P grad(O_j), whose far field D changes the modal amplitude by sum_k Re(conj(F psi_k) D_k) / |F psi|; the
    step along each axis fits that amplitude change to the measured one: Re<P dO, chi> / sum (amplitude change)^2.
    (The denominator counts only what the moduli can see; ||P dO||^2 would make every step about 4x too short.)
    ``damping`` (Levenberg-Marquardt) adds that many times the batch's median denominator, so a window whose
    object holds little structure, or which little else overlaps, barely moves: undamped, such positions drifted
    by 3-5 px on a scan with little overlap; 0 gives the plain Gauss-Newton step.
    """
    steps = []
    inv_amp = 1.0 / (model_amp + 1e-12 * xp.max(model_amp) + 1e-30)
    for d_obj in window_gradients(xp, windows):
        change = probes * d_obj[:, None]  # (B, M, n, n)
        num = xp.sum((change.conj() * chi).real, axis=(1, 2, 3))
        d_far = propagation.forward(xp, change)
        d_amp = xp.sum((far_model.conj() * d_far).real, axis=1) * inv_amp  # (B, n, n)
        den = xp.sum(d_amp * d_amp, axis=(1, 2))
        steps.append(num / (den + damping * xp.median(den) + 1e-30))
    return xp.stack(steps, axis=1).astype(xp.float32)

"""Probe models: the simulated defocused pupil, and the initial guess built from the data."""

from __future__ import annotations

import numpy as np

_CHUNK_FRAMES = 1024


def defocused_pupil_probe(size_px: int, beam_diameter_px: float, *, pupil_fraction: float = 0.25) -> np.ndarray:
    """(n, n) complex64 probe from a circular pupil with a defocus phase, unit total power.

    The pupil has radius ``pupil_fraction * n`` frequency pixels; the quadratic phase is chosen so that the
    geometric beam diameter in the sample plane is about ``beam_diameter_px`` (clamped to [4, 0.6 n]).
    """
    n = size_px
    d = float(np.clip(beam_diameter_px, 4.0, 0.6 * n))
    radius = pupil_fraction * n
    q = np.fft.fftfreq(n) * n  # frequency pixels, FFT order
    qy, qx = np.meshgrid(q, q, indexing="ij")
    q2 = qx**2 + qy**2
    pupil = (q2 <= radius**2).astype(np.float64)
    # geometric optics: a phase c q^2 shifts rays by (n / 2 pi) * 2 c q pixels; the edge ray (q = radius)
    # sits at d / 2.
    c = np.pi * d / (2.0 * n * radius)
    field = pupil * np.exp(1j * c * q2)
    probe = np.fft.fftshift(np.fft.ifft2(field))
    probe /= np.sqrt(np.sum(np.abs(probe) ** 2))
    return probe.astype(np.complex64)


def disk_probe_guess(size_px: int, beam_diameter_px: float) -> np.ndarray:
    """(n, n) complex64 soft-edged disk of the given diameter, flat phase, unit total power."""
    n = size_px
    d = float(np.clip(beam_diameter_px, 2.0, 0.9 * n))
    y, x = np.mgrid[0:n, 0:n] - (n - 1) / 2.0
    r = np.sqrt(x**2 + y**2)
    amp = 1.0 / (1.0 + np.exp((r - d / 2.0) / 1.0))
    probe = amp / np.sqrt(np.sum(amp**2))
    return probe.astype(np.complex64)


#: A guess held for the first iterations whose far field overlaps the data's mean far field less than this (the
#: cosine of the two amplitudes, :func:`far_field_overlap`) is fitted to the data (:func:`held_probe_guess`).
#: Measured at 32^2 (benchmarks/RESULTS.md, "a poor probe guess held"): the true probe 0.92 (Siemens star) to 0.996
#: (smooth object); the guesses that stalled, held to iteration 10 (object NRMSE 0.92-0.9998), 0.81 and below.
MIN_FAR_FIELD_OVERLAP = 0.85


def probe_guess_from_data(
    intensities: np.ndarray, beam_diameter_px: float | None, modes: int = 1, valid_mask: np.ndarray | None = None
) -> np.ndarray:
    """(modes, n, n) complex64 initial probe built as the original did: a disk of the beam size whose Fourier
    magnitude is replaced by the mean diffraction amplitude, keeping its Fourier phase.

    intensities: (N, n, n) photon counts, zero frequency at [0, 0]. valid_mask: None, (n, n) or (N, n, n) bool,
    True where a pixel is measured: the mean at a pixel is over the frames where it is valid, and a pixel valid
    in no frame (a beamstop, a gap) takes the disk's own Fourier magnitude, scaled to the measured pixels by least
    squares, so a masked hot pixel never leaks into the guess.
    The total power then equals the mean pattern's counts (orthonormal FFT), as for an object of unit
    transmission. Without a beam size, half the window is used. Extra modes start at zero and are seeded when
    mode updates begin.
    """
    n = intensities.shape[-1]
    diameter = beam_diameter_px if beam_diameter_px and beam_diameter_px > 0 else n / 2
    out = np.zeros((modes, n, n), dtype=np.complex64)
    out[:1] = fit_far_field(disk_probe_guess(n, diameter)[None], *mean_far_field_amplitude(intensities, valid_mask))
    return out


def mean_far_field_amplitude(intensities: np.ndarray,
                             valid_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """((n, n) float64 square root of the mean pattern, (n, n) bool measured pixels or None without a mask).

    intensities: (N, n, n) photon counts; valid_mask: None, (n, n) or (N, n, n) bool. With a mask the mean at a
    pixel is over the frames where it is valid; a pixel valid in no frame is not measured (its amplitude 0)."""
    n = intensities.shape[-1]
    if valid_mask is None:
        return np.sqrt(np.mean(intensities, axis=0, dtype=np.float64)), None
    mask = np.asarray(valid_mask, dtype=bool)
    counts = np.zeros((n, n), dtype=np.int64)
    sums = np.zeros((n, n), dtype=np.float64)
    for start in range(0, intensities.shape[0], _CHUNK_FRAMES):  # no data-sized temporary
        block = np.asarray(intensities[start:start + _CHUNK_FRAMES])
        valid = np.broadcast_to(mask if mask.ndim == 2 else mask[start:start + _CHUNK_FRAMES], block.shape)
        counts += valid.sum(axis=0)
        sums += np.where(valid, block, 0).sum(axis=0, dtype=np.float64)
    return np.sqrt(sums / np.maximum(counts, 1)), counts > 0


def _modal_far_field(probe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((M, n, n) far fields, (n, n) modal amplitude sqrt(sum_k |F P_k|^2)) of the probe modes (orthonormal FFT)."""
    far = np.fft.fft2(probe, norm="ortho")
    amplitude = np.abs(far[0]) if far.shape[0] == 1 else np.sqrt(np.sum(np.abs(far) ** 2, axis=0))
    return far, amplitude


def far_field_overlap(probe: np.ndarray, mean_amplitude: np.ndarray, measured: np.ndarray | None = None) -> float:
    """Cosine (0..1) between the modal far-field amplitude of ``probe`` (M, n, n) and ``mean_amplitude`` (n, n),
    over the ``measured`` pixels (all when None): 1 when the guess with an object of unit transmission has the
    data's mean far field up to a scale, small when the object would have to scatter most of the light."""
    amplitude = _modal_far_field(np.asarray(probe))[1]
    a, b = (mean_amplitude, amplitude) if measured is None else (mean_amplitude[measured], amplitude[measured])
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.sum(a * b) / norms) if norms > 0 else 1.0


def fit_far_field(probe: np.ndarray, mean_amplitude: np.ndarray, measured: np.ndarray | None = None) -> np.ndarray:
    """(M, n, n) complex64 probe modes whose modal far-field amplitude is ``mean_amplitude`` (n, n) on the
    ``measured`` pixels, each mode keeping its Fourier phase and its share of the power at every pixel (a pixel
    where the guess is dark goes to the first mode, phase 0); a pixel not measured keeps the guess's own amplitude,
    scaled to the measured ones by least squares. Orthonormal FFT: the power is then the mean pattern's counts."""
    far, amplitude = _modal_far_field(np.asarray(probe))
    if measured is not None:
        denom = float(np.sum(amplitude[measured] ** 2))
        scale = float(np.sum(mean_amplitude[measured] * amplitude[measured])) / denom if denom > 0 else 0.0
        mean_amplitude = np.where(measured, mean_amplitude, scale * amplitude)
    out = np.zeros(far.shape, dtype=np.complex64)
    if far.shape[0] == 1:  # one mode: its whole far-field amplitude
        out[0] = np.fft.ifft2(mean_amplitude * np.exp(1j * np.angle(far[0])), norm="ortho")
        return out
    power = amplitude**2
    dark = power == 0
    for k in range(far.shape[0]):
        share = np.where(dark, 1.0 if k == 0 else 0.0, np.abs(far[k]) ** 2 / np.where(dark, 1.0, power))
        out[k] = np.fft.ifft2(mean_amplitude * np.sqrt(share) * np.exp(1j * np.angle(far[k])), norm="ortho")
    return out


def held_probe_guess(probe: np.ndarray, intensities: np.ndarray, valid_mask: np.ndarray | None,
                     update_probe_from: int) -> tuple[np.ndarray, str]:
    """(the probe a run starts from, a sentence saying why it differs from ``probe`` (n, n) or (M, n, n), or "").

    A guess held for the first iterations (``update_probe_from`` > 1) whose far field explains the data's mean far
    field poorly (:func:`far_field_overlap` below :data:`MIN_FAR_FIELD_OVERLAP`: a flat disk whose far field is far
    narrower than the beam's, a probe of other optics) gets the data's mean amplitude as its Fourier magnitude,
    keeping its Fourier phase (:func:`fit_far_field`; for a disk this is the product's own guess,
    :func:`probe_guess_from_data`). Why: an object fitted to a held probe must itself scatter the light the probe
    lacks; it turns into a random phase screen within the first iteration, and the probe updates that follow fit
    a flat probe to that screen: measured, LSQML and ePIE stalled at object NRMSE 0.99 (benchmarks/RESULTS.md).
    A guess the data agree with, or one updated from the first iteration, is returned as it is (bit for bit)."""
    if update_probe_from <= 1:
        return probe, ""
    modes = probe[None] if probe.ndim == 2 else probe
    mean_amplitude, measured = mean_far_field_amplitude(intensities, valid_mask)
    overlap = far_field_overlap(modes, mean_amplitude, measured)
    if overlap >= MIN_FAR_FIELD_OVERLAP:
        return probe, ""
    fitted = fit_far_field(modes, mean_amplitude, measured)
    return fitted[0] if probe.ndim == 2 else fitted, (
        f"the probe guess's far field overlaps the data's mean far field {overlap:.2f} (< {MIN_FAR_FIELD_OVERLAP}) "
        f"and the probe is held until iteration {update_probe_from}: its Fourier magnitude was fitted to the "
        "data's mean amplitude, its Fourier phase kept")

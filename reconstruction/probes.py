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
    disk_far = np.fft.fft2(disk_probe_guess(n, diameter), norm="ortho")
    if valid_mask is None:
        mean_amplitude = np.sqrt(np.mean(intensities, axis=0, dtype=np.float64))
    else:
        mask = np.asarray(valid_mask, dtype=bool)
        counts = np.zeros((n, n), dtype=np.int64)
        sums = np.zeros((n, n), dtype=np.float64)
        for start in range(0, intensities.shape[0], _CHUNK_FRAMES):  # no data-sized temporary
            block = np.asarray(intensities[start:start + _CHUNK_FRAMES])
            valid = np.broadcast_to(mask if mask.ndim == 2 else mask[start:start + _CHUNK_FRAMES], block.shape)
            counts += valid.sum(axis=0)
            sums += np.where(valid, block, 0).sum(axis=0, dtype=np.float64)
        measured = counts > 0
        mean_amplitude = np.sqrt(sums / np.maximum(counts, 1))
        model = np.abs(disk_far)
        denom = float(np.sum(model[measured] ** 2))
        scale = float(np.sum(mean_amplitude[measured] * model[measured])) / denom if denom > 0 else 0.0
        mean_amplitude = np.where(measured, mean_amplitude, scale * model)
    probe = np.fft.ifft2(mean_amplitude * np.exp(1j * np.angle(disk_far)), norm="ortho")
    out = np.zeros((modes, n, n), dtype=np.complex64)
    out[0] = probe.astype(np.complex64)
    return out

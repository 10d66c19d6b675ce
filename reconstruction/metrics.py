"""Quality metrics against a known truth, blind to the ambiguities of ptychography.

A reconstruction is defined up to a global complex scale, a linear phase ramp (traded with a probe shift in
Fourier space) and a translation (traded with a probe shift in real space). ``object_nrmse`` removes all
three inside a region before comparing.
"""

from __future__ import annotations

import numpy as np

from .compare import fourier_shift


def illuminated_region(illumination: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """(H, W) bool: where the summed probe intensity exceeds ``fraction`` of its maximum."""
    return illumination > fraction * float(np.max(illumination))


def _integer_shift(truth: np.ndarray, estimate: np.ndarray, region: np.ndarray) -> tuple[int, int]:
    a = np.where(region, np.abs(truth) - np.abs(truth[region]).mean(), 0)
    b = np.where(region, np.abs(estimate) - np.abs(estimate[region]).mean(), 0)
    xc = np.fft.ifft2(np.fft.fft2(a) * np.conj(np.fft.fft2(b)))
    dy, dx = np.unravel_index(int(np.argmax(np.abs(xc))), xc.shape)
    h, w = truth.shape
    return int(dy - h if dy > h // 2 else dy), int(dx - w if dx > w // 2 else dx)


def _subpixel_shift(truth: np.ndarray, estimate: np.ndarray, region: np.ndarray, steps: int = 4) -> np.ndarray:
    """(H, W) ``estimate`` Fourier-shifted by the fraction of a pixel (at most 1 px per axis) that best matches
    ``truth`` inside ``region`` up to a complex scale (Gauss-Newton on the shift, ``steps`` steps)."""
    ky = np.fft.fftfreq(estimate.shape[0])[:, None]
    kx = np.fft.fftfreq(estimate.shape[1])[None, :]
    spectrum = np.fft.fft2(estimate)
    t = truth[region]
    shift = np.zeros(2)
    for _ in range(steps):
        moved = spectrum * np.exp(-2j * np.pi * (ky * shift[0] + kx * shift[1]))
        e = np.fft.ifft2(moved)[region]
        jac = np.stack([np.fft.ifft2(moved * (-2j * np.pi * k))[region] for k in (ky, kx)], axis=1)
        scale = np.vdot(e, t) / max(np.vdot(e, e).real, 1e-30)
        jac *= scale
        step = np.linalg.lstsq(np.concatenate([jac.real, jac.imag]),
                               np.concatenate([(t - scale * e).real, (t - scale * e).imag]), rcond=None)[0]
        shift = np.clip(shift + step, -1.0, 1.0)
    return fourier_shift(estimate, (float(shift[0]), float(shift[1])))


def remove_ambiguities(truth: np.ndarray, estimate: np.ndarray, region: np.ndarray,
                       allow_shift: bool = True, subpixel_shift: bool = False) -> np.ndarray:
    """``estimate`` shifted, de-ramped and scaled to best match ``truth`` inside ``region`` (all (H, W)); with
    ``subpixel_shift`` the shift is also fitted to a fraction of a pixel (a run that refines positions fixes the
    scan's common offset, which the data cannot see, only to the given positions' mean)."""
    est = estimate.astype(np.complex128)
    if allow_shift:
        dy, dx = _integer_shift(truth, est, region)
        if abs(dy) < truth.shape[0] // 4 and abs(dx) < truth.shape[1] // 4:
            est = np.roll(est, (dy, dx), axis=(0, 1))
    # linear phase ramp from the phase of neighbour products of truth * conj(estimate)
    y, x = np.mgrid[0:truth.shape[0], 0:truth.shape[1]]
    for _ in range(2 if subpixel_shift else 1):
        prod = np.where(region, truth * np.conj(est), 0)
        gy = np.angle(np.sum(prod[1:, :] * np.conj(prod[:-1, :])))
        gx = np.angle(np.sum(prod[:, 1:] * np.conj(prod[:, :-1])))
        est = est * np.exp(1j * (gy * y + gx * x))
        if subpixel_shift:
            est = _subpixel_shift(truth, est, region)
    t, e = truth[region], est[region]
    scale = np.vdot(e, t) / max(np.vdot(e, e).real, 1e-30)
    return (est * scale).astype(np.complex64)


def object_nrmse(truth: np.ndarray, estimate: np.ndarray, region: np.ndarray, allow_shift: bool = True,
                 subpixel_shift: bool = False) -> float:
    """||truth - g(estimate)|| / ||truth|| inside ``region`` after removing scale, ramp and shift (whole pixels;
    also fractions with ``subpixel_shift``: :func:`remove_ambiguities`)."""
    fixed = remove_ambiguities(truth, estimate, region, allow_shift, subpixel_shift)
    t = truth[region]
    return float(np.linalg.norm(t - fixed[region]) / np.linalg.norm(t))

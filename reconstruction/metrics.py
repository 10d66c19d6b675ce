"""Quality metrics against a known truth, blind to the ambiguities of ptychography.

A reconstruction is defined up to a global complex scale, a linear phase ramp (traded with a probe shift in
Fourier space) and a translation (traded with a probe shift in real space). ``object_nrmse`` removes all
three inside a region before comparing.
"""

from __future__ import annotations

import numpy as np


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


def remove_ambiguities(truth: np.ndarray, estimate: np.ndarray, region: np.ndarray,
                       allow_shift: bool = True) -> np.ndarray:
    """``estimate`` shifted, de-ramped and scaled to best match ``truth`` inside ``region`` (all (H, W))."""
    est = estimate.astype(np.complex128)
    if allow_shift:
        dy, dx = _integer_shift(truth, est, region)
        if abs(dy) < truth.shape[0] // 4 and abs(dx) < truth.shape[1] // 4:
            est = np.roll(est, (dy, dx), axis=(0, 1))
    # linear phase ramp from the phase of neighbour products of truth * conj(estimate)
    prod = np.where(region, truth * np.conj(est), 0)
    gy = np.angle(np.sum(prod[1:, :] * np.conj(prod[:-1, :])))
    gx = np.angle(np.sum(prod[:, 1:] * np.conj(prod[:, :-1])))
    y, x = np.mgrid[0:truth.shape[0], 0:truth.shape[1]]
    est = est * np.exp(1j * (gy * y + gx * x))
    t, e = truth[region], est[region]
    scale = np.vdot(e, t) / max(np.vdot(e, e).real, 1e-30)
    return (est * scale).astype(np.complex64)


def object_nrmse(truth: np.ndarray, estimate: np.ndarray, region: np.ndarray, allow_shift: bool = True) -> float:
    """||truth - g(estimate)|| / ||truth|| inside ``region`` after removing scale, ramp and shift."""
    fixed = remove_ambiguities(truth, estimate, region, allow_shift)
    t = truth[region]
    return float(np.linalg.norm(t - fixed[region]) / np.linalg.norm(t))

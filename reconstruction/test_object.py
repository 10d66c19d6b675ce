"""A synthetic sample for simulations: no images shipped, generated from a seed.

Amplitude in [0.5, 1] (a Siemens star plus smooth blobs), phase in [-pi/3, 0] (smooth random relief plus
discs): an X-ray transmission function, exp(-i k delta t) exp(-k beta t), so phases are <= 0.
"""

from __future__ import annotations

import numpy as np


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, sigma_px: float) -> np.ndarray:
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * sigma_px) ** 2 * (fx**2 + fy**2))
    out = np.real(np.fft.ifft2(np.fft.fft2(noise) * kernel))
    out -= out.min()
    return out / max(out.max(), 1e-12)


def make_test_object(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(H, W) complex64 test object."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    theta = np.arctan2(y - cy, x - cx)
    r = np.hypot(y - cy, x - cx)
    star = 0.5 * (1 + np.sign(np.sin(16 * theta))) * (r < 0.45 * min(h, w))
    blobs = _smooth_noise(shape, rng, sigma_px=max(min(h, w) / 20, 1.5))
    amplitude = 1.0 - 0.3 * star - 0.2 * blobs
    relief = _smooth_noise(shape, rng, sigma_px=max(min(h, w) / 30, 1.0))
    discs = np.zeros(shape)
    for _ in range(6):
        dy, dx = rng.uniform(0, h), rng.uniform(0, w)
        rad = rng.uniform(0.03, 0.08) * min(h, w)
        discs += ((y - dy) ** 2 + (x - dx) ** 2 < rad**2)
    phase = -(np.pi / 3) * np.clip(0.6 * relief + 0.4 * np.clip(discs, 0, 1), 0, 1)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)

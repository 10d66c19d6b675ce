"""Alignment and Fourier ring correlation of two reconstructions (reconstruction.compare), on known cases."""

import numpy as np
import pytest

from reconstruction.compare import FRC_THRESHOLD, align, fourier_ring_correlation, fourier_shift

PIXEL_M = 10e-9


def smooth_field(n: int, seed: int, slope: float = 1.0) -> np.ndarray:
    """A real random image whose Fourier amplitude falls as 1/q^slope (natural-image-like), unit variance."""
    rng = np.random.default_rng(seed)
    q = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    spectrum = np.fft.fft2(rng.standard_normal((n, n))) / np.maximum(q, 1.0 / n) ** slope
    field = np.fft.ifft2(spectrum).real
    return (field - field.mean()) / field.std()


def test_align_recovers_a_subpixel_shift_and_the_global_phase():
    obj = np.exp(0.3 * smooth_field(128, 1)) * np.exp(1j * smooth_field(128, 2))
    moving = fourier_shift(obj, (-2.3, 1.7)) * np.exp(0.8j)
    found = align(obj, moving)
    assert found.shift_px == pytest.approx((2.3, -1.7), abs=0.02)
    assert found.phase_rad == pytest.approx(0.8, abs=0.02)
    assert np.linalg.norm(found.aligned - obj) / np.linalg.norm(obj) < 0.01


def test_frc_of_two_noisy_copies_falls_where_the_signal_power_meets_the_noise():
    # a = s + n1, b = s + n2: per ring FRC = S / (S + N), so it crosses 1/7 where S = N / 6. A signal whose power
    # falls as 1/q^4 crosses steeply (at ring 84 here); over 8 noise draws the resolution read was within
    # -2 % / +11 % of this prediction, hence the 12 % tolerance.
    n, sigma = 256, 0.05
    signal = smooth_field(n, 3, slope=2.0)
    rng = np.random.default_rng(4)
    a = signal + sigma * rng.standard_normal((n, n))
    b = signal + sigma * rng.standard_normal((n, n))
    curve = fourier_ring_correlation(a, b, PIXEL_M)

    window = np.outer(np.hanning(n), np.hanning(n))
    fs = np.fft.fftshift(np.fft.fft2((signal - signal.mean()) * window))
    y, x = np.indices((n, n)) - n // 2
    ring = np.rint(np.hypot(y, x)).astype(int).ravel()
    keep = ring < n // 2
    s_ring = np.bincount(ring[keep], (np.abs(fs) ** 2).ravel()[keep]) / np.bincount(ring[keep])
    noise = sigma ** 2 * float(np.sum(window ** 2))
    expected = s_ring / (s_ring + noise)
    crossing = 1 + int(np.nonzero(expected[1:] < FRC_THRESHOLD)[0][0])
    expected_resolution_m = n * PIXEL_M / (2 * crossing)
    assert crossing == 84
    assert curve.resolution_m == pytest.approx(expected_resolution_m, rel=0.12)
    assert np.abs(curve.frc[5:crossing - 5] - expected[5:crossing - 5]).max() < 0.15
    assert curve.frequency_per_m[1] == pytest.approx(1 / (n * PIXEL_M))


def test_identical_images_reach_the_nyquist_limit_and_more_noise_means_coarser_resolution():
    signal = smooth_field(128, 5)
    assert fourier_ring_correlation(signal, signal, PIXEL_M).resolution_m == pytest.approx(PIXEL_M)
    rng = np.random.default_rng(6)
    coarse = [fourier_ring_correlation(signal + s * rng.standard_normal(signal.shape),
                                       signal + s * rng.standard_normal(signal.shape), PIXEL_M).resolution_m
              for s in (0.1, 0.4, 1.6)]
    assert coarse == sorted(coarse) and coarse[0] < coarse[-1]


def test_mismatched_inputs_are_named():
    with pytest.raises(ValueError, match=r"shapes differ, \(4, 4\) and \(4, 5\)"):
        align(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="pixel_m=0"):
        fourier_ring_correlation(np.zeros((4, 4)), np.zeros((4, 4)), 0.0)


def test_the_half_bit_threshold_follows_van_heel_and_schatz_and_is_read_per_ring() -> None:
    from reconstruction.compare import HALF_BIT, fourier_ring_correlation, half_bit_threshold

    # one pixel: (0.2071 + 1.9102) / (1.2071 + 0.9102) = 1.0; large rings tend to 0.2071 / 1.2071
    assert half_bit_threshold(np.array([1, 10**10])) == pytest.approx([1.0, 0.2071 / 1.2071], rel=1e-4)
    rng = np.random.default_rng(3)
    signal = rng.standard_normal((128, 128))
    curve = fourier_ring_correlation(signal, signal + 0.5 * rng.standard_normal((128, 128)), 1e-8, HALF_BIT)
    ring_pixels = np.bincount(np.rint(np.hypot(*(np.indices((128, 128)) - 64))).astype(int).ravel())[:64]
    assert curve.criterion == "1/2-bit" and curve.threshold_curve is not None
    np.testing.assert_allclose(curve.threshold_curve, half_bit_threshold(ring_pixels))
    assert curve.resolution_m == pytest.approx(1e-8)  # white signal at SNR 4: never below, Nyquist
    with pytest.raises(ValueError, match=r"threshold='half' must be a number or '1/2-bit'"):
        fourier_ring_correlation(signal, signal, 1e-8, "half")

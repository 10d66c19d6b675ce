"""Alignment and Fourier ring correlation of two reconstructions (reconstruction.compare), on known cases."""

import numpy as np
import pytest

from reconstruction.compare import FRC_THRESHOLD, align, fourier_ring_correlation, fourier_shift
from reconstruction.driver import reconstruct
from reconstruction.engines.base import EngineSettings
from reconstruction.physics import propagation
from reconstruction.simulate import simulate

PIXEL_M = 10e-9


def smooth_field(n: int, seed: int, slope: float = 1.0) -> np.ndarray:
    """A real random image whose Fourier amplitude falls as 1/q^slope (natural-image-like), unit variance."""
    rng = np.random.default_rng(seed)
    q = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    spectrum = np.fft.fft2(rng.standard_normal((n, n))) / np.maximum(q, 1.0 / n) ** slope
    field = np.fft.ifft2(spectrum).real
    return (field - field.mean()) / field.std()


def rings(n: int) -> np.ndarray:
    """(n * n,) the ring of one Fourier pixel each pixel of a centred (fftshift) n x n spectrum falls in."""
    return np.rint(np.hypot(*(np.indices((n, n)) - n // 2))).astype(int).ravel()


def ring_sums(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per ring up to Nyquist, Re sum F_a conj F_b of two (n, n) images, Hann-tapered and mean-removed as the FRC
    does (written out here, not taken from it)."""
    n = a.shape[0]
    window = np.outer(np.hanning(n), np.hanning(n))
    fa, fb = (np.fft.fftshift(np.fft.fft2((z - z.mean()) * window)) for z in (a, b))
    ring = rings(n)
    keep = ring < n // 2
    return np.bincount(ring[keep], (fa * np.conj(fb)).real.ravel()[keep], n // 2)


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
    s_ring = ring_sums(signal, signal) / np.bincount(rings(n))[:n // 2]
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
    ring_pixels = np.bincount(rings(128))[:64]
    assert curve.criterion == "1/2-bit" and curve.threshold_curve is not None
    np.testing.assert_allclose(curve.threshold_curve, half_bit_threshold(ring_pixels))
    assert curve.resolution_m == pytest.approx(1e-8)  # white signal at SNR 4: never below, Nyquist
    with pytest.raises(ValueError, match=r"threshold='half' must be a number or '1/2-bit'"):
        fourier_ring_correlation(signal, signal, 1e-8, "half")


def test_frc_of_two_reconstructions_with_independent_noise_reads_the_resolution_their_errors_predict() -> None:
    """Two LSQML reconstructions of one simulated object from two independent Poisson draws of its patterns.

    Setup, chosen so that the noise is the error and the two runs' errors are independent: the known probe held
    fixed, 64 px patterns, a 10 x 10 raster of 6.4 px steps (beam 25.6 px: 75 % overlap), 3e4 photons a pattern,
    LSQML with the Poisson noise model, no phase constraint, 100 iterations from a flat start; a smooth object
    (amplitude exp(0.1 f), phase 0.5 g, f and g with power falling as 1/q^4, so the FRC falls steeply), compared
    over the 64 x 64 middle of the object, inside the well-lit field (the scan's edges and dark corners, where both
    runs keep their start, would be an error common to both). Measured: without noise the same runs end 0.2 % from
    the truth (the systematic part); with it each run is 6.1-6.3 % from it, and the two runs' errors (after
    ``align``) correlate by 0.019 here, -0.01..0.10 over 14 noise draws. (With the Gaussian noise model, 1e4 photons
    and the simulator's test object they correlated by 0.62: sqrt(counts) is biased where a pattern holds under a
    photon a pixel, the same bias in both runs.) So ring by ring FRC = S / sqrt((S + N1)(S + N2)), S the truth's
    ring power and N1, N2 each run's error power against the truth, measured here: it falls below 1/7 at ring 16 of
    32 (15 in 2 of the 14 draws), a half period of 2 px. The FRC read 2.13 px here (1.07 x); over the 14 draws
    0.88..1.33 x the prediction (median 1.07: near the crossing LSQML keeps a little less than the whole signal,
    which the prediction leaves out, and rings of about 100 pixels scatter by +-0.1), hence the 35 % tolerance;
    below the crossing the curve is 0.037 from the prediction on average here, 0.034..0.073 over the draws (< 0.08
    asked). Mutations of compare.py that fail here: rings 1.25 x too wide, the frequency axis halved, a one-sided or
    a ^0.9 normalisation; a half-ring shift (floor for rint) does not: 3 % at ring 16, below the scatter.
    """
    n, photons = 64, 3e4
    sim = simulate(size_px=n, scan_dims=(10, 10), step_px=6.4, photons=photons, seed=0)
    corners = np.floor(sim.data.positions_px + 0.5)
    size = sim.object_truth.shape[0]
    truth = np.exp(0.1 * smooth_field(size, 1, 2.0) + 0.5j * smooth_field(size, 2, 2.0)).astype(np.complex64)
    windows = np.stack([truth[r:r + n, c:c + n] for r, c in corners.astype(int)])
    exact = np.abs(propagation.forward(np, windows * sim.probe_truth)) ** 2
    # each run's last iterate (-meanSpan=1): the figures above are its noise; the mean of the iterates (LSQML's
    # default) averages a third of it out, and the predicted crossing moves to ring 20
    settings = EngineSettings(update_probe_from=10**6, update_modes_from=10**6, phase_constraint=0,
                              noise_model="poisson", mean_span=1)
    rng = np.random.default_rng(100)
    middle = np.s_[size // 2 - n // 2:size // 2 + n // 2, size // 2 - n // 2:size // 2 + n // 2]
    reference = truth[middle].astype(np.complex128)
    runs = [align(reference, reconstruct(rng.poisson(exact).astype(np.float32), corners, algorithm="LSQML",
                                         iterations=100, probe=sim.probe_truth, device="cpu", seed=1,
                                         settings=settings, object_shape=truth.shape).object[middle].astype(
                                             np.complex128)).aligned for _ in range(2)]
    errors = [run - reference for run in runs]
    correlation = np.vdot(errors[0], errors[1]).real / np.prod([np.linalg.norm(e) for e in errors])
    assert abs(correlation) < 0.15
    s = ring_sums(reference, reference)
    predicted = s / np.sqrt(np.prod([s + ring_sums(e, e) for e in errors], axis=0))
    crossing = 1 + int(np.nonzero(predicted[1:] < FRC_THRESHOLD)[0][0])
    assert crossing == 16

    curve = fourier_ring_correlation(runs[0], runs[1], PIXEL_M)
    assert curve.resolution_m == pytest.approx(n * PIXEL_M / (2 * crossing), rel=0.35)
    assert np.mean(np.abs(curve.frc[1:crossing] - predicted[1:crossing])) < 0.08
    assert curve.frequency_per_m[crossing] == pytest.approx(crossing / (n * PIXEL_M))
    np.testing.assert_allclose(fourier_ring_correlation(runs[0], 3 * runs[1], PIXEL_M).frc, curve.frc, atol=1e-9)


def test_each_ring_of_the_frc_holds_the_pixels_nearest_its_radius() -> None:
    # the ring convention, pixel by pixel: a pixel at radius r belongs to ring rint(r) (one Fourier pixel wide,
    # centred on the integer radius); written out in this file's ring_sums, compared ring by ring. A floor
    # convention or rings a quarter wider move the sums by far more than the tolerance.
    n = 64
    rng = np.random.default_rng(11)
    a = rng.standard_normal((n, n))
    b = 0.5 * a + rng.standard_normal((n, n))
    expected = ring_sums(a, b) / np.sqrt(ring_sums(a, a) * ring_sums(b, b))
    curve = fourier_ring_correlation(a, b, PIXEL_M)
    np.testing.assert_allclose(curve.frc[1:], expected[1:], rtol=1e-9, atol=1e-12)

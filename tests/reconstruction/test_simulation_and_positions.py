"""Simulation with a known truth, scan positions in metres and their one conversion to pixels."""

import numpy as np
import pytest

from reconstruction.parameters import Parameters
from reconstruction.positions import (
    metres_to_pixels,
    object_shape_for,
    positions_m_from_parameters,
    raster_positions_m,
    spiral_positions_m,
)
from reconstruction.simulate import simulate, simulate_from_parameters


def test_raster_is_row_major_and_centred():
    pos = raster_positions_m((2, 3), (1.0, 10.0))
    np.testing.assert_allclose(pos[:3, 0], -0.5)
    np.testing.assert_allclose(pos[:3, 1], [-10, 0, 10])
    np.testing.assert_allclose(pos[3:, 0], 0.5)


def test_mirrors_reverse_an_axis_and_flip_swaps_coordinates():
    base = raster_positions_m((2, 3), (1.0, 10.0))
    np.testing.assert_allclose(raster_positions_m((2, 3), (1.0, 10.0), mirror_1st=True)[:, 0], -base[:, 0])
    np.testing.assert_allclose(raster_positions_m((2, 3), (1.0, 10.0), mirror_2nd=True)[:, 1], -base[:, 1])
    np.testing.assert_allclose(raster_positions_m((2, 3), (1.0, 10.0), flip=True), base[:, ::-1])


def test_spiral_follows_the_original_formula():
    pos = spiral_positions_m(5, (2.0, 3.0))
    r = np.sqrt(4.0)
    np.testing.assert_allclose(pos[4], [r * np.cos(4 * r) * 2.0, r * np.sin(4 * r) * 3.0])


def test_metres_to_pixels_divides_by_the_pixel_size_and_shifts_to_the_margin():
    px = metres_to_pixels(np.array([[0.0, 0.0], [1e-7, 2e-7]]), 1e-8, margin_px=1.0)
    np.testing.assert_allclose(px, [[1, 1], [11, 21]])


def test_parameters_give_rows_times_cols_positions():
    p = Parameters.from_cmdstr("p -scanDims=4,5 -step=1e-7,1e-7")
    assert positions_m_from_parameters(p).shape == (20, 2)
    assert positions_m_from_parameters(p.replace({"experiment.spiral_scan": True})).shape == (20, 2)


def test_simulation_is_reproducible_and_poisson_counts_are_integers():
    a = simulate(size_px=32, scan_dims=(4, 4), photons=1e4, seed=5)
    b = simulate(size_px=32, scan_dims=(4, 4), photons=1e4, seed=5)
    np.testing.assert_array_equal(a.data.intensities, b.data.intensities)
    assert a.data.intensities.shape == (16, 32, 32) and a.data.intensities.dtype == np.float32
    assert np.all(a.data.intensities == np.round(a.data.intensities))
    assert a.data.intensities.sum(axis=(1, 2)).mean() == pytest.approx(1e4 * np.mean(np.abs(a.object_truth) ** 2),
                                                                       rel=0.3)


def test_noise_free_simulation_matches_the_forward_model():
    sim = simulate(size_px=16, scan_dims=(3, 3), photons=0, seed=1)
    r, c = np.floor(sim.data.positions_px[4] + 0.5).astype(int)
    wave = sim.probe_truth[0] * sim.object_truth[r:r + 16, c:c + 16]
    expected = np.abs(np.fft.fft2(wave, norm="ortho")) ** 2
    np.testing.assert_allclose(sim.data.intensities[4], expected, rtol=1e-4, atol=1e-3)


def test_truth_is_a_physical_transmission_function():
    sim = simulate(size_px=32, scan_dims=(4, 4), seed=3)
    amp, phase = np.abs(sim.object_truth), np.angle(sim.object_truth)
    assert amp.max() <= 1.0 + 1e-6 and amp.min() > 0.2
    assert phase.max() <= 1e-6 and phase.min() >= -np.pi / 3 - 1e-6


def test_simulation_from_parameters_uses_the_sample_pixel_size():
    p = Parameters.from_cmdstr("p -simulate=1 -size=32 -scanDims=3,4 -step=50e-9,50e-9 -beamSize=200e-9")
    sim = simulate_from_parameters(p)
    assert sim.data.intensities.shape == (12, 32, 32)
    steps = np.diff(np.unique(np.round(sim.data.positions_px[:, 1], 6)))
    np.testing.assert_allclose(steps, 50e-9 / p.pixel_size_m, rtol=1e-6)
    assert sim.data.pixel_size_m == pytest.approx(p.pixel_size_m)
    assert sim.object_truth.shape == object_shape_for(sim.data.positions_px, 32)

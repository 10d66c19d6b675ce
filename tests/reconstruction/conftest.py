"""Shared simulated data for the reconstruction tests (built once per session: small, CI-sized)."""

import pytest

from reconstruction.simulate import SimulatedScan, simulate


@pytest.fixture(scope="session")
def small_scan() -> SimulatedScan:
    """64^2 patterns, 15x15 raster (step 6.4 px), Poisson noise at 1e6 photons, defocused probe."""
    return simulate(size_px=64, scan_dims=(15, 15), photons=1e6, seed=1)


@pytest.fixture(scope="session")
def tiny_scan() -> SimulatedScan:
    """32^2 patterns, 6x6 raster: for fast behaviour tests."""
    return simulate(size_px=32, scan_dims=(6, 6), photons=1e5, seed=2)

"""Shared data for the multi-GPU tests: one small noise-free scan and its one-device reference runs."""

from __future__ import annotations

import pytest
from multigpu_support import SIZE_PX, reference_run

from reconstruction.simulate import SimulatedScan, simulate


@pytest.fixture(scope="session")
def split_scan() -> SimulatedScan:
    """32^2 patterns, 12x12 raster (step 3.2 px), noise-free."""
    return simulate(size_px=SIZE_PX, scan_dims=(12, 12), photons=0, seed=1)


@pytest.fixture(scope="session")
def reference():
    """reference(algorithm, iterations, batch_size=0) -> (one-device object, illuminated region), cached."""
    return reference_run

"""Shared data for the multi-GPU tests: one small noise-free scan and its one-device reference runs."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.metrics import illuminated_region
from reconstruction.simulate import SimulatedScan, simulate

SIZE_PX = 32
BEAM_PX = 12.8


@pytest.fixture(scope="session")
def split_scan() -> SimulatedScan:
    """32^2 patterns, 12x12 raster (step 3.2 px), noise-free."""
    return simulate(size_px=SIZE_PX, scan_dims=(12, 12), photons=0, seed=1)


def run_kwargs(algorithm: str, iterations: int, batch_size: int = 0) -> dict:
    """The settings both the one-device and the split runs use."""
    return dict(algorithm=algorithm, iterations=iterations, seed=3, beam_diameter_px=BEAM_PX,
                settings=EngineSettings(update_probe_from=5, batch_size=batch_size))


@functools.lru_cache(maxsize=8)
def _reference(algorithm: str, iterations: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    scan = simulate(size_px=SIZE_PX, scan_dims=(12, 12), photons=0, seed=1)
    rec = Reconstruction(scan.data.intensities, scan.data.positions_px, device="cpu",
                         **run_kwargs(algorithm, iterations, batch_size))
    result = rec.run()
    return result.object, illuminated_region(rec.illumination())


@pytest.fixture(scope="session")
def reference():
    """reference(algorithm, iterations, batch_size=0) -> (one-device object, illuminated region), cached."""
    return lambda algorithm, iterations, batch_size=0: _reference(algorithm, iterations, batch_size)

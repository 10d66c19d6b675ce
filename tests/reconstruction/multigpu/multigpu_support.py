"""Helpers of the multi-GPU tests (a uniquely named module: every test folder has its own conftest)."""

from __future__ import annotations

import functools

import numpy as np

from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.metrics import illuminated_region
from reconstruction.simulate import simulate

SIZE_PX = 32
BEAM_PX = 12.8


def run_kwargs(algorithm: str, iterations: int, batch_size: int = 0) -> dict:
    """The settings both the one-device and the split runs use."""
    return dict(algorithm=algorithm, iterations=iterations, seed=3, beam_diameter_px=BEAM_PX,
                settings=EngineSettings(update_probe_from=5, batch_size=batch_size))


@functools.lru_cache(maxsize=8)
def reference_run(algorithm: str, iterations: int, batch_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(one-device object, illuminated region) on the shared scan, cached."""
    scan = simulate(size_px=SIZE_PX, scan_dims=(12, 12), photons=0, seed=1)
    rec = Reconstruction(scan.data.intensities, scan.data.positions_px, device="cpu",
                         **run_kwargs(algorithm, iterations, batch_size))
    result = rec.run()
    return result.object, illuminated_region(rec.illumination())

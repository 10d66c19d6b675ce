"""The live view's preview of a fast GPU run: the same images as the NumPy reference's, diffraction panel
included (the fast engines keep their own layouts of the data; the preview must read them as the reference does).
Skipped where CuPy has no CUDA device."""

from __future__ import annotations

import numpy as np
import pytest

from reconstruction.backend import gpu_available
from reconstruction.driver import Reconstruction
from reconstruction.simulate import simulate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not gpu_available(), reason="CuPy sees no CUDA device")]


@pytest.fixture(scope="module")
def scan():
    return simulate(size_px=64, scan_dims=(12, 12), photons=1e6, seed=3)


def _preview(sim, algorithm: str, device: str):
    rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm=algorithm, iterations=5,
                         device=device, seed=0, beam_diameter_px=0.4 * 64)
    for _ in rec:
        pass
    return rec, rec.preview()


@pytest.mark.parametrize("algorithm", ["ePIE", "DM", "LSQML"])
def test_a_fast_runs_preview_shows_the_same_patterns_and_images_as_the_reference(scan, algorithm: str) -> None:
    gpu_rec, gpu = _preview(scan, algorithm, "gpu")
    cpu_rec, cpu = _preview(scan, algorithm, "cpu")
    assert gpu_rec.plan.implementation == "fast" and cpu_rec.plan.implementation == "reference"
    assert gpu.diffraction is not None and cpu.diffraction is not None
    assert gpu.diffraction.position == cpu.diffraction.position
    measured_diff = np.abs(gpu.diffraction.measured.astype(int) - cpu.diffraction.measured.astype(int)).max()
    model_corr = np.corrcoef(gpu.diffraction.model.ravel().astype(float),
                             cpu.diffraction.model.ravel().astype(float))[0, 1]
    amp_corr = np.corrcoef(gpu.object_amplitude.ravel().astype(float),
                           cpu.object_amplitude.ravel().astype(float))[0, 1]
    print(f"PREVIEW {algorithm} measured max diff {measured_diff} levels, model corr {model_corr:.4f}, "
          f"object amplitude corr {amp_corr:.4f}")
    assert measured_diff <= 1, "the fast run's measured pattern is not the data the reference shows"
    assert model_corr > 0.99 and amp_corr > 0.99
    assert gpu.positions is not None and gpu.positions.current_px.shape == cpu.positions.current_px.shape

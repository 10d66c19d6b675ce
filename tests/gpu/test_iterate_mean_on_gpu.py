"""The mean of the iterates on the GPU (iterate_mean.py): the fused ``lerp_c64`` pass equals the reference's three
in-place passes, and a fast LSQML run reports the same mean as the NumPy reference. Skipped without a CUDA device."""

from __future__ import annotations

import numpy as np
import pytest

from reconstruction.backend import gpu_available
from reconstruction.driver import Reconstruction
from reconstruction.iterate_mean import lerp_inplace
from reconstruction.simulate import simulate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not gpu_available(), reason="CuPy sees no CUDA device")]


def test_the_fused_lerp_on_cupy_equals_three_numpy_passes_to_float32_rounding(monkeypatch):
    import cupy as cp

    from reconstruction.gpu import common

    fused_calls: list[int] = []
    fused = common.lerp_c64

    def spy(*args):
        fused_calls.append(1)
        fused(*args)

    monkeypatch.setattr(common, "lerp_c64", spy)

    rng = np.random.default_rng(0)
    mean = (rng.normal(size=(300, 301)) + 1j * rng.normal(size=(300, 301))).astype(np.complex64)
    new = (rng.normal(size=(300, 301)) + 1j * rng.normal(size=(300, 301))).astype(np.complex64)
    mean_gpu, new_gpu = cp.asarray(mean), cp.asarray(new)
    lerp_inplace(mean_gpu, new_gpu, 1.0 / 3.0)
    lerp_inplace(mean, new, 1.0 / 3.0)
    assert np.abs(cp.asnumpy(mean_gpu) - mean).max() < 1e-6 * np.abs(mean).max()
    assert np.array_equal(cp.asnumpy(new_gpu), new)
    assert fused_calls == [1]  # CuPy took the fused kernel, NumPy its three passes


def test_a_fast_lsqml_run_reports_the_mean_of_its_iterates_as_the_numpy_reference_does():
    sim = simulate(size_px=64, scan_dims=(10, 10), photons=1e6, seed=5)
    got = {}
    for device in ("cpu", "gpu"):
        rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm="LSQML", iterations=12,
                             device=device, seed=0, beam_diameter_px=0.4 * 64)
        for _ in rec:
            pass
        assert rec.plan.iterate_mean
        got[device] = (rec.object(), np.asarray(rec.backend.asnumpy(rec.state.obj)))
        rec.close()
    (mean_cpu, last_cpu), (mean_gpu, last_gpu) = got["cpu"], got["gpu"]
    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    assert rel(last_cpu, mean_cpu) > 1e-2  # the mean is not the last iterate
    print(f"AGREE LSQML mean of iterates fast-vs-numpy {rel(mean_gpu, mean_cpu):.2e} "
          f"(last iterates {rel(last_gpu, last_cpu):.2e})")
    assert rel(mean_gpu, mean_cpu) <= 1e-3  # tests/gpu/test_cupy_matches_numpy.py's TOL for 10 iterations

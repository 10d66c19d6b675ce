"""Each position's Fourier error (the live scan's colours, reconstruction/position_errors.py) on the GPU: the same
numbers as NumPy's for the same state, and a fast GPU run's preview carries them for every position. Skipped where
CuPy has no CUDA device."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from reconstruction.backend import gpu_available
from reconstruction.driver import Reconstruction
from reconstruction.position_errors import position_errors
from reconstruction.simulate import simulate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not gpu_available(), reason="CuPy sees no CUDA device")]


@pytest.fixture(scope="module")
def scan():
    return simulate(size_px=64, scan_dims=(12, 12), photons=1e6, seed=3)


def test_the_gpu_measures_the_same_errors_as_numpy_for_the_same_state(scan) -> None:
    import cupy as cp

    rec = Reconstruction(scan.data.intensities, scan.data.positions_px, algorithm="ePIE", iterations=3,
                         device="cpu", seed=0)
    rec.run()
    st = rec.state
    on_gpu = dataclasses.replace(st, xp=cp, obj=cp.asarray(st.obj), probe=cp.asarray(st.probe),
                                 amplitudes=cp.asarray(st.amplitudes), rows=cp.asarray(st.rows),
                                 cols=cp.asarray(st.cols))
    index = np.arange(st.n_positions)
    cpu = position_errors(st, index)
    gpu = cp.asnumpy(position_errors(on_gpu, cp.asarray(index)))
    print(f"POSITION ERRORS max relative difference GPU vs NumPy {np.max(np.abs(gpu / cpu - 1)):.2e}")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3)


@pytest.mark.parametrize("algorithm", ["ePIE", "DM", "LSQML"])
def test_a_fast_runs_preview_carries_every_positions_error(scan, algorithm: str) -> None:
    rec = Reconstruction(scan.data.intensities, scan.data.positions_px, algorithm=algorithm, iterations=5,
                         device="gpu", seed=0, beam_diameter_px=0.4 * 64)
    for _ in rec:
        pass
    assert rec.plan.implementation == "fast"
    preview = rec.preview()  # 144 patterns of 64 px: 0.6 M pixels, all in one preview on a GPU
    errors = preview.positions.errors
    print(f"POSITION ERRORS {algorithm} fast: {errors.min():.4f}..{errors.max():.4f}, run error {rec.errors[-1]:.4f}")
    assert errors.shape == (144,) and np.all(np.isfinite(errors)) and np.all(errors > 0)
    assert 0.2 * rec.errors[-1] < float(np.median(errors)) < 5 * rec.errors[-1]

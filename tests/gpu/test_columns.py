"""ePIE's modulus fused with the column half of the 2-D transform (kernels/columns.cu): the split transform is
cuFFT's 2-D transform, and ePIE gives the same result with or without it. Skipped without CuPy."""

from __future__ import annotations

import os

import numpy as np
import pytest

from reconstruction.backend import gpu_available
from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.simulate import simulate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not gpu_available(), reason="CuPy sees no CUDA device")]


def _rec(n, scan=(4, 4), iterations=3, cols=True, intensities=None, **kw):
    old = os.environ.get("PTYCHOPY_BENCH_EPIE_COLS")
    os.environ["PTYCHOPY_BENCH_EPIE_COLS"] = "1" if cols else "0"
    try:
        sim = simulate(size_px=n, scan_dims=scan, photons=1e6, seed=5)
        data = sim.data.intensities if intensities is None else intensities
        return Reconstruction(data, sim.data.positions_px, algorithm="ePIE", iterations=iterations,
                              device="gpu", seed=0, beam_diameter_px=0.4 * n,
                              settings=kw.pop("settings", EngineSettings(update_probe_from=2, phase_constraint=0)),
                              **kw)
    finally:
        if old is None:
            os.environ.pop("PTYCHOPY_BENCH_EPIE_COLS", None)
        else:
            os.environ["PTYCHOPY_BENCH_EPIE_COLS"] = old


@pytest.mark.parametrize("n", [64, 128, 256, 512])
@pytest.mark.parametrize("modes", [1, 2])
def test_row_transforms_then_the_column_kernel_equal_the_2d_transform(n, modes):
    import cupy as cp

    from reconstruction.gpu import columns

    rec = _rec(n, scan=(2, 2), iterations=0)
    eng = rec.engine
    assert columns.shared_bytes(n, modes) <= columns.max_dynamic_shared_bytes()  # every size ePIE uses it for fits
    eng.twiddles = columns.twiddles(n)  # also where ePIE itself keeps cuFFT's 2-D path (512^2)
    rng = np.random.default_rng(n + modes)
    x = (rng.standard_normal((modes, n, n)) + 1j * rng.standard_normal((modes, n, n))).astype(np.complex64)
    buf = cp.asarray(x)
    eng.plans.get(modes * n, n, rows_only=True)
    eng._modulus_by_columns(buf, modes, 0, -1, eng.state.amplitudes, -1, 1)
    ref = np.fft.fft2(x.astype(np.complex128))
    rel = float(np.linalg.norm(cp.asnumpy(buf) - ref) / np.linalg.norm(ref))
    print(f"COLS n={n} modes={modes} split-vs-fft2 {rel:.2e}")
    assert rel <= 2e-6


@pytest.mark.parametrize("case", ["plain", "two modes and a mask"])
def test_epie_with_the_column_kernel_equals_epie_with_cufft_2d(case):
    """Without probe updates the two transform paths agree to float32 rounding."""
    kw = dict(settings=EngineSettings(update_probe_from=1000, phase_constraint=0))
    if case != "plain":
        mask = np.ones((64, 64), dtype=bool)
        mask[30:34, :] = False
        kw.update(probe_modes=2, valid_mask=mask)
    fused = _rec(64, scan=(8, 8), iterations=4, cols=True, **dict(kw))
    plain = _rec(64, scan=(8, 8), iterations=4, cols=False, **dict(kw))
    assert fused.engine.cols and not plain.engine.cols
    a, b = fused.run(), plain.run()
    rel = _rel(a.object, b.object)
    print(f"COLS ePIE {case}: object {rel:.2e} probe {_rel(a.probe, b.probe):.2e}")
    assert rel <= 1e-5 and _rel(a.probe, b.probe) <= 1e-5
    assert abs(a.errors[-1] - b.errors[-1]) <= 1e-5 * b.errors[-1]


def test_with_probe_updates_the_paths_differ_no_more_than_a_1e7_change_of_the_data_moves_the_result():
    """ePIE with probe updates from the second epoch is sensitive on this scan: a 1e-7 relative change of the
    intensities moves the object by ~1e-3 after 4 epochs (on NumPy too). The column path must stay within that."""
    settings = EngineSettings(update_probe_from=2, phase_constraint=0)
    sim = simulate(size_px=64, scan_dims=(8, 8), photons=1e6, seed=5)
    noisy = (sim.data.intensities * (1 + 1e-7 * np.random.default_rng(0).standard_normal(
        sim.data.intensities.shape))).astype(np.float32)
    runs = {}
    for name, cols, data in (("cols", True, None), ("cufft", False, None), ("cufft-perturbed", False, noisy)):
        runs[name] = _rec(64, scan=(8, 8), iterations=4, cols=cols, settings=settings, intensities=data).run()
    diff = _rel(runs["cols"].object, runs["cufft"].object)
    spread = _rel(runs["cufft-perturbed"].object, runs["cufft"].object)
    print(f"COLS ePIE with probe updates: cols-vs-cufft {diff:.2e}, 1e-7 data change {spread:.2e}")
    assert diff <= 3 * spread


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))

"""The fast ePIE and DM with sub-pixel windows and position refinement (gpu/window_fits.py, kernels/window_fits.cu)
agree with the NumPy reference engines; whole-pixel positions keep the plain kernels. Skipped without CuPy.

Tolerances. Both engines amplify rounding: ePIE's sequential steps with probe updates (on NumPy alone, 36 positions
of 32^2, a 1e-7 relative change of the data moves the probe by 7.6e-5 after its first updating epoch and 8.5e-3
after three: tests/reconstruction/test_window_fits_arithmetic_cpu.py), and position refinement closes a loop (a
rounding-size change of a step term moves a position, which moves every later window's content). So the fast run
must stay within 3x the reference's own spread under a 1e-7 relative change of the data, measured beside it (as
tests/gpu/test_lsqml_fits.py does), with floors of 2e-3 (object, probe) and 2e-3 px (positions). The arithmetic
itself is checked epoch by epoch on the CPU (tests/reconstruction/test_window_fits_arithmetic_cpu.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from reconstruction.backend import gpu_available
from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.physics import subpixel

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not gpu_available(), reason="CuPy sees no CUDA device")]

N_SIZE = 64
OPTIONS = {
    "subpixel": dict(subpixel_windows=True),
    "positions": dict(position_refinement_from=2),
    "positions+coarse+affine": dict(position_refinement_from=2, coarse_search_px=2, coarse_search_epochs=2,
                                    position_affine=("scale", "rotation"), affine_delay=2, affine_epochs=2),
}
FLOORS = (2e-3, 2e-3, 2e-3)  # object, probe, positions (px)


@pytest.fixture(autouse=True)
def options_on_the_fast_path(monkeypatch):
    """Route these options to the fast ePIE and DM whether or not the run plan's table lists them yet."""
    from reconstruction import run_plan
    from reconstruction.gpu.window_fits import WINDOW_OPTIONS

    for alg in ("ePIE", "DM"):
        monkeypatch.setitem(run_plan.FAST_PATH_SUPPORTS, alg, run_plan.FAST_PATH_SUPPORTS[alg] | WINDOW_OPTIONS)


@pytest.fixture(scope="module")
def scan():
    from reconstruction.simulate import simulate

    sim = simulate(size_px=N_SIZE, scan_dims=(12, 12), photons=1e6, seed=1, jitter_px=0.4, subpixel=True)
    assert np.any(sim.data.positions_px != np.round(sim.data.positions_px))  # fractional: windows move the probe
    return sim


def _run(sim, algorithm, device, settings, iterations=5, fast=True, **kw):
    """A finished run of ``algorithm`` on ``sim`` (``intensities``/``positions`` in kw replace the scan's)."""
    data = {"intensities": sim.data.intensities, "positions": sim.data.positions_px}
    data.update({k: kw.pop(k) for k in list(kw) if k in data})
    rec = Reconstruction(data["intensities"], data["positions"], algorithm=algorithm, iterations=iterations,
                         device=device, seed=0, beam_diameter_px=0.4 * N_SIZE, settings=settings,
                         implementation="auto" if fast else "reference", **kw)
    rec.run()
    return rec


def _differences(a, b):
    """(object, probe) relative differences and the largest position difference (px) of run a from run b."""
    rel = [float(np.linalg.norm(x - y) / np.linalg.norm(y)) for x, y in ((a.object(), b.object()),
                                                                          (a.probe(), b.probe()))]
    return (*rel, float(np.abs(a.positions() - b.positions()).max()))


def _perturbed(sim):
    """The scan's intensities changed by a relative 1e-7 (normal): the size of rounding, to measure its spread."""
    noise = np.random.default_rng(0).standard_normal(sim.data.intensities.shape)
    return (sim.data.intensities * (1 + 1e-7 * noise)).astype(np.float32)


def _settings(option, **kw):
    return EngineSettings(update_probe_from=2, phase_constraint=0, **OPTIONS[option], **kw)


@pytest.mark.parametrize("algorithm", ["ePIE", "DM"])
@pytest.mark.parametrize("option", OPTIONS)
def test_fast_engine_option_stays_within_numpys_own_rounding_spread(scan, algorithm, option):
    settings = _settings(option)
    cpu = _run(scan, algorithm, "cpu", settings)
    gpu = _run(scan, algorithm, "gpu", settings)
    assert type(gpu.engine).__name__ == {"ePIE": "FastEPIE", "DM": "FastDM"}[algorithm]
    assert gpu.engine._shift
    spread = _differences(_run(scan, algorithm, "cpu", settings, intensities=_perturbed(scan)), cpu)
    diff = _differences(gpu, cpu)
    print(f"AGREE {algorithm} windows {option}: fast-vs-numpy {np.round(diff, 6).tolist()}, numpy's 1e-7 spread "
          f"{np.round(spread, 6).tolist()}, error cpu {cpu.errors[-1]:.6f} gpu {gpu.errors[-1]:.6f}")
    for d, s, floor in zip(diff, spread, FLOORS, strict=True):
        assert d <= max(floor, 3 * s)
    assert np.allclose(gpu.errors, cpu.errors, rtol=2e-2)
    if settings.position_refinement_from:
        assert np.abs(cpu.positions() - scan.data.positions_px).max() > 1e-3  # the positions did move


def graph_and_eager_differences(run, differences, monkeypatch):
    """``differences(eager, graph)`` of ``run()`` captured as CUDA graphs and launched eagerly."""
    graph = run()
    monkeypatch.setenv("PTYCHOPY_BENCH_GPU_GRAPHS", "0")
    return differences(run(), graph)


@pytest.mark.parametrize("algorithm", ["ePIE", "DM"])
def test_fast_engine_windows_graph_and_eager_runs_agree(scan, algorithm, monkeypatch):
    settings = _settings("positions")
    diff = graph_and_eager_differences(lambda: _run(scan, algorithm, "gpu", settings), _differences, monkeypatch)
    print(f"AGREE {algorithm} windows positions, graph-vs-eager: {np.round(diff, 8).tolist()}")
    assert all(d <= 1e-3 for d in diff)  # the same kernels; double atomics add the step terms in any order


@pytest.mark.parametrize("algorithm", ["ePIE", "DM"])
@pytest.mark.parametrize("modes", [6, 12])
def test_fast_engine_windows_with_many_modes_and_a_mask_match_the_reference_on_cupy(scan, algorithm, modes):
    """6 and 12 probe modes from epoch 3 and a detector mask, with refinement: every per-mode loop of the kernels
    against the reference engine on CuPy (the same eigen-solver, so no phase ambiguity between the modes)."""
    settings = _settings("positions", update_modes_from=3)
    mask = np.ones((N_SIZE, N_SIZE), dtype=bool)
    mask[30:34, :] = False
    fast = _run(scan, algorithm, "gpu", settings, probe_modes=modes, valid_mask=mask)
    ref = _run(scan, algorithm, "gpu", settings, fast=False, probe_modes=modes, valid_mask=mask)
    assert type(ref.engine).__name__ == {"ePIE": "EPIE", "DM": "DM"}[algorithm] and fast.state.modes_active == modes
    spread = _differences(_run(scan, algorithm, "gpu", settings, fast=False, probe_modes=modes, valid_mask=mask,
                               intensities=_perturbed(scan)), ref)
    diff = _differences(fast, ref)
    print(f"AGREE {algorithm} windows positions + {modes} modes + mask, fast-vs-xp-cupy: {np.round(diff, 6).tolist()}, "
          f"the reference's 1e-7 spread {np.round(spread, 6).tolist()}")
    for d, s, floor in zip(diff, spread, FLOORS, strict=True):
        assert d <= max(floor, 3 * s)


@pytest.mark.parametrize("algorithm", ["ePIE", "DM"])
def test_sub_pixel_windows_on_whole_pixel_positions_run_the_plain_kernels(scan, algorithm):
    """Whole-pixel positions with -subpixelWindows take the plain kernels: ePIE bit for bit (no atomics); DM's
    object sums are float32 atomics, whose order differs from run to run, so there the same numbers up to that."""
    whole = np.round(scan.data.positions_px)
    plain = _run(scan, algorithm, "gpu", EngineSettings(update_probe_from=2), iterations=3, positions=whole)
    sub = _run(scan, algorithm, "gpu", EngineSettings(update_probe_from=2, subpixel_windows=True), iterations=3,
               positions=whole)
    assert not sub.engine._shift and sub.state.positions_px is not None
    if algorithm == "ePIE":
        assert np.array_equal(sub.object(), plain.object()) and np.array_equal(sub.probe(), plain.probe())
    else:
        assert max(_differences(sub, plain)) <= 1e-5


def test_dm_moved_probes_and_their_adjoint_match_numpy_on_every_element(scan):
    """The moved probes of every window (lf_shift + inverse transforms) and the probe update's moved-back sum
    (wf_dm_conj_obj + transforms + lf_gp_sum), from random probe modes, object and exit waves, into poisoned
    (NaN) buffers, against physics/subpixel.py on NumPy, every element."""
    import cupy as cp

    rec = _run(scan, "DM", "gpu", _settings("subpixel"), iterations=0, probe_modes=3)
    eng, st = rec.engine, rec.state
    rng = np.random.default_rng(7)
    modes = st.probe.shape[0]
    probe = (rng.standard_normal((modes, N_SIZE, N_SIZE)) + 1j * rng.standard_normal((modes, N_SIZE, N_SIZE)))
    obj = rng.standard_normal(st.obj.shape) + 1j * rng.standard_normal(st.obj.shape)
    psi = rng.standard_normal(eng.psi.shape) + 1j * rng.standard_normal(eng.psi.shape)
    st.probe[...] = cp.asarray(probe.astype(np.complex64))
    st.obj[...] = cp.asarray(obj.astype(np.complex64))
    eng.psi[...] = cp.asarray(psi.astype(np.complex64))
    eng.pj.fill(np.nan)
    eng._plan_windows(modes)
    eng._moved_probes()
    pos, rows, cols = (cp.asnumpy(a) for a in (st.positions_px, st.rows, st.cols))
    fractions = subpixel.fractions_px(np, pos, rows, cols)
    want, ramps = subpixel.moved_probes(np, probe.astype(np.complex64), fractions)
    got = cp.asnumpy(eng.pj).reshape(want.shape)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    eng.gspec.fill(np.nan)
    eng.pj.fill(np.nan)
    got_sum = cp.asnumpy(eng._moved_back_probe_sum(modes)[: modes * N_SIZE**2]).reshape(probe.shape)
    windows = np.stack([obj[r:r + N_SIZE, c:c + N_SIZE] for r, c in zip(rows, cols, strict=True)]).astype(np.complex64)
    want_sum = subpixel.move_back_and_sum(np, windows.conj()[:, None] * psi.astype(np.complex64), ramps)
    assert np.all(np.isfinite(got_sum))
    np.testing.assert_allclose(got_sum, want_sum, rtol=0, atol=1e-4 * np.abs(want_sum).max())


def test_epie_epochs_that_fit_the_deformation_run_the_reference_step_and_the_fast_steps_resume(scan):
    """An ePIE epoch that fits the scan's deformation runs the reference step on CuPy (it needs each window's
    12 x 12 terms); the refining epochs before and after it run the fast steps."""
    settings = _settings("positions+coarse+affine")
    rec = Reconstruction(scan.data.intensities, scan.data.positions_px, algorithm="ePIE", iterations=6, device="gpu",
                         seed=0, beam_diameter_px=0.4 * N_SIZE, settings=settings)
    fits, keys = [], []
    for _ in range(6):
        fits.append(rec.engine.refiner.next_epoch_fits_deformation())
        rec.step()
        keys.append(rec.engine._runner_key)
    # refining from iteration 2 with a delay of two refining epochs: iterations 4 and 5 fit the deformation
    assert fits == [False, False, False, True, True, False]
    assert rec.engine.refiner.last_deformation is not None
    assert keys[2] is not None and keys[2][-1] is True and keys[5][-1] is True  # fast refining epochs, graphs

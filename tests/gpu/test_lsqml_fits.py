"""The fast LSQML's per-position options (kernels/lsqml_fits.cu) agree with the NumPy reference engine: sub-pixel
windows, position refinement, the flux fit (-variableIntensity) and the Poisson noise model, alone and together.
Skipped without CuPy.

Tolerances. With one mini-batch an epoch nothing amplifies rounding (a NumPy mirror of the kernels' arithmetic
matched the reference to 1e-7 over 4 epochs), so the fast engine must agree to float32 rounding: 1e-3 on object and
probe (cuFFT, float32 atomics in a different order), 1e-3 px on positions, 1e-4 on the amplitude factors. With
LSQML's default mini-batches (N/40) two things amplify rounding: the joint object-and-probe steps (~20x an epoch
on this scan, tests/gpu/test_cupy_matches_numpy.py) and the Poisson step, whose g = I / |Psi|^2 - 1 is huge where
the model is dark (on NumPy alone a 1e-7 relative change of the data moves the object by 7.5e-2 after one
Poisson epoch). There the fast run must stay within 3x NumPy's own spread under a 1e-7 change of the data,
measured beside it. The Poisson step amplifies rounding with one mini-batch too once positions move with it (H100,
2026-12-07, "all": object 1.2e-4, positions 1.5e-3 px, against 4e-7 and 4e-6 px without Poisson), so the one-batch
runs with Poisson are held to the same rule.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from reconstruction.backend import gpu_available
from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.memory_plan import streamed_memory_bytes
from reconstruction.positions import object_shape_for
from reconstruction.simulate import simulate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not gpu_available(), reason="CuPy sees no CUDA device")]

N_SIZE = 64
EVERY_OPTION = dict(subpixel_windows=True, position_refinement_from=2, variable_intensity=True, noise_model="poisson")
OPTIONS = {**{name: {name: value} for name, value in EVERY_OPTION.items()}, "all": EVERY_OPTION}


@pytest.fixture(autouse=True)
def options_on_the_fast_path(monkeypatch):
    """The run plan sends these options to the fast LSQML once its table lists them (after these tests pass on a
    GPU); until then these tests route them there themselves."""
    from reconstruction import run_plan
    from reconstruction.gpu.lsqml_fits import FITS_OPTIONS

    monkeypatch.setitem(run_plan.FAST_PATH_SUPPORTS, "LSQML", run_plan.FAST_PATH_SUPPORTS["LSQML"] | FITS_OPTIONS)


@pytest.fixture(autouse=True, params=["first", "fused"])
def schedule(request, monkeypatch):
    """Every test here runs in both schedules of the sub-pixel path (gpu/lsqml_fits.py: the same arithmetic, picked
    by PTYCHOPY_BENCH_LSQML_FITS_FUSED, the fused one by default), announced by a SCHEDULE line; the fused
    run is skipped where the two coincide (whole-pixel windows: no moved probes) or the test picks its own."""
    option = getattr(getattr(request.node, "callspec", None), "params", {}).get("option")
    if request.param == "fused" and (option in ("variable_intensity", "noise_model")
                                     or "schedule" in request.node.name or "whole_pixel" in request.node.name):
        pytest.skip("the two schedules run the same launches here, or the test sets them itself")
    monkeypatch.setenv("PTYCHOPY_BENCH_LSQML_FITS_FUSED", "1" if request.param == "fused" else "0")
    print(f"\nSCHEDULE {request.param}: {request.node.name}")
    return request.param


@pytest.fixture(scope="module")
def scan():
    sim = simulate(size_px=N_SIZE, scan_dims=(15, 15), photons=1e6, seed=1)
    assert np.any(sim.data.positions_px != np.round(sim.data.positions_px))  # fractional: sub-pixel windows move
    return sim


def _run(sim, device, settings, iterations=5, fast=True, **kw):
    """A finished LSQML run (CUDA graphs unless the test set PTYCHOPY_BENCH_GPU_GRAPHS=0)."""
    rec = Reconstruction(sim.data.intensities, kw.pop("positions", sim.data.positions_px), algorithm="LSQML",
                         iterations=iterations, device=device, seed=0, beam_diameter_px=0.4 * N_SIZE,
                         settings=settings, implementation="auto" if fast else "reference", **kw)
    for _ in rec:
        pass
    return rec


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _differences(a, b):
    """(object, probe, max position px, max amplitude factor) differences of run a from run b."""
    flux = 0.0 if a.intensity_scale() is None else float(np.abs(a.intensity_scale() - b.intensity_scale()).max())
    return (_rel(a.object(), b.object()), _rel(a.probe(), b.probe()),
            float(np.abs(a.positions() - b.positions()).max()), flux)


def _numpy_spread(sim, settings, cpu, iterations):
    """How far the NumPy run ``cpu`` moves under a 1e-7 relative change of the data (``_differences``' four)."""
    noisy = dataclasses.replace(sim.data, intensities=(sim.data.intensities * (
        1 + 1e-7 * np.random.default_rng(0).standard_normal(sim.data.intensities.shape))).astype(np.float32))
    return _differences(_run(dataclasses.replace(sim, data=noisy), "cpu", settings, iterations=iterations), cpu)


FLOORS = (1e-3, 1e-3, 1e-3, 1e-4)  # object, probe, positions px, amplitude factors: float32 rounding


def _settings(option, **kw):
    return EngineSettings(update_probe_from=2, phase_constraint=0, **OPTIONS[option], **kw)


@pytest.mark.parametrize("option", OPTIONS)
def test_fast_lsqml_option_matches_the_reference_with_one_mini_batch_an_epoch(scan, option):
    settings = _settings(option, batch_size=len(scan.data.positions_px))
    cpu = _run(scan, "cpu", settings)
    gpu = _run(scan, "gpu", settings)
    assert type(gpu.engine).__name__ == "FastLSQML" and gpu.engine._fits
    diff = _differences(gpu, cpu)
    obj, probe, pos, flux = diff
    print(f"AGREE LSQML fits {option}, one batch: object {obj:.2e} probe {probe:.2e} positions {pos:.2e} px "
          f"flux {flux:.2e} error cpu {cpu.errors[-1]:.6f} gpu {gpu.errors[-1]:.6f}")
    spread = _numpy_spread(scan, settings, cpu, 5) if settings.noise_model == "poisson" else (0.0,) * 4
    for d, s, floor in zip(diff, spread, FLOORS, strict=True):
        assert d <= max(floor, 3 * s)
    assert np.allclose(gpu.errors, cpu.errors, rtol=1e-3)
    if settings.position_refinement_from:
        assert np.abs(cpu.positions() - scan.data.positions_px).max() > 1e-3  # the positions did move
    if settings.variable_intensity:
        assert np.abs(cpu.intensity_scale() - 1).max() > 1e-3  # the factors did move


@pytest.mark.parametrize("option", OPTIONS)
def test_fast_lsqml_option_with_mini_batches_stays_within_numpys_own_rounding_spread(scan, option):
    settings = _settings(option)
    cpu = _run(scan, "cpu", settings, iterations=6)
    gpu = _run(scan, "gpu", settings, iterations=6)
    assert type(gpu.engine).__name__ == "FastLSQML"
    spread = _numpy_spread(scan, settings, cpu, 6)
    diff = _differences(gpu, cpu)
    print(f"AGREE LSQML fits {option}, mini-batches: fast-vs-numpy {np.round(diff, 6).tolist()}, numpy's 1e-7 "
          f"spread {np.round(spread, 6).tolist()}")
    for d, s, floor in zip(diff, spread, FLOORS, strict=True):
        assert d <= max(floor, 3 * s)


def test_fast_lsqml_fits_graph_and_eager_runs_agree(scan, monkeypatch):
    settings = _settings("all", batch_size=len(scan.data.positions_px))
    graph = _run(scan, "gpu", settings)
    monkeypatch.setenv("PTYCHOPY_BENCH_GPU_GRAPHS", "0")
    eager = _run(scan, "gpu", settings)
    obj, probe, pos, flux = _differences(eager, graph)
    print(f"AGREE LSQML fits all, graph-vs-eager: object {obj:.2e} probe {probe:.2e} positions {pos:.2e} px")
    assert obj <= 1e-3 and probe <= 1e-3 and pos <= 1e-3 and flux <= 1e-4


def test_fast_lsqml_fits_with_two_modes_and_a_mask_match_the_reference_on_cupy(scan):
    """Two probe modes from epoch 3 and a detector mask: the per-mode loops and the masked pixels of every fits
    kernel, against the reference engine on CuPy (same eigen-solver, so no phase ambiguity between the modes)."""
    settings = _settings("all", batch_size=len(scan.data.positions_px), update_modes_from=3)
    mask = np.ones((N_SIZE, N_SIZE), dtype=bool)
    mask[30:34, :] = False
    fast = _run(scan, "gpu", settings, probe_modes=2, valid_mask=mask)
    ref = _run(scan, "gpu", settings, fast=False, probe_modes=2, valid_mask=mask)
    assert type(ref.engine).__name__ == "LSQML" and fast.state.modes_active == 2
    obj, probe, pos, flux = _differences(fast, ref)
    print(f"AGREE LSQML fits all + 2 modes + mask, fast-vs-xp-cupy: object {obj:.2e} probe {probe:.2e} "
          f"positions {pos:.2e} px flux {flux:.2e}")
    assert obj <= 1e-3 and probe <= 1e-3 and pos <= 1e-3 and flux <= 1e-4


def test_streamed_fast_lsqml_with_every_option_equals_the_resident_run(scan):
    """One position a mini-batch: no two float32 atomics add to one object pixel, so the runs agree up to the
    double-precision sums of the per-position steps (as the plain streamed LSQML, test_streaming.py), and
    streaming the amplitudes through the ring must not change them."""
    settings = _settings("all", batch_size=1)
    n_pos = len(scan.data.positions_px)
    shape = object_shape_for(np.floor(scan.data.positions_px + 0.5).astype(np.int64), N_SIZE)
    cap = streamed_memory_bytes(n_pos, N_SIZE, shape, algorithm="LSQML", chunk_positions=1, batch_size=1,
                                per_position_fits=True, subpixel_windows=True)
    resident = _run(scan, "gpu", settings, iterations=3)
    streamed = _run(scan, "gpu", settings, iterations=3, memory_cap_bytes=cap)
    assert resident.memory_plan.mode == "resident" and streamed.memory_plan.mode == "streamed"
    obj, probe, pos, flux = _differences(streamed, resident)
    print(f"STREAM LSQML fits all, batch 1: streamed-vs-resident object {obj:.2e} probe {probe:.2e} positions "
          f"{pos:.2e} px")
    assert obj <= 1e-5 and probe <= 1e-5 and pos <= 1e-4 and flux <= 1e-6


def test_sub_pixel_windows_on_whole_pixel_positions_run_the_plain_kernels(scan):
    """Whole-pixel positions with -subpixelWindows run the plain kernels (as the reference runs its whole-pixel
    steps): the same numbers up to the order of the double-precision step sums (one position a batch)."""
    whole = np.round(scan.data.positions_px)
    plain = _run(scan, "gpu", EngineSettings(update_probe_from=2, batch_size=1), iterations=3, positions=whole)
    sub = _run(scan, "gpu", EngineSettings(update_probe_from=2, batch_size=1, subpixel_windows=True), iterations=3,
               positions=whole)
    assert not sub.engine._fits and sub.state.positions_px is not None
    assert _rel(sub.object(), plain.object()) <= 1e-5 and _rel(sub.probe(), plain.probe()) <= 1e-5


@pytest.mark.parametrize("graphs", ["1", "0"])
def test_the_fused_schedule_equals_the_first_with_a_fork_and_join_every_position(scan, monkeypatch, graphs):
    """One position a mini-batch: 225 forks and joins of the probe's update chain an epoch, so a race between it and
    the object update or the position move (each writes what the other must not read) would show. The two schedules
    compute the same arithmetic (the ramp table holds the factors the first one computes per pixel), and with one
    position a batch no two float32 atomics add to one pixel; what may differ is the contraction of a product
    (1 ulp), which 3 epochs of probe updates amplify far less than to the float32 bound of the one-batch tests
    (1e-3). Without the Poisson model, which amplifies rounding once positions move (module docstring)."""
    monkeypatch.setenv("PTYCHOPY_BENCH_GPU_GRAPHS", graphs)
    settings = EngineSettings(update_probe_from=2, phase_constraint=0, batch_size=1, subpixel_windows=True,
                              position_refinement_from=2, variable_intensity=True)
    runs = {}
    for name, value in (("first", "0"), ("fused", "1")):
        monkeypatch.setenv("PTYCHOPY_BENCH_LSQML_FITS_FUSED", value)
        runs[name] = _run(scan, "gpu", settings, iterations=3)
        assert runs[name].engine._fused == (name == "fused")
    obj, probe, pos, flux = _differences(runs["fused"], runs["first"])
    print(f"AGREE LSQML fits sub-pixel + positions + flux, batch 1, graphs={graphs}: fused-vs-first object {obj:.2e} "
          f"probe {probe:.2e} positions {pos:.2e} px flux {flux:.2e}")
    assert obj <= 1e-3 and probe <= 1e-3 and pos <= 1e-3 and flux <= 1e-4


@pytest.mark.parametrize("option", ["plain", "subpixel+positions"])
def test_fast_lsqml_beta_decay_halves_the_step_as_the_reference_does_and_matches_it(scan, option):
    """-betaDecay=1 halves the step after every iteration (0.9, 0.45, 0.225, 0.1125 taken, then the floor 0.1): each
    new step is a new graph argument, so the fast run recaptures its graph and must still match the reference with
    one mini-batch."""
    extra = {} if option == "plain" else dict(subpixel_windows=True, position_refinement_from=2)
    settings = EngineSettings(update_probe_from=2, phase_constraint=0, beta_decay=1.0,
                              batch_size=len(scan.data.positions_px), **extra)
    cpu = _run(scan, "cpu", settings)
    gpu = _run(scan, "gpu", settings)
    assert type(gpu.engine).__name__ == "FastLSQML" and gpu.engine._fits == (option != "plain")
    assert gpu.engine.beta == cpu.engine.beta == pytest.approx(0.1)
    obj, probe, pos, _ = _differences(gpu, cpu)
    print(f"AGREE LSQML beta decay {option}, one batch: object {obj:.2e} probe {probe:.2e} positions {pos:.2e} px")
    for d, floor in zip((obj, probe, pos), FLOORS, strict=False):
        assert d <= floor
    assert np.allclose(gpu.errors, cpu.errors, rtol=1e-3)

"""-meanSpan (``EngineSettings.mean_span``, reconstruction/iterate_mean.py): an LSQML run reports the exponential mean
of its iterates (object and probe) from iteration 6 on, while the engine keeps iterating on its own state."""

from __future__ import annotations

import numpy as np
import pytest

from reconstruction.driver import Reconstruction, settings_from_parameters
from reconstruction.engines import EngineSettings
from reconstruction.iterate_mean import FIRST_AVERAGED_EPOCH, IterateMean, mean_weight
from reconstruction.parameters import Parameters
from reconstruction.preview import make_preview
from reconstruction.simulate import simulate


@pytest.fixture(scope="module")
def sim():
    return simulate(size_px=32, scan_dims=(6, 6), photons=1e6, seed=2)


def _run(sim, algorithm: str, iterations: int, span: int) -> Reconstruction:
    rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm=algorithm, iterations=iterations,
                         device="cpu", seed=0, beam_diameter_px=12.8,
                         settings=EngineSettings(update_probe_from=2, phase_constraint=0, mean_span=span))
    rec.run()
    return rec


def test_the_mean_is_each_iterate_before_epoch_6_then_the_exponential_mean_with_weight_2_over_span_plus_1():
    rng = np.random.default_rng(0)
    iterates = [(rng.normal(size=(5, 7)) + 1j * rng.normal(size=(5, 7))).astype(np.complex64) for _ in range(9)]
    probes = [(1 + k) * np.ones((1, 3, 3), np.complex64) for k in range(9)]
    mean = IterateMean.start(np, iterates[0], probes[0], span=5)
    assert mean.weight == pytest.approx(1 / 3) == mean_weight(5)
    expected_o, expected_p = iterates[0], probes[0]
    for epoch, (o, p) in enumerate(zip(iterates, probes, strict=True), start=1):
        mean.update(o, p, 1, epoch)
        if epoch < FIRST_AVERAGED_EPOCH:
            expected_o, expected_p = o, p
        else:
            expected_o = (2 / 3) * expected_o + (1 / 3) * o
            expected_p = (2 / 3) * expected_p + (1 / 3) * p
        np.testing.assert_allclose(mean.obj, expected_o, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mean.probe, expected_p, rtol=1e-5)
    assert mean.obj is not iterates[-1] and mean.obj.dtype == np.complex64  # its own array, updated in place


def test_the_mean_restarts_from_the_iterate_when_the_active_probe_modes_change():
    obj, probe = np.ones((4, 4), np.complex64), np.ones((2, 3, 3), np.complex64)
    mean = IterateMean.start(np, obj, probe, span=5)
    for epoch in range(1, 9):
        mean.update(obj * epoch, probe * epoch, 1, epoch)
    assert not np.allclose(mean.obj, obj * 8)  # averaging
    mean.update(obj * 9, probe * 9, 2, 9)  # a seeded mode has no history: the iterate as it is
    np.testing.assert_array_equal(mean.obj, obj * 9)
    np.testing.assert_array_equal(mean.probe, probe * 9)


@pytest.mark.parametrize("span", [0, -3])
def test_a_mean_span_below_one_is_refused(span):
    with pytest.raises(ValueError, match="at least 1"):
        mean_weight(span)


def test_an_lsqml_run_reports_the_mean_while_its_engine_iterates_exactly_as_without_it(sim):
    averaged, last = _run(sim, "LSQML", 9, 5), _run(sim, "LSQML", 9, 1)
    assert averaged.errors == last.errors  # the engine's iterates are untouched by the mean
    np.testing.assert_array_equal(averaged.state.obj, last.state.obj)
    assert last.iterate_mean is None
    np.testing.assert_array_equal(last.object(), last.state.obj)  # span 1: the last iterate, as before
    mean = averaged.iterate_mean
    assert mean is not None and mean.epochs == 9
    np.testing.assert_array_equal(averaged.object(), mean.obj)
    np.testing.assert_array_equal(averaged.probe(), mean.probe)
    assert not np.allclose(averaged.object(), averaged.state.obj, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(averaged.result().object, mean.obj)  # what the result file gets
    shown = averaged.preview(64)  # what the live view shows
    expected = make_preview(np, mean.obj, mean.probe, 9, 64, np.asarray, region=averaged.scanned_region())
    for image in ("object_amplitude", "object_phase"):
        np.testing.assert_array_equal(getattr(shown, image), getattr(expected, image))
    np.testing.assert_array_equal(shown.probe_amplitude[0], expected.probe_amplitude[0])


@pytest.mark.parametrize("algorithm", ["ePIE", "DM"])
def test_epie_and_dm_report_their_iterates(sim, algorithm):
    rec = _run(sim, algorithm, 3, 5)
    assert rec.iterate_mean is None
    np.testing.assert_array_equal(rec.object(), rec.state.obj)


def test_the_mean_span_flag_reaches_the_engine_settings():
    assert settings_from_parameters(Parameters.from_cmdstr("./ptycho -algorithm=LSQML -meanSpan=1")).mean_span == 1
    assert settings_from_parameters(Parameters.from_cmdstr("./ptycho -algorithm=LSQML")).mean_span == 5
    assert EngineSettings().mean_span == 5

"""The per-position intensity fit (-variableIntensity) of every engine: flux that varies from position to position
(NumPy)."""

import numpy as np
import pytest

from reconstruction import ParameterError, Parameters
from reconstruction.driver import Reconstruction, settings_from_parameters
from reconstruction.engines import EngineSettings
from reconstruction.io import read_result, write_result
from reconstruction.metrics import illuminated_region, object_nrmse
from reconstruction.multigpu import SplitReconstruction
from reconstruction.run_plan import DataSizes, plan_run
from reconstruction.simulate import simulate

N = 64


def _scan_with_flux(flux, scan_dims=(10, 10)):
    """A scan whose position j received ``flux[j]`` times the nominal photons (Poisson 1e6 nominal)."""
    sim = simulate(size_px=N, scan_dims=scan_dims, photons=0, seed=3)
    counts = np.random.default_rng(7).poisson(sim.data.intensities * flux[:, None, None]).astype(np.float32)
    return sim, counts


def _run(sim, counts, variable_intensity, iterations, algorithm="LSQML"):
    rec = Reconstruction(counts, sim.data.positions_px, algorithm=algorithm, iterations=iterations, seed=0,
                         beam_diameter_px=0.4 * N,
                         settings=EngineSettings(update_probe_from=2, phase_constraint=0,
                                                 variable_intensity=variable_intensity))
    rec.run()
    region = illuminated_region(rec.illumination(), 0.3)
    return rec, object_nrmse(sim.object_truth, rec.object(), region)


@pytest.mark.slow
def test_fitting_each_positions_flux_recovers_it_to_6_percent_and_halves_the_object_error(tmp_path):
    flux = np.random.default_rng(11).uniform(0.6, 1.4, 100)  # +-40 % from position to position
    sim, counts = _scan_with_flux(flux)
    _, nrmse_fixed = _run(sim, counts, False, 50)
    rec, nrmse_fitted = _run(sim, counts, True, 50)
    assert nrmse_fitted < 0.13 and nrmse_fitted < 0.6 * nrmse_fixed
    fitted = rec.intensity_scale() ** 2  # amplitude factors -> relative flux
    rel = fitted / fitted.mean() - flux / flux.mean()
    assert np.sqrt(np.mean(rel**2)) < 0.06
    assert np.corrcoef(fitted, flux)[0, 1] > 0.97
    path = write_result(rec.result(), tmp_path / "flux.h5")
    np.testing.assert_array_equal(read_result(path).intensity_scale, rec.intensity_scale())


def test_with_a_steady_flux_the_fit_costs_less_than_0_01_in_nrmse():
    sim, counts = _scan_with_flux(np.ones(100))
    plain, nrmse_plain = _run(sim, counts, False, 25)
    fitted, nrmse_fitted = _run(sim, counts, True, 25)
    assert plain.intensity_scale() is None and plain.result().intensity_scale is None
    assert nrmse_fitted < nrmse_plain + 0.01
    assert np.abs(fitted.intensity_scale() - 1).max() < 0.15 and abs(fitted.intensity_scale().mean() - 1) < 1e-5


# ePIE needs more epochs than DM here: its NRMSE still swings by +-30 % between epochs 40 and 60 (flux fitted or not)
EPOCHS = {"ePIE": 100, "DM": 50}


@pytest.mark.parametrize("algorithm", ["ePIE", "DM"])
def test_epie_and_dm_fitting_the_flux_remove_its_whole_cost_and_recover_it(tmp_path, algorithm):
    """8 x 8, flux +-20 %: unfitted, the object is clearly worse than a steady-flux scan's (measured ePIE 0.0563
    against 0.0221, DM 0.146 against 0.1225); fitted, as good (0.0225, 0.1229), and the fitted flux follows the
    truth (correlation 0.98, 0.997)."""
    flux = np.random.default_rng(11).uniform(0.8, 1.2, 64)
    sim, counts = _scan_with_flux(flux, (8, 8))
    _, steady = _run(*_scan_with_flux(np.ones(64), (8, 8)), False, EPOCHS[algorithm], algorithm)
    _, fixed = _run(sim, counts, False, EPOCHS[algorithm], algorithm)
    rec, fitted = _run(sim, counts, True, EPOCHS[algorithm], algorithm)
    assert fixed > 1.15 * steady
    assert fitted - steady < 0.2 * (fixed - steady)
    relative = rec.intensity_scale() ** 2
    assert np.corrcoef(relative, flux)[0, 1] > 0.95
    assert abs(rec.intensity_scale().mean() - 1) < 1e-5
    path = write_result(rec.result(), tmp_path / "flux.h5")
    np.testing.assert_array_equal(read_result(path).intensity_scale, rec.intensity_scale())


def test_variable_intensity_is_a_flag_of_every_engine_off_by_default_and_stored_sets_stay_off():
    assert not Parameters().reconstruction.variable_intensity
    for algorithm in ("MLs", "ePIE", "DM"):
        assert settings_from_parameters(Parameters.from_cmdstr(f"./ptycho -algorithm={algorithm} "
                                                               "-variableIntensity")).variable_intensity
    with pytest.raises(ParameterError, match="-variableIntensity: the per-position intensity fit runs on one"):
        Parameters.from_cmdstr("./ptycho -algorithm=LSQML -variableIntensity -gpus=0,1")
    stored = Parameters.from_cmdstr("./ptycho -algorithm=LSQML -size=64").to_dict()
    del stored["reconstruction"]["variable_intensity"]  # written before the flag existed
    assert not settings_from_parameters(Parameters.from_dict(stored)).variable_intensity


def test_on_the_gpu_the_flux_fit_keeps_every_fast_engine():
    sizes = DataSizes(36, 64, (200, 200))
    fit = EngineSettings(variable_intensity=True)
    for algorithm in ("ePIE", "DM", "LSQML"):  # tests/gpu/test_flux_noise.py, test_lsqml_fits.py
        plan = plan_run(algorithm, fit, sizes, backend="gpu", free_bytes=2**34)
        assert (plan.implementation, plan.implementation_reason) == (
            "fast", f"the fast {algorithm} implements every option of this run")


def test_the_preview_carries_the_fitted_flux_of_positions_that_do_not_move(tiny_scan):
    data = tiny_scan.data
    rec = Reconstruction(data.intensities, data.positions_px, algorithm="LSQML", iterations=3, seed=0,
                         settings=EngineSettings(variable_intensity=True))
    rec.run()
    shown = rec.preview().positions
    assert shown is not None and not shown.refined and shown.stride == 1
    np.testing.assert_array_equal(shown.current_px, shown.start_px)
    np.testing.assert_allclose(shown.flux, rec.intensity_scale() ** 2, rtol=1e-6)


def test_the_array_api_refuses_the_fit_in_a_split_run(tiny_scan):
    settings = EngineSettings(variable_intensity=True)
    data = tiny_scan.data
    with pytest.raises(ValueError, match="run on one device, not in a split run"):
        SplitReconstruction(data.intensities, data.positions_px, devices=[0, 1], algorithm="LSQML",
                            settings=settings)

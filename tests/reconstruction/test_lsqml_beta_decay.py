"""-betaDecay (``EngineSettings.beta_decay``): LSQML halves its step damping after each iteration whose Fourier error
fell by less than the given fraction, down to ``lsqml.BETA_FLOOR``; off (0) it keeps ``beta_lsq``."""

from __future__ import annotations

import pytest

from reconstruction.driver import Reconstruction, settings_from_parameters
from reconstruction.engines import EngineSettings
from reconstruction.engines.lsqml import BETA_FLOOR
from reconstruction.parameters import Parameters
from reconstruction.simulate import simulate


@pytest.fixture(scope="module")
def sim():
    return simulate(size_px=32, scan_dims=(6, 6), photons=1e6, seed=2)


def _engine_after(sim, iterations, decay):
    rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm="LSQML", iterations=iterations,
                         device="cpu", seed=0, beam_diameter_px=12.8,
                         settings=EngineSettings(update_probe_from=2, phase_constraint=0, beta_decay=decay))
    rec.run()
    return rec


def test_beta_decay_one_halves_the_lsqml_step_every_iteration_after_the_first_down_to_the_floor(sim):
    # a decay of 1 counts every iteration as stalled (any error > 0 x the last): 0.9, 0.45, 0.225, 0.1125, 0.1
    for iterations, beta in ((1, 0.9), (2, 0.45), (3, 0.225), (4, 0.1125), (6, BETA_FLOOR)):
        assert _engine_after(sim, iterations, 1.0).engine.beta == pytest.approx(beta)


def test_without_beta_decay_the_lsqml_step_stays_and_the_run_is_unchanged(sim):
    plain = _engine_after(sim, 6, 0.0)
    assert plain.engine.beta == EngineSettings.beta_lsq
    decayed = _engine_after(sim, 6, 1.0)
    assert decayed.errors[0] == plain.errors[0]  # the first iteration runs before any decay
    assert decayed.errors[-1] != plain.errors[-1]  # the halved steps are the ones taken


def test_the_beta_decay_flag_reaches_the_engine_settings():
    assert settings_from_parameters(Parameters.from_cmdstr("./ptycho -algorithm=LSQML -betaDecay=0.003")).beta_decay \
        == 0.003
    assert settings_from_parameters(Parameters.from_cmdstr("./ptycho -algorithm=LSQML")).beta_decay == 0.0

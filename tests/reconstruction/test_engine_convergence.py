"""Convergence on simulated data with a known truth (NumPy): the probe starts from a guess built from the
data, never from the truth; the error is measured inside the illuminated region after removing the global
complex scale, the linear phase ramp and any integer shift."""

import numpy as np
import pytest

from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.metrics import illuminated_region, object_nrmse

SETTINGS = EngineSettings(update_probe_from=2, phase_constraint=0)


def _nrmse(sim, algorithm, iterations, **kw):
    rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm=algorithm, iterations=iterations,
                         seed=0, beam_diameter_px=0.4 * 64, settings=kw.pop("settings", SETTINGS), **kw)
    for _ in rec:
        pass
    region = illuminated_region(rec.illumination(), 0.3)
    return object_nrmse(sim.object_truth, rec.object(), region), rec


@pytest.mark.slow
def test_lsqml_reaches_nrmse_0_05_within_50_iterations(small_scan):
    nrmse, rec = _nrmse(small_scan, "LSQML", 50)
    assert nrmse <= 0.05
    assert rec.errors[-1] < rec.errors[0]


@pytest.mark.slow
def test_lsqml_poisson_noise_model_converges(small_scan):
    nrmse, _ = _nrmse(small_scan, "LSQML", 50,
                      settings=EngineSettings(update_probe_from=2, phase_constraint=0, noise_model="poisson"))
    assert nrmse <= 0.1


@pytest.mark.slow
def test_epie_reaches_nrmse_0_08_within_50_epochs(small_scan):
    nrmse, _ = _nrmse(small_scan, "ePIE", 50)
    assert nrmse <= 0.08


@pytest.mark.slow
def test_dm_reaches_nrmse_0_15_within_100_iterations(small_scan):
    nrmse, _ = _nrmse(small_scan, "DM", 100)
    assert nrmse <= 0.15


def test_the_initial_guess_is_far_from_the_truth(small_scan):
    # guards the tests above against a trivially good start: a flat object scores 0.22, four times the
    # LSQML threshold
    nrmse, _ = _nrmse(small_scan, "ePIE", 0)
    assert nrmse > 0.2


@pytest.mark.parametrize("algorithm", ["ePIE", "DM", "LSQML"])
def test_same_seed_gives_identical_results(tiny_scan, algorithm):
    def run():
        rec = Reconstruction(tiny_scan.data.intensities, tiny_scan.data.positions_px, algorithm=algorithm,
                             iterations=4, seed=11, settings=EngineSettings(update_probe_from=1))
        for _ in rec:
            pass
        return rec.object(), rec.probe()

    (o1, p1), (o2, p2) = run(), run()
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(p1, p2)


@pytest.mark.parametrize("algorithm", ["ePIE", "DM", "LSQML"])
def test_mixed_state_probe_modes_are_seeded_and_kept_orthogonal(tiny_scan, algorithm):
    rec = Reconstruction(tiny_scan.data.intensities, tiny_scan.data.positions_px, algorithm=algorithm,
                         iterations=5, probe_modes=3, seed=0,
                         settings=EngineSettings(update_probe_from=1, update_modes_from=3))
    for p in rec:
        if p.iteration < 3:
            assert np.all(rec.probe()[1:] == 0), "extra modes stay empty before update_modes_from"
    probe = rec.probe()
    flat = probe.reshape(3, -1)
    gram = flat.conj() @ flat.T
    power = np.real(np.diag(gram))
    assert np.all(power > 0)
    assert np.abs(gram - np.diag(np.diag(gram))).max() < 1e-3 * power.max()
    assert np.all(np.diff(power) <= 1e-3 * power.max())
    assert np.isfinite(rec.errors).all()


def test_dm_exit_waves_follow_the_orthogonalised_modes(tiny_scan):
    # a two-mode guess with the weaker mode first: orthogonalisation swaps the modes after the first iteration,
    # and psi (linear in the modes) must be rotated with them
    sim = tiny_scan
    n = sim.data.size_px
    guess = np.zeros((2, n, n), np.complex64)
    guess[1] = sim.probe_truth[0]
    guess[0] = 0.3 * sim.probe_truth[0] * np.exp(1j * np.linspace(0, 3, n))[None, :]
    rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm="DM", iterations=1, probe=guess,
                         probe_modes=2, seed=0, settings=EngineSettings(update_probe_from=5))
    rec.step()
    psi, probe = rec.engine.psi, rec.state.probe
    power = np.sum(np.abs(probe) ** 2, axis=(1, 2))
    assert power[0] > power[1]  # reordered: strongest first
    own = np.abs(np.sum(np.conj(probe[0]) * psi[:, 0])) + np.abs(np.sum(np.conj(probe[1]) * psi[:, 1]))
    cross = np.abs(np.sum(np.conj(probe[0]) * psi[:, 1])) + np.abs(np.sum(np.conj(probe[1]) * psi[:, 0]))
    assert cross < 0.2 * own


def test_a_multi_mode_guess_is_used_as_given(tiny_scan):
    n = tiny_scan.data.size_px
    guess = np.zeros((2, n, n), np.complex64)
    guess[0] = tiny_scan.probe_truth[0]
    guess[1] = 0.5 * np.roll(tiny_scan.probe_truth[0], 3, axis=1)
    rec = Reconstruction(tiny_scan.data.intensities, tiny_scan.data.positions_px, algorithm="ePIE", iterations=1,
                         probe=guess, probe_modes=2, settings=EngineSettings(update_modes_from=50))
    assert rec.state.modes_active == 2
    np.testing.assert_allclose(np.asarray(rec.state.probe), guess, rtol=1e-6, atol=1e-7)  # not reseeded, not scaled


@pytest.mark.slow
def test_dm_does_not_drift_on_a_noisy_900_position_raster():
    """The issue-10 benchmark's scan at 128^2 (30 x 30 raster, step n/10, Poisson 1e6): classic DM (probe after
    object, exact modulus projection) wandered from NRMSE 0.21 at 10 iterations to 0.45-0.68 at 30; probe-first
    ordering and the relaxed modulus projection keep it at or below its 10-iteration value."""
    from reconstruction.probes import probe_guess_from_data
    from reconstruction.simulate import simulate

    n = 128
    sim = simulate(size_px=n, scan_dims=(30, 30), step_px=n / 10.0, photons=1e6, seed=0)
    rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm="DM", iterations=30, seed=0,
                         probe=probe_guess_from_data(sim.data.intensities, 0.4 * n, 1)[0], settings=SETTINGS)
    truth_illum = _illumination(sim, n)
    region = truth_illum > 0.3 * truth_illum.max()
    h, w = sim.object_truth.shape
    at = {}
    for progress in rec:
        if progress.iteration in (10, 30):
            at[progress.iteration] = object_nrmse(sim.object_truth, rec.object()[:h, :w], region)
    assert at[30] <= 0.25, at  # tike's parallel ER reaches 0.21 at 30 iterations on this scan (RESULTS.md)
    assert at[30] <= at[10] + 0.02, at
    assert rec.errors[-1] < rec.errors[0]  # the Fourier error of phi, on a rotating eighth of the positions


def _illumination(sim, n):
    corners = np.floor(sim.data.positions_px + 0.5).astype(int)
    p2 = np.abs(sim.probe_truth[0]) ** 2
    illum = np.zeros(sim.object_truth.shape)
    for r, c in corners:
        illum[r:r + n, c:c + n] += p2
    return illum

"""LSQML's probe-position refinement (-refinePositions, from iteration -PPS): the sub-pixel shift, the position
step, whole runs (NumPy), the parameters and the preview."""

import numpy as np
import pytest

from reconstruction import ParameterError, Parameters
from reconstruction.driver import Reconstruction, settings_from_parameters
from reconstruction.engines import EngineSettings
from reconstruction.metrics import illuminated_region, object_nrmse
from reconstruction.multigpu import SplitReconstruction
from reconstruction.physics import position_update, propagation, subpixel
from reconstruction.run_plan import DataSizes, plan_run
from reconstruction.simulate import simulate

N = 64


@pytest.fixture(scope="module")
def object_and_probe():
    sim = simulate(size_px=N, scan_dims=(3, 3), photons=0, seed=1)
    return sim.object_truth, sim.probe_truth


def test_a_whole_pixel_shift_is_a_roll_and_the_inverse_shift_undoes_any_shift():
    rng = np.random.default_rng(0)
    waves = (rng.standard_normal((2, 16, 16)) + 1j * rng.standard_normal((2, 16, 16))).astype(np.complex64)
    ramps = subpixel.shift_ramps(np, np.array([[1.0, -2.0], [0.37, -0.21]]), 16)
    moved = subpixel.shift_by_ramps(np, waves, ramps)
    assert moved.shape == (2, 2, 16, 16)
    np.testing.assert_allclose(moved[0], np.roll(waves, (1, -2), axis=(1, 2)), atol=1e-5)
    back = subpixel.shift_by_ramps(np, moved, ramps, inverse=True)
    np.testing.assert_allclose(back[1], waves, atol=1e-5)


@pytest.mark.parametrize("shift_px", [(0.3, -0.2), (-0.4, 0.1), (0.05, 0.25)])
def test_the_position_step_from_the_measured_moduli_recovers_a_known_subpixel_offset_to_15_percent(
        object_and_probe, shift_px):
    obj, probe = object_and_probe
    window = obj[None, 2:2 + N, 3:3 + N]
    moved_probe = subpixel.shift_by_ramps(np, probe, subpixel.shift_ramps(np, np.array([shift_px]), N))
    measured = np.abs(propagation.forward(np, moved_probe * window[:, None]))[:, 0]  # true position: + shift_px
    far = propagation.forward(np, probe[None] * window[:, None])  # model at the nominal position
    model_amp = np.abs(far)[:, 0]
    chi = propagation.backward(np, far * (measured / model_amp - 1)[:, None])  # LSQML's Gaussian update
    step = position_update.position_steps_px(np, probe[None], window, chi, far, model_amp, damping=0.0)[0]
    np.testing.assert_allclose(step, shift_px, atol=0.15 * max(abs(s) for s in shift_px))


def test_damping_holds_back_a_window_with_little_structure_and_barely_slows_a_structured_one(object_and_probe):
    obj, probe = object_and_probe
    sharp = obj[2:2 + N, 3:3 + N]
    windows = np.stack([sharp, 1 + 0.1 * (sharp - 1)]).astype(np.complex64)  # the second: a tenth of the contrast
    moved_probe = subpixel.shift_by_ramps(np, probe, subpixel.shift_ramps(np, np.array([[0.3, -0.2]] * 2), N))
    measured = np.abs(propagation.forward(np, moved_probe * windows[:, None]))[:, 0]
    far = propagation.forward(np, probe[None] * windows[:, None])
    model_amp = np.abs(far)[:, 0]
    chi = propagation.backward(np, far * (measured / model_amp - 1)[:, None])
    plain = position_update.position_steps_px(np, probe[None], windows, chi, far, model_amp, damping=0.0)
    damped = position_update.position_steps_px(np, probe[None], windows, chi, far, model_amp)
    np.testing.assert_allclose(plain, [[0.3, -0.2]] * 2, atol=0.05)  # undamped, both find the shift
    assert np.all(np.abs(damped[0]) > 0.5 * np.abs(plain[0]))
    assert np.all(np.abs(damped[1]) < 0.1 * np.abs(plain[1]))


def _perturbed_scan(amplitude_px: float):
    """A 10x10 scan at whole-pixel true positions, and those positions moved by up to +-amplitude_px."""
    nominal = simulate(size_px=N, scan_dims=(10, 10), photons=0, seed=3).data.positions_px
    true = np.floor(nominal + 0.5) + amplitude_px
    sim = simulate(size_px=N, scan_dims=(10, 10), photons=1e6, seed=3, positions_px=true)
    given = true + np.random.default_rng(5).uniform(-amplitude_px, amplitude_px, true.shape)
    return sim, true, given


def _position_error_px(positions, true):
    """RMS distance after removing the mean offset (a common shift only translates the image)."""
    d = positions - true
    d -= d.mean(axis=0)
    return float(np.sqrt((d**2).sum(axis=1).mean()))


def _run(sim, given, refine_from, iterations):
    h, w = sim.object_truth.shape
    rec = Reconstruction(sim.data.intensities, given, algorithm="LSQML", iterations=iterations, seed=0,
                         beam_diameter_px=0.4 * N, object_shape=(h + 6, w + 6),
                         settings=EngineSettings(update_probe_from=2, phase_constraint=0,
                                                 position_refinement_from=refine_from))
    rec.run()
    region = illuminated_region(rec.illumination()[:h, :w], 0.3)
    return rec, object_nrmse(sim.object_truth, rec.object()[:h, :w], region)


@pytest.mark.slow
def test_refinement_moves_positions_off_by_2_px_to_within_0_35_px_and_sharpens_the_object():
    sim, true, given = _perturbed_scan(2.0)
    before = given.copy()
    assert _position_error_px(given, true) > 1.5
    fixed, nrmse_fixed = _run(sim, given, 0, 80)
    refined, nrmse_refined = _run(sim, given, 20, 80)
    np.testing.assert_array_equal(given, before)  # the caller's positions are not written to
    assert _position_error_px(refined.positions(), true) < 0.35
    assert nrmse_refined < 0.07
    assert nrmse_refined < 0.5 * nrmse_fixed
    result = refined.result()
    np.testing.assert_array_equal(result.positions_px, refined.positions())
    np.testing.assert_array_equal(fixed.result().positions_px, np.floor(given + 0.5))


def test_before_refinement_starts_whole_pixel_positions_give_plain_lsqml(tiny_scan):
    corners = np.floor(tiny_scan.data.positions_px + 0.5)

    def run(refine_from):
        rec = Reconstruction(tiny_scan.data.intensities, corners, algorithm="LSQML", iterations=3, seed=4,
                             settings=EngineSettings(update_probe_from=2, position_refinement_from=refine_from))
        rec.run()
        return rec

    plain, refining_later = run(0), run(100)
    ref = plain.object()
    assert np.linalg.norm(refining_later.object() - ref) / np.linalg.norm(ref) < 1e-5
    np.testing.assert_array_equal(refining_later.positions(), corners)


def test_pps_turns_refinement_on_for_every_engine_and_is_off_by_default():
    assert not Parameters().reconstruction.refine_positions
    pps_alone = Parameters.from_cmdstr("./ptycho -algorithm=MLs -PPS=20")
    assert settings_from_parameters(pps_alone).position_refinement_from == 0
    p = Parameters.from_cmdstr("./ptycho -algorithm=MLs -refinePositions -PPS=20")
    assert settings_from_parameters(p).position_refinement_from == 20
    assert settings_from_parameters(Parameters.from_cmdstr("./ptycho -algorithm=MLs -refinePositions")
                                    ).position_refinement_from == 5  # the original's -PPS default
    for algorithm in ("ePIE", "DM"):
        assert settings_from_parameters(Parameters.from_cmdstr(
            f"./ptycho -algorithm={algorithm} -refinePositions -PPS=20")).position_refinement_from == 20
    with pytest.raises(ParameterError, match="-refinePositions: position refinement runs on one device"):
        Parameters.from_cmdstr("./ptycho -algorithm=LSQML -refinePositions -gpus=0,1")
    Parameters.from_cmdstr("./ptycho -algorithm=ePIE -PPS=20")  # -PPS alone asks for nothing: accepted, as before


def test_parameters_stored_before_refinement_existed_load_and_do_not_refine():
    # every job row and journal entry written by earlier versions holds position_search_from=5 and no
    # refine_positions (to_dict stores every leaf); they must load as they ran: no refinement, any algorithm
    stored = Parameters.from_cmdstr("./ptycho -algorithm=ePIE -size=64").to_dict()
    del stored["reconstruction"]["refine_positions"]
    assert stored["reconstruction"]["position_search_from"] == 5
    for algorithm in ("ePIE", "DM", "LSQML"):
        stored["reconstruction"]["algorithm"] = algorithm
        assert settings_from_parameters(Parameters.from_dict(stored)).position_refinement_from == 0
        assert settings_from_parameters(Parameters.from_dict(stored)).position_affine == ()  # geometry as given


def test_position_affine_names_the_free_terms_and_refuses_unknown_ones():
    def free(value):
        return settings_from_parameters(Parameters.from_cmdstr(
            f"./ptycho -algorithm=LSQML -refinePositions -positionAffine={value}")).position_affine

    assert free("none") == () and free("all") == ("scale", "asymmetry", "rotation", "shear", "offset")
    assert free("rotation,scale") == ("scale", "rotation")
    s = settings_from_parameters(Parameters.from_cmdstr(
        "./ptycho -algorithm=DM -refinePositions -coarseSearch=3 -coarseEpochs=4 -affineDelay=40 -affineEpochs=20"))
    assert (s.coarse_search_px, s.coarse_search_epochs, s.affine_delay, s.affine_epochs) == (3, 4, 40, 20)
    with pytest.raises(ParameterError, match="-coarseSearch"):
        Parameters.from_cmdstr("./ptycho -refinePositions -coarseSearch=-1")
    with pytest.raises(ParameterError, match="-positionAffine=zoom: unknown affine term 'zoom'"):
        Parameters.from_cmdstr("./ptycho -algorithm=LSQML -refinePositions -positionAffine=zoom")


def test_every_entry_point_refuses_refinement_it_cannot_do(tiny_scan):
    settings = EngineSettings(position_refinement_from=3)
    with pytest.raises(ValueError, match="position_affine=.*unknown term 'zoom'"):
        Reconstruction(tiny_scan.data.intensities, tiny_scan.data.positions_px, algorithm="ePIE",
                       settings=EngineSettings(position_refinement_from=3, position_affine=("zoom",)))
    with pytest.raises(ValueError, match="run on one device"):
        SplitReconstruction(tiny_scan.data.intensities, tiny_scan.data.positions_px, devices=[0, 1],
                            algorithm="LSQML", settings=settings)
    plan = plan_run("LSQML", settings, DataSizes(36, 64, (200, 200)), backend="gpu", free_bytes=2**34)
    assert plan.implementation == "fast"  # the fast LSQML refines positions on the GPU (tests/gpu)
    assert plan.implementation_reason == "the fast LSQML implements every option of this run"


def test_the_preview_carries_every_kth_position_and_marks_them_refined_only_when_refining(tiny_scan, monkeypatch):
    from reconstruction import preview as preview_module

    data = tiny_scan.data
    plain = Reconstruction(data.intensities, data.positions_px, algorithm="LSQML", iterations=1, seed=0)
    plain.run()
    fixed = plain.preview().positions  # the live view draws the scan for every run (issue 20)
    assert fixed is not None and not fixed.refined
    np.testing.assert_array_equal(fixed.current_px, fixed.start_px)
    monkeypatch.setattr(preview_module, "MAX_PREVIEW_POSITIONS", 10)  # 36 positions -> every 4th
    rec = Reconstruction(data.intensities, data.positions_px, algorithm="LSQML", iterations=3, seed=0,
                         settings=EngineSettings(position_refinement_from=2))
    rec.run()
    shown = rec.preview().positions
    assert shown is not None and shown.stride == 4 and shown.current_px.shape == (9, 2)
    np.testing.assert_allclose(shown.current_px, rec.positions()[::4], atol=1e-4)
    np.testing.assert_allclose(shown.start_px, data.positions_px[::4], atol=1e-4)
    assert np.abs(shown.current_px - shown.start_px).max() > 0


def test_the_refiner_says_ahead_which_epochs_fit_the_deformation_as_begin_epoch_then_finds():
    """A fast engine asks before each epoch whether it fits the scan's deformation (the fast ePIE then runs the
    reference step): the answer must be what the epoch, once begun, does, before, during and after the fit."""
    from reconstruction.engines.base import EngineState
    from reconstruction.engines.position_refiner import PositionRefiner

    n_pos = 4
    state = EngineState(xp=np, obj=np.ones((40, 40), np.complex64), probe=np.ones((1, 8, 8), np.complex64),
                        amplitudes=np.ones((n_pos, 8, 8), np.float32), valid=None, rows=np.zeros(n_pos, np.int64),
                        cols=np.arange(n_pos, dtype=np.int64) * 4, rng=np.random.default_rng(0),
                        positions_px=np.stack([np.zeros(n_pos), np.arange(n_pos) * 4.0], axis=1))
    settings = EngineSettings(position_refinement_from=1, position_affine=("scale",), affine_delay=2,
                              affine_epochs=3)
    refiner = PositionRefiner(state, settings)
    said, found = [], []
    for _ in range(8):
        said.append(refiner.next_epoch_fits_deformation())
        refiner.begin_epoch(state.lit_probes)
        found.append(refiner.affine_phase())
    assert said == found == [False, False, True, True, True, False, False, False]
    held = PositionRefiner(state, EngineSettings(position_refinement_from=1, affine_delay=0))
    assert not held.next_epoch_fits_deformation()  # every affine term held: nothing to fit

"""Position correction shared by every engine (physics/position_update.py, engines/position_refiner.py): the coarse
whole-pixel search, the scan's affine fit from each window's content, the held affine terms, and whole runs of
each engine on the NumPy reference."""

import numpy as np
import pytest

from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.metrics import illuminated_region, object_nrmse
from reconstruction.physics import position_update as pu
from reconstruction.physics import propagation, subpixel
from reconstruction.simulate import raster_px, simulate

N = 64


def _rotation(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def test_the_coarse_search_finds_whole_pixel_errors_of_up_to_2_px_against_a_formed_object():
    true = np.floor(raster_px((6, 6), 6.4) + 8.5)
    sim = simulate(size_px=N, photons=1e6, seed=3, positions_px=true)
    errors = np.random.default_rng(1).integers(-2, 3, true.shape)
    errors[0] = 0  # one window already in place stays there
    corners = (true + errors + 4).astype(np.int64)  # in an object padded by 4 px
    obj = np.pad(sim.object_truth.astype(np.complex64), 4, constant_values=1)
    probes = np.broadcast_to(sim.probe_truth[None], (len(true),) + sim.probe_truth.shape)
    shifts = pu.search_shifts(np, 2)
    assert shifts.shape == (25, 2) and np.all(shifts[0] == 0)
    # the object itself as the region around each window: num = obj, den = 1, nothing of the window's own
    zeros = np.zeros((len(true), N, N), np.complex64)
    regions = pu.consensus_regions(np, obj, np.ones(obj.shape, np.float32), zeros, zeros.real, corners[:, 0],
                                   corners[:, 1], 2, regularisation=0.0)
    scores = pu.coarse_shift_scores(np, regions, probes, np.sqrt(sim.data.intensities), None, shifts)
    np.testing.assert_array_equal(shifts[np.argmax(scores, axis=1)], -errors)
    inside = pu.search_inside(np, obj.shape, np.array([0]), np.array([0]), N, shifts)
    assert not inside[0, shifts.tolist().index([-1, 0])] and inside[0, 0]  # a shift out of the object is masked


def test_the_consensus_region_takes_the_windows_own_share_out():
    rng = np.random.default_rng(0)
    obj_num = (rng.standard_normal((20, 20)) + 1j * rng.standard_normal((20, 20))).astype(np.complex64)
    own = np.zeros((1, 8, 8), np.complex64)
    own[0] = obj_num[6:14, 6:14] * 0.5  # half of what is there is the window's own
    den = np.full((20, 20), 2.0, np.float32)
    own_den = np.ones((1, 8, 8), np.float32)
    regions = pu.consensus_regions(np, obj_num, den, own, own_den, np.array([6]), np.array([6]), 2,
                                   regularisation=0.0)
    assert regions.shape == (1, 12, 12)
    np.testing.assert_allclose(regions[0, 2:10, 2:10], (obj_num[6:14, 6:14] * 0.5) / 1.0, rtol=1e-5)
    np.testing.assert_allclose(regions[0, 0, :], obj_num[4, 4:16] / 2.0, rtol=1e-5)  # outside the window: all


def _deformation_terms_of(model_obj, nominal, probe, intensities):
    """The deformation terms (gram, rhs) of the windows at the ``nominal`` positions of the ``model_obj`` against
    the measured ``intensities``."""
    corners = np.floor(nominal + 0.5).astype(np.int64)
    probes, _ = subpixel.moved_probes(np, probe, nominal - corners)
    windows = np.stack([model_obj[r:r + N, c:c + N] for r, c in corners])
    far = propagation.forward(np, probes * windows[:, None])
    amp = np.sqrt(np.sum(np.abs(far) ** 2, axis=1))
    chi = propagation.backward(np, far * (np.sqrt(intensities) / amp - 1)[:, None])
    return pu.deformation_terms(np, probes, windows, chi, far, amp, pu.probe_centre_px(np, probe))


@pytest.fixture(scope="module")
def distorted_model():
    """Data of a scan whose true positions are the nominal ones stretched by 1 % and turned by 0.5 degrees, and
    the model an engine forms from the nominal positions: the object seen in that distorted frame."""
    nominal = raster_px((8, 8), 6.4) + 8.0
    probe = simulate(size_px=N, scan_dims=(2, 2), photons=0, seed=3).probe_truth
    y0 = pu.probe_centre_px(np, probe)
    centre = nominal.mean(axis=0) + y0
    affine = 1.01 * _rotation(0.5)
    true = centre + (nominal + y0 - centre) @ affine.T - y0
    sim = simulate(size_px=N, photons=0, seed=3, positions_px=true, subpixel=True)
    model_obj = pu.resample_affine(np, sim.object_truth.astype(np.complex64), affine, centre)
    gram, rhs = _deformation_terms_of(model_obj, nominal, probe, sim.data.intensities)
    return gram, rhs, np.linalg.inv(affine) - np.eye(2)


def test_the_deformation_of_each_windows_content_gives_the_scans_scale_and_rotation(distorted_model):
    gram, rhs, expected = distorted_model
    found = pu.solve_deformation(np, gram, rhs, ("scale", "asymmetry", "rotation", "shear"))
    # one linearised step: within 50 % (it overshoots by 25-45 %: the central differences of the object gradient
    # under-predict the change of fine detail, and the nuisance terms take a little of the signal; the engines
    # iterate it epoch by epoch)
    np.testing.assert_allclose(found, expected, atol=0.5 * np.abs(expected).max())
    described = pu.describe_affine(np, np.linalg.inv(np.eye(2) + found))
    assert described["scale"] == pytest.approx(1.01, abs=0.005)
    assert described["rotation_deg"] == pytest.approx(0.5, abs=0.25)


def test_a_held_affine_term_stays_zero_in_the_deformation_fit(distorted_model):
    gram, rhs, expected = distorted_model
    rotation_only = pu.solve_deformation(np, gram, rhs, ("rotation",))
    assert rotation_only[0, 0] == rotation_only[1, 1] == 0.0  # no scale
    assert rotation_only[0, 1] == -rotation_only[1, 0]
    assert rotation_only[1, 0] == pytest.approx(expected[1, 0], rel=0.5)
    assert np.all(pu.solve_deformation(np, gram, rhs, ()) == 0)


def test_the_smooth_warp_fit_finds_a_quadratic_distortion_of_the_scan_and_reduces_to_the_affine_fit():
    """Window centres displaced by a quadratic field u (0.4-0.6 px at the scan's corners, no affine part); the
    model object formed in that frame, O(x) = truth(x + u(x)); solve_warp reads the correction -u from the
    windows' content."""
    nominal = raster_px((8, 8), 6.4) + 8.0
    probe = simulate(size_px=N, scan_dims=(2, 2), photons=0, seed=3).probe_truth
    y0 = pu.probe_centre_px(np, probe)
    q = nominal + y0
    origin = q.mean(axis=0)
    scale = float(np.abs(q - origin).max())
    coef = np.array([[0.5, -0.2], [0.0, 0.4], [-0.3, 0.3]])  # (s_r^2, s_r s_c, s_c^2) x (row, col) displacement
    mean = pu.warp_monomials(np, q, origin, scale, 2).mean(axis=0)

    def u(points):
        return (pu.warp_monomials(np, points, origin, scale, 2) - mean) @ coef

    true = nominal + u(q)
    sim = simulate(size_px=N, photons=0, seed=3, positions_px=true, subpixel=True)
    h, w = sim.object_truth.shape
    grid = np.stack([a.ravel() for a in np.meshgrid(np.arange(h, dtype=float), np.arange(w, dtype=float),
                                                    indexing="ij")], axis=1)
    src = grid + u(grid)
    model_obj = pu.resample_at(np, sim.object_truth.astype(np.complex64), src[:, 0].reshape(h, w),
                               src[:, 1].reshape(h, w))
    gram, rhs = _deformation_terms_of(model_obj, nominal, probe, sim.data.intensities)
    linear = ("scale", "asymmetry", "rotation", "shear")
    affine, found = pu.solve_warp(np, gram, rhs, linear, pu.warp_jacobians(np, q, origin, scale, 2))
    # one linearised step, as the affine fit's: within 50 % of the correction; the affine part read is small
    # against the warp's local stretch (up to 2 x 0.5 / 22.4 px = 4.5 % at the scan's edge)
    np.testing.assert_allclose(found, -coef, atol=0.5 * np.abs(coef).max())
    assert np.abs(affine).max() < 0.1 * 2 * np.abs(coef).max() / scale
    # degree 1 adds nothing: the affine fit itself
    d, none = pu.solve_warp(np, gram, rhs, linear, pu.warp_jacobians(np, q, origin, scale, 1))
    assert none.shape == (0, 2)
    np.testing.assert_allclose(d, pu.solve_deformation(np, gram, rhs, linear), atol=1e-12)


def test_removing_held_affine_terms_keeps_the_free_ones_and_the_local_corrections():
    rng = np.random.default_rng(0)
    start = raster_px((6, 6), 5.0) + 10
    local = rng.normal(0, 0.3, start.shape)
    local -= (pu.affine_columns(np, start, pu.AFFINE_TERMS).reshape(-1, 6)
              @ np.linalg.lstsq(pu.affine_columns(np, start, pu.AFFINE_TERMS).reshape(-1, 6), local.ravel(),
                                rcond=None)[0]).reshape(local.shape)  # no affine part in the local corrections
    m = start.mean(axis=0)
    scaled = m + (start - m) * 1.02
    rotated = m + (start - m) @ _rotation(1.0).T
    moved = scaled + (rotated - start) + local + [0.7, -0.4]
    held_rotation = pu.remove_affine_terms(np, start, moved, ("rotation", "offset"))
    np.testing.assert_allclose(held_rotation, scaled + local, atol=2e-3)  # the small-angle term of 1 degree
    np.testing.assert_allclose(pu.remove_affine_terms(np, start, moved, pu.AFFINE_TERMS), start + local, atol=1e-9)
    np.testing.assert_array_equal(pu.remove_affine_terms(np, start, moved, ()), moved)
    linear, offset = pu.fit_affine(np, start, start + local + [0.7, -0.4])
    np.testing.assert_allclose(linear, np.eye(2), atol=1e-9)
    np.testing.assert_allclose(offset, [0.7, -0.4], atol=1e-9)


def _random_errors_scan(amplitude_px: float, size_px: int = N, dims=(10, 10)):
    nominal = raster_px(dims, size_px / 10) + 8.0
    true = nominal + np.random.default_rng(5).uniform(-amplitude_px, amplitude_px, nominal.shape)
    return simulate(size_px=size_px, photons=1e6, seed=3, positions_px=true, subpixel=True), true, nominal


def _position_error_px(positions, true):
    """RMS distance after removing the mean offset (a common shift only translates the image)."""
    d = positions - true
    d -= d.mean(axis=0)
    return float(np.sqrt((d**2).sum(axis=1).mean()))


def test_epie_refinement_moves_positions_off_by_1_5_px_to_within_0_25_px():
    sim, true, given = _random_errors_scan(1.5)
    h, w = sim.object_truth.shape
    rec = Reconstruction(sim.data.intensities, given, algorithm="ePIE", iterations=40, seed=0, device="cpu",
                         beam_diameter_px=0.4 * N, object_shape=(h + 12, w + 12),
                         settings=EngineSettings(update_probe_from=2, phase_constraint=0, position_refinement_from=10))
    before = _position_error_px(given, true)
    rec.run()
    after = _position_error_px(rec.positions(), true)
    assert before > 1.1 and after < 0.25, (before, after)
    result = rec.result()
    np.testing.assert_array_equal(result.positions_px, rec.positions())
    preview = rec.preview()
    assert preview.positions is not None and preview.positions.refined
    region = illuminated_region(rec.illumination()[:h, :w], 0.3)
    assert object_nrmse(sim.object_truth, rec.object()[:h, :w], region) < 0.1


@pytest.mark.slow
def test_dm_refinement_moves_positions_off_by_1_5_px_to_within_0_4_px_and_keeps_the_object():
    """Measured (64^2, 10 x 10, Poisson 1e6, 80 iterations, -PPS=20): 1.21 -> 0.34 px RMS, object NRMSE 0.104
    (0.121 with the true positions); before DM's exit waves followed the moves: 0.40 px, 0.109."""
    sim, true, given = _random_errors_scan(1.5)
    h, w = sim.object_truth.shape
    rec = Reconstruction(sim.data.intensities, given, algorithm="DM", iterations=80, seed=0, device="cpu",
                         beam_diameter_px=0.4 * N, object_shape=(h + 12, w + 12),
                         settings=EngineSettings(update_probe_from=2, phase_constraint=0, position_refinement_from=20))
    rec.run()
    assert _position_error_px(given, true) > 1.1
    assert _position_error_px(rec.positions(), true) < 0.4
    np.testing.assert_array_equal(rec.result().positions_px, rec.positions())
    region = illuminated_region(rec.illumination()[:h, :w], 0.3)
    assert object_nrmse(sim.object_truth, rec.object()[:h, :w], region) < 0.14


def _target_scan():
    """The issue's target scan at CI size: 64^2, 10 x 10 (step 6.4 px, beam 25.6 px), Poisson 1e6; true positions =
    the nominal raster stretched by 1 % and turned by 0.5 degrees about its centre, plus uniform +-3 px random
    errors; the nominal raster is given."""
    nominal = raster_px((10, 10), 6.4) + 8.0
    centre = nominal.mean(axis=0)
    true = centre + (nominal - centre) @ (1.01 * _rotation(0.5)).T
    true += np.random.default_rng(5).uniform(-3.0, 3.0, true.shape)
    return simulate(size_px=N, photons=1e6, seed=3, positions_px=true, subpixel=True), true, nominal


def _target_run(sim, positions, algorithm, refine):
    """100 iterations with the probe known and held; refining: from iteration 5, a coarse +-3 px search in the
    first 5 refining iterations, every linear affine term free, fitted from refining iteration 31 to the end."""
    h, w = sim.object_truth.shape
    settings = EngineSettings(update_probe_from=1000, phase_constraint=0, subpixel_windows=True,
                              position_refinement_from=5 if refine else 0, position_affine=LINEAR,
                              coarse_search_px=3, coarse_search_epochs=5, affine_delay=30, affine_epochs=100)
    rec = Reconstruction(sim.data.intensities, positions, algorithm=algorithm, iterations=100, seed=0,
                         device="cpu", probe=sim.probe_truth, object_shape=(h + 12, w + 12), settings=settings)
    rec.run()
    region = illuminated_region(rec.illumination()[:h, :w], 0.3)
    # the shift removed to a fraction of a pixel: the scan's common offset, which the data cannot see, stays where
    # the given raster's mean puts it (as the position error removes the mean offset); the object the run reports
    # (LSQML: the mean of its iterates), and the engine's last iterate
    reported, last = (object_nrmse(sim.object_truth, np.asarray(o)[:h, :w], region, subpixel_shift=True)
                      for o in (rec.object(), rec.state.obj))
    return rec, reported, last


def test_the_object_nrmse_removes_a_subpixel_shift_when_asked():
    sim = simulate(size_px=32, scan_dims=(2, 2), photons=0, seed=3)
    truth = sim.object_truth.astype(np.complex64)
    ky, kx = np.fft.fftfreq(truth.shape[0])[:, None], np.fft.fftfreq(truth.shape[1])[None, :]
    moved = np.fft.ifft2(np.fft.fft2(truth) * np.exp(-2j * np.pi * (0.3 * ky - 0.2 * kx))) * (0.8 + 0.6j)
    region = np.zeros(truth.shape, bool)
    region[8:-8, 8:-8] = True
    assert object_nrmse(truth, moved, region) > 0.02  # whole pixels only: the 0.3 px shift counts as error
    assert object_nrmse(truth, moved, region, subpixel_shift=True) < 1e-3


LINEAR = ("scale", "asymmetry", "rotation", "shear")


@pytest.mark.slow
@pytest.mark.parametrize("algorithm,max_error_px,max_nrmse_ratio", [
    ("LSQML", 0.09, 1.08),  # measured 2.41 -> 0.072 px, NRMSE 0.0301 vs 0.0287 (1.05x): the target, met
    # (the last iterates; the mean the run reports: 0.0222 vs 0.0203, 1.09x, checked against the target below)
    ("ePIE", 0.08, 1.105),  # measured 2.41 -> 0.066 px, NRMSE 0.01855 vs 0.01688 (1.099x): met (0.071 px, 1.107x
    # before its affine-phase steps were weighed by the others' light and left the linear geometry to the fit); the
    # bound leaves 0.5 % over the target for another machine's FFT rounding (other visiting orders: 1.098-1.104x)
    ("DM", 0.1, 1.05),  # measured 2.41 -> 0.074 px, NRMSE 0.0398 vs 0.0389 (1.02x): met since its affine phase reads
    # its terms on an error-reduction view of the object, with a cubic warp (0.120 px, 1.06x before; 0.129 px before
    # its affine-phase steps left the linear geometry to the fit; 0.175 px before DM's quadratic warp and its 0.3
    # damping with the probe held; 0.119 before the search's fallback)
])
def test_with_the_probe_known_3_px_random_errors_a_1_percent_stretch_and_half_a_degree_are_corrected(
        algorithm, max_error_px, max_nrmse_ratio):
    """The issue's target (0.1 px RMS, NRMSE within 10 % of the run given the true positions) with the probe known
    and held: every engine meets it (DM since its affine phase reads the fit and the steps on an error-reduction
    view of the object: 0.120 -> 0.074 px, its affine part 0.063 -> 0.013 px) (benchmarks/RESULTS.md).
    With the probe reconstructed from the data the coarse search and the affine fit fail (docs/parameters.md)."""
    sim, true, given = _target_scan()
    assert _position_error_px(given, true) > 2.3
    _, reported_true, nrmse_true = _target_run(sim, true, algorithm, refine=False)
    rec, reported, nrmse = _target_run(sim, given, algorithm, refine=True)
    assert _position_error_px(rec.positions(), true) < max_error_px
    assert nrmse < max_nrmse_ratio * nrmse_true, (nrmse, nrmse_true)
    if rec.iterate_mean is None:  # ePIE, DM: they report their last iterate
        assert (reported, reported_true) == (nrmse, nrmse_true)
    else:  # LSQML reports the mean of its iterates: lower errors, and the target (10 %) on them too
        assert reported < 0.8 * nrmse and reported_true < 0.8 * nrmse_true, (reported, nrmse, reported_true)
        assert reported < 1.10 * reported_true, (reported, reported_true)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm,max_error_px,max_edge_px", [
    ("LSQML", 0.18, 0.27),  # measured 0.156 px, edge ring 0.232 (0.208, 0.328 unweighted; 0.251, 0.419 before both)
    ("ePIE", 0.18, 0.27),  # measured 0.151 px, edge ring 0.232 (0.154, 0.236 before its affine-phase steps
    # changed; 0.184, 0.293 unweighted; 0.221, 0.364 before both)
])
def test_at_128_px_the_scans_edge_windows_follow_a_search_that_falls_back_to_the_object_and_weighted_steps(
        algorithm, max_error_px, max_edge_px):
    """The target's errors at 128^2, 12 x 12 (step 12.8 px), `-affineDelay=40 -affineEpochs=20`: the edge windows
    (the raster's outer ring) were left 0.35-0.42 px off, put there by the coarse search's first moves out of a
    consensus faded to 0 beyond the other windows' light and held by the object's gradient where their own light
    alone wrote it; ePIE's and LSQML's per-position steps weigh that gradient by the share of the light the other
    windows bring (benchmarks/RESULTS.md)."""
    nominal = raster_px((12, 12), 12.8) + 8.0
    centre = nominal.mean(axis=0)
    true = centre + (nominal - centre) @ (1.01 * _rotation(0.5)).T
    true += np.random.default_rng(5).uniform(-3.0, 3.0, true.shape)
    sim = simulate(size_px=128, photons=1e6, seed=3, positions_px=true, subpixel=True)
    h, w = sim.object_truth.shape
    settings = EngineSettings(update_probe_from=1000, phase_constraint=0, subpixel_windows=True,
                              position_refinement_from=5, position_affine=LINEAR, coarse_search_px=3,
                              coarse_search_epochs=5, affine_delay=40, affine_epochs=20)
    rec = Reconstruction(sim.data.intensities, nominal, algorithm=algorithm, iterations=100, seed=0, device="cpu",
                         probe=sim.probe_truth, object_shape=(h + 12, w + 12), settings=settings)
    rec.run()
    d = rec.positions() - true
    d -= d.mean(axis=0)
    dist2 = (d**2).sum(axis=1)
    edge = np.any((nominal == nominal.min(axis=0)) | (nominal == nominal.max(axis=0)), axis=1)
    assert np.sqrt(dist2.mean()) < max_error_px
    assert np.sqrt(dist2[edge].mean()) < max_edge_px


@pytest.mark.parametrize("algorithm", ["ePIE", "DM", "LSQML"])
def test_refined_positions_of_every_engine_reach_the_result_file_and_the_live_view(algorithm, tiny_scan, tmp_path):
    from reconstruction.io.results import read_result, write_result

    data = tiny_scan.data
    rec = Reconstruction(data.intensities, data.positions_px, algorithm=algorithm, iterations=4, seed=0,
                         device="cpu", settings=EngineSettings(update_probe_from=2, position_refinement_from=2))
    rec.run()
    refined = rec.positions()
    assert np.abs(refined - data.positions_px).max() > 0  # they moved
    path = write_result(rec.result(), tmp_path / "r.h5")
    np.testing.assert_array_equal(read_result(path).positions_px, refined)  # what -lf=r.h5 starts from
    shown = rec.preview().positions
    assert shown is not None and shown.refined
    np.testing.assert_allclose(shown.current_px, refined[::shown.stride], atol=1e-4)


def test_an_affine_fit_that_keeps_asking_for_the_same_deformation_is_held_to_a_shrinking_step():
    """A model error the scan cannot remove (a held probe of the wrong size reads as a stretch) asks for the same
    deformation every epoch: its steps are halved and their sum stays bounded, where a deformation that is in the
    scan leaves the fit as it is applied and is taken whole, also beyond the per-epoch limit over several epochs."""
    spurious = np.array([[-0.003, 0.0], [0.0, -0.003]])
    total, trust, last_fit, last_step = np.zeros((2, 2)), 0.02, None, None
    for _ in range(30):
        step, trust = pu.trusted_deformation(np, spurious, last_fit, last_step, trust)
        total, last_fit, last_step = total + step, spurious, step
    assert np.abs(total).max() < 2 * 0.003  # without the trust: 30 x 0.3 % = 9 %
    real = np.array([[0.05, 0.004], [-0.004, 0.01]])  # 5 %: more than one epoch's 2 %
    left, trust, last_fit, last_step = real.copy(), 0.02, None, None
    for _ in range(4):
        step, trust = pu.trusted_deformation(np, left, last_fit, last_step, trust)
        last_fit, last_step, left = left, step, left - step
    assert trust == 0.02
    np.testing.assert_allclose(left, 0, atol=1e-12)


def _guessed_probe_run(algorithm: str, dims=(8, 8), amplitude_px: float = 2.0, probe=None):
    """32^2, 8 x 8 raster (step 3.2 px, beam 12.8 px), uniform +-2 px errors, Poisson 1e6, 15 iterations; refining
    from iteration 3 with a coarse search of +-2 px in its first 5 iterations; the probe guessed from the data and
    updated from iteration 2 (``probe`` given: it, held)."""
    n = 32
    given = raster_px(dims, n / 10) + 6.0
    true = given + np.random.default_rng(5).uniform(-amplitude_px, amplitude_px, given.shape)
    sim = simulate(size_px=n, photons=1e6, seed=3, positions_px=true, subpixel=True)
    h, w = sim.object_truth.shape
    settings = EngineSettings(update_probe_from=2 if probe is None else 1000, phase_constraint=0,
                              subpixel_windows=True, position_refinement_from=3, coarse_search_px=2,
                              coarse_search_epochs=5)
    rec = Reconstruction(sim.data.intensities, given, algorithm=algorithm, iterations=15, seed=0, device="cpu",
                         beam_diameter_px=0.4 * n, object_shape=(h + 8, w + 8), probe=probe, settings=settings)
    return rec, given, true, sim


@pytest.mark.parametrize("algorithm", ["LSQML", "DM"])
def test_a_coarse_search_on_a_guessed_probe_that_does_not_settle_is_undone_and_positions_end_better_than_given(
        algorithm):
    """From a probe guessed from the data the search scores noise: it moved more windows in its second epoch than
    in its first, most of them the wrong way. Measured before its moves were undone: 1.64 -> 2.02 px RMS (LSQML),
    2.24 (DM); after: 1.29, 1.58. DM's exit-wave memory is large here (0.6 of phi), so it now steps only in every 8th
    refining epoch (engines/dm.py, MEMORY_SHARE_SETTLE): 1.62 px in these 15 iterations."""
    rec, given, true, _ = _guessed_probe_run(algorithm)
    rec.run()
    assert rec.engine.refiner._search_stopped
    # below given, and below what each engine reached with the search's moves kept (2.02 / 2.24 px)
    bound_px = {"LSQML": 1.45, "DM": _position_error_px(given, true) - 0.01}[algorithm]
    assert _position_error_px(rec.positions(), true) < bound_px


def test_a_coarse_search_on_a_known_probe_settles_and_keeps_its_moves():
    """The same scan with the true probe held: the search moves fewer windows each epoch and is never undone."""
    _, _, _, sim = _guessed_probe_run("LSQML")
    rec, given, true, _ = _guessed_probe_run("LSQML", probe=sim.probe_truth)
    rec.run()
    assert not rec.engine.refiner._search_stopped
    assert _position_error_px(rec.positions(), true) < 0.5 * _position_error_px(given, true)


def test_dm_from_a_guessed_probe_steps_after_its_exit_wave_memorys_transient_and_ends_within_0_45_px():
    """DM's exit-wave memory psi - phi feeds each move back into its next steps for about 6 iterations; from a probe
    guessed from the data the pull towards the truth is weak and its memory large (0.57 of phi here), so the
    positions wandered (64^2 target scan, -affineEpochs=20: 2.41 -> 4.59 px RMS). Steps taken only once that
    transient has passed (every 8th refining epoch while the memory is at least half of phi): the target scan 2.36
    px; this one (32^2, 10 x 10, +-1.5 px + 1 % + 0.5 degrees, coarse search +-2 px, affine fit in refining epochs
    31-50, 100 iterations) 1.21 -> 0.339 px, where steps in every epoch ended at 0.543 px."""
    n = 32
    nominal = raster_px((10, 10), n / 10) + 8.0
    centre = nominal.mean(axis=0)
    true = centre + (nominal - centre) @ (1.01 * _rotation(0.5)).T
    true += np.random.default_rng(5).uniform(-1.5, 1.5, true.shape)
    sim = simulate(size_px=n, photons=1e6, seed=3, positions_px=true, subpixel=True)
    h, w = sim.object_truth.shape
    settings = EngineSettings(update_probe_from=2, phase_constraint=0, subpixel_windows=True,
                              position_refinement_from=5, position_affine=LINEAR, coarse_search_px=2,
                              coarse_search_epochs=5, affine_delay=30, affine_epochs=20)
    rec = Reconstruction(sim.data.intensities, nominal, algorithm="DM", iterations=100, seed=0, device="cpu",
                         beam_diameter_px=0.4 * n, object_shape=(h + 8, w + 8), settings=settings)
    cadence = set()
    for _ in rec:
        cadence.add(getattr(rec.engine.refiner, "step_every", 1))
    assert _position_error_px(nominal, true) > 1.15
    assert _position_error_px(rec.positions(), true) < 0.45
    assert cadence == {1, 8}  # the memory was large at first, small by the end


def test_the_consensus_region_falls_back_to_the_current_object_where_no_other_window_lights_it():
    """Beyond the other windows' light (den - own_den = 0) the region is the prior (the refiner's current object),
    not 0; where they light it fully it is their average, barely moved by the prior."""
    rng = np.random.default_rng(1)
    prior = (rng.standard_normal((20, 20)) + 1j * rng.standard_normal((20, 20))).astype(np.complex64)
    num = np.zeros((20, 20), np.complex64)
    den = np.zeros((20, 20), np.float32)
    num[:, 10:], den[:, 10:] = 4.0 + 2.0j, 2.0  # the other windows light the right half only
    own = np.zeros((1, 8, 8), np.complex64)
    regions = pu.consensus_regions(np, num, den, own, own.real, np.array([6]), np.array([6]), 2,
                                   regularisation=0.01, prior=prior)
    np.testing.assert_allclose(regions[0, :, :6], prior[4:16, 4:10], rtol=1e-5)  # dark: the prior
    np.testing.assert_allclose(regions[0, :, 6:], 2.0 + 1.0j, atol=0.02 * np.abs(prior).max())  # lit: the others


def test_the_share_of_light_other_windows_bring_is_zero_where_a_window_lights_alone_and_half_where_two_do():
    probes = np.ones((1, 2, 4, 4), np.complex64) * np.sqrt(0.5)  # two modes, |P|^2 summing to 1
    illumination = np.ones((1, 4, 4), np.float32)
    illumination[0, :, 2:] = 2.0  # a second window lights the right half as brightly
    share = pu.others_light_share(np, probes, illumination)
    np.testing.assert_allclose(share[0, :, :2], 0.0, atol=1e-6)
    np.testing.assert_allclose(share[0, :, 2:], 0.5, rtol=1e-6)


@pytest.mark.parametrize("moved,moved_before,n_positions,settled", [
    (43, 79, 100, True), (17, 43, 100, True), (11, 16, 100, True),  # probe known, 64^2 (LSQML; DM's third epoch)
    (24, 24, 64, False), (19, 24, 64, False), (41, 27, 100, False),  # probe guessed, the consensus falling back
    (9, 9, 100, True),  # a tenth of the windows or fewer: too few to tell
])
def test_a_coarse_search_whose_moves_do_not_fall_below_three_quarters_of_the_epoch_befores_is_unsettled(
        moved, moved_before, n_positions, settled):
    """Measured move counts per search epoch (engines/position_refiner.py): with the consensus falling back to the
    current object a noisy search moves about as many windows each epoch, where the old rule (undo only when the
    count grows) let LSQML's 24, 24, 23, 19, 17 (32^2, 8 x 8, probe guessed) run on (1.64 -> 2.41 px)."""
    from reconstruction.engines.position_refiner import unsettled_search

    assert unsettled_search(moved, moved_before, n_positions) is not settled


def _affine_phase_refiner(fit_alone: bool, weigh_steps: bool = False):
    """A refiner of a 4 x 4 scan (8 x 8 windows, step 4 px, probe known and held) in its first affine epoch."""
    from reconstruction.engines.base import EngineState
    from reconstruction.engines.position_refiner import PositionRefiner

    positions = raster_px((4, 4), 4.0) + 2.0
    n_pos = len(positions)
    probe = np.exp(-((np.arange(8) - 3.5) ** 2)[:, None] / 8 - ((np.arange(8) - 3.5) ** 2)[None] / 8)
    state = EngineState(xp=np, obj=np.ones((28, 28), np.complex64), probe=probe[None].astype(np.complex64),
                        amplitudes=np.ones((n_pos, 8, 8), np.float32), valid=None,
                        rows=np.round(positions[:, 0]).astype(np.int64),
                        cols=np.round(positions[:, 1]).astype(np.int64),
                        rng=np.random.default_rng(0), positions_px=positions.copy())
    settings = EngineSettings(update_probe_from=1000, position_refinement_from=1, position_affine=LINEAR,
                              affine_delay=0, affine_epochs=5)
    refiner = PositionRefiner(state, settings)
    refiner.fit_alone, refiner.weigh_steps = fit_alone, weigh_steps
    refiner.begin_epoch(state.lit_probes)
    assert refiner.affine_phase() and not refiner.probe_reconstructed()
    return refiner, state


def test_in_the_affine_phase_with_the_probe_known_epie_and_dm_leave_the_scans_linear_geometry_to_the_fit():
    """ePIE's and DM's per-position steps carry an edge bias in the affine phase whose linear part the fit does not
    restore (64^2 target scan, DM: the steps moved the scale by +1 to +8e-4 each 5 iterations, the fit back by
    about half; with unweighted gradients -12e-4); with ``fit_alone`` the steps' linear part is removed each epoch,
    as with a reconstructed probe, and their local part kept. LSQML's refiner keeps both (0.073 -> 0.075 px with it)."""
    for fit_alone in (True, False):
        refiner, state = _affine_phase_refiner(fit_alone)
        start = state.positions_px.copy()
        centred = start - start.mean(axis=0)
        local = np.random.default_rng(2).uniform(-0.1, 0.1, start.shape)
        local -= (pu.affine_columns(np, start, pu.AFFINE_TERMS).reshape(-1, 6)
                  @ np.linalg.lstsq(pu.affine_columns(np, start, pu.AFFINE_TERMS).reshape(-1, 6), local.ravel(),
                                    rcond=None)[0]).reshape(local.shape)  # no affine part
        wanted = 0.004 * centred + local  # a 0.4 % stretch and local corrections
        refiner.damping = 0.0
        refiner.collect(np.arange(len(start)), wanted, np.ones_like(wanted))
        refiner.end_epoch()
        moved = state.positions_px - start
        np.testing.assert_allclose(moved, local if fit_alone else wanted, atol=1e-5)
    sim = simulate(size_px=32, scan_dims=(3, 3), photons=0, seed=1)
    settings = EngineSettings(position_refinement_from=1, position_affine=LINEAR)
    fit_alone = {name: Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm=name, iterations=1,
                                      device="cpu", settings=settings).engine.refiner.fit_alone
                 for name in ("LSQML", "ePIE", "DM")}
    assert fit_alone == {"LSQML": False, "ePIE": True, "DM": True}


def test_in_the_affine_phase_epies_steps_weigh_the_trusted_gradients_by_the_others_light():
    """In the affine phase ePIE's per-position step weighs the object's gradients by the trusted area times the share
    of the light the other windows bring (before: by the trusted area only, the deformation terms' translation
    block): 64^2 target scan 0.071 -> 0.066 px, NRMSE 1.107x -> 1.099x the run given the true positions."""
    refiner, state = _affine_phase_refiner(fit_alone=True, weigh_steps=True)
    rng = np.random.default_rng(3)
    idx = np.arange(4)
    probes = state.lit_probes(idx)
    windows = (rng.normal(size=(4, 8, 8)) + 1j * rng.normal(size=(4, 8, 8))).astype(np.complex64)
    chi = (0.1 * (rng.normal(size=(4, 1, 8, 8)) + 1j * rng.normal(size=(4, 1, 8, 8)))).astype(np.complex64)
    far = propagation.forward(np, probes * windows[:, None])
    amp = np.sqrt(np.sum(np.abs(far) ** 2, axis=1))
    num, den = refiner.terms(idx, probes, windows, chi, far, amp)
    trusted = refiner._trusted.ravel()[state.window_idx(idx)]
    share = pu.others_light_share(np, probes, refiner.step_illumination.ravel()[state.window_idx(idx)])
    assert 0 <= share.min() < share.max() <= 1  # weights that vary across the windows
    want_num, want_den = pu.translation_terms(np, probes, windows, chi, far, amp, trusted * share)
    np.testing.assert_allclose(num, want_num, rtol=1e-5)
    np.testing.assert_allclose(den, want_den, rtol=1e-5)
    assert refiner._gram.shape == (4, 6 + pu.NUISANCE_TERMS, 6 + pu.NUISANCE_TERMS)  # the fit's terms gathered too


def test_dm_moves_positions_only_in_epochs_known_to_step_when_they_begin():
    """The fast DM computes its kernels' step terms only in the refining epochs that step (``collecting`` after
    ``begin_epoch``), and skips the exit waves' follow-the-move passes where ``end_epoch_moves`` is False: so the
    reference DM, whose cadence the memory at an epoch's end sets for the next, must move no position by a step in
    any other epoch. A guessed probe (its memory large: steps in every 8th epoch) and no affine fit, 32^2 scan."""
    n = 32
    sim = simulate(size_px=n, scan_dims=(8, 8), step_px=n / 10, photons=1e6, seed=3, jitter_px=1.0, subpixel=True)
    settings = EngineSettings(update_probe_from=2, phase_constraint=0, subpixel_windows=True,
                              position_refinement_from=3, coarse_search_px=0)
    rec = Reconstruction(sim.data.intensities, raster_px((8, 8), n / 10) + 6.0, algorithm="DM", iterations=40,
                         seed=0, device="cpu", beam_diameter_px=0.4 * n, settings=settings)
    refiner = rec.engine.refiner
    begin, end = refiner.begin_epoch, refiner.end_epoch
    epochs: list[tuple[bool, bool, float]] = []  # (collecting when it began, end_epoch_moves, largest move px)

    def begin_epoch(probe_at):
        moved = begin(probe_at)
        epochs.append((refiner.collecting(), False, 0.0))
        return moved

    def end_epoch():
        before, moves = refiner.positions.copy(), refiner.end_epoch_moves()
        end()
        epochs[-1] = (epochs[-1][0], moves, float(np.abs(refiner.positions - before).max()))

    refiner.begin_epoch, refiner.end_epoch = begin_epoch, end_epoch
    rec.run()
    assert any(c for c, _, _ in epochs) and not all(c for c, _, _ in epochs)  # both kinds of epoch occurred
    for collecting, moves, largest_px in epochs:
        assert moves == collecting  # no fit, no held terms: only the collected steps move positions
        assert collecting or largest_px == 0.0
    assert max(px for c, _, px in epochs if c) > 1e-3


def test_dms_error_reduction_view_holds_the_true_object_and_pulls_a_blurred_one_towards_it():
    """DM's affine-phase position terms are read on an error-reduction view of the object (engines/dm.py,
    error_reduction_pass): with noise-free data the true object is its fixed point where the windows light it, it
    falls back to the prior (DM's object) where nothing does, and one pass brings a blurred object closer to the
    truth inside the scan."""
    from reconstruction.engines.dm import error_reduction_pass
    from reconstruction.physics import patches

    true = np.floor(raster_px((6, 6), 6.4) + 8.5)
    sim = simulate(size_px=N, photons=0, seed=3, positions_px=true)
    truth = np.pad(sim.object_truth.astype(np.complex64), 4, constant_values=1)
    corners = (true + 4).astype(np.int64)
    flat_idx = patches.window_indices(np, corners[:, 0], corners[:, 1], N, truth.shape[1])
    probes = sim.probe_truth[None].astype(np.complex64)  # (1, M, n, n)
    amplitudes = np.sqrt(sim.data.intensities).astype(np.float32)
    prior = np.full(truth.shape, 0.5 + 0.5j, np.complex64)
    p2 = np.sum(np.abs(sim.probe_truth) ** 2, axis=0)
    light = patches.scatter_add_patches(np, truth.shape, np.broadcast_to(p2, flat_idx.shape), flat_idx)
    lit, dark = light > 0.1 * light.max(), light == 0

    held = error_reduction_pass(np, truth, truth, probes, amplitudes, None, flat_idx)
    assert held.shape == truth.shape and held.dtype == np.complex64
    assert np.max(np.abs(held - truth)) < 2e-3
    faded = error_reduction_pass(np, truth, prior, probes, amplitudes, None, flat_idx)
    np.testing.assert_allclose(faded[dark], prior[dark])
    assert np.max(np.abs(faded - truth)[lit]) < 0.02  # the fallback's weight: 1e-3 of the largest light

    k = np.fft.fftfreq(truth.shape[0])[:, None] ** 2 + np.fft.fftfreq(truth.shape[1])[None, :] ** 2
    blurred = np.fft.ifft2(np.fft.fft2(truth) * np.exp(-20.0 * k)).astype(np.complex64)
    passed = error_reduction_pass(np, blurred, prior, probes, amplitudes, None, flat_idx)
    assert np.linalg.norm((passed - truth)[lit]) < 0.7 * np.linalg.norm((blurred - truth)[lit])

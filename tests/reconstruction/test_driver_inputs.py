"""The driver: bad input is a clear error naming what and where; the loop's contract."""

import numpy as np
import pytest

from reconstruction import DeviceUnavailableError, InputDataError, SessionStateError
from reconstruction.backend import gpu_available
from reconstruction.driver import Reconstruction, estimate_memory_bytes, reconstruct


def _data(tiny_scan):
    return tiny_scan.data.intensities.copy(), tiny_scan.data.positions_px.copy()


def test_nan_intensities_name_the_frame_and_pixel(tiny_scan):
    i, p = _data(tiny_scan)
    i[4, 2, 3] = np.nan
    with pytest.raises(InputDataError, match=r"NaN.*frame 4, pixel \(2, 3\)"):
        Reconstruction(i, p)


def test_negative_intensities_name_the_frame(tiny_scan):
    i, p = _data(tiny_scan)
    i[7, 0, 1] = -3
    with pytest.raises(InputDataError, match=r"negative.*frame 7"):
        Reconstruction(i, p)


def test_wrong_pattern_shape_is_rejected(tiny_scan):
    i, p = _data(tiny_scan)
    with pytest.raises(InputDataError, match=r"expected \(N, n, n\)"):
        Reconstruction(i[:, :, :-1], p)
    with pytest.raises(InputDataError, match=r"expected \(N, n, n\)"):
        Reconstruction(i[0], p)


def test_position_count_must_match_the_patterns(tiny_scan):
    i, p = _data(tiny_scan)
    with pytest.raises(InputDataError, match=r"35 positions for 36 diffraction patterns"):
        Reconstruction(i, p[:-1])


def test_positions_outside_the_object_name_the_position(tiny_scan):
    i, p = _data(tiny_scan)
    p[5] = (-4.0, 2.0)
    with pytest.raises(InputDataError, match=r"position 5 .*outside the object"):
        Reconstruction(i, p)
    with pytest.raises(InputDataError, match=r"outside the object array of shape \(40, 40\)"):
        Reconstruction(i, tiny_scan.data.positions_px, object_shape=(40, 40))


def test_zero_photon_frames_are_listed(tiny_scan):
    i, p = _data(tiny_scan)
    i[[3, 9]] = 0
    with pytest.raises(InputDataError, match=r"2 frame\(s\) hold no photons \(frames 3, 9\)"):
        Reconstruction(i, p)


def test_wrong_probe_and_mask_shapes_are_rejected(tiny_scan):
    i, p = _data(tiny_scan)
    with pytest.raises(InputDataError, match="probe has shape"):
        Reconstruction(i, p, probe=np.ones((16, 16), np.complex64))
    with pytest.raises(InputDataError, match="valid_mask has shape"):
        Reconstruction(i, p, valid_mask=np.ones((8, 8), bool))


def test_unknown_algorithm_is_rejected(tiny_scan):
    with pytest.raises(ValueError, match="expected one of ePIE, DM, LSQML"):
        Reconstruction(*_data(tiny_scan), algorithm="HIO")


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU")
def test_requesting_a_missing_gpu_is_a_clear_error(tiny_scan):
    with pytest.raises(DeviceUnavailableError, match="device='gpu' was requested"):
        Reconstruction(*_data(tiny_scan), device="gpu")


def test_auto_device_falls_back_to_numpy_without_a_gpu(tiny_scan):
    rec = Reconstruction(*_data(tiny_scan), device="auto", iterations=1)
    assert rec.backend.name == ("gpu" if gpu_available() else "cpu")


def test_stepping_past_the_planned_iterations_is_an_error_not_a_crash(tiny_scan):
    rec = Reconstruction(*_data(tiny_scan), iterations=2)
    rec.step()
    rec.step()
    assert rec.done
    with pytest.raises(SessionStateError, match="no iteration left"):
        rec.step()


def test_closed_reconstruction_refuses_further_calls(tiny_scan):
    rec = Reconstruction(*_data(tiny_scan), iterations=2)
    rec.close()
    with pytest.raises(SessionStateError):
        rec.object()


def test_time_limit_stops_the_loop_early(tiny_scan):
    rec = Reconstruction(*_data(tiny_scan), iterations=10_000, time_limit_s=1e-9)
    steps = list(rec)
    assert len(steps) == 1 and rec.stopped_early and "time limit" in rec.stopped_early


def test_progress_reports_iteration_error_and_eta(tiny_scan):
    rec = Reconstruction(*_data(tiny_scan), iterations=3)
    progress = list(rec)
    assert [p.iteration for p in progress] == [1, 2, 3]
    assert all(p.error > 0 and p.iteration_s > 0 for p in progress)
    assert progress[-1].eta_s == 0 and progress[0].eta_s > 0


def test_rms_metric_is_reported_when_asked(tiny_scan):
    from reconstruction.engines import EngineSettings

    rec = Reconstruction(*_data(tiny_scan), iterations=2, settings=EngineSettings(compute_rms=True))
    p = rec.step()
    assert p.rms is not None and 0 < p.rms < 2


def test_masked_pixels_do_not_constrain_the_fit(tiny_scan):
    i, p = _data(tiny_scan)
    corrupted = i.copy()
    corrupted[:, 5:9, 5:9] = 1e9  # hot pixels, masked out
    mask = np.ones(i.shape[1:], bool)
    mask[5:9, 5:9] = False
    a = Reconstruction(i, p, iterations=3, seed=0, valid_mask=mask)
    b = Reconstruction(corrupted, p, iterations=3, seed=0, valid_mask=mask, probe=a.probe())
    a2 = Reconstruction(i, p, iterations=3, seed=0, valid_mask=mask, probe=a.probe())
    for rec in (a2, b):
        for _ in rec:
            pass
    np.testing.assert_allclose(a2.object(), b.object(), rtol=1e-4, atol=1e-5)


def test_centred_patterns_are_shifted_to_fft_order(tiny_scan):
    i, p = _data(tiny_scan)
    a = reconstruct(i, p, iterations=2, seed=3)
    b = reconstruct(np.fft.fftshift(i, axes=(-2, -1)), p, iterations=2, seed=3, centred=True)
    np.testing.assert_allclose(a.object, b.object, rtol=1e-5, atol=1e-6)


def test_result_holds_host_arrays_in_the_documented_layout(tiny_scan):
    i, p = _data(tiny_scan)
    res = reconstruct(i, p, algorithm="DM", iterations=2, probe_modes=2)
    n = i.shape[-1]
    assert res.object.dtype == np.complex64 and res.object.ndim == 2
    assert res.probe.shape == (2, n, n) and res.probe.dtype == np.complex64
    assert res.positions_px.shape == (len(i), 2)
    assert len(res.errors) == 2 and res.algorithm == "DM"
    # window j covers object[r:r+n, c:c+n]
    r, c = res.positions_px[-1].astype(int)
    assert r + n <= res.object.shape[0] and c + n <= res.object.shape[1]


def test_preview_is_small_uint8_with_value_ranges(tiny_scan):
    rec = Reconstruction(*_data(tiny_scan), iterations=1, probe_modes=2)
    rec.step()
    pv = rec.preview(max_px=16)
    names = [name for name, _, _ in pv.images()]
    assert names == ["object_amplitude", "object_phase", "probe_amplitude_0", "probe_phase_0",
                     "probe_amplitude_1", "probe_phase_1", "diffraction_measured", "diffraction_model"]
    for _, img, (lo, hi) in pv.images():
        assert img.dtype == np.uint8 and max(img.shape) <= 16 and lo <= hi
    # each mode's share of the power, from the full-resolution probe
    probe = rec.probe()
    power = (np.abs(probe) ** 2).sum(axis=(1, 2))
    np.testing.assert_allclose(pv.probe_power, power / power.sum(), rtol=1e-5)
    n = probe.shape[-1]
    assert pv.stride_of("probe_phase_1") == pv.probe_stride == -(-n // 16)
    assert pv.stride_of("object_amplitude") == pv.object_stride >= 1
    # fixed positions are there too, as given
    assert pv.positions is not None and not pv.positions.refined
    # (the windows sit on whole pixels)
    np.testing.assert_allclose(pv.positions.current_px, rec.positions()[::pv.positions.stride], atol=0.5)


def test_memory_estimate_grows_with_positions_and_is_largest_for_dm():
    small = estimate_memory_bytes(100, 64, (200, 200), algorithm="DM")
    big = estimate_memory_bytes(1000, 64, (200, 200), algorithm="DM")
    epie = estimate_memory_bytes(1000, 64, (200, 200), algorithm="ePIE")
    assert big > small and big > epie > 1000 * 64 * 64 * 4


def test_preview_pairs_the_measured_pattern_of_the_central_position_with_the_models(tiny_scan):
    from reconstruction.diffraction_preview import central_position

    i, p = _data(tiny_scan)
    rec = Reconstruction(i, p, iterations=30, probe_modes=1)
    for _ in rec:
        pass
    d = rec.preview().diffraction
    assert d is not None and d.position == central_position(rec.positions())
    n = i.shape[-1]
    assert d.measured.shape == d.model.shape == (n // d.binning, n // d.binning) and d.measured.dtype == np.uint8
    # the measured one is the data: log10(1 + counts), centred, on the shared range
    expected = np.log10(1 + np.fft.fftshift(i[d.position]).reshape(
        n // d.binning, d.binning, n // d.binning, d.binning).sum(axis=(1, 3)))
    np.testing.assert_allclose(d.measured, np.round(expected / d.log_range[1] * 255), atol=1)
    # after 30 iterations the model matches it closely
    assert np.corrcoef(d.measured.ravel().astype(float), d.model.ravel().astype(float))[0, 1] > 0.9

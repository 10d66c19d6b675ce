"""The initial probe built from the data: masked pixels never shape it. A held probe guess the data reject is
fitted to their mean far field (a flat disk held to iteration 10 converges), one they agree with is kept."""

import numpy as np
import pytest

from benchmarks import convergence_peers as cp
from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.multigpu.split_run import SplitReconstruction
from reconstruction.probes import (
    MIN_FAR_FIELD_OVERLAP,
    defocused_pupil_probe,
    disk_probe_guess,
    far_field_overlap,
    held_probe_guess,
    mean_far_field_amplitude,
    probe_guess_from_data,
)


def _patterns(n: int = 32, frames: int = 6) -> np.ndarray:
    rng = np.random.default_rng(3)
    q = np.fft.fftfreq(n) * n
    qy, qx = np.meshgrid(q, q, indexing="ij")
    airy = 1e4 * np.exp(-(qx**2 + qy**2) / 18.0)
    return rng.poisson(airy, size=(frames, n, n)).astype(np.float32)


def test_masked_hot_pixel_does_not_change_the_probe_guess() -> None:
    clean = _patterns()
    hot = clean.copy()
    hot[:, 5, 7] = 1e9
    mask = np.ones(clean.shape[-2:], dtype=bool)
    mask[5, 7] = False
    guess_hot = probe_guess_from_data(hot, 12.0, 1, mask)
    guess_clean = probe_guess_from_data(clean, 12.0, 1, mask)
    np.testing.assert_array_equal(guess_hot, guess_clean)
    unmasked = probe_guess_from_data(hot, 12.0, 1)
    assert np.sum(np.abs(unmasked) ** 2) > 100 * np.sum(np.abs(guess_clean) ** 2)


def test_pixel_masked_in_every_frame_takes_the_scaled_disk_magnitude_and_others_the_valid_mean() -> None:
    data = _patterns()
    per_frame = np.ones(data.shape, dtype=bool)
    per_frame[0, 2, 3] = False  # masked in one frame: the mean of the other five
    per_frame[:, 0, 0] = False  # masked everywhere (a beamstop on the zero frequency)
    data[0, 2, 3] = -5.0
    far = np.fft.fft2(probe_guess_from_data(data, 12.0, 1, per_frame)[0], norm="ortho")
    assert np.isclose(np.abs(far[2, 3]), np.sqrt(data[1:, 2, 3].mean()), rtol=1e-4)
    assert not np.isclose(np.abs(far[0, 0]), np.sqrt(data[:, 0, 0].mean()), rtol=0.05)  # not the masked counts
    # patterns that are exactly 3 x the disk's far-field amplitude, squared, where measured: the masked pixel gets 3
    # x the disk's own magnitude there, whatever the detector wrote in it
    disk = np.abs(np.fft.fft2(disk_probe_guess(data.shape[-1], 12.0), norm="ortho"))
    known = np.repeat(((3.0 * disk) ** 2)[None], data.shape[0], axis=0).astype(np.float32)
    known[:, 0, 0] = 1e9
    far = np.fft.fft2(probe_guess_from_data(known, 12.0, 1, per_frame.any(axis=0))[0], norm="ortho")
    assert np.isclose(np.abs(far[0, 0]), 3.0 * disk[0, 0], rtol=1e-4)


def test_without_a_mask_the_guess_is_the_mean_amplitude_as_before() -> None:
    data = _patterns()
    far = np.fft.fft2(probe_guess_from_data(data, 12.0, 2)[0], norm="ortho")
    np.testing.assert_allclose(np.abs(far), np.sqrt(data.mean(axis=0)), rtol=1e-4, atol=1e-3)


@pytest.fixture(scope="module")
def disk_case(tmp_path_factory):
    """benchmarks/convergence_peers.py's smooth object, 6 x 6 scan of 32^2 patterns, its flat-disk probe guess."""
    return dict(np.load(cp.make_case(tmp_path_factory.mktemp("case"), "smooth", "disk", 32, 6, 1e6)))


@pytest.mark.parametrize("algorithm", ["LSQML", "ePIE"])
def test_a_flat_disk_guess_held_to_iteration_10_converges(disk_case, algorithm) -> None:
    d = disk_case
    rec = Reconstruction(d["intensities"], d["positions"], algorithm=algorithm, iterations=40, device="cpu", seed=0,
                         probe=d["probe0"], object_shape=d["truth"].shape,
                         settings=EngineSettings(update_probe_from=10, phase_constraint=0))
    result = rec.run()
    assert "far field" in result.inputs["probe_guess"]
    assert cp.object_error(d, result.object) < 0.2  # held as given: 0.998 (LSQML), 0.983 (ePIE)


def test_a_held_guess_the_data_agree_with_and_any_guess_updated_from_the_start_stay_as_given(disk_case) -> None:
    d = disk_case
    true_probe = defocused_pupil_probe(32, 12.8)[None] * np.float32(1e3)
    assert far_field_overlap(true_probe, *mean_far_field_amplitude(d["intensities"])) > MIN_FAR_FIELD_OVERLAP
    kept, note = held_probe_guess(true_probe, d["intensities"], None, 10)
    assert kept is true_probe and note == ""
    disk = d["probe0"][None]
    kept, note = held_probe_guess(disk, d["intensities"], None, 1)
    assert kept is disk and note == ""
    fitted, note = held_probe_guess(disk, d["intensities"], None, 10)
    assert "0.37" in note
    np.testing.assert_allclose(np.abs(np.fft.fft2(fitted[0], norm="ortho")), np.sqrt(d["intensities"].mean(axis=0)),
                               rtol=1e-3, atol=1e-2)


def test_the_split_run_fits_a_held_poor_guess_once_so_every_region_starts_from_one_probe(disk_case) -> None:
    d = disk_case
    split = SplitReconstruction(d["intensities"], d["positions"], devices=[0, 1], algorithm="ePIE", iterations=1,
                                probe=d["probe0"], object_shape=d["truth"].shape,
                                settings=EngineSettings(update_probe_from=10))
    whole, note = held_probe_guess(d["probe0"][None], d["intensities"], None, 10)
    assert split.inputs["probe_guess"] == note
    for rec in split.recs:
        np.testing.assert_array_equal(rec.probe(), whole)
        assert "probe_guess" not in rec.inputs  # the region's own check passed: its start is the whole scan's fit

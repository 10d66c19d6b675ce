"""The initial probe built from the data: masked pixels never shape it."""

import numpy as np

from reconstruction.probes import probe_guess_from_data


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
    assert np.abs(far[0, 0]) > 0.1 * np.sqrt(data[:, 0, 0].mean())


def test_without_a_mask_the_guess_is_the_mean_amplitude_as_before() -> None:
    data = _patterns()
    far = np.fft.fft2(probe_guess_from_data(data, 12.0, 2)[0], norm="ortho")
    np.testing.assert_allclose(np.abs(far), np.sqrt(data.mean(axis=0)), rtol=1e-4, atol=1e-3)

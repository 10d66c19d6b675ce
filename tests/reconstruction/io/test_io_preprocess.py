import numpy as np
import pytest

from reconstruction.errors import InputDataError
from reconstruction.io.preprocess import (
    CropWindow,
    Preprocessing,
    apply_threshold,
    beamstop_valid,
    crop,
    fft_shift,
    prepare_mask,
    preprocess_frames,
    preprocess_into,
    rotate90,
    saturation_level,
    to_intensity,
    unsaturated,
)


def test_crop_window_is_centred_on_qxy_row_col():
    win = CropWindow.around((20, 30), 8, (64, 64))
    assert (win.row0_px, win.col0_px) == (16, 26)
    frame = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    np.testing.assert_array_equal(crop(frame, win), frame[16:24, 26:34])


def test_crop_partly_outside_is_zero_padded():
    frame = np.ones((10, 10), dtype=np.float32)
    win = CropWindow.around((1, 9), 6, (10, 10))  # rows -2..3, cols 6..11
    out = crop(frame, win)
    assert out.shape == (6, 6)
    np.testing.assert_array_equal(out[:2], 0)
    np.testing.assert_array_equal(out[:, 4:], 0)
    np.testing.assert_array_equal(out[2:, :4], 1)
    assert win.is_partial((10, 10))


def test_crop_fully_outside_is_an_error_naming_qxy():
    with pytest.raises(InputDataError, match="qxy=100,5.*outside"):
        CropWindow.around((100, 5), 8, (40, 40))


def test_frame_already_of_size_is_used_whole():
    win = CropWindow.around((3, 3), 16, (16, 16))
    assert (win.row0_px, win.col0_px) == (0, 0)


def test_rotate90_counter_clockwise_on_stacks():
    a = np.array([[1, 2], [3, 4]])
    np.testing.assert_array_equal(rotate90(a, 1), [[2, 4], [1, 3]])
    np.testing.assert_array_equal(rotate90(np.stack([a, a]), 1)[1], [[2, 4], [1, 3]])
    np.testing.assert_array_equal(rotate90(a, 4), a)


def test_saturation_level_and_mask_use_raw_values():
    assert saturation_level(12, 1) == 4094.0
    raw = np.array([4093.0, 4094.0, 5000.0, np.nan])
    np.testing.assert_array_equal(unsaturated(raw, 12, 1), [True, False, False, True])


def test_threshold_zeroes_below_subtracts_above_and_clears_non_finite():
    out = apply_threshold(np.array([0.5, 1.0, 3.0, np.nan, np.inf, -2.0]), 1.0)
    np.testing.assert_array_equal(out, [0, 0, 2, 0, 0, 0])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(apply_threshold(np.array([-1.0, 2.0]), 0), [0, 2])


def test_intensity_kept_with_sqrt_data_and_squared_without():
    v = np.array([2.0, 3.0])
    np.testing.assert_array_equal(to_intensity(v, sqrt_data=True), [2, 3])
    np.testing.assert_array_equal(to_intensity(v, sqrt_data=False), [4, 9])


def test_fft_shift_moves_centre_to_origin_for_even_and_odd():
    for n in (8, 7):
        a = np.zeros((n, n))
        a[n // 2, n // 2] = 1
        assert fft_shift(a)[0, 0] == 1


def test_beamstop_valid_uses_099():
    np.testing.assert_array_equal(beamstop_valid(np.array([0.0, 0.98, 0.99, 1.0])), [False, False, True, True])


def test_preprocess_frames_runs_steps_in_order():
    steps = Preprocessing(CropWindow(0, 0, 4), rotate90=1, bit_depth=4, threshold=1.0, sqrt_data=False,
                          fft_shift_data=True)
    raw = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    data, ok = preprocess_frames(raw, steps)
    expected = np.fft.ifftshift(np.square(np.maximum(np.rot90(raw[0]) - 1, 0)))
    expected[np.fft.ifftshift(np.rot90(raw[0])) < 1] = 0
    np.testing.assert_allclose(data[0], expected)
    # saturated at >= 2**4 - 1 - 1 = 14: raw 14 and 15
    np.testing.assert_array_equal(~ok[0], np.fft.ifftshift(np.rot90(raw[0]) >= 14))


def test_prepare_mask_follows_crop_rotation_and_shift():
    steps = Preprocessing(CropWindow(-1, 0, 4), rotate90=1, fft_shift_data=True)
    detector = np.ones((6, 6), dtype=bool)
    detector[2, 1] = False
    out = prepare_mask(detector, steps, (6, 6))
    cropped = np.zeros((4, 4), dtype=bool)
    cropped[1:, :] = detector[0:3, 0:4]  # row -1 is off the detector: invalid
    np.testing.assert_array_equal(out, np.fft.ifftshift(np.rot90(cropped)))


def test_prepare_mask_rejects_wrong_shape():
    steps = Preprocessing(CropWindow(0, 0, 4))
    with pytest.raises(InputDataError, match="matches neither"):
        prepare_mask(np.ones((5, 5), dtype=bool), steps, (6, 6))


@pytest.mark.parametrize("size, frame_shape, center, threshold, sqrt_data, shift", [
    (32, (40, 50), (20, 25), 2.5, False, True),   # crop, threshold, square, shift
    (32, (32, 32), (16, 16), 0.0, True, False),   # whole frame
    (31, (40, 50), (5, 45), 1.0, True, True),     # odd size, window past the detector's corner
    (16, (40, 50), (20, 20), 0.0, False, False),
])
def test_preprocess_into_writes_what_preprocess_frames_returns(size, frame_shape, center, threshold, sqrt_data,
                                                               shift):
    rng = np.random.default_rng(1)
    raw = rng.normal(5, 4, (7, *frame_shape)).astype(np.float32)
    raw[0, 20, 20], raw[1, 21, 21], raw[2, 20, 21] = np.nan, np.inf, -np.inf
    steps = Preprocessing(window=CropWindow.around(center, size, frame_shape), threshold=threshold,
                          sqrt_data=sqrt_data, fft_shift_data=shift)
    expected = preprocess_frames(crop(raw, steps.window), steps)[0]
    out = np.full((7, size, size), -1.0, dtype=np.float32)
    got = preprocess_into(raw, steps, out, np.empty((8, size, size), dtype=np.float32))
    assert got is out
    np.testing.assert_array_equal(out, expected)
    if shift:
        with pytest.raises(ValueError, match="scratch buffer of at least 7 frames"):
            preprocess_into(raw, steps, out)

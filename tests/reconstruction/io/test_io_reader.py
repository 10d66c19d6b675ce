import hashlib
import os
import tracemalloc

import h5py
import numpy as np
import pytest

from reconstruction.errors import InputDataError
from reconstruction.io import read_frame, read_scan, write_scan_files
from reconstruction.io.writers import write_positions_csv
from reconstruction.positions import metres_to_pixels, positions_m_from_parameters

N = 12  # scan_dims (3, 4)
WIN = np.s_[:, 12:28, 16:32]  # size 16 around qxy (20, 24)


def test_multi_file_layout_maps_k_to_file_k_div_dpf_plus_fs(tmp_path, raw_frames, scan_params):
    files = write_scan_files(raw_frames, tmp_path, "scan_#06d.h5", dpf=5, first_file_index=1)
    assert [f.name for f in files] == ["scan_000001.h5", "scan_000002.h5", "scan_000003.h5"]
    data = read_scan(scan_params("scan_#06d.h5", data__frames_per_file=5, data__first_file_index=1))
    assert data.intensities.shape == (N, 16, 16) and data.intensities.dtype == np.float32
    np.testing.assert_array_equal(data.intensities, raw_frames[WIN])
    assert data.valid_mask is None
    assert data.source["files"] == [str(f) for f in files]
    assert data.source["layout"] == "multi-file" and data.source["dataset"] == "/entry/data/data"


def test_one_frame_is_read_as_read_scan_reads_it_and_a_bad_index_is_named(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "scan_#06d.h5", dpf=5, first_file_index=1)
    params = scan_params("scan_#06d.h5", data__frames_per_file=5, data__first_file_index=1,
                         preprocessing__fft_shift_data=True)
    every = read_scan(params).intensities
    for k in (0, 7, N - 1):  # in the first, second and last file
        np.testing.assert_array_equal(read_frame(params, k), every[k])
    with pytest.raises(ValueError, match=r"scan point 12: the scan has points 0\.\.11"):
        read_frame(params, N)


def test_single_file_holding_all_frames(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "all.h5", compression="gzip")
    data = read_scan(scan_params("all.h5"))
    np.testing.assert_array_equal(data.intensities, raw_frames[WIN])
    assert data.source["layout"] == "single-file"


def test_rank2_datasets_are_one_pattern_per_file(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "p_#d.h5", dpf=1, rank2=True, dtype=np.uint32)
    data = read_scan(scan_params("p_#d.h5"))
    np.testing.assert_array_equal(data.intensities, raw_frames[WIN])


def test_rank2_file_with_dpf_above_one_names_the_missing_frame(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "p_#d.h5", dpf=1, rank2=True)
    with pytest.raises(InputDataError, match=r"p_0\.h5, dataset /entry/data/data, frame 1: missing"):
        read_scan(scan_params("p_#d.h5", data__frames_per_file=2))


@pytest.mark.parametrize("compression", ["lz4", "bitshuffle-lz4", "lzf"])
def test_compressed_multi_file_scan(tmp_path, raw_frames, scan_params, compression):
    write_scan_files(raw_frames, tmp_path, "c_#03d.h5", dpf=4, compression=compression, dtype=np.uint32)
    data = read_scan(scan_params("c_#03d.h5", data__frames_per_file=4))
    np.testing.assert_array_equal(data.intensities, raw_frames[WIN])


def test_amplitudes_are_squared_without_sqrt_data(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames / 1000.0, tmp_path, "a.h5")
    data = read_scan(scan_params("a.h5", preprocessing__sqrt_data=False))
    np.testing.assert_allclose(data.intensities, (raw_frames[WIN] / 1000.0) ** 2, rtol=1e-6)


def test_rotation_threshold_and_fft_shift_are_applied(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "a.h5")
    data = read_scan(scan_params("a.h5", preprocessing__rotate90=1, preprocessing__threshold=50000.0,
                                 preprocessing__fft_shift_data=True))
    cropped = np.rot90(raw_frames[WIN], axes=(1, 2))
    expected = np.where(cropped < 50000, 0, cropped - 50000)
    np.testing.assert_array_equal(data.intensities, np.fft.ifftshift(expected, axes=(1, 2)))


def test_crop_partly_outside_is_padded_and_masked(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "a.h5")
    data = read_scan(scan_params("a.h5", preprocessing__crop_center_px=(2, 24)))  # rows -6..9
    np.testing.assert_array_equal(data.intensities[:, :6], 0)
    np.testing.assert_array_equal(data.intensities[:, 6:], raw_frames[:, 0:10, 16:32])
    assert data.valid_mask is not None and data.valid_mask.shape == (16, 16)
    assert not data.valid_mask[:6].any() and data.valid_mask[6:].all()


def test_crop_entirely_outside_the_detector_is_an_error(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "a.h5")
    with pytest.raises(InputDataError, match=r"qxy=200,24.*outside the 40x48 px"):
        read_scan(scan_params("a.h5", preprocessing__crop_center_px=(200, 24)))


def test_missing_file_in_the_pattern_is_named(tmp_path, raw_frames, scan_params):
    files = write_scan_files(raw_frames, tmp_path, "s_#02d.h5", dpf=4)
    files[1].unlink()
    with pytest.raises(InputDataError, match=r"s_01\.h5: no such file"):
        read_scan(scan_params("s_#02d.h5", data__frames_per_file=4))


def test_file_with_too_few_frames_names_file_dataset_and_frame(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames[:10], tmp_path, "s_#02d.h5", dpf=4)  # last file holds 2 of the 4 needed
    with pytest.raises(InputDataError, match=r"s_02\.h5, dataset /entry/data/data, frame 2 \(scan point 10\)"):
        read_scan(scan_params("s_#02d.h5", data__frames_per_file=4))


def test_single_file_with_too_few_frames_is_an_error(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames[:7], tmp_path, "a.h5")
    with pytest.raises(InputDataError, match=r"a\.h5, dataset /entry/data/data, frame 7: missing.*needs 12"):
        read_scan(scan_params("a.h5"))


def test_missing_dataset_names_file_and_dataset(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "a.h5", dataset="/dp")
    with pytest.raises(InputDataError, match=r"a\.h5, dataset /entry/data/data: no such dataset.*/dp"):
        read_scan(scan_params("a.h5"))


def test_frame_shape_change_between_files_is_an_error(tmp_path, raw_frames, scan_params):
    files = write_scan_files(raw_frames, tmp_path, "s_#d.h5", dpf=6)
    with h5py.File(files[1], "w") as f:
        f["/entry/data/data"] = np.zeros((6, 40, 40))
    with pytest.raises(InputDataError, match=r"s_1\.h5, dataset /entry/data/data: frames are 40x40 px but"):
        read_scan(scan_params("s_#d.h5", data__frames_per_file=6))


def test_nan_in_the_crop_window_names_file_dataset_and_frame(tmp_path, raw_frames, scan_params):
    raw = raw_frames.copy()
    raw[9, 20, 20] = np.nan
    write_scan_files(raw, tmp_path, "s_#d.h5", dpf=4)
    with pytest.raises(InputDataError, match=r"s_2\.h5, dataset /entry/data/data, frame 1 \(scan point 9\): 1 NaN"):
        read_scan(scan_params("s_#d.h5", data__frames_per_file=4))


def test_nan_outside_the_window_or_under_the_bad_pixel_mask_is_fine(tmp_path, raw_frames, scan_params):
    raw = raw_frames.copy()
    raw[:, 0, 0] = np.nan  # outside the window
    raw[3, 20, 20] = np.inf  # masked below
    write_scan_files(raw, tmp_path, "a.h5")
    bad = np.zeros((40, 48), dtype=bool)
    bad[20, 20] = True
    np.save(tmp_path / "bad.npy", bad)
    data = read_scan(scan_params("a.h5", preprocessing__bad_pixel_mask=str(tmp_path / "bad.npy")))
    assert np.isfinite(data.intensities).all()
    assert data.valid_mask is not None and data.valid_mask.shape == (16, 16)
    assert not data.valid_mask[8, 4] and data.valid_mask.sum() == 255
    assert data.intensities[3, 8, 4] == 0


def test_bad_pixel_mask_from_hdf5_pixel_mask(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "a.h5")
    mask = np.zeros((40, 48), dtype=np.uint32)
    mask[12, 16] = 4  # Eiger flag bits: nonzero is bad
    with h5py.File(tmp_path / "mask.h5", "w") as f:
        f["/entry/instrument/detector/pixel_mask"] = mask
    data = read_scan(scan_params("a.h5", preprocessing__bad_pixel_mask=str(tmp_path / "mask.h5"),
                                 preprocessing__fft_shift_data=True))
    assert data.valid_mask is not None and data.valid_mask.sum() == 255
    assert not data.valid_mask[8, 8]  # the window's [0, 0] moves to the centre... and back: ifftshift


def test_beamstop_mask_beside_the_data_floats_pixels_below_099(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "a.h5")
    stop = np.ones((1, 40, 48))
    stop[0, 19:21, 23:25] = 0.5
    with h5py.File(tmp_path / "beamstopMask.h5", "w") as f:
        f["/entry/data/data"] = stop
    data = read_scan(scan_params("a.h5", preprocessing__beamstop_mask=True))
    assert data.valid_mask is not None
    assert np.argwhere(~data.valid_mask).tolist() == [[7, 7], [7, 8], [8, 7], [8, 8]]
    assert data.source["beamstop_mask"].endswith("beamstopMask.h5")


def test_saturated_pixels_give_a_per_frame_mask(tmp_path, raw_frames, scan_params):
    raw = raw_frames.copy() % 4000
    raw[5, 20, 25] = 4095  # saturated for a 12-bit detector
    write_scan_files(raw, tmp_path, "a.h5", dtype=np.uint16)
    data = read_scan(scan_params("a.h5", preprocessing__bit_depth=12))
    assert data.valid_mask is not None and data.valid_mask.shape == (N, 16, 16)
    assert np.argwhere(~data.valid_mask).tolist() == [[5, 8, 9]]


def test_default_positions_are_the_raster_in_pixels(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "a.h5")
    params = scan_params("a.h5", experiment__step_m=(50e-9, 60e-9))
    data = read_scan(params)
    expected = metres_to_pixels(positions_m_from_parameters(params), params.pixel_size_m)
    np.testing.assert_allclose(data.positions_px, expected)
    assert data.pixel_size_m == pytest.approx(params.pixel_size_m)
    assert data.positions_px.min() >= 0


def test_positions_csv_in_metres_axis0_axis1(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "a.h5")
    pos_m = np.random.default_rng(1).uniform(-1e-6, 1e-6, size=(N, 2))
    write_positions_csv(pos_m, tmp_path / "pos.csv")
    params = scan_params("a.h5", experiment__positions_file=str(tmp_path / "pos.csv"))
    data = read_scan(params)
    np.testing.assert_allclose(data.positions_px, metres_to_pixels(pos_m, params.pixel_size_m), rtol=1e-8)
    assert data.source["positions"] == str(tmp_path / "pos.csv")


def test_positions_dataset_inside_the_data_file(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "a.h5")
    pos_um = np.arange(2 * N, dtype=float).reshape(N, 2)
    with h5py.File(tmp_path / "a.h5", "a") as f:
        f["/entry/positions"] = pos_um
        f["/entry/positions"].attrs["units"] = "um"
    params = scan_params("a.h5", experiment__positions_file="::/entry/positions")
    data = read_scan(params)
    np.testing.assert_allclose(data.positions_px, metres_to_pixels(pos_um * 1e-6, params.pixel_size_m))


def test_positions_file_with_wrong_count_is_an_error(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "a.h5")
    write_positions_csv(np.zeros((N - 1, 2)), tmp_path / "pos.csv")
    with pytest.raises(InputDataError, match=r"pos\.csv: holds 11 positions but the scan has 12"):
        read_scan(scan_params("a.h5", experiment__positions_file=str(tmp_path / "pos.csv")))


def test_progress_reports_every_chunk_up_to_the_total(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "s_#d.h5", dpf=5)
    calls: list[tuple[int, int]] = []
    read_scan(scan_params("s_#d.h5", data__frames_per_file=5), lambda d, t: calls.append((d, t)),
              max_buffer_bytes=16 * 16 * 4 * 2)
    assert calls == [(2, 12), (4, 12), (5, 12), (7, 12), (9, 12), (10, 12), (12, 12)]


def test_peak_memory_is_the_stack_plus_a_bounded_buffer(tmp_path, scan_params):
    frames = np.random.default_rng(0).integers(0, 50, size=(24, 512, 512), dtype=np.uint32)
    write_scan_files(frames, tmp_path, "big_#d.h5", dpf=8, compression="lz4")
    params = scan_params("big_#d.h5", data__frames_per_file=8, experiment__scan_dims=(4, 6),
                         preprocessing__size_px=64, preprocessing__crop_center_px=(256, 256))
    raw_bytes = frames.nbytes  # 24 MiB of raw frames (96 MiB as float32)
    stack_bytes = 24 * 64 * 64 * 4  # 384 KiB
    del frames
    tracemalloc.start()
    try:
        data = read_scan(params, max_buffer_bytes=64 * 64 * 4 * 4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.intensities.nbytes == stack_bytes
    assert peak < stack_bytes + 500_000, peak  # raw frames are 24 MiB (96 MiB as float32)
    assert raw_bytes > 30 * peak


def test_input_files_are_never_modified(tmp_path, raw_frames, scan_params):
    files = write_scan_files(raw_frames, tmp_path, "s_#d.h5", dpf=6, compression="lz4")
    before = [(hashlib.sha256(f.read_bytes()).hexdigest(), os.stat(f).st_mtime_ns) for f in files]
    for f in files:
        f.chmod(0o444)
    read_scan(scan_params("s_#d.h5", data__frames_per_file=6))
    after = [(hashlib.sha256(f.read_bytes()).hexdigest(), os.stat(f).st_mtime_ns) for f in files]
    assert before == after


def test_raw_bin_files_use_nxy(tmp_path, raw_frames, scan_params):
    for i in range(3):
        raw_frames[4 * i:4 * i + 4].astype(np.float32).tofile(tmp_path / f"b_{i}.bin")
    data = read_scan(scan_params("b_#d.bin", data__frames_per_file=4, data__raw_frame_px=(40, 48)))
    np.testing.assert_array_equal(data.intensities, raw_frames[WIN])


def test_no_file_pattern_is_an_input_error():
    from reconstruction.parameters import Parameters

    with pytest.raises(InputDataError, match="-fp"):
        read_scan(Parameters())


def test_raw_csv_files_use_nxy(tmp_path, raw_frames, scan_params):
    text = "\n".join(",".join(f"{v:g}" for v in frame.ravel()) for frame in raw_frames)
    (tmp_path / "all.csv").write_text(text)
    data = read_scan(scan_params("all.csv", data__raw_frame_px=(40, 48)))
    np.testing.assert_array_equal(data.intensities, raw_frames[WIN])


def test_raw_file_with_a_partial_frame_is_an_error(tmp_path, raw_frames, scan_params):
    raw_frames.astype(np.float32).ravel()[:-5].tofile(tmp_path / "all.bin")
    with pytest.raises(InputDataError, match=r"all\.bin: holds 23035 values, not a whole number of 40x48"):
        read_scan(scan_params("all.bin", data__raw_frame_px=(40, 48)))


def test_dataset_of_rank_one_names_file_and_dataset(tmp_path, scan_params):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["/entry/data/data"] = np.zeros(100)
    with pytest.raises(InputDataError, match=r"a\.h5, dataset /entry/data/data: has rank 1"):
        read_scan(scan_params("a.h5"))


def test_reads_follow_multi_frame_hdf5_chunks(tmp_path, raw_frames, scan_params):
    from reconstruction.io.reader import frames_per_read
    from reconstruction.io.sources import Hdf5Source

    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("/entry/data/data", data=raw_frames, chunks=(5, 40, 48), compression="gzip")
    with Hdf5Source(tmp_path / "a.h5", "/entry/data/data") as src:
        assert frames_per_read(src, 2, 0) == 5 and frames_per_read(src, 12, 0) == 10
        assert frames_per_read(src, 2, 3) == 2  # not on a chunk boundary: the budget as is
    calls: list[int] = []
    data = read_scan(scan_params("a.h5"), lambda d, t: calls.append(d), max_buffer_bytes=16 * 16 * 4 * 2)
    assert calls == [5, 10, 12]
    np.testing.assert_array_equal(data.intensities, raw_frames[WIN])


def test_file_still_being_written_is_waited_for_then_reported(tmp_path, raw_frames, scan_params):
    import fcntl

    files = write_scan_files(raw_frames, tmp_path, "s_#d.h5", dpf=6)
    fd = os.open(files[1], os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what HDF5 does while a writer has the file open
    try:
        with pytest.raises(InputDataError, match=r"s_1\.h5: still locked by another process"):
            read_scan(scan_params("s_#d.h5", data__frames_per_file=6), wait_s=0.2)
    finally:
        os.close(fd)
    assert read_scan(scan_params("s_#d.h5", data__frames_per_file=6)).intensities.shape == (N, 16, 16)

import fcntl
import os
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from reconstruction.errors import InputDataError
from reconstruction.io.hdf5_reader import describe, get_dataset, open_file, opened, read_window
from reconstruction.io.preprocess import CropWindow
from reconstruction.io.writers import write_frames


@pytest.mark.parametrize("compression,names", [
    (None, ()), ("gzip", ("gzip",)), ("lzf", ("lzf",)), ("lz4", ("lz4",)),
    ("bitshuffle-lz4", ("bitshuffle",)), ("zstd", ("zstd",)),
])
def test_compressed_datasets_read_transparently_and_report_filters(tmp_path, raw_frames, compression, names):
    path = write_frames(tmp_path / "d.h5", raw_frames.astype(np.uint32), compression=compression)
    with opened(path) as f:
        ds = get_dataset(f, "/entry/data/data")
        info = describe(ds)
        assert info.compression == names
        assert (info.frames, info.frame_shape, info.dtype) == (12, (40, 48), "uint32")
        win = CropWindow(5, 7, 10)
        out = read_window(ds, 3, 6, win)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, raw_frames[3:6, 5:15, 7:17])


def test_read_window_pads_outside_detector_with_zeros(tmp_path, raw_frames):
    path = write_frames(tmp_path / "d.h5", raw_frames)
    with opened(path) as f:
        out = read_window(get_dataset(f, "/entry/data/data"), 0, 2, CropWindow(-3, 40, 10))
    np.testing.assert_array_equal(out[:, :3], 0)
    np.testing.assert_array_equal(out[:, :, 8:], 0)
    np.testing.assert_array_equal(out[:, 3:, :8], raw_frames[0:2, 0:7, 40:48])


def test_rank2_dataset_is_one_frame(tmp_path, raw_frames):
    path = write_frames(tmp_path / "d.h5", raw_frames[:1], rank2=True)
    with opened(path) as f:
        ds = get_dataset(f, "/entry/data/data")
        assert describe(ds).frames == 1
        np.testing.assert_array_equal(read_window(ds, 0, 1, None)[0], raw_frames[0])
        with pytest.raises(InputDataError, match="frame 1 does not exist"):
            read_window(ds, 1, 2, None)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(InputDataError, match=r"file .*nothere\.h5: no such file"):
        open_file(tmp_path / "nothere.h5")


def test_truncated_file_is_an_input_error_naming_it(tmp_path, raw_frames):
    path = write_frames(tmp_path / "d.h5", raw_frames, compression="gzip")
    data = path.read_bytes()
    bad = tmp_path / "trunc.h5"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputDataError, match=r"trunc\.h5: not a readable HDF5 file \(truncated"):
        open_file(bad)


def test_corrupt_chunk_names_file_dataset_and_frames(tmp_path, raw_frames):
    path = write_frames(tmp_path / "d.h5", raw_frames.astype(np.float32) + 0.5, compression="gzip")
    with h5py.File(path, "r") as f:
        offset = f["/entry/data/data"].id.get_chunk_info(5).byte_offset
    data = bytearray(path.read_bytes())
    data[offset:offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with opened(path) as f, pytest.raises(InputDataError, match=r"d\.h5, dataset /entry/data/data, frames 4\.\.6"):
        read_window(get_dataset(f, "/entry/data/data"), 4, 7, CropWindow(0, 0, 8))


def test_missing_dataset_and_group_name_the_path_and_list_datasets(tmp_path, raw_frames):
    path = write_frames(tmp_path / "d.h5", raw_frames, dataset="/entry/data/data")
    with opened(path) as f:
        with pytest.raises(InputDataError, match=r"dataset /dp: no such dataset.*/entry/data/data"):
            get_dataset(f, "/dp")
        with pytest.raises(InputDataError, match="is a group"):
            get_dataset(f, "/entry/data")


def test_wrong_rank_is_an_input_error(tmp_path):
    path = tmp_path / "r4.h5"
    with h5py.File(path, "w") as f:
        f["d"] = np.zeros((2, 2, 4, 4))
        f["s"] = np.array([["a", "b"], ["c", "d"]], dtype=h5py.string_dtype())
    with opened(path) as f:
        with pytest.raises(InputDataError, match="rank 4"):
            describe(get_dataset(f, "d"))
        with pytest.raises(InputDataError, match="real numbers"):
            describe(get_dataset(f, "s"))


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_locked_file_is_retried_until_the_writer_releases_it(tmp_path, raw_frames):
    path = write_frames(tmp_path / "d.h5", raw_frames)
    fd = _lock(path)
    threading.Timer(0.3, os.close, args=(fd,)).start()
    t0 = time.monotonic()
    f = open_file(path, wait_s=5.0)
    f.close()
    assert 0.25 < time.monotonic() - t0 < 4.0


def test_file_locked_too_long_gives_a_clear_error(tmp_path, raw_frames):
    path = write_frames(tmp_path / "d.h5", raw_frames)
    fd = _lock(path)
    try:
        with pytest.raises(InputDataError, match=r"d\.h5: still locked by another process .*0\.3 s"):
            open_file(path, wait_s=0.3)
    finally:
        os.close(fd)

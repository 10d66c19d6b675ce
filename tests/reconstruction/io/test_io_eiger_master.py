"""Eiger/areaDetector master files: frames split over data_NNNNNN datasets, external links to data files."""

import h5py
import numpy as np
import pytest

from reconstruction.errors import InputDataError
from reconstruction.io import Scan, inspect, read_scan
from reconstruction.io.writers import compression_options

WIN = np.s_[:, 12:28, 16:32]


def write_master(tmp_path, frames, per_file=5, compression="bitshuffle-lz4"):
    master = tmp_path / "scan_master.h5"
    with h5py.File(master, "w") as m:
        group = m.create_group("/entry/data")
        for i, start in enumerate(range(0, len(frames), per_file), start=1):
            name = f"scan_data_{i:06d}.h5"
            with h5py.File(tmp_path / name, "w") as f:
                f.create_dataset("/entry/data/data", data=frames[start:start + per_file].astype(np.uint32),
                                 chunks=(1, *frames.shape[1:]), **compression_options(compression))
            group[f"data_{i:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
    return master


def test_master_file_frames_are_read_across_linked_files(tmp_path, raw_frames, scan_params):
    write_master(tmp_path, raw_frames)
    data = read_scan(scan_params("scan_master.h5"), max_buffer_bytes=16 * 16 * 4 * 3)
    np.testing.assert_array_equal(data.intensities, raw_frames[WIN])


def test_group_path_lists_its_numbered_datasets(tmp_path, raw_frames, scan_params):
    write_master(tmp_path, raw_frames, per_file=4)
    params = scan_params("scan_master.h5", data__hdf5_path="/entry/data")
    scan = Scan.from_parameters(params)
    assert scan.compression == ("bitshuffle",) and scan.frame_shape == (40, 48)
    info = inspect(scan, max_frames=12)
    np.testing.assert_allclose(info.summed, raw_frames.sum(axis=0), rtol=1e-6)


def test_missing_linked_file_names_the_link(tmp_path, raw_frames, scan_params):
    write_master(tmp_path, raw_frames)
    (tmp_path / "scan_data_000002.h5").unlink()
    with pytest.raises(InputDataError, match=r"scan_master\.h5, dataset /entry/data/data_000002: cannot be read"):
        read_scan(scan_params("scan_master.h5"))


def test_too_few_frames_in_master_file(tmp_path, raw_frames, scan_params):
    write_master(tmp_path, raw_frames[:10])
    with pytest.raises(InputDataError, match=r"frame 10: missing.*holds 10 frame"):
        read_scan(scan_params("scan_master.h5"))

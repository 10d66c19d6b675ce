import json
import threading

import numpy as np
import pytest

from reconstruction.errors import InputDataError
from reconstruction.io import Scan, check_complete, inspect, write_scan_files


def test_scan_describes_files_dataset_counts_and_geometry(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "s_#03d.h5", dpf=5, first_file_index=2, compression="lz4",
                     dtype=np.uint32)
    params = scan_params("s_#03d.h5", data__frames_per_file=5, data__first_file_index=2)
    scan = Scan.from_parameters(params)
    assert [f.name for f in scan.files] == ["s_002.h5", "s_003.h5", "s_004.h5"]
    assert (scan.frames, scan.frame_shape, scan.dtype, scan.compression) == (12, (40, 48), "uint32", ("lz4",))
    assert scan.layout == "multi-file" and scan.positions_source == "raster"
    assert scan.geometry.pixel_size_m == pytest.approx(params.pixel_size_m)
    assert scan.location(11)[1] == 1
    json.dumps(scan.to_dict(), default=str)


def test_from_parameters_without_metadata_opens_nothing(tmp_path, scan_params):
    scan = Scan.from_parameters(scan_params("absent_#d.h5"), read_metadata=False)
    assert scan.frame_shape is None and len(scan.files) == 12


def test_inspect_reads_a_subset_and_sums_raw_frames(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "a.h5", compression="gzip")
    scan = Scan.from_parameters(scan_params("a.h5"))
    full = inspect(scan, max_frames=100)
    assert not full.subset and full.frames_read == 12
    np.testing.assert_allclose(full.summed, raw_frames.sum(axis=0), rtol=1e-6)
    assert (full.minimum, full.maximum) == (0.0, raw_frames.max())
    part = inspect(scan, max_frames=3)
    assert part.subset and part.frame_indices == (0, 5, 11)
    np.testing.assert_allclose(part.summed, raw_frames[[0, 5, 11]].sum(axis=0), rtol=1e-6)
    assert part.summed.dtype == np.float32 and part.summed.shape == (40, 48)
    assert part.compression == ("gzip",)


def test_check_complete_true_for_a_full_scan(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames, tmp_path, "s_#d.h5", dpf=4)
    assert check_complete(scan_params("s_#d.h5", data__frames_per_file=4)) is True


def test_check_complete_waits_for_the_last_file(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames[:8], tmp_path, "s_#d.h5", dpf=4)
    timer = threading.Timer(0.4, write_scan_files, args=(raw_frames[8:], tmp_path, "s_#d.h5", 4),
                            kwargs={"first_file_index": 2})
    timer.start()
    try:
        assert check_complete(scan_params("s_#d.h5", data__frames_per_file=4), timeout_s=10)
    finally:
        timer.join()


def test_check_complete_times_out_naming_what_is_missing(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames[:10], tmp_path, "s_#d.h5", dpf=4)
    with pytest.raises(InputDataError, match=r"not complete after 0\.3 s: .*s_2\.h5, dataset "
                                             r"/entry/data/data: holds 2 of 4 frames"):
        check_complete(scan_params("s_#d.h5", data__frames_per_file=4), timeout_s=0.3)


def test_wait_until_complete_accepts_a_partial_frame_count(tmp_path, raw_frames, scan_params):
    write_scan_files(raw_frames[:6], tmp_path, "s_#d.h5", dpf=4)
    scan = Scan.from_parameters(scan_params("s_#d.h5", data__frames_per_file=4), read_metadata=False)
    assert scan.wait_until_complete(expected_frames=6).frame_shape == (40, 48)

"""TIFF stacks written by tifffile (plain and ImageJ, compressed and not) read as scans."""

import hashlib

import numpy as np
import pytest
import tifffile

from reconstruction.errors import InputDataError
from reconstruction.io import Scan, inspect, read_scan
from reconstruction.io.preprocess import CropWindow


@pytest.mark.parametrize("options", [{}, {"imagej": True}, {"compression": "zlib"}],
                         ids=["plain", "imagej", "zlib"])
def test_a_tiff_stack_reads_as_a_single_file_scan(tmp_path, raw_frames, scan_params, options):
    frames = raw_frames.astype(np.float32 if options.get("imagej") else np.uint32)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, frames, **options)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    params = scan_params("stack.tif")
    scan = Scan.from_parameters(params)
    assert (scan.frames, scan.frame_shape) == (12, (40, 48))
    assert bool(scan.compression) == bool(options.get("compression"))
    data = read_scan(params)
    window = CropWindow.around((20, 24), 16, (40, 48))
    expected = raw_frames[:, window.row0_px:window.row0_px + 16, window.col0_px:window.col0_px + 16]
    np.testing.assert_array_equal(data.intensities, expected.astype(np.float32))
    np.testing.assert_allclose(inspect(scan, max_frames=12).summed, raw_frames.sum(axis=0), rtol=1e-6)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_one_tiff_per_frame_follows_the_file_pattern(tmp_path, raw_frames, scan_params):
    for k, frame in enumerate(raw_frames):
        tifffile.imwrite(tmp_path / f"f_{k + 1:05d}.tiff", frame.astype(np.uint32))
    params = scan_params("f_#05d.tiff", data__frames_per_file=1, data__first_file_index=1)
    data = read_scan(params)
    assert data.intensities.shape == (12, 16, 16)
    assert data.intensities[11, 0, 0] == raw_frames[11, 12, 16]


def test_a_file_that_is_not_a_tiff_says_so(tmp_path, scan_params):
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InputDataError, match=r"bad\.tif: not a readable TIFF file"):
        Scan.from_parameters(scan_params("bad.tif"))


def test_a_stack_with_too_few_frames_names_the_missing_frame(tmp_path, raw_frames, scan_params):
    tifffile.imwrite(tmp_path / "short.tif", raw_frames[:5].astype(np.uint32))
    with pytest.raises(InputDataError, match=r"short\.tif.*holds 5 frame"):
        read_scan(scan_params("short.tif"))


def test_an_rgb_tiff_is_refused_not_read_as_frames(tmp_path, scan_params):
    tifffile.imwrite(tmp_path / "photo.tif", np.zeros((40, 48, 3), dtype=np.uint8), photometric="rgb")
    with pytest.raises(InputDataError, match=r"photo\.tif: first image series has shape \(40, 48, 3\) \(axes YXS\)"):
        Scan.from_parameters(scan_params("photo.tif"))

import numpy as np
import pytest
import tifffile
from PIL import Image

from reconstruction.io import write_result
from reconstruction.io.export import export_result, main, to_uint8
from reconstruction.io.positions_file import read_positions_csv


@pytest.fixture
def result_file(tmp_path, make_result):
    result = make_result()
    return write_result(result, tmp_path / "run7.h5"), result


def test_tiff_export_writes_float32_amplitude_phase_and_8bit_preview(tmp_path, result_file):
    path, result = result_file
    files = export_result(path, "tiff", tmp_path / "out")
    assert [f.name for f in files] == ["run7_abs.tif", "run7_ph.tif", "run7_ph_preview.tif"]
    amp, ph, prev = (tifffile.imread(f) for f in files)
    assert amp.dtype == np.float32 and ph.dtype == np.float32 and prev.dtype == np.uint8
    np.testing.assert_allclose(amp, np.abs(result.object), rtol=1e-6)
    np.testing.assert_allclose(ph, np.angle(result.object), rtol=1e-6)
    assert prev.shape == (40, 50) and prev.min() == 0 and prev.max() == 255


def test_png_export_is_8bit_greyscale(tmp_path, result_file):
    path, result = result_file
    files = export_result(path, "png")
    assert [f.parent for f in files] == [tmp_path, tmp_path]
    img = Image.open(files[1])
    assert img.mode == "L" and img.size == (50, 40)
    np.testing.assert_array_equal(np.asarray(img), to_uint8(np.angle(result.object).astype(np.float32)))


def test_csv_export_is_the_originals_object_and_probes_and_the_positions_as_an_lf_file(tmp_path, result_file):
    path, result = result_file
    files = export_result(path, "csv", tmp_path / "data")
    assert [f.name for f in files] == ["run7_object_0.csv", "run7_probes_0.csv", "run7_positions_0.csv"]
    probes = np.genfromtxt(files[1], delimiter=",", dtype=complex)
    np.testing.assert_allclose(probes, result.probe.reshape(32, 16), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(read_positions_csv(files[2]), result.positions_px * result.pixel_size_m, rtol=1e-9)


def test_to_uint8_scales_min_to_0_and_max_to_255_and_nan_to_0():
    np.testing.assert_array_equal(to_uint8(np.array([[-1.0, 0.0, 1.0, np.nan]])), [[0, 128, 255, 0]])
    np.testing.assert_array_equal(to_uint8(np.zeros((2, 2))), 0)


def test_main_prints_files_and_returns_0(tmp_path, result_file, capsys):
    path, _ = result_file
    assert main([str(path), "--format", "png", "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "o" / "run7_abs.png"),
                                               str(tmp_path / "o" / "run7_ph.png")]


def test_main_reports_a_missing_result_file_with_status_2(tmp_path, capsys):
    assert main([str(tmp_path / "none.h5"), "--format", "tiff"]) == 2
    assert "none.h5: result file not found" in capsys.readouterr().err

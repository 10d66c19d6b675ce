import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image
from ptychodus.api.io import load_product

from reconstruction.io import write_result
from reconstruction.io.export import export_result, main, to_uint8
from reconstruction.io.positions_file import read_positions_csv
from reconstruction.io.ptychodus_product import read_ptychodus_product
from reconstruction.parameters import Parameters
from reconstruction.safe_paths import UnsafePathError


@pytest.fixture
def result_file(tmp_path, make_result):
    result = make_result()  # -jobID=run7
    return write_result(result, tmp_path / "result.h5"), result


def test_tiff_export_is_imagej_with_the_pixel_size_and_has_the_probe(tmp_path, result_file):
    path, result = result_file
    files = export_result(path, "tiff", tmp_path / "out")
    assert [f.name for f in files] == ["run7_object_abs.tif", "run7_object_ph.tif", "run7_object_ph_preview.tif",
                                       "run7_probe_abs.tif", "run7_probe_ph.tif"]
    amp, ph, prev, p_amp, p_ph = (tifffile.imread(f) for f in files)
    assert amp.dtype == np.float32 and ph.dtype == np.float32 and prev.dtype == np.uint8
    np.testing.assert_allclose(amp, np.abs(result.object), rtol=1e-6)
    np.testing.assert_allclose(ph, np.angle(result.object), rtol=1e-6)
    np.testing.assert_allclose(p_amp, np.abs(result.probe), rtol=1e-6)  # (2, 16, 16): one page per mode
    np.testing.assert_allclose(p_ph, np.angle(result.probe), rtol=1e-6)
    assert prev.shape == (40, 50) and prev.min() == 0 and prev.max() == 255
    with tifffile.TiffFile(files[1]) as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "um"
        x_res = tif.pages[0].tags["XResolution"].value
        assert x_res[1] / x_res[0] * 1e-6 == pytest.approx(result.pixel_size_m, rel=1e-6)  # um per pixel
    with tifffile.TiffFile(files[3]) as tif:
        assert tif.imagej_metadata["Labels"] == ["probe amplitude, mode 0", "probe amplitude, mode 1"]


def test_png_export_has_the_object_at_full_size_the_probe_the_error_curve_and_a_panel_sheet(tmp_path, result_file):
    path, result = result_file
    files = export_result(path, "png")
    assert [f.name for f in files] == ["run7_object_abs.png", "run7_object_ph.png", "run7_probe.png",
                                       "run7_errors.png", "run7_panels.png"]
    assert {f.parent for f in files} == {tmp_path}
    img = Image.open(files[1])
    assert img.mode == "L" and img.size == (50, 40)
    np.testing.assert_array_equal(np.asarray(img), to_uint8(np.angle(result.object).astype(np.float32)))
    probe = np.asarray(Image.open(files[2]))
    assert probe.shape == (2 * 136 + 8, 2 * 136 + 8)  # 2 modes x (amplitude, phase), 128 px tiles, 8 px margins
    assert probe[8:136, 8:136].std() > 10 and probe[8:136, 144:272].std() > 10  # both modes drawn
    curve = np.asarray(Image.open(files[3]))
    inside = curve[23:-25, 41:-11] < 128  # the line inside the frame (errors fall: 0.5, 0.25, 0.125)
    rows = np.flatnonzero(inside.any(axis=1))
    assert inside[:, :5].any() and inside[:, -5:].any()
    assert np.flatnonzero(inside[:, 0])[0] < np.flatnonzero(inside[:, -1])[0] and rows.size > 100  # falls
    assert Image.open(files[4]).size == (2 * 272, 2 * 286)


def test_csv_export_is_the_originals_object_and_probes_positions_and_error_history(tmp_path, result_file):
    path, result = result_file
    files = export_result(path, "csv", tmp_path / "data")
    assert [f.name for f in files] == ["run7_object_0.csv", "run7_probes_0.csv", "run7_positions_0.csv",
                                       "run7_errors.csv"]
    probes = np.genfromtxt(files[1], delimiter=",", dtype=complex)
    np.testing.assert_allclose(probes, result.probe.reshape(32, 16), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(read_positions_csv(files[2]), result.positions_px * result.pixel_size_m, rtol=1e-9)
    history = np.loadtxt(files[3], delimiter=",")
    np.testing.assert_allclose(history, [[1, 0.5, 0.01], [2, 0.25, 0.02], [3, 0.125, 0.03]])


def test_ptychodus_export_opens_in_ptychodus_load_product_with_our_object_probe_positions(tmp_path, result_file):
    path, result = result_file
    (product_path,) = export_result(path, "ptychodus", tmp_path / "p")
    assert product_path.name == "run7_ptychodus.h5"
    product = load_product(product_path)  # ptychodus' own reader
    np.testing.assert_array_equal(product.object_.get_array()[0], result.object)
    np.testing.assert_array_equal(product.probes.get_array()[0], result.probe)
    geometry = product.object_.get_geometry()
    n = result.probe.shape[-1]
    np.testing.assert_allclose(geometry.map_probe_positions_to_object_x_px(product.probe_positions),
                               result.positions_px[:, 1] + (n - 1) / 2, atol=1e-9)
    np.testing.assert_allclose(geometry.map_probe_positions_to_object_y_px(product.probe_positions),
                               result.positions_px[:, 0] + (n - 1) / 2, atol=1e-9)
    assert geometry.pixel_width_m == pytest.approx(result.pixel_size_m)
    experiment = result.parameters.experiment
    assert product.metadata.name == "run7"
    assert product.metadata.detector_distance_m == pytest.approx(experiment.detector_distance_m)
    assert product.metadata.photon_energy_eV == pytest.approx(12398.419843 / (experiment.wavelength_m * 1e10))
    assert [loss.value for loss in product.losses] == pytest.approx(result.errors)
    back = read_ptychodus_product(product_path)  # and ours gives the window corners back
    np.testing.assert_allclose(back.positions_px, result.positions_px, atol=1e-9)
    np.testing.assert_array_equal(back.probe, result.probe)


def test_an_unsafe_job_id_is_refused_before_anything_is_written(tmp_path, make_result):
    result = make_result()
    params = result.parameters.to_dict()  # a file from elsewhere or edited: the checks did not run on it
    params["experiment"]["job_id"] = "../escape"
    result.parameters = params
    path = write_result(result, tmp_path / "r.h5")
    with pytest.warns(RuntimeWarning, match="no longer validate"), pytest.raises(UnsafePathError,
                                                                                  match="-jobID='../escape'"):
        export_result(path, "png", tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_run_without_a_job_id_is_named_by_the_caller_or_by_the_result_file(tmp_path, make_result):
    result = make_result(Parameters().replace({"experiment.scan_dims": (2, 3), "preprocessing.size_px": 16}))
    path = write_result(result, tmp_path / "result.h5")
    assert export_result(path, "ptychodus", tmp_path / "a")[0].name == "result_ptychodus.h5"
    named = export_result(path, "csv", tmp_path / "b", default_name="ptychopy_job12")
    assert [f.name for f in named] == ["ptychopy_job12_object_0.csv", "ptychopy_job12_probes_0.csv",
                                       "ptychopy_job12_positions_0.csv", "ptychopy_job12_errors.csv"]


def test_to_uint8_scales_min_to_0_and_max_to_255_and_nan_to_0():
    np.testing.assert_array_equal(to_uint8(np.array([[-1.0, 0.0, 1.0, np.nan]])), [[0, 128, 255, 0]])
    np.testing.assert_array_equal(to_uint8(np.zeros((2, 2))), 0)


def test_main_prints_files_and_returns_0(tmp_path, result_file, capsys):
    path, _ = result_file
    assert main([str(path), "--format", "ptychodus", "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "o" / "run7_ptychodus.h5")]


def test_main_reports_a_missing_result_file_with_status_2(tmp_path, capsys):
    assert main([str(tmp_path / "none.h5"), "--format", "tiff"]) == 2
    assert "none.h5: result file not found" in capsys.readouterr().err


@pytest.mark.parametrize("make_file,expected", [
    (lambda p: h5py.File(p, "w").create_dataset("entry/data/data", data=np.zeros((2, 3))),
     "is an HDF5 file but not a ptychopy result: it has no /entry_1/ptychopy group"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n not hdf5"), "is not an HDF5 file"),
])
def test_main_says_clearly_when_the_file_is_not_a_ptychopy_result(tmp_path, capsys, make_file, expected):
    other = tmp_path / "other.h5"
    make_file(other)
    before = other.read_bytes()
    assert main([str(other), "--format", "ptychodus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ptychopy export: error: file {other}: {expected}") and err.count("\n") == 1
    assert "synchronously" not in err and "errno" not in err
    assert other.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["other.h5"]


def test_the_ptychopy_command_on_a_non_result_file_prints_one_clear_line(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["entry/instrument/detector/data"] = np.zeros((2, 4, 4), dtype=np.uint16)
    done = subprocess.run([sys.executable, "-m", "ptychopy", "export", str(other)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"ptychopy export: error: file {other}: is an HDF5 file but not a ptychopy result: it has "
                           f"no /entry_1/ptychopy group (its top level holds entry); export reads result files "
                           f"written by ptychopy\n")

import h5py
import numpy as np
import pytest

from reconstruction.errors import InputDataError
from reconstruction.io.positions_file import (
    check_count,
    read_positions_csv,
    read_positions_file,
    read_positions_hdf5,
)


def test_csv_reads_axis0_axis1_with_comments_and_blank_lines(tmp_path):
    p = tmp_path / "pos.csv"
    p.write_text("# y, x in metres\n1e-6, 2e-6\n\n-3.5e-7,4e-7\n5e-7 6e-7\n")
    np.testing.assert_allclose(read_positions_csv(p), [[1e-6, 2e-6], [-3.5e-7, 4e-7], [5e-7, 6e-7]])


def test_csv_bad_line_names_file_and_line(tmp_path):
    p = tmp_path / "pos.csv"
    p.write_text("1e-6, 2e-6\n1e-6, 2e-6, 3e-6\n")
    with pytest.raises(InputDataError, match=r"pos\.csv, line 2: expected 'axis0, axis1'"):
        read_positions_csv(p)


def test_csv_nan_position_is_an_error(tmp_path):
    p = tmp_path / "pos.csv"
    p.write_text("1e-6, 2e-6\nnan, 1e-6\n")
    with pytest.raises(InputDataError, match="position 1 is not a finite number"):
        read_positions_csv(p)


def test_missing_csv_is_an_error(tmp_path):
    with pytest.raises(InputDataError, match="not found"):
        read_positions_csv(tmp_path / "nope.csv")


def test_hdf5_positions_transposed_and_in_nm(tmp_path):
    p = tmp_path / "pos.h5"
    with h5py.File(p, "w") as f:
        f["/scan/xy"] = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        f["/scan/xy"].attrs["units"] = "nm"
    np.testing.assert_allclose(read_positions_hdf5(p, "/scan/xy"), [[1e-9, 4e-9], [2e-9, 5e-9], [3e-9, 6e-9]])
    np.testing.assert_allclose(read_positions_file(f"{p}::/scan/xy")[0], [1e-9, 4e-9])


def test_hdf5_default_dataset_and_unknown_units(tmp_path):
    p = tmp_path / "pos.h5"
    with h5py.File(p, "w") as f:
        f["/entry/positions"] = np.ones((4, 2))
        f["/bad"] = np.ones((4, 2))
        f["/bad"].attrs["units"] = "furlong"
    assert read_positions_file(str(p)).shape == (4, 2)
    with pytest.raises(InputDataError, match="unknown position units 'furlong'"):
        read_positions_hdf5(p, "/bad")


def test_hdf5_wrong_shape_is_an_error(tmp_path):
    p = tmp_path / "pos.h5"
    with h5py.File(p, "w") as f:
        f["/positions"] = np.ones((4, 3))
    with pytest.raises(InputDataError, match=r"pos\.h5, dataset /positions: positions have shape \(4, 3\)"):
        read_positions_hdf5(p)


def test_dataset_in_data_file_needs_a_data_file():
    with pytest.raises(InputDataError, match="need a data file pattern"):
        read_positions_file("::/entry/positions", None)


def test_count_must_match_scan_points():
    check_count(np.zeros((6, 2)), 6, "p.csv")
    with pytest.raises(InputDataError, match="holds 5 positions but the scan has 6"):
        check_count(np.zeros((5, 2)), 6, "p.csv")


def test_a_ptychopy_result_file_gives_back_its_refined_positions_in_metres(tmp_path):
    from reconstruction.io import write_result
    from reconstruction.state import Result

    refined_px = np.array([[1.25, 3.5], [7.75, 2.0], [4.0, 9.125]])
    result = Result(object=np.ones((20, 20), np.complex64), probe=np.ones((1, 8, 8), np.complex64),
                    positions_px=refined_px, errors=[0.1], rms=[], iteration_s=[0.01], algorithm="LSQML",
                    device="CPU", pixel_size_m=2e-8)
    path = write_result(result, tmp_path / "refined.h5")
    # the file holds probe centres from the object's centre: the corners in metres plus one constant offset,
    # (8 - 1) / 2 - (20 - 1) / 2 = -6 pixels, which the run's shift of the minimum to the margin removes
    for spec in (str(path), f"{path}::/entry_1/sample_1/geometry_1/translation"):
        np.testing.assert_allclose(read_positions_file(spec), (refined_px - 6) * 2e-8, rtol=1e-12)


def test_pynx_cxi_translation_of_shape_3_by_n_in_its_units(tmp_path):
    """PyNX stores the CXI translation as (3, N) (x, y, z rows); written here with h5py, not our writer."""
    x_um, y_um = np.array([0.0, 1.5, 3.0, 4.5]), np.array([-1.0, 0.0, 1.0, 2.0])
    path = tmp_path / "pynx.cxi"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("/entry_1/sample_1/geometry_1/translation",
                              data=np.stack([x_um, y_um, np.zeros(4)]))
        ds.attrs["units"] = "um"
    got = read_positions_file(str(path))
    np.testing.assert_allclose(got, np.stack([y_um, x_um], axis=1) * 1e-6)

"""-probeGuess / -objectGuess / -lf from HDF5: a ptychopy result (this version's and an older one), a ptychodus
product, file.h5::/dataset, and clear errors for anything else."""

from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from reconstruction.errors import InputDataError
from reconstruction.io import write_result
from reconstruction.io.export import export_result
from reconstruction.io.guesses import read_hdf5_guess
from reconstruction.io.positions_file import read_positions_file
from reconstruction.loading import load_guesses
from reconstruction.parameters import Parameters

OLD_RESULT = Path(__file__).parent / "data" / "result_written_by_27b8924.h5"


@pytest.fixture
def files(tmp_path, make_result):
    result = make_result()
    path = write_result(result, tmp_path / "run7.h5")
    (product,) = export_result(path, "ptychodus", tmp_path)
    return result, path, product


def _guesses(probe: str, obj: str):
    params = Parameters().replace({"reconstruction.probe_guess": probe, "reconstruction.object_guess": obj})
    return load_guesses(params, SimpleNamespace(probe_guess=None, object_guess=None, size_px=16))


@pytest.mark.parametrize("which", ["result", "product", "old result"])
def test_probe_and_object_guesses_come_from_a_result_or_a_ptychodus_product(files, which):
    result, path, product = files
    source = {"result": path, "product": product, "old result": OLD_RESULT}[which]
    probe, obj = _guesses(str(source), str(source))
    np.testing.assert_array_equal(probe, result.probe)  # the old file was written from the same make_result()
    np.testing.assert_array_equal(obj, result.object)
    assert probe.dtype == np.complex64 and probe.shape == (2, 16, 16) and obj.shape == (40, 50)


def test_a_named_dataset_is_a_guess_and_a_single_probe_gets_a_mode_axis(tmp_path):
    path = tmp_path / "mine.h5"
    probe = (np.arange(64) + 1j).reshape(8, 8)
    with h5py.File(path, "w") as f:
        f["p"] = probe
    got = read_hdf5_guess(f"{path}::/p", "probe")
    assert got.shape == (1, 8, 8)
    np.testing.assert_array_equal(got[0], probe.astype(np.complex64))


def test_lf_from_a_ptychodus_product_gives_the_same_positions_as_from_the_result(files):
    result, path, product = files
    from_product = read_positions_file(str(product))
    np.testing.assert_allclose(from_product, read_positions_file(str(path)), rtol=0, atol=1e-18)
    moved = from_product - from_product[0]
    np.testing.assert_allclose(moved, (result.positions_px - result.positions_px[0]) * result.pixel_size_m,
                               rtol=0, atol=1e-18)


@pytest.mark.parametrize("make,spec_suffix,expected", [
    (lambda p: h5py.File(p, "w").create_dataset("entry/data/data", data=np.zeros(3)), "",
     r"holds no object guess ptychopy knows \(its top level holds entry\); give a ptychopy result, a ptychodus "
     r"product, or name the dataset as .*other\.h5::/path/to/object"),
    (lambda p: h5py.File(p, "w").create_dataset("x", data=np.zeros((2, 2))), "::/missing",
     r"other\.h5.*/missing.*no such dataset for the object guess"),
    (lambda p: h5py.File(p, "w").create_dataset("x", data=np.zeros((2, 2, 2, 2))), "::/x",
     r"an object guess must be \(H, W\); this is \(2, 2, 2, 2\)"),
    (lambda p: p.write_text("1, 2\n"), "", "not a readable HDF5 file"),
])
def test_a_file_without_a_guess_says_what_was_looked_for(tmp_path, make, spec_suffix, expected):
    other = tmp_path / "other.h5"
    make(other)
    with pytest.raises(InputDataError, match=expected):
        _guesses("", f"{other}{spec_suffix}")


def test_a_missing_guess_file_is_named(tmp_path):
    with pytest.raises(InputDataError, match=r"gone\.h5: probe guess \(-probeGuess\) not found"):
        _guesses(str(tmp_path / "gone.h5"), "")

import numpy as np
import pytest

from reconstruction.errors import InputDataError
from reconstruction.io.errors import OutputWriteError
from reconstruction.io.original_csv import format_complex, read_complex_csv, write_original_outputs


def test_elements_look_like_the_originals():
    assert format_complex(0.1234567 - 0.002j) == "0.123457-0.002j"
    assert format_complex(1 + 0j) == "1+0j"


def test_outputs_read_back_with_numpy_genfromtxt(tmp_path):
    rng = np.random.default_rng(0)
    obj = (rng.normal(size=(5, 7)) + 1j * rng.normal(size=(5, 7))).astype(np.complex64)
    probe = (rng.normal(size=(2, 4, 4)) + 1j * rng.normal(size=(2, 4, 4))).astype(np.complex64)
    files = write_original_outputs(obj, probe, tmp_path / "data" / "new", "job1")
    assert [f.name for f in files] == ["job1_object_0.csv", "job1_probes_0.csv"]
    assert ", " in files[0].read_text().splitlines()[0]
    o = np.genfromtxt(files[0], delimiter=",", dtype=complex)
    p = np.genfromtxt(files[1], delimiter=",", dtype=complex)
    np.testing.assert_allclose(o, obj, rtol=1e-5, atol=1e-5)
    assert p.shape == (8, 4)
    np.testing.assert_allclose(p.reshape(2, 4, 4), probe, rtol=1e-5, atol=1e-5)


def test_binary_outputs_are_raw_complex64(tmp_path):
    obj = np.arange(6).reshape(2, 3) * (1 + 2j)
    files = write_original_outputs(obj, obj[:, :2], tmp_path, "b", index=3, binary=True)
    assert files[0].name == "b_object_3.bin"
    np.testing.assert_array_equal(np.fromfile(files[0], dtype=np.complex64).reshape(2, 3), obj)


def test_unwritable_output_directory_raises(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("")
    with pytest.raises(OutputWriteError, match="cannot create output directory"):
        write_original_outputs(np.zeros((2, 2)), np.zeros((2, 2)), blocker / "d", "j")


def test_read_complex_csv_accepts_every_spelling(tmp_path):
    p = tmp_path / "g.csv"
    p.write_text("(1.5e+00+-2.0e-01j), 0.123457-0.002j\n1+2i, 3\n")
    np.testing.assert_allclose(read_complex_csv(p), [[1.5 - 0.2j, 0.123457 - 0.002j], [1 + 2j, 3]], rtol=1e-6)


def test_read_complex_csv_reads_numpy_savetxt_output(tmp_path):
    a = np.array([[1 - 1j, 2.5e-7 + 3e5j], [-4j, 5]])
    np.savetxt(tmp_path / "s.csv", a, delimiter=",")
    np.testing.assert_allclose(read_complex_csv(tmp_path / "s.csv"), a, rtol=1e-6)


def test_read_complex_csv_bad_value_and_ragged_rows_name_the_line(tmp_path):
    p = tmp_path / "g.csv"
    p.write_text("1+1j, 2\n1+1j, x\n")
    with pytest.raises(InputDataError, match=r"g\.csv, line 2: not a complex number"):
        read_complex_csv(p)
    p.write_text("1, 2\n3\n")
    with pytest.raises(InputDataError, match="line 2: 1 values, but line 1 has 2"):
        read_complex_csv(p)

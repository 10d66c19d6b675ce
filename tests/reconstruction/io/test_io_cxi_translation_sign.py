"""CXI translations as PyNX and cdtools write them, read into ptychopy's probe positions (row, col) in metres.

The files are written here with h5py following each program's writer (PyNX 2022.1
``pynx.ptycho.ptycho.save_ptycho_data_cxi``; cdtools ``tools.data.add_detector`` / ``add_ptycho_translations``),
and the expected positions come from each program's own reading rule, not from ptychopy:

- PyNX puts the probe window at column ``x / px`` and row ``y / py`` (from the object's centre): ``(y, x)``;
- cdtools negates the file's translation (it stores the sample's, it works with the optics') and maps it to
  pixels with the pseudo-inverse of the detector basis (``interactions.translations_to_pixel``):
  ``pinv(basis) @ -translation``, times the pixel size for metres.
"""

import h5py
import numpy as np
import pytest

from reconstruction.errors import InputDataError
from reconstruction.io.positions_file import read_positions_file

TRANSLATION = "/entry_1/sample_1/geometry_1/translation"
PIXEL_M = 75e-6  # detector pixel (the basis); the object pixel only scales, which metres hide


@pytest.fixture
def probe_path_m():
    """A 3 x 4 raster with a twist (distinct x and y, both signs), (N, 2) as (x, y) in metres."""
    yy, xx = np.meshgrid(np.arange(3) * 0.4e-6 - 0.3e-6, np.arange(4) * 0.5e-6 - 0.2e-6, indexing="ij")
    return np.stack([xx.ravel() + 0.05e-6 * yy.ravel() / 0.4e-6, yy.ravel()], axis=1)


def write_pynx(path, x, y):
    """PyNX's layout: translation (3, N) float32 rows x, y, z; detector basis_vectors (2, 3), CXI's default."""
    with h5py.File(path, "w") as f:
        f.create_dataset("cxi_version", data=140)
        xyz = np.zeros((3, x.size), dtype=np.float32)
        xyz[0], xyz[1] = x, y
        f.create_dataset(TRANSLATION, data=xyz)
        basis = np.zeros((2, 3), dtype=np.float32)
        basis[0, 1] = -PIXEL_M
        basis[1, 0] = -PIXEL_M
        f.create_dataset("/entry_1/instrument_1/detector_1/basis_vectors", data=basis)
        f["/entry_1/data_1/translation"] = h5py.SoftLink(TRANSLATION)
    return path


def cdtools_basis(sign_rows=-1.0, sign_cols=-1.0):
    """cdtools' detector basis (3, 2): column 0 = one step along the rows, column 1 = along the columns."""
    return np.array([[0.0, sign_cols * PIXEL_M], [sign_rows * PIXEL_M, 0.0], [0.0, 0.0]])


def write_cdtools(path, optics_translations_m, basis):
    """cdtools' layout: basis_vectors (3, 2) and the sample translation (N, 3) = minus the optics' translation."""
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry_1/instrument_1/detector_1/basis_vectors", data=basis)
        f.create_dataset(TRANSLATION, data=-optics_translations_m)
        f["/entry_1/data_1/translation"] = h5py.SoftLink(TRANSLATION)
    return path


def cdtools_positions_m(optics_translations_m, basis):
    """cdtools' own rule (translations_to_pixel, sample normal along z): pixel (i, j) = pinv(basis) @ (x, y, 0)."""
    xy0 = optics_translations_m.copy()
    xy0[:, 2] = 0.0
    return (np.linalg.pinv(basis) @ xy0.T).T * PIXEL_M


def test_a_pynx_file_gives_rows_from_y_and_columns_from_x(tmp_path, probe_path_m):
    x, y = probe_path_m[:, 0], probe_path_m[:, 1]
    path = write_pynx(tmp_path / "pynx.cxi", x, y)
    positions = read_positions_file(f"{path}::{TRANSLATION}")
    np.testing.assert_allclose(positions, np.stack([y, x], axis=1), rtol=1e-6)  # float32 in the file
    np.testing.assert_allclose(read_positions_file(str(path)), positions)  # found without naming the dataset


@pytest.mark.parametrize("signs", [(-1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)],
                         ids=["cxi default basis", "both axes flipped", "columns flipped"])
def test_a_cdtools_file_reads_as_cdtools_places_the_probe(tmp_path, probe_path_m, signs):
    optics = np.zeros((probe_path_m.shape[0], 3))
    optics[:, :2] = probe_path_m
    optics[:, 2] = 1e-3  # a z that both ignore
    basis = cdtools_basis(*signs)
    path = write_cdtools(tmp_path / "cdtools.cxi", optics, basis)
    positions = read_positions_file(f"{path}::{TRANSLATION}")
    np.testing.assert_allclose(positions, cdtools_positions_m(optics, basis), rtol=1e-12, atol=1e-18)


def test_with_the_default_basis_pynx_and_cdtools_agree_without_a_sign_change(tmp_path, probe_path_m):
    """The same probe positions written by each program's rule read back the same way, and equal the file's
    (y, x): CXI's negated sample translation and its columns-along--x basis cancel."""
    x, y = probe_path_m[:, 0], probe_path_m[:, 1]
    pynx = read_positions_file(str(write_pynx(tmp_path / "p.cxi", x, y)))
    optics = np.zeros((x.size, 3))
    optics[:, 0], optics[:, 1] = -x, -y  # what cdtools' file holds is -optics = (x, y)
    cdtools = read_positions_file(str(write_cdtools(tmp_path / "c.cxi", optics, cdtools_basis())))
    np.testing.assert_allclose(pynx, cdtools, rtol=1e-6)


def test_a_rotated_detector_basis_is_refused_naming_it(tmp_path, probe_path_m):
    optics = np.zeros((probe_path_m.shape[0], 3))
    optics[:, :2] = probe_path_m
    c, s = np.cos(0.3), np.sin(0.3)
    rotated = np.array([[-s * PIXEL_M, -c * PIXEL_M], [-c * PIXEL_M, s * PIXEL_M], [0.0, 0.0]])
    path = write_cdtools(tmp_path / "rot.cxi", optics, rotated)
    with pytest.raises(InputDataError, match=r"rot\.cxi, dataset /entry_1/instrument_1/detector_1/basis_vectors: "
                                             r".* is not along y \(rows\) and x \(columns\)"):
        read_positions_file(str(path))


def test_a_cxi_mask_reads_as_cdtools_reads_it(tmp_path):
    """CXI masks: nonzero is bad, except exactly 0x1000 ("signal above the background"); cdtools' get_mask keeps
    pixels equal to 0 or 0x1000. Written as cdtools' add_mask writes it (uint32, 1 for an off pixel)."""
    from reconstruction.io.masks import read_bad_pixel_mask

    values = np.array([[0, 1, 0x1000], [0x1001, 2, 0]], dtype=np.uint32)
    path = tmp_path / "cdtools.cxi"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry_1/instrument_1/detector_1/mask", data=values)
    cdtools_good = np.logical_or(values == 0, values == 0x1000)
    bad = read_bad_pixel_mask(f"{path}::/entry_1/instrument_1/detector_1/mask")
    np.testing.assert_array_equal(bad, ~cdtools_good)

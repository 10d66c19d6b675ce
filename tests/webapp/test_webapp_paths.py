"""User-typed file paths stay inside PTYCHOPY_DATA_ROOTS: no ../ and no symlink escapes."""

import os

import pytest

from reconstruction import ParameterError, Parameters
from webapp.scans.paths import PathNotAllowed, confine, confine_parameters


def test_relative_and_absolute_paths_inside_a_root_resolve(data_root):
    (data_root / "scan1").mkdir()
    assert confine("scan1/positions.csv") == str(data_root / "scan1" / "positions.csv")
    assert confine(str(data_root / "scan1" / "probe.csv")) == str(data_root / "scan1" / "probe.csv")


@pytest.mark.parametrize("raw", ["../secret.h5", "scan/../../secret.h5", "/etc/passwd", "/"])
def test_dotdot_and_outside_paths_are_rejected(data_root, raw):
    with pytest.raises(PathNotAllowed, match="outside the data folders"):
        confine(raw)


def test_symlink_out_of_the_root_is_rejected(data_root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.h5").write_bytes(b"x")
    os.symlink(outside, data_root / "link")
    with pytest.raises(PathNotAllowed):
        confine("link/data.h5")
    with pytest.raises(PathNotAllowed):
        confine("link/scan_#06d.h5", pattern=True)


def test_file_pattern_checks_its_folder_and_keeps_the_pattern(data_root):
    assert confine("scan152/data_#06d.h5", pattern=True) == str(data_root / "scan152" / "data_#06d.h5")
    with pytest.raises(PathNotAllowed):
        confine("../scan_#06d.h5", pattern=True)


def test_second_root_is_allowed(settings, data_root, tmp_path):
    other = tmp_path / "beamline"
    other.mkdir()
    settings.PTYCHOPY_DATA_ROOTS = [data_root, other]
    assert confine(str(other / "x.h5")) == str(other / "x.h5")


def test_parameters_name_every_bad_path_with_its_flag(data_root):
    params = Parameters.from_cmdstr("./ptycho -fp=../../etc/scan_#06d.h5 -lf=/tmp/pos.csv -probeGuess=ok.csv")
    with pytest.raises(ParameterError) as err:
        confine_parameters(params)
    flags = {p.flag for p in err.value.problems}
    assert flags == {"fp", "lf"}
    assert all("outside the data folders" in p.message for p in err.value.problems)
    good = confine_parameters(Parameters.from_cmdstr("./ptycho -probeGuess=ok.csv"))
    assert good.reconstruction.probe_guess == str(data_root / "ok.csv")


def test_positions_in_an_hdf5_dataset_are_confined_by_their_file_and_checked_to_exist(data_root, tmp_path):
    """What "Fill in from scan" sets for a CXI file's translations (``file::dataset``) passes; a file outside the
    roots or missing is named; ``::dataset`` (inside the scan's own data file) is left to -fp's check."""
    from webapp.scans.paths import check_submission

    (data_root / "scan1").mkdir()
    (data_root / "scan1" / "pynx.cxi").write_bytes(b"x")
    base = Parameters().replace({"data.file_pattern": str(data_root / "scan1" / "pynx.cxi")})
    inside = base.replace({"experiment.positions_file": "scan1/pynx.cxi::/entry_1/sample_1/geometry_1/translation"})
    assert check_submission(inside).experiment.positions_file == (
        f"{data_root / 'scan1' / 'pynx.cxi'}::/entry_1/sample_1/geometry_1/translation")
    own = base.replace({"experiment.positions_file": "::/entry/positions"})
    assert check_submission(own).experiment.positions_file == "::/entry/positions"
    outside = base.replace({"experiment.positions_file": f"{tmp_path / 'elsewhere.cxi'}::/translation"})
    with pytest.raises(ParameterError, match=r"-lf: .*elsewhere\.cxi.* is outside the data folders"):
        check_submission(outside)
    missing = base.replace({"experiment.positions_file": "scan1/gone.cxi::/translation"})
    with pytest.raises(ParameterError, match=r"-lf=.*gone\.cxi::/translation: no such file"):
        check_submission(missing)


def test_a_master_file_whose_external_links_leave_the_roots_is_refused_with_its_flag(data_root, tmp_path):
    """An NXmx master inside a data folder whose external link points at another HDF5 file of the server would be
    followed by the reader; a link to a data file beside it is what Eiger masters do, and passes."""
    import h5py
    import numpy as np

    outside = tmp_path / "elsewhere" / "secret.h5"
    outside.parent.mkdir()
    with h5py.File(outside, "w") as f:
        f["data"] = np.zeros((2, 4, 4), np.uint16)
    with h5py.File(data_root / "good_data_000001.h5", "w") as f:
        f["data"] = np.zeros((2, 4, 4), np.uint16)
    with h5py.File(data_root / "good_master.h5", "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink("good_data_000001.h5", "/data")
    with h5py.File(data_root / "bad_master.h5", "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink(str(outside), "/data")
    assert confine("good_master.h5") == str(data_root / "good_master.h5")
    params = Parameters.from_cmdstr("./ptycho -fp=bad_master.h5 -lf=bad_master.h5::/entry/data/data_000001")
    with pytest.raises(ParameterError) as err:
        confine_parameters(params)
    assert {p.flag for p in err.value.problems} == {"fp", "lf"}
    assert all("/entry/data/data_000001 -> " in p.message and "leads outside the data folders" in p.message
               for p in err.value.problems), err.value.problems


def test_a_data_file_reading_raw_bytes_or_virtual_sources_outside_the_roots_is_refused_with_its_flag(data_root,
                                                                                                  tmp_path):
    """The reader follows a dataset's external raw storage and a virtual dataset's sources as it follows external
    links: a scan file whose frames are another file's bytes (the server's secret key, /etc/shadow) or another
    folder's HDF5 file is refused at submit, naming the flag and the dataset."""
    import h5py
    import numpy as np

    secret = tmp_path / "secret_key"
    secret.write_bytes(bytes(range(32)))
    other = tmp_path / "elsewhere.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.zeros((2, 4, 4), np.uint16)
    with h5py.File(data_root / "raw_scan.h5", "w") as f:
        f.create_dataset("entry/data/data", shape=(2, 4, 4), dtype="u1", external=[(str(secret), 0, 32)])
    layout = h5py.VirtualLayout(shape=(2, 4, 4), dtype="u2")
    layout[:] = h5py.VirtualSource(str(other), "data", shape=(2, 4, 4))
    with h5py.File(data_root / "vds_scan.h5", "w") as f:
        f.create_virtual_dataset("entry/data/data", layout)
    for name, words in (("raw_scan.h5", "/entry/data/data stores its values in "),
                        ("vds_scan.h5", "/entry/data/data takes values from ")):
        with pytest.raises(ParameterError) as err:
            confine_parameters(Parameters.from_cmdstr(f"./ptycho -fp={name} -probeGuess={name}::/entry/data/data"))
        assert {p.flag for p in err.value.problems} == {"fp", "probeGuess"}
        assert all(words in p.message and "outside the data folders" in p.message for p in err.value.problems), \
            err.value.problems

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

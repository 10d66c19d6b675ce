"""User-chosen names become file names only as plain names inside their folder (symlinks resolved)."""

import os

import numpy as np
import pytest

from reconstruction.io.export import main as export_main
from reconstruction.io.original_csv import write_original_outputs
from reconstruction.safe_paths import UnsafePathError, file_name_problem, path_inside, sanitised_name


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ".", ".hidden", "", "a\x00b", "x" * 101, "a b"])
def test_names_with_separators_dots_or_odd_characters_are_not_file_names(name):
    assert file_name_problem(name) is not None
    with pytest.raises(UnsafePathError):
        path_inside("/tmp", name)


def test_plain_names_join_inside_their_folder(tmp_path):
    assert path_inside(tmp_path, "scan_152.v2-b", "_object_0.csv") == tmp_path / "scan_152.v2-b_object_0.csv"
    assert path_inside(tmp_path, "Ångström") == tmp_path / "Ångström"
    assert sanitised_name("../my result") == "_my_result"


@pytest.fixture
def folders(tmp_path):
    """(results folder, a folder outside it), both empty."""
    out, outside = tmp_path / "results", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    return out, outside


def test_the_original_csv_outputs_refuse_a_hostile_job_id_and_write_nothing_outside(folders):
    out, outside = folders
    victim = outside / "pwn_object_0.csv"
    victim.write_text("keep me\n")
    obj, probe = np.ones((4, 4), np.complex64), np.ones((2, 2), np.complex64)
    for job_id in ("../outside/pwn", str(outside / "pwn"), "../../../outside/pwn"):
        with pytest.raises(UnsafePathError, match="-jobID"):
            write_original_outputs(obj, probe, out, job_id)
    assert victim.read_text() == "keep me\n" and sorted(p.name for p in outside.iterdir()) == [victim.name]
    assert list(out.iterdir()) == []


def test_a_symlink_planted_in_the_output_folder_is_not_written_through(folders):
    out, outside = folders
    victim = outside / "target.csv"
    victim.write_text("keep me\n")
    os.symlink(victim, out / "scan_object_0.csv")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        write_original_outputs(np.ones((4, 4)), np.ones((2, 2)), out, "scan")
    assert victim.read_text() == "keep me\n"


def test_export_cli_reports_an_unsafe_name_and_exits_nonzero(tmp_path, capsys):
    from reconstruction.io import write_result
    from reconstruction.parameters import Parameters
    from reconstruction.state import Result

    params = Parameters.from_cmdstr("./ptycho -jobID=ok -simulate=1 -size=16")
    result = Result(object=np.ones((8, 8), np.complex64), probe=np.ones((1, 4, 4), np.complex64),
                    positions_px=np.zeros((1, 2)), errors=[0.1], rms=[], iteration_s=[0.1], algorithm="ePIE",
                    device="cpu", pixel_size_m=1e-8, parameters=params)
    path = write_result(result, tmp_path / "result.h5")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(tmp_path / "elsewhere.csv", out / "ok_object_0.csv")
    assert export_main([str(path), "--format", "csv", "--out", str(out)]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere.csv").exists()

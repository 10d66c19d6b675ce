"""MDA files written by beamline sscan records (saveData at APS 29-ID), read as synApps' own mda.py reads them.

The expected values are ``data/mda/reference_synapps_mda_py.json``: what synApps' reader (mda.py 2.1) read from the
same files (see ``data/mda/README.md``), not what ptychopy's reader gives.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from reconstruction.errors import InputDataError
from reconstruction.io import mda_parameters
from reconstruction.io.mda import HC_KEV_M, describe_mda, mda_positions, read_mda, read_positions_mda
from reconstruction.io.positions_file import read_positions_file

DATA = Path(__file__).parent / "data" / "mda"
REFERENCE = json.loads((DATA / "reference_synapps_mda_py.json").read_text())
FILES = sorted(REFERENCE)


@pytest.mark.parametrize("name", FILES)
def test_header_positioners_and_detectors_match_synapps_reader(name):
    ref = REFERENCE[name]
    mda = read_mda(DATA / name)
    assert (mda.scan_number, mda.rank, list(mda.dimensions)) == (ref["scan_number"], ref["rank"], ref["dimensions"])
    inner = mda.scan.lower[0]
    for ours, theirs in ((mda.scan.positioners[0], ref["outer"]), (inner.positioners[0], ref["inner"])):
        assert (ours.name, ours.desc, ours.unit, ours.readback_name, ours.readback_unit) == (
            theirs["name"], theirs["desc"], theirs["unit"], theirs["readback_name"], theirs["readback_unit"])
        assert ours.measured
    assert [[d.name, d.desc, d.unit] for d in inner.detectors] == ref["detectors"]
    rows = ref["rows_acquired"]
    np.testing.assert_array_equal(mda.scan.positioners[0].data[:rows], ref["outer"]["data"])
    np.testing.assert_array_equal([s.positioners[0].data for s in mda.scan.lower[:rows]], ref["inner"]["data"])


@pytest.mark.parametrize("name", FILES)
def test_positions_are_the_recorded_readbacks_in_metres_outer_then_inner(name):
    ref = REFERENCE[name]
    rows, cols = ref["rows_acquired"], ref["cols"]
    scale = {"um": 1e-6, "mm": 1e-3}
    expected = [(ref["outer"]["data"][r] * scale[ref["outer"]["unit"]],
                 ref["inner"]["data"][r][c] * scale[ref["inner"]["unit"]]) for r in range(rows) for c in range(cols)]
    positions = read_positions_mda(DATA / name)
    np.testing.assert_allclose(positions, expected, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(read_positions_file(str(DATA / name)), positions)  # -lf=scan.mda
    values = mda_parameters(DATA / name)
    assert values["experiment.scan_dims"] == (rows, cols)
    assert values["experiment.positions_file"] == str(DATA / name)


def test_measured_positions_differ_from_the_nominal_grid():
    """The readbacks are what the motors reached, not the set points: in mda_0396 the inner x misses its
    1000 um grid by up to a few um, which a grid from the step size would hide."""
    name = "29idKappa_mda_0396.mda"
    positions = read_positions_mda(DATA / name)
    x_um = positions[:, 1].reshape(9, 11) * 1e6
    nominal = np.linspace(x_um[:, 0].mean(), x_um[:, -1].mean(), 11)
    deviation = np.abs(x_um - nominal)
    assert deviation.max() > 1.0
    assert deviation.max() < 10.0


def test_aborted_scan_gives_the_rows_it_acquired():
    ref = REFERENCE["29idKappa_Kappa_0009.mda"]
    assert ref["rows_acquired"] < ref["dimensions"][0]
    found = mda_positions(read_mda(DATA / "29idKappa_Kappa_0009.mda"))
    assert found is not None and (found.rows, found.cols) == (ref["rows_acquired"], ref["cols"])
    assert found.positions_m.shape == (ref["rows_acquired"] * ref["cols"], 2)


def test_wavelength_comes_from_the_monochromators_measured_energy():
    ref = REFERENCE["29idKappa_mda_0396.mda"]["energy_extra_pvs"]
    desc, unit, (mono_ev,) = ref["29idmono:ENERGY_MON"]
    assert unit == "eV" and len(ref) > 1  # the undulator's energies come first in the file
    values = mda_parameters(DATA / "29idKappa_mda_0396.mda")
    assert values["experiment.wavelength_m"] == pytest.approx(HC_KEV_M / (mono_ev / 1000.0), rel=1e-12)


def test_description_names_positioners_with_units_and_readbacks():
    lines = describe_mda(read_mda(DATA / "29idKappa_mda_0396.mda"))
    text = "\n".join(lines)
    assert "MDA scan 396" in text and "9 x 11" in text
    assert "outer positioner 29idKappa:m4.VAL (z) [um], measured by 29idKappa:m4.RBV" in text
    assert "inner positioner 29idKappa:m2.VAL (x) [um], measured by 29idKappa:m2.RBV" in text
    assert "inner detectors (29)" in text


def test_truncated_saveData_file_is_an_input_error_naming_it(tmp_path):
    cut = tmp_path / "cut.mda"
    cut.write_bytes((DATA / "29idKappa_mda_0396.mda").read_bytes()[:5000])
    with pytest.raises(InputDataError, match=r"cut\.mda: not a readable MDA file"):
        read_positions_mda(cut)


def test_ptychopy_inspect_names_the_mda_positioners(tmp_path, capsys):
    from ptychopy.cli import main as cli_main
    from reconstruction.io.writers import write_scan_files

    write_scan_files(np.ones((99, 16, 16), np.float32), tmp_path, "scan_#06d.h5", dpf=11)
    mda = DATA / "29idKappa_mda_0396.mda"
    assert cli_main(["inspect", f"./ptycho -fp={tmp_path}/scan_#06d.h5 -dpf=11 -scanDims=9,11 -size=16 "
                                f"-qxy=8,8 -lf={mda}"]) == 0
    out = capsys.readouterr().out
    assert "mda: outer positioner 29idKappa:m4.VAL (z) [um], measured by 29idKappa:m4.RBV" in out
    assert "mda: inner detectors (29)" in out

"""MDA files written here with the XDR layout of the synApps sscan record (big-endian, 4-byte aligned)."""

import struct

import numpy as np
import pytest

from reconstruction.errors import InputDataError
from reconstruction.io import apply_mda, mda_parameters
from reconstruction.io.mda import HC_KEV_M, energy_kev_to_wavelength_m, read_mda
from reconstruction.parameters import Parameters


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def xstr(s: str) -> bytes:
    raw = s.encode("latin-1")
    return i32(len(raw)) + raw + b"\0" * ((4 - len(raw) % 4) % 4)


def counted(s: str) -> bytes:
    return i32(len(s)) + (xstr(s) if s else b"")


def scan_bytes(rank: int, npts: int, curr: int, lower: list[int], positioners: list[tuple[str, str, np.ndarray]],
               detectors: list[tuple[str, str, str, np.ndarray]]) -> bytes:
    """positioners: (name, unit, data); detectors: (name, desc, unit, data)."""
    b = i32(rank) + i32(npts) + i32(curr)
    if rank > 1:
        b += b"".join(i32(o) for o in lower)
    b += i32(9) + xstr("2idd:scan")
    b += i32(20) + xstr("NOV 25, 2026 02:00:00")
    b += i32(len(positioners)) + i32(len(detectors)) + i32(1)
    for n, (name, unit, _) in enumerate(positioners):
        b += i32(n) + counted(name) + counted("desc") + counted("LINEAR") + counted(unit) + counted(name + ".RBV")
        b += counted("") + counted(unit)
    for n, (name, desc, unit, _) in enumerate(detectors):
        b += i32(n) + counted(name) + counted(desc) + counted(unit)
    b += i32(1) + counted("2idd:det:Acquire") + struct.pack(">f", 1.0)
    for *_, data in positioners:
        b += np.asarray(data, dtype=">f8").tobytes()
    for *_, data in detectors:
        b += np.asarray(data, dtype=">f4").tobytes()
    return b


def extra_bytes(entries: list[tuple[str, str, int, str, object]]) -> bytes:
    b = i32(len(entries))
    for name, desc, kind, unit, value in entries:
        b += counted(name) + counted(desc) + i32(kind)
        if kind == 0:
            b += counted(str(value))
            continue
        vals = np.atleast_1d(value)
        b += i32(vals.size) + counted(unit)
        fmt = {30: ">f4", 34: ">f8", 29: ">i4", 33: ">i4"}[kind]
        b += vals.astype(fmt).tobytes()
    return b


def write_mda(path, rows=5, cols=7, done_rows=None, y_um=(0.0, 0.4), x_mm=(1.0, 1.0006),
              extras=None, x_unit="mm", y_unit="um", energy_detector=None, x_off_mm=None):
    """A 2-D scan: outer positioner y (um), inner positioner x (mm); ``x_off_mm`` adds to each inner point (what
    the readback recorded besides the grid)."""
    done = rows if done_rows is None else done_rows
    ys = np.linspace(*y_um, rows)
    xs = np.linspace(*x_mm, cols) + (0.0 if x_off_mm is None else np.asarray(x_off_mm))
    outer_dets = [("2idd:energy", "Mono energy", "keV", np.full(rows, energy_detector))] if energy_detector else []
    inner = [scan_bytes(1, cols, cols, [], [("2idd:x", x_unit, xs)], [("2idd:sum", "STXM", "cts",
                                                                      np.arange(cols))]) for _ in range(done)]
    header = struct.pack(">f", 1.3) + i32(1523) + i32(2) + i32(rows) + i32(cols) + i32(1)
    outer_len = len(scan_bytes(2, rows, done, [0] * rows, [("2idd:y", y_unit, ys)], outer_dets))
    start = len(header) + 4 + outer_len
    offsets, pos = [], start
    for s in inner:
        offsets.append(pos)
        pos += len(s)
    offsets += [0] * (rows - done)
    extra = extra_bytes(extras or [])
    p_extra = pos if extras else 0
    body = header + i32(p_extra) + scan_bytes(2, rows, done, offsets, [("2idd:y", y_unit, ys)], outer_dets)
    body += b"".join(inner) + (extra if extras else b"")
    path.write_bytes(body)
    return path


def test_reader_parses_header_dimensions_positioners_and_extras(tmp_path):
    p = write_mda(tmp_path / "s.mda", extras=[("2idd:Energy", "Energy", 34, "keV", 8.8),
                                              ("2idd:sample", "Sample", 0, "", "gold")])
    mda = read_mda(p)
    assert (mda.scan_number, mda.rank, mda.dimensions) == (1523, 2, (5, 7))
    assert mda.scan.name == "2idd:scan" and mda.scan.curr_pt == 5
    assert len(mda.scan.lower) == 5 and mda.scan.lower[0].positioners[0].unit == "mm"
    np.testing.assert_allclose(mda.scan.positioners[0].data, np.linspace(0, 0.4, 5))
    np.testing.assert_array_equal(mda.scan.lower[2].detectors[0].data, np.arange(7))
    assert mda.extra["2idd:sample"] == ("Sample", "", "gold")
    assert mda.extra["2idd:Energy"][2][0] == pytest.approx(8.8)


def test_parameters_map_energy_dims_and_steps_in_metres(tmp_path):
    p = write_mda(tmp_path / "s.mda", extras=[("2idd:Energy", "Energy", 34, "keV", 8.8)])
    values = mda_parameters(p)
    assert values["experiment.scan_dims"] == (5, 7)
    assert values["experiment.step_m"] == pytest.approx((100e-9, 100e-9))
    assert values["experiment.wavelength_m"] == pytest.approx(12.398419843320026e-10 / 8.8)


def test_energy_in_ev_and_from_an_outer_detector(tmp_path):
    p = write_mda(tmp_path / "a.mda", extras=[("mono:E", "Beam energy", 30, "eV", 10000.0)])
    assert mda_parameters(p)["experiment.wavelength_m"] == pytest.approx(HC_KEV_M / 10.0, rel=1e-6)
    q = write_mda(tmp_path / "b.mda", energy_detector=12.0)
    assert mda_parameters(q)["experiment.wavelength_m"] == pytest.approx(HC_KEV_M / 12.0, rel=1e-6)


def test_no_energy_means_no_wavelength(tmp_path):
    assert "experiment.wavelength_m" not in mda_parameters(write_mda(tmp_path / "s.mda"))


def test_aborted_scan_uses_the_rows_acquired(tmp_path):
    values = mda_parameters(write_mda(tmp_path / "s.mda", rows=6, done_rows=4, y_um=(0.0, 0.5)))
    assert values["experiment.scan_dims"] == (4, 7)
    assert values["experiment.step_m"][0] == pytest.approx(0.1e-6)  # from the 4 rows acquired


def test_explicit_values_win_over_the_mda_file(tmp_path):
    p = write_mda(tmp_path / "s.mda", extras=[("2idd:Energy", "Energy", 34, "keV", 8.8)])
    params = Parameters().replace({"experiment.wavelength_m": 1.5e-10})
    out = apply_mda(params, p, explicit_paths=["experiment.wavelength_m"])
    assert out.experiment.wavelength_m == 1.5e-10
    assert out.experiment.scan_dims == (5, 7)
    by_flag = apply_mda(params, p, explicit_paths=["scanDims"])
    assert by_flag.experiment.scan_dims == (12, 12)
    assert by_flag.experiment.wavelength_m == pytest.approx(HC_KEV_M / 8.8)


def test_truncated_mda_file_is_an_input_error(tmp_path):
    p = write_mda(tmp_path / "s.mda")
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(InputDataError, match=r"s\.mda: not a readable MDA file"):
        read_mda(p)


def test_non_mda_file_is_an_input_error(tmp_path):
    p = tmp_path / "x.mda"
    p.write_bytes(b"hello world, not xdr at all" * 4)
    with pytest.raises(InputDataError, match="not a readable MDA file"):
        read_mda(p)


def test_energy_conversion():
    assert energy_kev_to_wavelength_m(12.398419843320026) == pytest.approx(1e-10)
    with pytest.raises(ValueError):
        energy_kev_to_wavelength_m(0)


def test_an_angle_positioner_gives_no_step_and_no_positions(tmp_path):
    from reconstruction.io.mda import read_positions_mda

    p = write_mda(tmp_path / "theta.mda", x_unit="Degree")
    values = mda_parameters(p)
    assert values["experiment.scan_dims"] == (5, 7)
    assert "experiment.step_m" not in values and "experiment.positions_file" not in values
    with pytest.raises(InputDataError, match=r"theta\.mda: the MDA file records no positions in a length unit"):
        read_positions_mda(p)


def test_positions_follow_the_scan_order_in_metres(tmp_path):
    from reconstruction.io.mda import read_positions_mda

    p = write_mda(tmp_path / "s.mda", rows=3, cols=4, y_um=(10.0, 12.0), x_mm=(1.0, 1.003))
    positions = read_positions_mda(p)
    assert positions.shape == (12, 2)
    np.testing.assert_allclose(positions[:, 0], np.repeat(np.linspace(10e-6, 12e-6, 3), 4))
    np.testing.assert_allclose(positions[:, 1], np.tile(np.linspace(1e-3, 1.003e-3, 4), 3))
    assert mda_parameters(p)["experiment.positions_file"] == str(p)


def test_run_with_metadata_takes_grid_energy_and_measured_positions_from_an_mda_positions_file(tmp_path):
    """``ptychopy run --metadata "... -lf=scan.mda"``: the MDA file gives the grid and the energy the command string
    leaves out, and the run's positions are the file's positioner data (the window corners move as they do)."""
    from ptychopy.cli import main as cli_main
    from reconstruction.io import read_result
    from reconstruction.io.mda import read_positions_mda
    from reconstruction.io.writers import write_scan_files

    off_mm = [0.0, 8e-5, -6e-5, 0.0, 9e-5, 0.0, -8e-5]  # readbacks off the 100 nm grid by up to 90 nm (1.5 px)
    mda = write_mda(tmp_path / "s.mda", rows=5, cols=7, y_um=(0.0, 0.4), x_mm=(1.0, 1.0006), x_off_mm=off_mm,
                    extras=[("mono:ENERGY_MON", "Mono energy", 34, "keV", 8.8)])
    frames = np.random.default_rng(0).poisson(50.0, size=(35, 32, 32)).astype(np.float32)
    write_scan_files(frames, tmp_path, "scan_#06d.h5", dpf=7)
    cmdstr = (f"./ptycho -jobID=mda -fp={tmp_path}/scan_#06d.h5 -dpf=7 -lf={mda} -size=32 -qxy=16,16 -z=1 "
              f"-dx_d=75e-6 -beamSize=2e-7 -i=1 -device=cpu -outputDir={tmp_path / 'out'}")
    assert cli_main(["run", "--metadata", "--quiet", cmdstr]) == 0
    result = read_result(tmp_path / "out" / "mda.h5")
    assert result.parameters.experiment.scan_dims == (5, 7)
    assert result.parameters.experiment.wavelength_m == pytest.approx(HC_KEV_M / 8.8)
    moved_px = result.positions_px - result.positions_px[0]
    expected = read_positions_mda(mda)
    # the default windows sit on whole pixels: each corner within half a pixel of the readback, which the grid
    # alone misses by more
    readback_px = (expected - expected[0]) / result.pixel_size_m
    np.testing.assert_allclose(moved_px, readback_px, atol=0.5 + 1e-9)
    grid_px = readback_px.copy()
    grid_px[:, 1] -= np.tile(np.asarray(off_mm) * 1e-3, 5) / result.pixel_size_m
    assert np.abs(moved_px - grid_px).max() > 0.5


def test_a_three_dimensional_scan_is_refused_naming_the_file(tmp_path):
    from reconstruction.io.mda import read_positions_mda

    header = struct.pack(">f", 1.4) + i32(7) + i32(3) + i32(2) + i32(5) + i32(7) + i32(1) + i32(0)
    outer = scan_bytes(3, 2, 0, [0, 0], [("2idd:energy", "keV", np.array([8.0, 8.1]))], [])
    path = tmp_path / "xanes.mda"
    path.write_bytes(header + outer)
    with pytest.raises(InputDataError, match=r"xanes\.mda: an MDA scan of rank 3 \(2 x 5 x 7\); ptychopy reads "
                                             r"1-D and 2-D scans"):
        mda_parameters(path)
    with pytest.raises(InputDataError, match="rank 3"):
        read_positions_mda(path)

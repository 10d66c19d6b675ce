"""Scan metadata from files written by independent code: h5py following the NXmx (Dectris Eiger) and CXI
(PyNX) layouts by hand, not ptychopy's writers. Each value must come back with its unit converted and its
source named; what a file lacks is left to the user; bad files fail naming file and dataset."""

import hashlib

import h5py
import numpy as np
import pytest

from ptychopy.cli import main as cli_main
from reconstruction.errors import InputDataError
from reconstruction.io import Scan, read_scan
from reconstruction.io.scan_metadata import (
    HC_EV_M,
    check_positions,
    parameter_changes,
    read_scan_metadata,
)


def _nx(group, cls):
    group.attrs["NX_class"] = cls
    return group


def write_nxmx_master(directory, frames, *, wavelength=("incident_wavelength", 1.0, "angstrom")):
    """An Eiger-style master file: NXentry/NXdata with data_000001.. external links to two data files,
    NXinstrument/NXdetector geometry and pixel_mask, NXbeam incident wavelength."""
    halves = (frames[:6], frames[6:])
    for k, part in enumerate(halves, start=1):
        with h5py.File(directory / f"eiger_data_{k:06d}.h5", "w") as f:
            f.create_dataset("/entry/data/data", data=part.astype(np.uint32), chunks=(1, *part.shape[1:]))
    master = directory / "eiger_master.h5"
    with h5py.File(master, "w") as f:
        entry = _nx(f.create_group("entry"), "NXentry")
        data = _nx(entry.create_group("data"), "NXdata")
        for k in (1, 2):
            data[f"data_{k:06d}"] = h5py.ExternalLink(f"eiger_data_{k:06d}.h5", "/entry/data/data")
        inst = _nx(entry.create_group("instrument"), "NXinstrument")
        det = _nx(inst.create_group("detector"), "NXdetector")
        for name, value, units in (("x_pixel_size", 75e-6, "m"), ("y_pixel_size", 75e-6, "m"),
                                   ("detector_distance", 1920.0, "mm"), ("beam_center_x", 24.4, "pixel"),
                                   ("beam_center_y", 19.6, "pixel")):
            det.create_dataset(name, data=value).attrs["units"] = units
        mask = np.zeros(frames.shape[1:], dtype=np.uint32)
        mask[19, 25] = 1  # a dead pixel inside the crop window
        det.create_dataset("pixel_mask", data=mask)
        group, (name, value, units) = ("beam" if wavelength[0].startswith("incident") else "monochromator"), \
            wavelength
        beam = _nx(inst.create_group(group), "NXbeam" if group == "beam" else "NXmonochromator")
        beam.create_dataset(name, data=value).attrs["units"] = units
    return master


def write_pynx_cxi(path, frames, *, n_positions=None):
    """A CXI 1.6 file as PyNX writes it: energy in J (no units attribute), detector distance and pixel size in
    m, a mask, frames in instrument_1/detector_1/data linked from data_1, translations (3, N) in m."""
    n = frames.shape[0] if n_positions is None else n_positions
    with h5py.File(path, "w") as f:
        f.create_dataset("cxi_version", data=160)
        entry = _nx(f.create_group("entry_1"), "NXentry")
        det = entry.create_group("instrument_1/detector_1")
        det.create_dataset("data", data=frames.astype(np.float32))
        det.create_dataset("distance", data=0.5)
        det.create_dataset("x_pixel_size", data=55e-6)
        det.create_dataset("y_pixel_size", data=55e-6)
        det.create_dataset("mask", data=np.zeros(frames.shape[1:], dtype=np.int8))
        entry["instrument_1/source_1/energy"] = 8000 * 1.602176634e-19  # 8 keV in J
        entry.create_group("data_1")["data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
        xy = np.stack([np.arange(n) * 1e-7, np.arange(n) * 2e-7, np.zeros(n)])
        entry.create_dataset("sample_1/geometry_1/translation", data=xy)
    return path


def test_nxmx_master_gives_wavelength_distance_pixel_beam_centre_and_mask(tmp_path, raw_frames, scan_params):
    master = write_nxmx_master(tmp_path, raw_frames)
    before = hashlib.sha256(master.read_bytes()).hexdigest()
    scan = Scan.from_parameters(scan_params("eiger_master.h5"))
    meta = scan.metadata
    assert meta is not None and meta.layout == "NXmx" and meta.frames == 12
    assert meta.wavelength_m.value == pytest.approx(1e-10)
    assert meta.energy_eV.value == pytest.approx(HC_EV_M / 1e-10)
    assert meta.detector_distance_m.value == pytest.approx(1.92)
    assert meta.detector_pixel_m.value == pytest.approx(75e-6)
    assert meta.beam_center_px.value == (20, 24)  # (row, col) = (beam_center_y, beam_center_x), rounded
    assert meta.mask.value == f"{master}::/entry/instrument/detector/pixel_mask"
    assert "dataset /entry/instrument/detector/detector_distance" in meta.detector_distance_m.source
    assert set(meta.left_to_user()) == {"positions", "scan_shape"}
    # the file's values feed a run: its mask marks the dead pixel invalid
    params = scan_params("eiger_master.h5").replace(parameter_changes(meta))
    assert params.experiment.detector_distance_m == pytest.approx(1.92)
    data = read_scan(params)
    assert data.valid_mask is not None and int((~data.valid_mask).sum()) == 1
    assert hashlib.sha256(master.read_bytes()).hexdigest() == before


def test_nxmx_monochromator_energy_in_kev(tmp_path, raw_frames):
    master = write_nxmx_master(tmp_path, raw_frames, wavelength=("energy", 12.4, "keV"))
    meta = read_scan_metadata(master)
    assert meta.energy_eV.value == pytest.approx(12400.0)
    assert meta.wavelength_m.value == pytest.approx(HC_EV_M / 12400.0)
    assert "monochromator/energy" in meta.wavelength_m.source


def test_pynx_cxi_gives_frames_dataset_energy_in_joules_and_positions(tmp_path, raw_frames):
    path = write_pynx_cxi(tmp_path / "pynx.cxi", raw_frames)
    meta = read_scan_metadata(path)
    assert (meta.layout, meta.frames_dataset, meta.frames) == ("CXI", "/entry_1/data_1/data", 12)
    assert meta.energy_eV.value == pytest.approx(8000.0)
    assert meta.wavelength_m.value == pytest.approx(HC_EV_M / 8000.0)
    assert (meta.detector_distance_m.value, meta.detector_pixel_m.value) == (0.5, 55e-6)
    assert meta.positions.value == f"{path}::/entry_1/sample_1/geometry_1/translation"
    assert meta.mask.value == f"{path}::/entry_1/instrument_1/detector_1/mask"
    assert "beam_center_px" in meta.left_to_user()
    check_positions(meta, 12)


def test_user_given_values_override_the_files(tmp_path, raw_frames):
    meta = read_scan_metadata(write_pynx_cxi(tmp_path / "pynx.cxi", raw_frames))
    changes = parameter_changes(meta, {"experiment.detector_distance_m", "experiment.wavelength_m"})
    assert "experiment.detector_distance_m" not in changes and "experiment.wavelength_m" not in changes
    assert changes["experiment.detector_pixel_m"] == 55e-6
    assert changes["data.hdf5_path"] == "/entry_1/data_1/data"


def test_unknown_units_name_file_dataset_and_what_was_expected(tmp_path, raw_frames):
    master = write_nxmx_master(tmp_path, raw_frames, wavelength=("incident_wavelength", 1.0, "furlong"))
    before = hashlib.sha256(master.read_bytes()).hexdigest()
    with pytest.raises(InputDataError, match=r"eiger_master\.h5, dataset /entry/instrument/beam/incident_wavelength"
                                             r": unknown units 'furlong'; expected one of m, .*angstrom"):
        read_scan_metadata(master)
    assert hashlib.sha256(master.read_bytes()).hexdigest() == before


def test_a_non_numeric_distance_and_a_group_are_wrong_layouts(tmp_path, raw_frames):
    path = write_pynx_cxi(tmp_path / "a.cxi", raw_frames)
    with h5py.File(path, "a") as f:
        del f["entry_1/instrument_1/detector_1/distance"]
        f["entry_1/instrument_1/detector_1/distance"] = "far"
    with pytest.raises(InputDataError, match=r"a\.cxi, dataset /entry_1/instrument_1/detector_1/distance: "
                                             r"expected a number"):
        read_scan_metadata(path)
    with h5py.File(path, "a") as f:
        del f["entry_1/instrument_1/detector_1/distance"]
        f.create_group("entry_1/instrument_1/detector_1/distance")
    with pytest.raises(InputDataError, match="distance: is a group; expected a number"):
        read_scan_metadata(path)


def test_position_count_that_differs_from_the_frames_is_an_error(tmp_path, raw_frames):
    meta = read_scan_metadata(write_pynx_cxi(tmp_path / "p.cxi", raw_frames, n_positions=10))
    with pytest.raises(InputDataError, match=r"translation: holds 10 positions but the scan has 12 frames"):
        check_positions(meta, 12)


def test_plain_hdf5_and_tiff_leave_everything_to_the_user(tmp_path, raw_frames):
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["/entry/data/data"] = raw_frames
    meta = read_scan_metadata(tmp_path / "plain.h5")
    assert meta.layout == "NeXus" and meta.frames == 12
    assert set(meta.left_to_user()) == set(meta.fields())
    assert set(read_scan_metadata(tmp_path / "x.tif").left_to_user()) == set(meta.fields())


def test_ptychopy_inspect_prints_each_value_and_where_it_was_read(tmp_path, raw_frames, capsys):
    master = write_nxmx_master(tmp_path, raw_frames)
    assert cli_main(["inspect", f"./ptycho -fp={master} -scanDims=3,4 -size=16 -qxy=20,24"]) == 0
    out = capsys.readouterr().out
    assert "layout: NXmx" in out
    assert "detector_distance_m: 1.92 (file " in out and "positions: left to the user" in out


def test_run_with_metadata_takes_the_files_values_but_keeps_the_command_strings(tmp_path, raw_frames, capsys):
    from reconstruction.io import read_result

    master = write_nxmx_master(tmp_path, raw_frames)
    cmdstr = (f"./ptycho -jobID=nx -fp={master} -scanDims=3,4 -step=1e-7,1e-7 -size=16 -sqrtData -z=2.5 "
              f"-energy=8 -i=1 -device=cpu -outputDir={tmp_path / 'out'}")
    assert cli_main(["run", "--metadata", "--quiet", cmdstr]) == 0
    params = read_result(tmp_path / "out" / "nx.h5").parameters
    assert params.experiment.detector_distance_m == 2.5  # given: kept over the file's 1.92 m
    assert params.experiment.wavelength_m == pytest.approx(1.2398e-9 / 8, rel=1e-4)  # -energy given
    assert params.experiment.detector_pixel_m == pytest.approx(75e-6)  # from the file
    assert params.preprocessing.crop_center_px == (20, 24)
    assert params.preprocessing.bad_pixel_mask.endswith("::/entry/instrument/detector/pixel_mask")


def test_rectangular_detector_pixels_are_refused_naming_the_dataset(tmp_path, raw_frames):
    master = write_nxmx_master(tmp_path, raw_frames)
    with h5py.File(master, "a") as f:
        f["entry/instrument/detector/y_pixel_size"][()] = 55e-6
    with pytest.raises(InputDataError, match=r"dataset /entry/instrument/detector/y_pixel_size: y pixel size "
                                             r"5.5e-05 m differs from the x pixel size 7.5e-05 m"):
        read_scan_metadata(master)


def test_ptychopy_inspect_on_a_cxi_file_without_the_dataset_says_where_it_looked(tmp_path, capsys):
    path = tmp_path / "empty.cxi"
    with h5py.File(path, "w") as f:
        f["entry_1/instrument_1/detector_1/distance"] = 1.0
    assert cli_main(["inspect", f"./ptycho -fp={path} -scanDims=2,2"]) == 1
    err = capsys.readouterr().err
    assert f"file {path}, dataset /entry/data/data" in err and "/entry_1/instrument_1/detector_1/distance" in err


def test_nxmx_file_written_by_nexusformat_reads_with_its_units(tmp_path, raw_frames):
    """nexusformat's own classes (NXroot/NXentry/NXinstrument/NXdetector/NXbeam/NXdata), not h5py by hand."""
    from nexusformat.nexus import NXbeam, NXdata, NXdetector, NXentry, NXfield, NXinstrument, NXroot

    detector = NXdetector(detector_distance=NXfield(850.0, units="mm"), x_pixel_size=NXfield(172.0, units="um"),
                          y_pixel_size=NXfield(172.0, units="um"), beam_center_x=NXfield(21.0, units="pixel"),
                          beam_center_y=NXfield(18.0, units="pixel"),
                          pixel_mask=NXfield(np.zeros((40, 48), dtype=np.uint32)))
    beam = NXbeam(incident_energy=NXfield(6.2, units="keV"))
    root = NXroot(NXentry(NXinstrument(detector, beam), NXdata(NXfield(raw_frames.astype(np.uint32), name="data"))))
    root.save(str(tmp_path / "nexusformat.nxs"))
    meta = read_scan_metadata(tmp_path / "nexusformat.nxs")
    assert (meta.layout, meta.frames_dataset, meta.frames) == ("NXmx", "/entry/data/data", 12)
    assert meta.detector_distance_m.value == pytest.approx(0.85)
    assert meta.detector_pixel_m.value == pytest.approx(172e-6)
    assert meta.energy_eV.value == pytest.approx(6200.0)
    assert meta.beam_center_px.value == (18, 21)
    assert meta.mask.from_file


def test_a_data_file_of_an_eiger_series_takes_the_metadata_of_its_master(tmp_path, raw_frames, scan_params):
    """-fp names the data files (eiger_data_#06d.h5, as the bridge's Eiger trigger does): they record no geometry,
    their master eiger_master.h5 does; the frames stay the data files' /entry/data/data."""
    from reconstruction.io.scan_metadata import apply_file_metadata, master_of

    master = write_nxmx_master(tmp_path, raw_frames)
    assert master_of(tmp_path / "eiger_data_000002.h5") == master
    params = scan_params("eiger_data_#06d.h5", data__first_file_index=1, data__frames_per_file=6)
    new, meta = apply_file_metadata(params, given={"preprocessing.crop_center_px"})
    assert meta.layout == "NXmx" and meta.frames_dataset is None
    assert new.data.hdf5_path == "/entry/data/data"
    assert new.experiment.wavelength_m == pytest.approx(1e-10)
    assert new.experiment.detector_distance_m == pytest.approx(1.92)
    assert new.preprocessing.bad_pixel_mask == f"{master}::/entry/instrument/detector/pixel_mask"
    assert new.preprocessing.crop_center_px == (20, 24)  # given
    assert meta.wavelength_m.source == f"file {master}, dataset /entry/instrument/beam/incident_wavelength"
    data = read_scan(new)
    assert data.intensities.shape == (12, 16, 16) and data.valid_mask is not None and not data.valid_mask.all()


def test_a_data_file_without_a_master_records_nothing(tmp_path, raw_frames):
    from reconstruction.io.scan_metadata import master_of, read_series_metadata

    path = tmp_path / "lone_data_000001.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=raw_frames)
    assert master_of(path) is None
    assert set(read_series_metadata(path).left_to_user()) == set(read_series_metadata(path).fields())

"""Start a job from a scan: the form's defaults come from an HDF5 file inside the data roots."""

import h5py
import numpy as np
import pytest

from webapp.scans.listing import defaults_from_scan, list_scans

pytestmark = pytest.mark.django_db


@pytest.fixture
def scan_file(data_root):
    rows, cols = np.mgrid[0:96, 0:80]
    blob = np.exp(-((rows - 40) ** 2 + (cols - 44) ** 2) / 20.0) * 1000
    frames = np.repeat(blob[None].astype(np.float32), 16, axis=0)
    (data_root / "scan152").mkdir()
    path = data_root / "scan152" / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=frames)
    return path


def test_hdf5_scan_fills_file_frames_grid_and_centre(scan_file):
    found = defaults_from_scan("scan152/data.h5")
    p = found.parameters
    assert p.data.file_pattern == str(scan_file) and not p.data.simulate
    assert p.data.frames_per_file == 16 and p.data.raw_frame_px == (96, 80)
    assert p.experiment.scan_dims == (4, 4)
    assert p.preprocessing.size_px == 64  # the default 256 does not fit an 80 px wide frame
    assert p.preprocessing.crop_center_px == (40, 44)
    assert "16 frames of 96 x 80 px" in found.notes[0]


def test_scans_are_listed_and_outside_paths_refused(scan_file, tmp_path):
    assert [s.label for s in list_scans()] == ["scan152/data.h5"]
    with pytest.raises(ValueError, match="outside the data folders"):
        defaults_from_scan(str(tmp_path / "elsewhere.h5"))
    with pytest.raises(ValueError, match="no such file"):
        defaults_from_scan("scan152/missing.h5")


def test_new_job_page_fills_the_form_from_a_chosen_scan(client, user, scan_file):
    client.force_login(user)
    response = client.get("/jobs/new/", {"scan": str(scan_file)})
    form = response.context["form"]
    assert form.initial["data__file_pattern"] == str(scan_file)
    assert form.initial["preprocessing__crop_center_px"] == "40, 44"
    assert form.initial["experiment__scan_dims"] == "4, 4"
    html = response.content.decode()
    assert "16 frames of 96 x 80 px" in html and "scan152/data.h5" in html
    response = client.get("/jobs/new/", {"scan": "../../etc/passwd"})
    assert "outside the data folders" in response.content.decode()


def test_cxi_and_tiff_scans_are_listed_beside_hdf5(scan_file):
    for name in ("pynx.cxi", "stack.tif", "notes.txt"):
        (scan_file.parent / name).write_bytes(b"")
    assert sorted(s.label for s in list_scans()) == ["scan152/data.h5", "scan152/pynx.cxi", "scan152/stack.tif"]


def _multi_file_scan(folder, files=10, per_file=10, first=1):
    rows, cols = np.mgrid[0:64, 0:64]
    blob = (np.exp(-((rows - 30) ** 2 + (cols - 34) ** 2) / 20.0) * 1000).astype(np.float32)
    folder.mkdir()
    for k in range(first, first + files):
        with h5py.File(folder / f"scan7_data_{k:06d}.h5", "w") as f:
            f.create_dataset("/entry/data/data", data=np.repeat(blob[None], per_file, axis=0))
    return folder


def test_a_file_of_a_multi_file_scan_fills_pattern_first_index_frames_and_grid(data_root):
    folder = _multi_file_scan(data_root / "scan7")
    found = defaults_from_scan(str(folder / "scan7_data_000004.h5"))
    p = found.parameters
    assert p.data.file_pattern == str(folder / "scan7_data_#06d.h5")
    assert (p.data.first_file_index, p.data.frames_per_file, p.experiment.scan_dims) == (1, 10, (10, 10))
    assert p.n_positions == 100
    assert any("10 files scan7_data_#06d.h5 from number 1, 100 frames" in note for note in found.notes)


def test_a_cxi_file_fills_dataset_geometry_positions_and_mask_but_not_the_users_values(data_root):
    from reconstruction import Parameters

    frames = np.ones((6, 64, 64), dtype=np.float32)
    path = data_root / "pynx.cxi"
    with h5py.File(path, "w") as f:
        det = f.create_group("entry_1/instrument_1/detector_1")
        det["data"], det["distance"], det["x_pixel_size"] = frames, 0.5, 55e-6
        det["mask"] = np.zeros((64, 64), dtype=np.int8)
        f["entry_1/instrument_1/source_1/energy"] = 8000 * 1.602176634e-19
        f["entry_1/data_1/data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
        f["entry_1/sample_1/geometry_1/translation"] = np.zeros((3, 6))
    mine = Parameters().replace({"experiment.detector_distance_m": 2.0})
    found = defaults_from_scan("pynx.cxi", mine)
    p = found.parameters
    assert p.data.hdf5_path == "/entry_1/data_1/data" and p.n_positions == 6
    assert p.experiment.detector_distance_m == 2.0 and p.experiment.detector_pixel_m == 55e-6
    assert p.experiment.wavelength_m == pytest.approx(1.5498e-10, rel=1e-4)
    assert p.experiment.positions_file == f"{path}::/entry_1/sample_1/geometry_1/translation"
    assert p.preprocessing.bad_pixel_mask == f"{path}::/entry_1/instrument_1/detector_1/mask"
    notes = " | ".join(found.notes)
    assert "CXI metadata read" in notes and "yours to give: beam_center_px" in notes
    assert "your values kept over the file's: experiment.detector_distance_m" in notes


def test_fill_in_on_a_multi_file_scan_through_the_new_job_page(client, user, data_root):
    folder = _multi_file_scan(data_root / "scan8", first=0)
    client.force_login(user)
    response = client.get("/jobs/new/", {"scan": str(folder / "scan7_data_000000.h5")})
    form = response.context["form"]
    assert form.initial["data__file_pattern"] == str(folder / "scan7_data_#06d.h5")
    assert form.initial["experiment__scan_dims"] == "10, 10"
    assert str(form.initial["data__frames_per_file"]) == "10" and str(form.initial["data__first_file_index"]) == "0"
    assert "100 frames in all" in response.content.decode()


def test_a_numbered_tiff_series_fills_its_pattern_and_frame_count(data_root):
    import tifffile

    folder = data_root / "tiffs"
    folder.mkdir()
    for k in range(4):
        tifffile.imwrite(folder / f"img_{k:04d}.tif", np.ones((3, 64, 64), dtype=np.uint16),
                         photometric="minisblack")
    found = defaults_from_scan("tiffs/img_0002.tif")
    p = found.parameters
    assert p.data.file_pattern == str(folder / "img_#04d.tif")
    assert (p.data.first_file_index, p.data.frames_per_file, p.n_positions) == (0, 3, 12)


def test_an_nxmx_master_fills_geometry_and_the_files_beam_centre(data_root):
    with h5py.File(data_root / "m_data_000001.h5", "w") as f:
        f["/entry/data/data"] = np.ones((9, 64, 64), dtype=np.uint32)
    with h5py.File(data_root / "m_master.h5", "w") as f:
        f["/entry/data/data_000001"] = h5py.ExternalLink("m_data_000001.h5", "/entry/data/data")
        det = f.create_group("/entry/instrument/detector")
        for name, value, units in (("detector_distance", 3.5, "m"), ("x_pixel_size", 75.0, "um"),
                                   ("beam_center_x", 33.0, "pixel"), ("beam_center_y", 30.0, "pixel")):
            det[name] = value
            det[name].attrs["units"] = units
        f["/entry/instrument/beam/incident_wavelength"] = 1.5
        f["/entry/instrument/beam/incident_wavelength"].attrs["units"] = "angstrom"
    found = defaults_from_scan("m_master.h5")
    p = found.parameters
    assert p.n_positions == 9 and p.experiment.scan_dims == (3, 3)
    assert p.experiment.detector_distance_m == 3.5 and p.experiment.detector_pixel_m == pytest.approx(75e-6)
    assert p.experiment.wavelength_m == pytest.approx(1.5e-10)
    assert p.preprocessing.crop_center_px == (30, 33)
    assert any("the beam centre the file records" in note for note in found.notes)


def test_a_file_with_unknown_units_shows_what_and_where_on_the_form(client, user, data_root):
    path = data_root / "odd.nxs"
    with h5py.File(path, "w") as f:
        f["/entry/data/data"] = np.ones((4, 64, 64), dtype=np.float32)
        f["/entry/instrument/detector/detector_distance"] = 2.0
        f["/entry/instrument/detector/detector_distance"].attrs["units"] = "feet"
    client.force_login(user)
    html = client.get("/jobs/new/", {"scan": "odd.nxs"}).content.decode()
    assert "dataset /entry/instrument/detector/detector_distance: unknown units &#x27;feet&#x27;" in html


def test_a_saved_mda_scan_fills_grid_positions_and_wavelength_and_names_its_positioners(data_root):
    """An MDA file written by a beamline's sscan record (tests/reconstruction/io/data/mda) in the data roots."""
    import shutil
    from pathlib import Path

    source = Path(__file__).parents[1] / "reconstruction" / "io" / "data" / "mda" / "29idKappa_mda_0396.mda"
    path = data_root / "mda_0396.mda"
    shutil.copyfile(source, path)
    found = defaults_from_scan("mda_0396.mda")
    p = found.parameters
    assert p.experiment.scan_dims == (9, 11)
    assert p.experiment.positions_file == str(path)
    assert p.experiment.wavelength_m == pytest.approx(12.398419843320026e-10 / 0.855, rel=1e-3)
    notes = "\n".join(found.notes)
    assert "experiment.positions_file" in notes
    assert "29idKappa:m2.VAL (x) [um], measured by 29idKappa:m2.RBV" in notes


def test_fill_in_on_an_eiger_data_file_reads_the_geometry_its_master_records(data_root):
    from tests.reconstruction.io.test_io_scan_metadata import write_nxmx_master

    frames = np.ones((12, 40, 48), dtype=np.float64)
    master = write_nxmx_master(data_root, frames)
    found = defaults_from_scan("eiger_data_000001.h5")
    p = found.parameters
    assert p.data.file_pattern == str(data_root / "eiger_data_#06d.h5") and p.data.hdf5_path == "/entry/data/data"
    assert p.experiment.detector_distance_m == pytest.approx(1.92)
    assert p.preprocessing.crop_center_px == (20, 24)  # the beam centre the master records
    assert p.preprocessing.bad_pixel_mask == f"{master}::/entry/instrument/detector/pixel_mask"
    assert "NXmx metadata read" in " | ".join(found.notes)

"""Start a job from a scan: the form's defaults come from an HDF5 file inside the data roots."""

import h5py
import numpy as np
import pytest

from webapp.jobs.scans import defaults_from_scan, list_scans

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

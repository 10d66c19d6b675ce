"""HDF5 files in the browser (h5web over h5grove): only inside the data roots or the results folder, the login of
downloads (session or token), ``../`` and symlink escapes refused, clear refusals for a missing or non-HDF5 file."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from django.conf import settings
from webapp_helpers import api_auth

pytestmark = pytest.mark.django_db


def _h5(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        group = f.create_group("entry_1/data_1")
        group.attrs["signal"] = "data"
        group.create_dataset("data", data=np.arange(12, dtype=np.float32).reshape(3, 4))
    return path


def test_a_result_file_and_a_raw_scan_are_served_to_a_logged_in_user(client, user, webapp_settings):
    result = _h5(Path(settings.PTYCHOPY_RESULTS_DIR) / "job_1" / "result.h5")
    scan = _h5(webapp_settings / "scan_001.h5")
    client.force_login(user)
    for path in (result, scan):
        meta = client.get("/files/h5grove/meta", {"file": str(path), "path": "/entry_1/data_1"})
        assert meta.status_code == 200, meta.content
        assert [c["name"] for c in meta.json()["children"]] == ["data"]
        attrs = client.get("/files/h5grove/attr", {"file": str(path), "path": "/entry_1/data_1"})
        assert attrs.json() == {"signal": "data"}
        values = client.get("/files/h5grove/data", {"file": str(path), "path": "/entry_1/data_1/data",
                                                    "selection": "1", "format": "json"})
        assert values.json() == [4.0, 5.0, 6.0, 7.0]
        binary = client.get("/files/h5grove/data", {"file": str(path), "path": "/entry_1/data_1/data",
                                                    "format": "bin"})
        assert np.frombuffer(binary.content, np.float32).tolist() == list(range(12))
    paths = client.get("/files/h5grove/paths", {"file": "scan_001.h5", "path": "/"})  # relative: the first root
    assert "/entry_1/data_1/data" in paths.json()
    page = client.get("/files/view/", {"file": str(result)})
    body = page.content.decode()
    assert page.status_code == 200 and 'data-api="/files/h5grove"' in body and f'data-file="{result}"' in body
    assert "vendor/h5web/viewer.js" in body and "vendor/h5web/viewer.css" in body
    missing_entity = client.get("/files/h5grove/meta", {"file": str(result), "path": "/nothing"})
    assert missing_entity.status_code == 404 and "nothing" in missing_entity.json()["message"]


def test_files_outside_the_roots_traversal_and_symlinks_out_are_refused(client, user, webapp_settings, tmp_path):
    outside = _h5(tmp_path / "elsewhere" / "secret.h5")
    client.force_login(user)
    root = webapp_settings
    (root / "link.h5").symlink_to(outside)
    (root / "notes.h5").write_text("not hdf5")
    cases = [
        (str(outside), 403, "is outside the data folders"),
        (f"{root}/../elsewhere/secret.h5", 403, "is outside the data folders"),
        ("../elsewhere/secret.h5", 403, "is outside the data folders"),
        (str(root / "link.h5"), 403, "(a symlink to"),
        (str(root / "absent.h5"), 404, "no such file"),
        (str(root / "notes.h5"), 400, "is not an HDF5 file"),
        ("", 400, "name a file"),
    ]
    for raw, status, words in cases:
        for url in ("/files/h5grove/meta", "/files/h5grove/data"):
            response = client.get(url, {"file": raw, "path": "/"})
            assert response.status_code == status and words in response.json()["message"], (raw, response.content)
        page = client.get("/files/view/", {"file": raw})
        assert page.status_code == status and words in page.content.decode()
    assert os.path.exists(outside)


def test_the_login_of_downloads_a_session_or_a_token(client, token, webapp_settings):
    scan = _h5(webapp_settings / "scan.h5")
    anonymous = client.get("/files/h5grove/meta", {"file": str(scan), "path": "/"})
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    assert client.get("/files/view/", {"file": str(scan)}).status_code == 302
    assert client.get("/files/h5grove/meta", {"file": str(scan), "path": "/"}, **api_auth(token)).status_code == 200
    assert client.get("/files/h5grove/meta", {"file": str(scan)}, **api_auth("0" * 64)).status_code == 401

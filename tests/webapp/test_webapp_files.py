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


def test_external_links_out_of_the_roots_are_refused_and_links_inside_are_followed(client, user, webapp_settings,
                                                                                  tmp_path):
    """h5py follows external links, so a file inside the roots could show any HDF5 file of the server."""
    outside = _h5(tmp_path / "elsewhere" / "secret.h5")
    inside = _h5(webapp_settings / "raw" / "frames.h5")
    client.force_login(user)
    leaking = webapp_settings / "leaking.h5"
    with h5py.File(leaking, "w") as f:
        f["entry_1/secret"] = h5py.ExternalLink(str(outside), "/entry_1")
    chained = webapp_settings / "chained.h5"
    with h5py.File(chained, "w") as f:
        f["hop"] = h5py.ExternalLink("leaking.h5", "/")  # relative, beside it, and that one leaks
    dangling = webapp_settings / "dangling.h5"
    with h5py.File(dangling, "w") as f:
        f["gone"] = h5py.ExternalLink("absent.h5", "/")
    for path, words in ((leaking, "/entry_1/secret -> "), (chained, "leads outside the data folders"),
                        (dangling, "leads to no file beside it")):
        for url in ("/files/h5grove/meta", "/files/h5grove/data", "/files/h5grove/paths"):
            response = client.get(url, {"file": str(path), "path": "/"})
            assert response.status_code == 403 and words in response.json()["message"], (path, response.content)
        assert client.get("/files/view/", {"file": str(path)}).status_code == 403
    moved_away = webapp_settings / "moved_away.h5"  # a result whose raw file is gone: its absolute link dangles
    with h5py.File(moved_away, "w") as f:
        f["raw"] = h5py.ExternalLink(str(webapp_settings / "archived" / "scan.h5"), "/")
        f["x"] = np.ones(3, np.float32)
    assert client.get("/files/h5grove/meta", {"file": str(moved_away), "path": "/"}).status_code == 200
    # HDF5 opens a missing absolute target's name beside the file instead: a symlink there that leaves is refused
    (webapp_settings / "scan.h5").symlink_to(outside)
    fallback = client.get("/files/h5grove/meta", {"file": str(moved_away), "path": "/"})
    assert fallback.status_code == 403 and "missing, so HDF5 reads" in fallback.json()["message"], fallback.content
    master = webapp_settings / "raw" / "master.h5"
    with h5py.File(master, "w") as f:
        f["entry/data"] = h5py.ExternalLink("frames.h5", "/entry_1/data_1")
    values = client.get("/files/h5grove/data", {"file": str(master), "path": "/entry/data/data", "selection": "2",
                                                "format": "json"})
    assert values.status_code == 200 and values.json() == [8.0, 9.0, 10.0, 11.0]
    assert inside.exists() and outside.exists()


def test_a_data_request_larger_than_the_limit_is_refused_and_a_slice_of_it_is_served(client, user, webapp_settings,
                                                                                   monkeypatch):
    from webapp.scans import h5grove_views

    scan = webapp_settings / "big.h5"
    with h5py.File(scan, "w") as f:
        f.create_dataset("frames", shape=(10, 64, 64), dtype=np.float32, fillvalue=1.5)
    monkeypatch.setattr(h5grove_views, "MAX_DATA_BYTES", 5 * 64 * 64 * 4)  # five frames
    client.force_login(user)
    whole = client.get("/files/h5grove/data", {"file": str(scan), "path": "/frames", "format": "bin"})
    assert whole.status_code == 413 and "ask for a slice" in whole.json()["message"], whole.content
    six = client.get("/files/h5grove/data", {"file": str(scan), "path": "/frames", "selection": "0:6"})
    assert six.status_code == 413
    frame = client.get("/files/h5grove/data", {"file": str(scan), "path": "/frames", "selection": "3,:,:",
                                               "format": "bin"})
    assert frame.status_code == 200 and np.frombuffer(frame.content, np.float32).shape == (64 * 64,)
    five = client.get("/files/h5grove/data", {"file": str(scan), "path": "/frames", "selection": "5:10:1",
                                              "format": "bin"})
    assert five.status_code == 200 and len(five.content) == 5 * 64 * 64 * 4
    bad = client.get("/files/h5grove/data", {"file": str(scan), "path": "/frames", "selection": "x"})
    assert bad.status_code == 400


def test_raw_external_storage_and_virtual_datasets_outside_the_roots_are_refused(client, user, webapp_settings,
                                                                                 tmp_path):
    """Besides external links, HDF5 reads a dataset's values from other files in two ways h5py follows silently:
    external raw storage (any file's bytes, e.g. the server's secret key) and a virtual dataset's sources. A file
    inside the roots must not reach outside through either; inside the roots both are served."""
    secret = tmp_path / "elsewhere" / "secret_key"
    secret.parent.mkdir()
    secret.write_bytes(b"TOPSECRET" * 4)
    outside = _h5(tmp_path / "elsewhere" / "other.h5")
    raw_inside = webapp_settings / "frames.raw"
    raw_inside.write_bytes(np.arange(6, dtype=np.float32).tobytes())
    fifo = webapp_settings / "pipe.raw"
    os.mkfifo(fifo)
    client.force_login(user)

    def external(name: str, target: str, size: int) -> Path:
        path = webapp_settings / name
        with h5py.File(path, "w") as f:
            f.create_dataset("values", shape=(size,), dtype="u1", external=[(target, 0, size)])
        return path

    def virtual(name: str, source: str) -> Path:
        layout = h5py.VirtualLayout(shape=(3, 4), dtype="f4")
        layout[:] = h5py.VirtualSource(source, "/entry_1/data_1/data", shape=(3, 4))
        path = webapp_settings / name
        with h5py.File(path, "w") as f:
            f.create_virtual_dataset("values", layout)
        return path

    refused = [
        (external("leak_raw.h5", str(secret), 36), "/values stores its values in "),
        (external("relative_raw.h5", "secret_key", 36), "which HDF5 would look for in the server's working folder"),
        (external("fifo_raw.h5", str(fifo), 4), "is not a regular file"),
        (virtual("leak_vds.h5", str(outside)), "/values takes values from "),
        (virtual("relative_vds.h5", "absent.h5"), "leads to no file beside it"),
    ]
    for path, words in refused:
        for url in ("/files/h5grove/meta", "/files/h5grove/data"):
            response = client.get(url, {"file": str(path), "path": "/values", "format": "bin"})
            assert response.status_code == 403 and words in response.json()["message"], (path, response.content)
            assert b"TOPSECRET" not in response.content
    with h5py.File(webapp_settings / "ok_raw.h5", "w") as f:
        f.create_dataset("values", shape=(6,), dtype="f4", external=[(str(raw_inside), 0, 24)])
    _h5(webapp_settings / "source.h5")
    virtual("ok_vds.h5", "source.h5")
    raw = client.get("/files/h5grove/data", {"file": str(webapp_settings / "ok_raw.h5"), "path": "/values",
                                             "format": "json"})
    assert raw.status_code == 200 and raw.json() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], raw.content
    vds = client.get("/files/h5grove/data", {"file": str(webapp_settings / "ok_vds.h5"), "path": "/values",
                                             "selection": "1", "format": "json"})
    assert vds.status_code == 200 and vds.json() == [4.0, 5.0, 6.0, 7.0], vds.content


def test_large_attributes_nul_entity_paths_and_long_names_get_short_refusals(client, user, webapp_settings,
                                                                             monkeypatch):
    """/attr read every attribute whole (a dense 32 MB attribute came back as 16 MB of JSON); an entity path with
    a NUL was a 500 (h5py's RuntimeError); a 100,000-character path came back whole in the 404's message."""
    from webapp.scans import h5grove_views

    scan = webapp_settings / "attrs.h5"
    with h5py.File(scan, "w", libver="latest") as f:
        f.attrs["title"] = "a scan"
        f.attrs["table"] = np.zeros(4096)  # 32 kB: dense attribute storage
    monkeypatch.setattr(h5grove_views, "MAX_ATTR_BYTES", 16 * 1024, raising=False)
    client.force_login(user)
    whole = client.get("/files/h5grove/attr", {"file": str(scan), "path": "/"})
    assert whole.status_code == 413 and "'table'" in whole.json()["message"] and "32 kB" in whole.json()["message"]
    title = client.get("/files/h5grove/attr", {"file": str(scan), "path": "/", "attr_keys": "title"})
    assert title.status_code == 200 and title.json() == {"title": "a scan"}
    for url in ("/files/h5grove/meta", "/files/h5grove/attr", "/files/h5grove/data", "/files/h5grove/paths"):
        nul = client.get(url, {"file": str(scan), "path": "/entry\x00"})
        assert nul.status_code == 400 and "NUL" in nul.json()["message"], (url, nul.content)
        long = client.get(url, {"file": str(scan), "path": "/" + "x" * 100_000})
        assert long.status_code == 404 and len(long.content) < 2000, (url, len(long.content))


def test_variable_length_values_are_measured_as_read_and_refused_over_the_limit(client, user, webapp_settings,
                                                                               monkeypatch):
    """A dataset of variable-length strings counted 8 bytes a value: 200 x 100 kB strings came back as 20 MB."""
    from webapp.scans import h5grove_views

    scan = webapp_settings / "vlen.h5"
    with h5py.File(scan, "w") as f:
        f.create_dataset("strings", data=["x" * 1000] * 200, dtype=h5py.string_dtype())
        arrays = f.create_dataset("arrays", shape=(200,), dtype=h5py.vlen_dtype(np.float64))
        for i in range(200):
            arrays[i] = np.ones(125)  # 1000 bytes each
        f.create_dataset("refs", data=[f.ref] * 3000, dtype=h5py.ref_dtype)
    monkeypatch.setattr(h5grove_views, "MAX_DATA_BYTES", 64 * 1024)
    client.force_login(user)
    for path in ("/strings", "/arrays", "/refs"):
        whole = client.get("/files/h5grove/data", {"file": str(scan), "path": path})
        message = whole.json()["message"]
        assert whole.status_code == 413 and message.startswith(f"{path}: ") and "64.0 kB" in message, whole.content
    some = client.get("/files/h5grove/data", {"file": str(scan), "path": "/strings", "selection": "10:20"})
    assert some.status_code == 200 and some.json() == ["x" * 1000] * 10
    row = client.get("/files/h5grove/data", {"file": str(scan), "path": "/arrays", "selection": "3"})
    assert row.status_code == 200 and row.json() == [1.0] * 125
    pointers = client.get("/files/h5grove/data", {"file": str(scan), "path": "/strings", "format": "bin",
                                                  "selection": "0:2"})
    assert pointers.status_code == 400 and "format=json" in pointers.json()["message"]  # it returned heap addresses


def test_a_refused_variable_length_read_stops_about_one_limit_in():
    """The values are read in blocks and measured: a refusal reads about the limit, not the whole selection."""
    from webapp.scans.h5grove_limits import TooLarge, read_bounded, selection_index

    class Counted:
        def __init__(self, values: np.ndarray) -> None:
            self.values, self.shape, self.read = values, values.shape, 0

        def __getitem__(self, index):
            block = self.values[index]
            self.read += block.size
            return block

    dataset = Counted(np.array([b"y" * 1000] * 10_000, dtype=object))
    with pytest.raises(TooLarge) as refused:
        read_bounded(dataset, selection_index(dataset.shape, None), 20_000)
    assert 20_000 < refused.value.nbytes <= 22_000 and dataset.read <= 22
    assert read_bounded(dataset, selection_index(dataset.shape, "5:9"), 20_000).tolist() == [b"y" * 1000] * 4


def test_the_limit_applies_to_the_bytes_returned_after_dtype_safe_and_json_or_csv_encoding(client, user,
                                                                                         webapp_settings,
                                                                                         monkeypatch):
    """dtype=safe turns float16 into float32 and JSON writes "1.5," for two stored bytes: the stored size let
    twice (and more) the limit through."""
    from webapp.scans import h5grove_views

    scan = webapp_settings / "half.h5"
    with h5py.File(scan, "w") as f:
        f.create_dataset("frames", data=np.full((3, 64, 64), 1.5, np.float16))
    monkeypatch.setattr(h5grove_views, "MAX_DATA_BYTES", 4 * 64 * 64 * 2)  # four float16 frames
    client.force_login(user)
    stored = client.get("/files/h5grove/data", {"file": str(scan), "path": "/frames", "format": "bin"})
    assert stored.status_code == 200 and len(stored.content) == 3 * 64 * 64 * 2
    for query in ({"format": "bin", "dtype": "safe"}, {"format": "json"}, {"format": "csv", "selection": "0"}):
        refused = client.get("/files/h5grove/data", {"file": str(scan), "path": "/frames", **query})
        assert refused.status_code == 413 and refused.json()["message"].startswith("/frames: "), (query,
                                                                                               refused.content)
    one = client.get("/files/h5grove/data", {"file": str(scan), "path": "/frames", "selection": "0",
                                             "format": "bin", "dtype": "safe"})
    assert one.status_code == 200 and np.frombuffer(one.content, np.float32).tolist() == [1.5] * 64 * 64


def test_a_group_lists_its_first_children_and_the_tree_its_first_paths_with_a_flag(client, user, webapp_settings,
                                                                                 monkeypatch):
    """/meta and /paths visited every entry: a group of 100,000 datasets took 49 s (/meta) and 21 s (/paths)."""
    from webapp.scans import h5grove_views

    scan = webapp_settings / "many.h5"
    with h5py.File(scan, "w", track_order=True) as f:
        entries = f.create_group("entries", track_order=True)
        for i in range(50):
            entries.create_dataset(f"d{49 - i:02d}", shape=(1,), dtype="f4")
        f.create_group("few").create_dataset("x", shape=(1,), dtype="f4")
    monkeypatch.setattr(h5grove_views, "MAX_CHILDREN", 10)
    monkeypatch.setattr(h5grove_views, "MAX_PATHS", 10)
    client.force_login(user)
    meta = client.get("/files/h5grove/meta", {"file": str(scan), "path": "/entries"}).json()
    assert [c["name"] for c in meta["children"]] == [f"d{49 - i:02d}" for i in range(10)]  # creation order
    assert meta["children_cut"] is True and meta["children_count"] == 50 and meta["kind"] == "group"
    few = client.get("/files/h5grove/meta", {"file": str(scan), "path": "/few"}).json()
    assert [c["name"] for c in few["children"]] == ["x"] and "children_cut" not in few
    paths = client.get("/files/h5grove/paths", {"file": str(scan), "path": "/"})
    assert paths.json()[:2] == ["/", "/entries"] and len(paths.json()) == 11 and "10" in paths["X-Paths-Cut"]
    whole = client.get("/files/h5grove/paths", {"file": str(scan), "path": "/few"})
    assert whole.json() == ["/few", "/few/x"] and "X-Paths-Cut" not in whole

import errno
import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from reconstruction.errors import InputDataError
from reconstruction.io import ResultWriteError, read_result, write_result
from reconstruction.io import results as results_module

# written by main's writer at 27b8924 from make_result() with run_plan {"implementation": "reference",
# "residency": "resident"}: object in image_1, probe in source_1, cxi_version 150, no units
OLD_RESULT = Path(__file__).parent / "data" / "result_written_by_27b8924.h5"


def test_round_trip_keeps_every_field(tmp_path, make_result):
    result = make_result()
    path = write_result(result, tmp_path / "run7.h5")
    back = read_result(path)
    np.testing.assert_array_equal(back.object, result.object)
    np.testing.assert_array_equal(back.probe, result.probe)
    np.testing.assert_array_equal(back.positions_px, result.positions_px)
    assert back.errors == result.errors and back.iteration_s == result.iteration_s and back.rms == []
    assert (back.algorithm, back.device, back.stopped_early) == ("ePIE", "CPU (NumPy)", None)
    assert back.pixel_size_m == pytest.approx(result.pixel_size_m)
    assert back.parameters == result.parameters
    assert back.inputs == result.inputs


def test_layout_is_cxi_1_6_with_parameters_as_json_and_attributes(tmp_path, make_result):
    result = make_result()
    path = write_result(result, tmp_path / "r.h5")
    with h5py.File(path, "r") as f:
        assert f["cxi_version"][()] == 160
        np.testing.assert_array_equal(f["/entry_1/image_2/data"][()], result.object)
        np.testing.assert_array_equal(f["/entry_1/image_1/data"][()], result.probe)
        np.testing.assert_array_equal(f["/entry_1/instrument_1/source_1/probe"][()], result.probe)
        assert f["/entry_1/sample_1/geometry_1/translation"].shape == (6, 3)
        assert f["/entry_1/instrument_1/source_1/wavelength"][()] == pytest.approx(2.48e-10)
        own = f["/entry_1/ptychopy"]
        assert json.loads(own["parameters_json"][()])["experiment"]["job_id"] == "run7"
        assert own["parameters"].attrs["experiment.job_id"] == "run7"
        assert list(own["parameters"].attrs["experiment.scan_dims"]) == [2, 3]
        assert own.attrs["ptychopy_version"] == results_module.ptychopy_version() != ""
        assert own.attrs["device"] == "CPU (NumPy)"
        assert "-jobID=run7" in f["/entry_1/image_2/process_1/command"][()].decode()
        assert own["inputs"].attrs["dataset"] == "/entry/data/data"
        assert own["errors"].attrs["measure"] == result.error_measure


def test_translations_are_fractional_probe_centres_from_the_object_centre(tmp_path, make_result):
    result = make_result()  # object 40 x 50, probe 16 x 16, corners uniform in [1, 20)
    with h5py.File(write_result(result, tmp_path / "r.h5"), "r") as f:
        xyz = f["/entry_1/sample_1/geometry_1/translation"][()]
    dx = result.pixel_size_m
    row, col = result.positions_px[:, 0], result.positions_px[:, 1]
    np.testing.assert_allclose(xyz[:, 0], (col + 7.5 - 24.5) * dx, rtol=1e-12)
    np.testing.assert_allclose(xyz[:, 1], (row + 7.5 - 19.5) * dx, rtol=1e-12)
    assert np.all(xyz[:, 2] == 0) and np.any(np.abs(xyz[:, :2] / dx % 1) > 0.01)  # fractional, not rounded


def _every_item(f):
    items = []
    f.visititems(lambda name, obj: items.append((name, obj)))
    return items


INDEXES = {"loss_epochs", "cxi_version", "probe_position_indexes"}  # counts, not quantities


def test_every_group_has_an_nx_class_and_every_quantity_units(tmp_path, make_result):
    with h5py.File(write_result(make_result(), tmp_path / "r.h5"), "r") as f:
        items = _every_item(f)
        groups = [name for name, obj in items if isinstance(obj, h5py.Group)]
        numbers = [name for name, obj in items if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "fciu"
                   and name.rsplit("/", 1)[-1] not in INDEXES]
        assert len(groups) > 10 and len(numbers) > 15
        assert [g for g in groups if "NX_class" not in f[g].attrs] == []
        assert [n for n in numbers if "units" not in f[n].attrs] == []
        assert f["/entry_1/instrument_1/source_1/energy"].attrs["units"] == "J"
        assert f["/entry_1/instrument_1/beam_1/incident_energy"][()] == pytest.approx(12398.42 / 2.48, rel=1e-5)
        assert f["/entry_1/instrument_1/beam_1/incident_energy"].attrs["units"] == "eV"
        assert f["/entry_1/data_1/phase"].attrs["units"] == "rad"
        assert f["/entry_1/ptychopy/iteration_s"].attrs["units"] == "s"


def test_raw_data_files_are_kept_as_external_links_and_a_file_list(tmp_path, make_result):
    raw = tmp_path / "scan_000001.h5"
    with h5py.File(raw, "w") as f:
        f["entry/data/data"] = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    result = make_result()
    result.inputs = {"files": [str(raw), str(tmp_path / "gone_000002.h5")], "dataset": "/entry/data/data"}
    with h5py.File(write_result(result, tmp_path / "r.h5"), "r") as f:
        detector = f["/entry_1/instrument_1/detector_1"]
        link = detector.get("data_000001", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and (link.filename, link.path) == (str(raw), "/entry/data/data")
        np.testing.assert_array_equal(detector["data_000001"][()], np.arange(24).reshape(2, 3, 4))
        assert detector.get("data_000002", getlink=True).filename == str(tmp_path / "gone_000002.h5")
        assert [s.decode() for s in f["/entry_1/ptychopy/raw_data_files"][()]] == result.inputs["files"]
    assert read_result(tmp_path / "r.h5").inputs == result.inputs  # a missing raw file does not stop reading


def test_a_result_written_before_cxi_1_6_still_reads(make_result):
    back = read_result(OLD_RESULT)
    fresh = make_result()
    np.testing.assert_array_equal(back.object, fresh.object)
    np.testing.assert_array_equal(back.probe, fresh.probe)
    np.testing.assert_array_equal(back.positions_px, fresh.positions_px)
    assert back.errors == fresh.errors and back.parameters == fresh.parameters
    assert back.run_plan == {"implementation": "reference", "residency": "resident"}


@pytest.mark.parametrize("make_file,expected", [
    (lambda p: p.write_text("x,y\n1,2\n"), "is not an HDF5 file"),
    (lambda p: h5py.File(p, "w").create_dataset("entry/data/data", data=np.zeros((2, 3))),
     r"not a ptychopy result: it has no /entry_1/ptychopy group \(its top level holds entry\)"),
])
def test_a_file_that_is_not_a_result_says_what_it_is(tmp_path, make_file, expected):
    path = tmp_path / "other.h5"
    make_file(path)
    with pytest.raises(InputDataError, match=expected) as info:
        read_result(path)
    assert str(path) in str(info.value) and "synchronously" not in str(info.value)


def test_a_dm_result_file_says_its_error_is_sampled_on_a_rotating_eighth(tmp_path, make_result):
    result = make_result()
    result.algorithm = "DM"
    with h5py.File(write_result(result, tmp_path / "dm.h5"), "r") as f:
        measure = f["/entry_1/ptychopy/errors"].attrs["measure"]
    assert "rotating 1/8 of the positions" in measure and measure == result.error_measure


def test_existing_file_is_an_error_and_left_alone(tmp_path, make_result):
    target = tmp_path / "r.h5"
    target.write_bytes(b"precious")
    with pytest.raises(ResultWriteError, match=r"r\.h5 already exists"):
        write_result(make_result(), target)
    assert target.read_bytes() == b"precious"
    write_result(make_result(), target, overwrite=True)
    assert read_result(target).algorithm == "ePIE"


def _failing_fill(code: int, text: str):
    def fill(f, result, version):
        f.create_dataset("partial", data=np.zeros(10))
        raise OSError(code, text)
    return fill


@pytest.mark.parametrize("code,text,reason", [
    (errno.ENOSPC, "No space left on device", r"about \d+ bytes needed.*no space left"),
    (errno.EROFS, "Read-only file system", "the directory is not writable"),
    (errno.EACCES, "Permission denied", "the directory is not writable"),
])
def test_write_failure_is_clear_keeps_result_and_leaves_no_file(tmp_path, monkeypatch, make_result, code, text,
                                                                reason):
    result = make_result()
    before = result.object.copy()
    monkeypatch.setattr(results_module, "fill", _failing_fill(code, text))
    with pytest.raises(ResultWriteError, match=rf"r\.h5: {reason}.*the partial file was removed.*still in memory"
                       ) as info:
        write_result(result, tmp_path / "r.h5")
    assert info.value.path == tmp_path / "r.h5"
    assert list(tmp_path.iterdir()) == []  # neither the final name nor the temporary file
    np.testing.assert_array_equal(result.object, before)


def test_fallback_directory_receives_the_result_with_a_warning(tmp_path, monkeypatch, make_result):
    real_fill = results_module.fill
    primary = tmp_path / "primary"
    primary.mkdir()
    calls = []

    def fill(f, result, version):
        calls.append(version)
        if len(calls) == 1:  # the write meant for the primary directory
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fill(f, result, version)

    monkeypatch.setattr(results_module, "fill", fill)
    (tmp_path / "spare").mkdir()
    (tmp_path / "spare" / "r.h5").write_bytes(b"older")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        saved = write_result(make_result(), primary / "r.h5", fallback_dir=tmp_path / "spare")
    assert saved == tmp_path / "spare" / "r-1.h5"
    assert "saved the result to" in str(caught[0].message)
    assert read_result(saved).errors == [0.5, 0.25, 0.125]


def test_directory_that_cannot_be_created_is_a_clear_error(tmp_path, make_result):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ResultWriteError, match=r"cannot write result file .*file/sub/r\.h5: cannot create"):
        write_result(make_result(), blocker / "sub" / "r.h5")


def test_result_without_parameters_round_trips(tmp_path, make_result):
    result = make_result()
    result.parameters = None
    back = read_result(write_result(result, tmp_path / "r.h5"))
    assert back.parameters is None and back.probe.shape == (2, 16, 16)


def test_the_run_plan_is_stored_as_json_and_attributes_and_read_back(tmp_path, make_result, tiny_plan):
    result = make_result()
    result.run_plan = tiny_plan.to_dict()
    path = write_result(result, tmp_path / "planned.h5")
    with h5py.File(path, "r") as f:
        group = f["/entry_1/ptychopy/run_plan"]
        assert group.attrs["implementation"] == "reference" and group.attrs["residency"] == "resident"
        assert group.attrs["implementation_reason"] == "the fast LSQML does not implement the RMS metric (-RMS)"
        assert not group.attrs["split"] and list(group.attrs["devices"]) == []
    assert read_result(path).run_plan == result.run_plan
    assert read_result(write_result(make_result(), tmp_path / "unplanned.h5")).run_plan is None


@pytest.fixture
def tiny_plan():
    from reconstruction.engines import EngineSettings
    from reconstruction.run_plan import DataSizes, plan_run

    return plan_run("LSQML", EngineSettings(compute_rms=True), DataSizes(6, 16, (40, 40)), backend="gpu",
                    free_bytes=2**30)


def test_an_hdf5_runtime_error_mid_write_leaves_no_hidden_temporary_file(tmp_path, monkeypatch, make_result):
    def fill(f, result, version):
        f.create_dataset("half", data=np.zeros(1000))
        raise RuntimeError("Can't write data (file write failed: errno = 28, error message = 'No space left')")

    monkeypatch.setattr(results_module, "fill", fill)
    with pytest.raises(ResultWriteError, match=r"disk full writing result file .*r\.h5: about \d+ bytes needed"):
        write_result(make_result(), tmp_path / "r.h5")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # h5py frees ids of the failed file
def test_a_real_full_disk_gives_a_clear_error_and_no_debris_then_a_retry_succeeds(make_result):
    """A 256 KiB tmpfs (root; the nearest equivalent elsewhere is the ENOSPC test above)."""
    from tests.support.tmpfs import TmpfsUnavailable, fill, small_tmpfs

    try:
        with small_tmpfs(256 * 1024) as disk:
            filler = fill(disk, leave_bytes=8 * 1024)
            result = make_result()
            with pytest.raises(ResultWriteError, match=r"disk full writing result file .*r\.h5: about \d+ bytes"):
                write_result(result, disk / "r.h5")
            assert sorted(p.name for p in disk.iterdir()) == ["filler.bin"]  # no .r.h5.*.tmp left
            filler.unlink()  # space is back: the same write succeeds
            assert read_result(write_result(result, disk / "r.h5")).errors == result.errors
    except TmpfsUnavailable as exc:
        pytest.skip(f"no tmpfs here ({exc}); the ENOSPC tests above stand in")

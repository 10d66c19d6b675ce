"""The bridge takes what a completed scan's data file records for every parameter its configuration does not give.

Driven by hand (worker_rig: fake clock, real journal and state, the recording submitter); the same over real
Channel Access is ``test_bridge_ca.py::test_the_data_files_geometry_fills_what_the_configuration_leaves_open``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest
from bridge_harness import records
from recording_submitter import RecordingSubmitter
from worker_rig import GEOM, Killed, LosesAnswer, Rig

from epics_bridge import journal as jr
from epics_bridge.simdata import write_scan_files

MASK = "/entry/instrument/detector/pixel_mask"


def test_the_files_geometry_is_used_and_the_configurations_values_win(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)), template="-size=16 -qxy=7,9 -fs=1 -i=2")
    files = write_scan_files(tmp_path, "scan7", GEOM, nxmx=True)
    rig.scan_ends()
    rig.run(2.0)
    (sub,) = records(rec)
    e, p = sub["params"]["experiment"], sub["params"]["preprocessing"]
    assert e["wavelength_m"] == pytest.approx(GEOM.wavelength_m, rel=1e-12)
    assert e["detector_distance_m"] == pytest.approx(GEOM.detector_distance_m)
    assert e["detector_pixel_m"] == pytest.approx(GEOM.detector_pixel_m)
    assert p["bad_pixel_mask"] == f"{files[0]}::{MASK}"
    assert p["crop_center_px"] == [7, 9]  # the template's, not the file's (8, 8)
    assert e["scan_dims"] == [GEOM.rows, GEOM.cols]  # the metadata PVs'
    prov = sub["scan"]["provenance"]
    assert prov["experiment.wavelength_m"]["source"] == "file"
    assert prov["experiment.wavelength_m"]["note"] == (f"file {files[0]}, dataset "
                                                       f"/entry/instrument/beam/incident_wavelength")
    assert prov["preprocessing.bad_pixel_mask"]["source"] == "file"
    assert prov["preprocessing.crop_center_px"]["source"] == "template"
    assert prov["experiment.scan_dims"]["source"] == "pv"
    (logged,) = rig.journal.events("file_metadata")
    assert logged["dedup_key"] == sub["dedup_key"]
    assert "preprocessing.crop_center_px kept" in logged["message"]


def test_files_without_metadata_leave_the_parameters_as_configured(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))
    write_scan_files(tmp_path, "scan7", GEOM)
    rig.scan_ends()
    rig.run(2.0)
    (sub,) = records(rec)
    assert sub["params"]["experiment"]["wavelength_m"] == rig.config.template.experiment.wavelength_m
    assert sub["params"]["preprocessing"]["bad_pixel_mask"] == ""
    assert not any(v.get("source") == "file" for v in sub["scan"]["provenance"].values())


def test_a_file_with_unknown_units_fails_the_scan_naming_file_and_dataset(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))
    files = write_scan_files(tmp_path, "scan7", GEOM, nxmx=True)
    with h5py.File(files[0], "r+") as f:
        f["/entry/instrument/detector/detector_distance"].attrs["units"] = "furlong"
    rig.scan_ends()
    rig.run(2.0)
    assert records(rec) == []
    row = rig.journal.get(f"BL:7:{tmp_path}/scan7_data_#06d.h5")
    assert row.status == jr.FAILED
    assert f"file {files[0]}, dataset /entry/instrument/detector/detector_distance" in row.last_error
    assert "unknown units 'furlong'" in row.last_error
    assert rig.state.snapshot()["counts"]["file_failures"] == 1


@pytest.mark.epics
def test_the_data_files_geometry_fills_what_the_configuration_leaves_open(ca, tmp_path: Path) -> None:
    """simioc --nxmx (real caproto IOC) writes the geometry into each data file; the bridge subprocess, configured
    with no energy or distance PV, no -dx_d and its own -qxy, submits the file's wavelength, distance, pixel size
    and mask and keeps its -qxy; the submitted parameters load the scan."""
    from bridge_harness import BridgeProc, SimIoc, bridge_config, wait_for

    from reconstruction import Parameters
    from reconstruction.io import read_scan

    recorder = tmp_path / "submissions.jsonl"
    sim = SimIoc(ca, tmp_path / "data", tmp_path / "simioc.log", extra_args=["--nxmx"])
    sim.first_start()
    cfg = bridge_config(tmp_path, recorder, geometry_pvs=False,
                        template="./ptycho -size=32 -qxy=15,17 -fs=1 -sqrtData -fftShiftData -beamSize=1e-6 -i=3")
    bridge = BridgeProc(ca, cfg, tmp_path / "bridge.log")
    try:
        bridge.start()
        energy_kev, distance_mm = float(sim.get("energy")), float(sim.get("detDistance"))
        number = sim.play()
        wait_for(lambda: records(recorder), 30, "the scan's submission")
        (sub,) = records(recorder)
    except (AssertionError, TimeoutError):
        raise AssertionError(f"{bridge.log()[-4000:]}\n{sim.log()[-2000:]}") from None
    finally:
        bridge.stop()
        sim.stop()
    first = sim.data_dir / f"scan{number}_data_000001.h5"
    e, p = sub["params"]["experiment"], sub["params"]["preprocessing"]
    assert e["wavelength_m"] == pytest.approx(12.398419843320026e-10 / energy_kev, rel=1e-9)
    assert e["detector_distance_m"] == pytest.approx(distance_mm * 1e-3)
    assert e["detector_pixel_m"] == pytest.approx(75e-6)
    assert p["bad_pixel_mask"] == f"{first}::{MASK}"
    assert p["crop_center_px"] == [15, 17]
    prov = sub["scan"]["provenance"]
    assert {k for k, v in prov.items() if v["source"] == "file"} == {
        "experiment.wavelength_m", "experiment.detector_distance_m", "experiment.detector_pixel_m",
        "preprocessing.bad_pixel_mask"}
    data = read_scan(Parameters.from_dict(sub["params"]))
    assert data.intensities.shape == (12, 32, 32)
    assert data.source["bad_pixel_mask"] == f"{first}::{MASK}"  # read (all good: no pixel left out)


def test_the_journal_and_the_dashboard_keep_the_parameters_submitted_with_the_files_metadata(
        tmp_path: Path) -> None:
    from reconstruction import Parameters

    rec = tmp_path / "rec.jsonl"
    lost = LosesAnswer(RecordingSubmitter(str(rec)), lambda _request: True)  # the bridge dies before the answer
    rig = Rig(tmp_path, lost, template="-size=16 -qxy=7,9 -fs=1 -i=2")
    write_scan_files(tmp_path, "scan7", GEOM, nxmx=True)
    rig.scan_ends()
    with pytest.raises(Killed):
        rig.run(2.0)
    (sent,) = records(rec)
    row = rig.journal.get(sent["dedup_key"])
    assert row.status == jr.SUBMITTING
    assert Parameters.from_json(row.params_json).to_dict() == sent["params"]  # the file's wavelength, mask, ...
    assert sent["params"]["experiment"]["wavelength_m"] == pytest.approx(GEOM.wavelength_m, rel=1e-12)
    assert '"source": "file"' in row.provenance_json
    rig.journal.close()
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)), template="-size=16 -qxy=7,9 -fs=1 -i=2")
    rig.run(2.0)  # resumed from the journal: the very request sent before (an idempotent repeat over HTTP)
    first, again = records(rec)
    assert again["dedup_key"] == first["dedup_key"] and again["params"] == first["params"]
    assert again["scan"]["provenance"] == first["scan"]["provenance"]
    row = rig.journal.get(first["dedup_key"])
    assert row.status == jr.SUBMITTED and Parameters.from_json(row.params_json).to_dict() == first["params"]
    queued = rig.state.snapshot()["last_scan_queued"]
    assert queued["parameters"] == Parameters.from_dict(first["params"]).to_cmdstr()
    assert "-lambda=" in queued["parameters"] or "-energy=" in queued["parameters"]

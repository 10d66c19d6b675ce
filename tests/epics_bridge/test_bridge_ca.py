"""The bridge against a real Channel Access server: the simulated IOC on a private loopback port.

Each test runs ``python -m epics_bridge`` as a subprocess and records submissions with the recording submitter.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bridge_harness import records, wait_for

from epics_bridge.caclient import ca_get_with_timestamp

pytestmark = pytest.mark.epics

HC = 12.398419843320026e-10


def quiet_period(bridge, beats: int = 2) -> None:
    """Let the bridge run for a few heartbeats (bounded), so anything it would do late has had time to happen."""
    first = bridge.state().get("heartbeat_at", 0)
    seen = []

    def advanced() -> bool:
        hb = bridge.state().get("heartbeat_at", 0)
        if hb > (seen[-1] if seen else first):
            seen.append(hb)
        return len(seen) >= beats

    wait_for(advanced, 10, "bridge heartbeats")


def test_completed_scan_queues_exactly_one_job(sim, make_bridge, recorder: Path) -> None:
    bridge = make_bridge()
    number = sim.play()
    wait_for(lambda: records(recorder), 20, "the scan's submission")
    quiet_period(bridge)
    recs = records(recorder)
    assert len(recs) == 1
    rec = recs[0]
    pattern = str(sim.data_dir / f"scan{number}_data_#06d.h5")
    assert rec["dedup_key"] == f"TEST:{number}:{pattern}"
    assert rec["source"] == "epics" and rec["label"] == f"TEST scan {number}"
    p = rec["params"]
    assert p["data"]["file_pattern"] == pattern
    assert p["data"]["first_file_index"] == 1 and p["data"]["frames_per_file"] == 4
    assert p["experiment"]["scan_dims"] == [3, 4]
    assert p["experiment"]["job_id"] == f"TEST_scan{number}"
    assert p["preprocessing"]["size_px"] == 32 and p["reconstruction"]["iterations"] == 3  # the template
    assert rec["files_complete"] is True
    state = bridge.state()
    assert state["last_scan_queued"]["dedup_key"] == rec["dedup_key"]
    assert state["last_scan_queued"]["job_id"] == "rec-1"
    assert state["counts"]["queued"] == 1 and state["pending"] == []


def test_aborted_scan_queues_nothing(sim, make_bridge, recorder: Path) -> None:
    bridge = make_bridge()
    sim.put("sim:PointTime", 0.2)  # a 2.4 s scan: the abort lands mid-scan however late this test sees it start
    aborted = sim.play(abort_after_s=0.15)
    wait_for(lambda: bridge.state()["counts"]["ignored"] == 1, 20, "the abort to be classified")
    assert bridge.state()["last_scan_ignored"]["outcome"] == "aborted"
    assert "aborted" in bridge.state()["last_scan_ignored"]["reason"]
    quiet_period(bridge)
    assert records(recorder) == []
    sim.put("sim:PointTime", 0.002)
    completed = sim.play()  # the bridge is live: the next complete scan is queued
    wait_for(lambda: records(recorder), 20, "the next scan's submission")
    assert [r["scan"]["scan_number"] for r in records(recorder)] == [str(completed)]
    assert completed == aborted + 1


def test_file_still_being_written_delays_the_job(sim, make_bridge, recorder: Path) -> None:
    make_bridge()
    late_s = 1.5
    sim.put("sim:LateWrite", late_s)
    sim.play(wait=False)
    wait_for(lambda: sim.get("sim:Status") == "scanning", 10, "the scan to start")
    wait_for(lambda: int(sim.get("scan2.BUSY")) == 0, 20, "scan2.BUSY 1 -> 0")
    # when BUSY dropped by the IOC's own clock (same host): the poll above may notice it late under load
    busy_dropped = ca_get_with_timestamp(sim.prefix + "scan2.BUSY", sim.ca.client_env)[1]
    tmp_files = list(sim.data_dir.glob("*.tmp"))
    assert len(tmp_files) == 1, "the last file must still be being written when BUSY drops"
    while tmp_files[0].exists():  # bounded by the IOC's late write
        assert records(recorder) == [], "submitted while the last file was still being written"
        assert time.time() - busy_dropped < 10
        time.sleep(0.02)
    wait_for(lambda: records(recorder), 20, "the submission once the file is complete")
    rec = records(recorder)[0]
    assert rec["files_complete"] is True
    assert rec["at"] - busy_dropped >= late_s - 0.2
    assert len(records(recorder)) == 1


def test_ioc_restart_is_reported_and_queues_no_duplicate(sim, make_bridge, recorder: Path) -> None:
    bridge = make_bridge()
    first = sim.play()
    wait_for(lambda: records(recorder), 20, "the first submission")
    replays_before = bridge.state()["counts"]["replays"]
    sim.kill()
    wait_for(lambda: not any(p["connected"] for p in bridge.state()["pvs"].values()), 10,
             "the bridge to report every PV disconnected")
    assert bridge.alive()
    sim.start()  # same port, same data directory; the scan number comes back from autosave
    wait_for(lambda: all(p["connected"] for p in bridge.state()["pvs"].values()), 40,
             "the bridge to reconnect every PV")
    state = bridge.state()
    assert all(p["disconnects"] == 1 and p["connects"] == 2 for p in state["pvs"].values())
    wait_for(lambda: bridge.state()["counts"]["replays"] >= replays_before + len(state["pvs"]), 10,
             "the replayed values after the reconnect")
    quiet_period(bridge)
    assert len(records(recorder)) == 1, "a replayed value queued a second job"
    second = sim.play()
    wait_for(lambda: len(records(recorder)) == 2, 20, "a new scan after the reconnect")
    assert [r["scan"]["scan_number"] for r in records(recorder)] == [str(first), str(second)]


def test_ioc_killed_mid_scan_comes_back_partial_and_queues_nothing(sim, make_bridge, recorder: Path) -> None:
    bridge = make_bridge()
    busy = next(pv for pv in bridge.state()["pvs"] if pv.endswith("scan2.BUSY"))
    sim.put("sim:PointTime", 0.5)  # a 6 s scan: killed once the bridge has seen it start
    sim.play(wait=False)
    wait_for(lambda: bridge.state()["pvs"][busy]["value"] == "1", 10, "the bridge to see the scan start")
    sim.kill()
    wait_for(lambda: not bridge.state()["pvs"][busy]["connected"], 10, "the bridge to see the IOC go")
    sim.start()  # back idle: BUSY 0, CPT 0
    wait_for(lambda: bridge.state()["counts"]["ignored"] == 1, 40, "the interrupted scan to be classified")
    state = bridge.state()
    assert state["counts"]["missed_edges"] == 1
    assert state["last_scan_ignored"]["outcome"] == "partial"
    assert state["last_scan_ignored"]["after_disconnect"] and "CPT=0 <" in state["last_scan_ignored"]["reason"]
    quiet_period(bridge)
    assert records(recorder) == []
    completed = sim.play()  # live again: the next complete scan is queued
    wait_for(lambda: records(recorder), 20, "the next scan's submission")
    assert [r["scan"]["scan_number"] for r in records(recorder)] == [str(completed)]


def test_bridge_restart_queues_no_duplicate(sim, make_bridge, recorder: Path) -> None:
    bridge = make_bridge()
    first = sim.play()
    wait_for(lambda: records(recorder), 20, "the first submission")
    # killed once the journal holds the answer (a kill between the web side's answer and the journal is the
    # idempotency key's case, tests/e2e/test_bridge_over_api.py; this recorder has no dedup)
    wait_for(lambda: bridge.state().get("counts", {}).get("queued", 0) >= 1, 20, "the journal to record it")
    bridge.kill()  # a crash, not a clean stop
    again = make_bridge()
    quiet_period(again)
    assert again.state()["counts"]["replays"] >= len(again.state()["pvs"])
    assert len(records(recorder)) == 1, "the restarted bridge queued the scan again"
    second = sim.play()
    wait_for(lambda: len(records(recorder)) == 2, 20, "a new scan after the restart")
    assert [r["scan"]["scan_number"] for r in records(recorder)] == [str(first), str(second)]


def test_metadata_pvs_reach_the_parameters(sim, make_bridge, recorder: Path) -> None:
    make_bridge()
    for pv, value in (("energy", 10.0), ("detDistance", 2500.0), ("scan2.P1SI", 0.6), ("scan1.P1SI", 0.8),
                      ("scan2.NPTS", 2), ("scan1.NPTS", 6)):
        sim.put(pv, value)
    number = sim.play()
    wait_for(lambda: records(recorder), 20, "the submission")
    p = records(recorder)[0]["params"]
    assert p["experiment"]["wavelength_m"] == pytest.approx(HC / 10.0, rel=1e-12)
    assert p["experiment"]["detector_distance_m"] == pytest.approx(2.5)
    assert p["experiment"]["step_m"] == pytest.approx([0.6e-6, 0.8e-6])
    assert p["experiment"]["scan_dims"] == [2, 6]
    assert p["data"]["frames_per_file"] == 6
    assert p["data"]["file_pattern"].endswith(f"scan{number}_data_#06d.h5")
    assert records(recorder)[0]["files_complete"] is True


def test_submission_survives_failures_and_a_bridge_crash(sim, make_bridge, recorder: Path) -> None:
    calls = Path(str(recorder) + ".calls")
    bridge = make_bridge(fail_first=3)
    number = sim.play()
    wait_for(lambda: calls.exists() and int(calls.read_text()) >= 2, 20, "two failed submissions")
    assert bridge.state()["counts"]["submit_failures"] >= 1
    assert records(recorder) == []
    bridge.kill()  # the scan is only in the journal now
    make_bridge(fail_first=3)
    wait_for(lambda: records(recorder), 20, "the journalled submission to be retried until accepted")
    recs = records(recorder)
    assert len(recs) == 1 and recs[0]["call"] == 4
    assert recs[0]["scan"]["scan_number"] == str(number)


def test_areadetector_trigger(sim, make_bridge, recorder: Path) -> None:
    bridge = make_bridge(kind="areadetector")
    sim.put("sim:PointTime", 0.2)  # a 2.4 s capture, aborted well before its end
    sim.play(abort_after_s=0.15)
    wait_for(lambda: bridge.state()["counts"]["ignored"] == 1, 20, "the partial capture to be classified")
    assert bridge.state()["last_scan_ignored"]["outcome"] == "partial"
    sim.put("sim:PointTime", 0.002)
    number = sim.play()
    wait_for(lambda: records(recorder), 20, "the complete capture's submission")
    quiet_period(bridge)
    recs = records(recorder)
    assert len(recs) == 1 and recs[0]["scan"]["scan_number"] == str(number)
    assert recs[0]["files_complete"] is True


def test_filename_trigger(sim, make_bridge, recorder: Path) -> None:
    bridge = make_bridge(kind="filename")
    first, second = sim.play(), sim.play()
    wait_for(lambda: len(records(recorder)) == 2, 20, "one submission per completed file")
    quiet_period(bridge)
    recs = records(recorder)
    assert [r["params"]["data"]["file_pattern"] for r in recs] == [
        str(sim.data_dir / f"scan{n}_data_#06d.h5") for n in (first, second)]


def test_bridge_started_before_the_ioc_waits_and_then_works(ca, tmp_path: Path, recorder: Path) -> None:
    from bridge_harness import BridgeProc, SimIoc, bridge_config

    bridge = BridgeProc(ca, bridge_config(tmp_path, recorder), tmp_path / "bridge.log")
    sim = SimIoc(ca, tmp_path / "data", tmp_path / "simioc.log")
    try:
        bridge.start(wait_connected=False)
        quiet_period(bridge)  # alive, beating, nothing connected
        assert bridge.alive() and not any(p["connected"] for p in bridge.state()["pvs"].values())
        sim.start()
        wait_for(lambda: all(p["connected"] and p["value"] is not None for p in bridge.state()["pvs"].values()), 40,
                 "the late IOC's PVs and their first values")
        number = sim.play()
        wait_for(lambda: records(recorder), 20, "the submission")
        assert [r["scan"]["scan_number"] for r in records(recorder)] == [str(number)]
    finally:
        bridge.stop()
        sim.stop()


def test_simioc_lists_its_pvs(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "epics_bridge.simioc", "--list-pvs", "--prefix", "X:",
                          "--data-dir", str(tmp_path / "never")], capture_output=True, text=True, timeout=60)
    names = out.stdout.split()
    assert out.returncode == 0 and "X:scan2.BUSY" in names and "X:HDF1:Capture_RBV" in names and "X:sim:Go" in names
    assert not (tmp_path / "never").exists()


def test_the_example_configuration_works_against_simioc(ca, tmp_path: Path, recorder: Path) -> None:
    """epics_bridge/examples/beamline.toml as shipped, with only paths, prefix, debounce and submitter overridden
    from the environment (EPICS_BRIDGE__...)."""
    from bridge_harness import REPO, BridgeProc, SimIoc

    sim = SimIoc(ca, tmp_path / "data", tmp_path / "simioc.log", rows=4, cols=5, size_px=64, prefix="demo:")
    sim.first_start()
    state = tmp_path / "example-state.json"
    env = {"EPICS_BRIDGE__BRIDGE__PV_PREFIX": "demo:", "EPICS_BRIDGE__BRIDGE__JOURNAL": str(tmp_path / "j.sqlite3"),
           "EPICS_BRIDGE__BRIDGE__STATE_FILE": str(state), "EPICS_BRIDGE__BRIDGE__DEBOUNCE_S": "0.3",
           "EPICS_BRIDGE__BRIDGE__HEARTBEAT_S": "0.5", "EPICS_BRIDGE__SUBMIT__KIND": "callable",
           "EPICS_BRIDGE__SUBMIT__TARGET": "recording_submitter:RecordingSubmitter",
           "EPICS_BRIDGE__SUBMIT__OPTIONS": f'{{ path = "{recorder}" }}'}
    bridge = BridgeProc(ca, REPO / "epics_bridge/examples/beamline.toml", tmp_path / "bridge.log", env=env,
                        state_path=state)
    try:
        bridge.start()
        number = sim.play()
        wait_for(lambda: records(recorder), 20, "the submission")
        rec = records(recorder)[0]
        assert rec["dedup_key"] == f"SIM:{number}:{sim.data_dir}/scan{number}_data_#06d.h5"
        p = rec["params"]
        assert p["experiment"]["scan_dims"] == [4, 5] and p["data"]["frames_per_file"] == 5
        assert p["preprocessing"]["size_px"] == 64 and rec["files_complete"] is True
        assert p["experiment"]["wavelength_m"] == pytest.approx(HC / 8.8)
    finally:
        bridge.stop()
        sim.stop()

"""state.py: the snapshot, the throttled state file and read_state."""

from __future__ import annotations

from pathlib import Path

from epics_bridge.state import BridgeState, read_state


def test_state_file_follows_connections_at_once_and_values_throttled(tmp_path: Path) -> None:
    path = tmp_path / "s" / "state.json"
    st = BridgeState("BL", ("A", "B"), path, min_write_interval_s=30.0)
    st.pv_connection("A", True)
    assert read_state(path)["pvs"]["A"]["connected"] is True
    st.pv_value("A", "1", live=False)
    st.pv_value("A", "2", live=True)  # within the interval: held back
    assert read_state(path)["pvs"]["A"]["value"] != "2"
    st.flush()  # still within the interval
    assert read_state(path)["pvs"]["A"]["value"] != "2"
    st.min_write_interval_s = 0.0
    st.flush()
    snap = read_state(path)
    assert snap["pvs"]["A"]["value"] == "2" and snap["counts"]["replays"] == 1
    assert snap["last_event"]["kind"] == "value" and snap["pvs"]["B"]["connected"] is False
    st.pv_connection("A", False)
    assert read_state(path)["pvs"]["A"]["disconnects"] == 1


def test_heartbeat_and_queued_scan(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    st = BridgeState("BL", (), path)
    before = read_state(path)
    assert before is None
    st.scan_queued({"dedup_key": "BL:1:f", "job_id": "9"})
    st.heartbeat(running=False)
    snap = read_state(path)
    assert snap["last_scan_queued"]["job_id"] == "9" and snap["counts"]["queued"] == 1
    assert snap["running"] is False and snap["heartbeat_at"] >= snap["started_at"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_read_state_of_garbage_is_none(tmp_path: Path) -> None:
    bad = tmp_path / "state.json"
    bad.write_text("{not json")
    assert read_state(bad) is None

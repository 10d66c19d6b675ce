"""worker.py driven directly (no EPICS): file waits, retries, journal dedup and resume, failures."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from bridge_harness import records
from recording_submitter import RecordingSubmitter
from worker_rig import GEOM, Rig

from epics_bridge import journal as jr
from epics_bridge.simdata import DATASET, write_scan_files
from epics_bridge.submit import SubmitRejected
from epics_bridge.trigger import ConnectionEvent


@pytest.fixture
def rec(tmp_path: Path) -> Path:
    return tmp_path / "rec.jsonl"


def test_job_waits_for_the_files_then_is_submitted_once(tmp_path: Path, rec: Path) -> None:
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))
    rig.scan_ends()
    rig.run(2.0)
    assert records(rec) == []
    assert rig.journal.get(f"BL:7:{tmp_path}/scan7_data_#06d.h5").status == jr.WAITING_FILE
    assert rig.state.snapshot()["pending"] == [dict(key=f"BL:7:{tmp_path}/scan7_data_#06d.h5", stage="file")]
    (task,) = rig.worker.tasks.values()
    assert "does not exist yet" in task.last_reason
    write_scan_files(tmp_path, "scan7", GEOM)
    rig.run(1.5)
    recs = records(rec)
    assert len(recs) == 1 and recs[0]["files_complete"]
    assert recs[0]["params"]["experiment"]["scan_dims"] == [2, 3]
    assert rig.journal.get(recs[0]["dedup_key"]).status == jr.SUBMITTED
    rig.run(3.0)
    assert len(records(rec)) == 1


def test_a_short_file_is_not_complete_and_the_reason_names_file_and_dataset(tmp_path: Path, rec: Path) -> None:
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))
    write_scan_files(tmp_path, "scan7", GEOM)
    last = tmp_path / "scan7_data_000002.h5"
    with h5py.File(last, "w") as f:
        f.create_dataset(DATASET, data=np.zeros((2, 16, 16), np.uint32))  # 2 of 3 frames
    rig.scan_ends()
    rig.run(1.5)
    assert records(rec) == []
    (task,) = rig.worker.tasks.values()
    assert str(last) in task.last_reason and DATASET in task.last_reason and "2 of 3" in task.last_reason


def test_submissions_are_retried_until_accepted(tmp_path: Path, rec: Path) -> None:
    rig = Rig(tmp_path, RecordingSubmitter(str(rec), fail_first=5))
    write_scan_files(tmp_path, "scan7", GEOM)
    rig.scan_ends()
    rig.run(30.0, step_s=0.1)
    recs = records(rec)
    assert len(recs) == 1 and recs[0]["call"] == 6
    row = rig.journal.get(recs[0]["dedup_key"])
    assert row.status == jr.SUBMITTED and row.attempts == 6 and row.job_id == "rec-1"
    assert rig.state.snapshot()["counts"]["submit_failures"] == 5


def test_a_new_worker_on_the_same_journal_resumes_and_never_duplicates(tmp_path: Path, rec: Path) -> None:
    write_scan_files(tmp_path, "scan7", GEOM)
    first = Rig(tmp_path, RecordingSubmitter(str(rec), fail_first=1000))
    first.scan_ends()
    first.run(3.0)
    assert records(rec) == [] and len(first.journal.open_scans()) == 1
    first.journal.close()
    Path(str(rec) + ".calls").unlink()
    second = Rig(tmp_path, RecordingSubmitter(str(rec)))  # resumes the journalled scan
    second.run(1.0)
    assert len(records(rec)) == 1
    second.scan_ends()  # the same scan seen again (e.g. a replay that looked like an edge)
    second.run(3.0)
    assert len(records(rec)) == 1
    assert second.state.snapshot()["counts"]["duplicates"] == 1
    assert [e["kind"] for e in second.journal.events("duplicate")] == ["duplicate"]


def test_files_that_never_complete_fail_the_scan(tmp_path: Path, rec: Path) -> None:
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)), timeout_s=1.0)
    rig.scan_ends()
    rig.run(3.0)
    assert records(rec) == [] and rig.worker.tasks == {}
    (row,) = rig.journal.scans()
    assert row.status == jr.FAILED and "scan7_data_000001.h5" in row.last_error
    assert rig.state.snapshot()["counts"]["file_failures"] == 1


class Refusing:
    def __init__(self) -> None:
        self.calls = 0

    def submit(self, request) -> str:
        self.calls += 1
        raise SubmitRejected("-size: out of range")


def test_a_rejected_job_is_not_retried(tmp_path: Path) -> None:
    sub = Refusing()
    rig = Rig(tmp_path, sub)
    write_scan_files(tmp_path, "scan7", GEOM)
    rig.scan_ends()
    rig.run(10.0)
    assert sub.calls == 1
    (row,) = rig.journal.scans()
    assert row.status == jr.REJECTED and "out of range" in row.last_error


def test_aborted_scan_is_logged_not_journalled(tmp_path: Path, rec: Path) -> None:
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))
    write_scan_files(tmp_path, "scan7", GEOM)
    rig.scan_ends("Scan aborted by operator")
    rig.run(2.0)
    assert records(rec) == [] and rig.journal.scans() == []
    assert [e["kind"] for e in rig.journal.events("aborted")] == ["aborted"]
    assert rig.state.snapshot()["last_scan_ignored"]["outcome"] == "aborted"


def test_a_scan_that_ended_while_disconnected_is_queued_once_its_files_are_complete(tmp_path: Path,
                                                                                    rec: Path) -> None:
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))
    rig.value("BUSY", 1)
    rig.value("SMSG", "Scanning")
    rig.reconnect("BUSY", "SMSG")
    write_scan_files(tmp_path, "scan7", GEOM)  # the scan finished while the bridge could not see it
    rig.value("BUSY", 0)  # the replays after the reconnect
    rig.value("SMSG", "SCAN Complete")
    rig.run(3.0)
    (sub,) = records(rec)
    assert sub["scan"]["scan_number"] == "7" and sub["files_complete"]
    assert rig.state.snapshot()["counts"]["missed_edges"] == 1
    (complete,) = rig.journal.events("complete")
    assert "ended while the bridge was disconnected" in complete["message"]
    rig.reconnect("BUSY", "SMSG")  # another reconnect replays the same idle values: nothing more
    rig.value("BUSY", 0)
    rig.value("SMSG", "SCAN Complete")
    rig.run(3.0)
    assert len(records(rec)) == 1


def test_missing_data_pv_value_is_reported_not_queued(tmp_path: Path, rec: Path) -> None:
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))
    rig.value("NAME", "")
    rig.scan_ends()
    rig.run(2.0)
    assert rig.journal.scans() == []
    assert "NAME" in rig.state.snapshot()["last_error"]["message"]


def test_the_next_scan_starting_inside_the_debounce_does_not_rename_the_finished_one(tmp_path: Path,
                                                                                     rec: Path) -> None:
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))
    write_scan_files(tmp_path, "scan7", GEOM)
    rig.scan_ends()
    rig.clock.t += 0.1  # well inside the 0.5 s debounce the next scan announces itself, then starts
    rig.value("NAME", "scan8")
    rig.value("NUM", 8)
    rig.value("SMSG", "Scanning")
    rig.value("BUSY", 1)
    rig.run(2.0)
    recs = records(rec)
    assert [r["dedup_key"] for r in recs] == [f"BL:7:{tmp_path}/scan7_data_#06d.h5"]
    assert recs[0]["params"]["experiment"]["job_id"] == "BL_scan7"


def test_unreadable_journalled_parameters_fail_that_scan_only(tmp_path: Path, rec: Path) -> None:
    from epics_bridge.journal import Journal

    j = Journal(tmp_path / "j.sqlite3")
    j.add_scan("BL:1:old", "BL", "1", "old", "old", '{"experiment": {"no_such_leaf": 1}}', status=jr.SUBMITTING)
    j.close()
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))  # resumes from the same journal
    row = rig.journal.get("BL:1:old")
    assert row.status == jr.FAILED and "journalled parameters" in row.last_error
    write_scan_files(tmp_path, "scan7", GEOM)
    rig.scan_ends()
    rig.run(2.0)
    assert len(records(rec)) == 1  # the bridge still works


def test_a_bridge_killed_inside_the_debounce_finishes_the_journalled_edge_at_restart(tmp_path: Path,
                                                                                   rec: Path) -> None:
    write_scan_files(tmp_path, "scan7", GEOM)
    first = Rig(tmp_path, RecordingSubmitter(str(rec)))
    first.scan_ends()  # the edge is journalled at once; the debounce never ends: the process "dies" here
    (edge,) = first.journal.open_edges()
    assert edge.edge_pv == "BUSY" and edge.values["SMSG"]["text"] == "SCAN Complete"
    first.journal.close()
    second = Rig(tmp_path, RecordingSubmitter(str(rec)))
    second.run(1.0)
    recs = records(rec)
    assert [r["scan"]["scan_number"] for r in recs] == ["7"]
    assert second.journal.open_edges() == [] and [e.outcome for e in second.journal.edges()] == ["complete"]
    assert [e["kind"] for e in second.journal.events("edge_resumed")] == ["edge_resumed"]


def test_a_scan_that_ended_while_the_bridge_was_down_is_seen_at_restart(tmp_path: Path, rec: Path) -> None:
    write_scan_files(tmp_path, "scan7", GEOM)
    first = Rig(tmp_path, RecordingSubmitter(str(rec)))
    first.value("BUSY", 1)  # the scan runs; the bridge dies before BUSY falls
    first.journal.close()
    second = Rig(tmp_path, RecordingSubmitter(str(rec)))  # its first BUSY (a replay) is 0
    second.run(2.0)
    assert [r["scan"]["scan_number"] for r in records(rec)] == ["7"]
    assert second.state.snapshot()["counts"]["missed_edges"] == 1
    third = Rig(tmp_path, RecordingSubmitter(str(rec)))  # BUSY was 0 when the second stopped: nothing to do
    third.run(2.0)
    assert len(records(rec)) == 1


def test_a_jump_in_scan_numbers_is_reported_as_a_gap(tmp_path: Path, rec: Path) -> None:
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))
    rig.scan_ends()
    rig.run(1.0)
    rig.value("NUM", 10)
    rig.value("NAME", "scan10")
    rig.scan_ends()
    rig.run(1.0)
    (gap,) = rig.state.snapshot()["gaps"]
    assert (gap["first"], gap["last"]) == (8, 9) and "scan(s) 8-9 were not seen" in gap["message"]
    assert [e["kind"] for e in rig.journal.events("gap")] == ["gap"]


def test_a_wrong_dataset_path_fails_at_once_with_the_full_reason(tmp_path: Path, rec: Path) -> None:
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)), template="-size=16 -qxy=8,8 -fs=1 -i=2 "
              "-hdf5path=/entry/instrument/detector/a_dataset_path_that_this_detector_does_not_write")
    write_scan_files(tmp_path, "scan7", GEOM)
    rig.scan_ends()
    rig.run(1.0)  # the file check's timeout is 5 s: a permanent error must not wait for it
    (row,) = rig.journal.scans()
    assert row.status == jr.FAILED and row.last_error.startswith("data can never be complete:")
    assert "no such dataset" in row.last_error and len(row.last_error) > 120
    state = rig.state.snapshot()
    assert state["errors"][0]["message"].endswith(row.last_error) and state["errors"][0]["at"] > 0
    assert state["recent"][0]["status"] == "failed" and state["recent"][0]["reason"] == row.last_error


class StatePublisher(RecordingSubmitter):
    """Records every state the worker publishes (the dashboard's feed) with the rig's clock."""

    def __init__(self, path: str, clock) -> None:  # type: ignore[no-untyped-def]
        super().__init__(path)
        self.clock, self.published = clock, []

    def publish_state(self, state: dict) -> None:
        self.published.append((self.clock.t, state))


def test_a_trigger_pv_down_is_one_warning_naming_it_within_5_s_and_published_at_once(
        tmp_path: Path, rec: Path, caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(tmp_path, None)
    publisher = StatePublisher(str(rec), rig.clock)
    rig.worker.submitter = publisher
    rig.run(6.0)  # heartbeats only: every PV connected
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    down_at = rig.clock.t
    rig.worker.handle(ConnectionEvent("BUSY", False, down_at))
    rig.run(0.6)
    assert any(not st["pvs"]["BUSY"]["connected"] for _, st in publisher.published if _ > down_at), \
        "the disconnect waited for the next heartbeat"
    with caplog.at_level("WARNING", logger="epics_bridge.worker"):
        rig.run(4.4)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("1 of 7 PVs not connected after 3 s") and "trigger BUSY" in warnings[0]
    assert "no scan end can be seen" in warnings[0]
    assert rig.state.snapshot()["errors"][0]["message"] == warnings[0]
    assert rig.state.snapshot()["errors"][0]["at"]


def test_an_unreachable_ioc_is_one_warning_naming_every_pv(tmp_path: Path, rec: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))
    for pv in rig.config.pvs:
        rig.worker.handle(ConnectionEvent(pv, False, rig.clock.t))
    with caplog.at_level("WARNING", logger="epics_bridge.worker"):
        rig.run(5.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("none of 7 PVs connected after 3 s (IOC unreachable?")
    assert all(pv in warnings[0] for pv in rig.config.pvs)
    assert warnings[0].index("trigger BUSY, SMSG") < warnings[0].index("data ")


def test_a_slow_web_side_never_holds_up_the_worker_and_the_latest_state_wins() -> None:
    import threading
    import time

    from epics_bridge.publisher import StatePublisher

    release, taken, published = threading.Event(), threading.Event(), []

    def slow_publish(state: dict) -> None:  # a database that hangs until released
        taken.set()
        release.wait(10)
        published.append(state["n"])

    publisher = StatePublisher(slow_publish)
    publisher.start()
    publisher.offer({"n": 1})
    assert taken.wait(5)
    t0 = time.monotonic()
    for n in (2, 3, 4):
        publisher.offer({"n": n})
    assert time.monotonic() - t0 < 0.05, "offering a state waited for the web side"
    release.set()
    publisher.close(5)
    assert published == [1, 4]


def test_a_dashboard_that_cannot_be_reached_is_one_warning_per_outage_and_its_end_is_logged(caplog) -> None:
    import logging

    from epics_bridge.publisher import StatePublisher

    answers = iter([RuntimeError("connection refused"), RuntimeError("connection refused"), None, None,
                    RuntimeError("server closed the connection")])

    def publish(state: dict) -> None:  # unthreaded: each offer publishes at once
        err = next(answers)
        if err is not None:
            raise err

    publisher = StatePublisher(publish)
    with caplog.at_level(logging.DEBUG, logger="epics_bridge.publisher"):
        for n in range(5):
            publisher.offer({"n": n})
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "epics_bridge.publisher"]
    assert [level for level, _ in lines] == ["WARNING", "DEBUG", "INFO", "WARNING"]
    assert "web dashboard" in lines[0][1] and "connection refused" in lines[0][1]
    assert "server closed the connection" in lines[3][1]


def test_a_resumed_scan_keeps_where_its_parameters_came_from(tmp_path: Path, rec: Path) -> None:
    first = Rig(tmp_path, RecordingSubmitter(str(rec)))
    first.scan_ends()
    first.run(1.0)  # waiting for its files, which are not there yet
    assert records(rec) == [] and len(first.journal.open_scans()) == 1
    first.journal.close()
    write_scan_files(tmp_path, "scan7", GEOM)
    second = Rig(tmp_path, RecordingSubmitter(str(rec)))  # a restarted bridge resumes it
    second.run(1.0)
    (sent,) = records(rec)
    prov = sent["scan"]["provenance"]
    assert prov["experiment.scan_dims"]["source"] == "pv" and prov["experiment.scan_dims"]["pv"] == "ROWS, COLS"
    assert prov["reconstruction.iterations"] == {"source": "template", "value": 2}


def test_a_journal_of_an_older_version_gains_the_provenance_and_mode_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(jr._SCHEMA.replace(",\n    provenance_json TEXT NOT NULL DEFAULT '{}'", "").replace(
        ",\n    mode TEXT NOT NULL DEFAULT 'batch'", ""))
    old.execute("INSERT INTO scans (dedup_key, beamline, scan_number, file_pattern, label, params_json, status,"
                " created_at, updated_at) VALUES ('BL:1:f', 'BL', '1', 'f', 'l', '{}', 'waiting_file', 0, 0)")
    old.commit()
    assert "provenance_json" not in {r[1] for r in old.execute("PRAGMA table_info(scans)")}
    old.close()
    journal = jr.Journal(path)
    (row,) = journal.open_scans()
    assert row.dedup_key == "BL:1:f" and row.provenance_json == "{}" and row.mode == jr.BATCH
    assert journal.add_scan("BL:2:f", "BL", "2", "f", "l", "{}", provenance_json='{"a": {"source": "pv"}}',
                            mode=jr.STREAM)
    assert journal.get("BL:2:f").provenance_json == '{"a": {"source": "pv"}}'
    assert journal.get("BL:2:f").mode == jr.STREAM


def test_a_queued_scan_says_why_it_was_complete_never_partial(tmp_path: Path, rec: Path) -> None:
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))
    rig.scan_ends("SCAN Complete")
    rig.run(1.0)  # classified; its files are not there yet
    (line,) = rig.state.snapshot()["recent"]
    assert line["status"] == "waiting"
    assert line["reason"].startswith("complete: SCAN Complete; waiting for data: "), line["reason"]
    assert "scan7_data_000001.h5" in line["reason"]
    write_scan_files(tmp_path, "scan7", GEOM)
    rig.run(2.0)
    (line,) = rig.state.snapshot()["recent"]
    assert line["status"] == "queued" and line["job_id"] == "rec-1"
    assert line["reason"] == "complete: SCAN Complete"

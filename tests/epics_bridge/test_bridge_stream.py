"""Streaming jobs opened by the bridge at a scan's start (issue 21), driven by hand (no EPICS): the start opens one
streaming job under the key the completion would use, the completion then queues nothing more; a streaming job
the web side refused, or one that failed on the worker before any frame, leaves the completion to queue the batch
job; a start seen only as a replay opens nothing; a submission still failing at the end stays the scan's one
job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bridge_harness import records
from recording_submitter import RecordingSubmitter, WebAppDown
from worker_rig import GEOM, Rig, make_config

from epics_bridge import journal as jr
from epics_bridge.config import ConfigError
from epics_bridge.simdata import write_scan_files
from epics_bridge.submit import SubmitRejected

STREAM = {"enabled": True, "file_pattern": "{path}/{name}_live.h5", "values": {"data.live_finish_iterations": 7}}


class RefusesStreaming(RecordingSubmitter):
    """The web side refuses streaming jobs (e.g. an older server) and takes batch jobs."""

    def submit(self, request: Any) -> str:
        if request.params.data.live_source != "none":
            raise SubmitRejected("-liveSource: not accepted here")
        return super().submit(request)


class AnswersJobState(RecordingSubmitter):
    """Records submissions and answers ``job_state`` with what the test sets (the web side's job row)."""

    state: dict[str, Any] = {"status": "running", "live": {}}

    def job_state(self, job_id: str) -> dict[str, Any]:
        return dict(self.state)


def _start(rig: Rig) -> None:
    rig.value("BUSY", 1)
    rig.run(1.0)


def _end(rig: Rig) -> None:
    rig.clock.t += 1
    rig.value("SMSG", "SCAN Complete")
    rig.value("BUSY", 0)
    rig.run(2.0)


def test_the_start_opens_one_streaming_job_and_the_completion_queues_no_batch_job(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)), stream=STREAM)
    _start(rig)
    (job,) = records(rec)
    key = f"BL:7:{tmp_path}/scan7_data_#06d.h5"  # the completion's key
    assert job["dedup_key"] == key
    assert job["params"]["data"]["live_source"] == "swmr"
    assert job["params"]["data"]["file_pattern"] == f"{tmp_path}/scan7_live.h5"
    assert job["params"]["data"]["live_finish_iterations"] == 7
    assert job["params"]["experiment"]["scan_dims"] == [GEOM.rows, GEOM.cols]
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)
    assert len(records(rec)) == 1
    row = rig.journal.get(key)
    assert row.mode == jr.STREAM and row.status == jr.SUBMITTED and row.job_id == "rec-1"
    assert [e["kind"] for e in rig.journal.events() if e["dedup_key"] == key][-1] == "covered_by_stream"


def test_a_refused_streaming_job_leaves_the_completion_to_queue_the_batch_job_once(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig = Rig(tmp_path, RefusesStreaming(str(rec)), stream=STREAM)
    _start(rig)
    assert records(rec) == [] and rig.journal.scans()[0].status == jr.REJECTED
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)
    (job,) = records(rec)
    assert job["params"]["data"]["live_source"] == "none"
    assert job["params"]["data"]["file_pattern"] == f"{tmp_path}/scan7_data_#06d.h5"
    row = rig.journal.get(job["dedup_key"])
    assert row.mode == jr.BATCH and row.status == jr.SUBMITTED
    rig.scan_ends()  # the same end seen again: nothing more
    rig.run(2.0)
    assert len(records(rec)) == 1


def test_a_streaming_job_still_being_submitted_at_the_end_stays_the_one_job(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig = Rig(tmp_path, RecordingSubmitter(str(rec), fail_first=3), stream=STREAM)
    _start(rig)
    assert records(rec) == []  # the web side is down
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)
    rig.run(10.0, step_s=0.1)
    (job,) = records(rec)
    assert job["params"]["data"]["live_source"] == "swmr"


def test_a_start_seen_only_in_a_replay_opens_no_streaming_job(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)), stream=STREAM)
    rig.reconnect("BUSY")
    rig.value("BUSY", 1)  # the value replayed after the reconnect: a scan is running, its start was not seen
    rig.run(2.0)
    assert records(rec) == []
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)
    (job,) = records(rec)
    assert job["params"]["data"]["live_source"] == "none"


def test_without_stream_enabled_the_start_opens_nothing(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))
    _start(rig)
    assert records(rec) == []


def test_a_bad_stream_section_refuses_the_configuration_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[stream\] file_pattern: a live source reads one file"):
        make_config(tmp_path, stream={"enabled": True, "file_pattern": "{path}/{name}_#06d.h5"})
    with pytest.raises(ConfigError, match=r"\[stream\] values: not valid"):
        make_config(tmp_path, stream={"enabled": True, "values": {"data.live_finish_iterations": -1}})
    with pytest.raises(ConfigError, match=r"\[stream\] unknown key\(s\): enable"):
        make_config(tmp_path, stream={"enable": True})



def test_a_streaming_job_that_failed_before_any_frame_leaves_the_scan_to_a_batch_job(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec))
    rig = Rig(tmp_path, submitter, stream=STREAM)
    _start(rig)
    (stream,) = records(rec)
    submitter.state = {"status": "queued", "live": {}}
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)
    assert len(records(rec)) == 1  # not started yet: asked again later
    submitter.state = {"status": "failed", "message": "LiveSourceError: no file", "live": {"frames_received": 0}}
    rig.run(3.0)
    stream_job, batch = records(rec)
    assert batch["dedup_key"] == stream["dedup_key"] + jr.BATCH_SUFFIX  # the failed job keeps the scan's key
    assert batch["params"]["data"]["live_source"] == "none"
    row = rig.journal.get(stream["dedup_key"])
    assert row.mode == jr.BATCH_AFTER_STREAM and row.status == jr.SUBMITTED and row.job_id == "rec-2"
    rig.run(3.0)
    assert len(records(rec)) == 2


def test_a_streaming_job_that_took_frames_covers_the_scan_even_if_it_failed_later(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec))
    submitter.state = {"status": "failed", "live": {"frames_received": 12}}
    rig = Rig(tmp_path, submitter, stream=STREAM)
    _start(rig)
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)
    rig.run(2.0)
    (job,) = records(rec)
    kinds = [e["kind"] for e in rig.journal.events() if e["dedup_key"] == job["dedup_key"]]
    assert kinds[-1] == "covered_by_stream" and "stream_failed_batch" not in kinds


class DownThenRefusesStreaming(RecordingSubmitter):
    """The web side is down for the streaming job's first two tries, then refuses it; batch jobs are taken."""

    tries = 0

    def submit(self, request: Any) -> str:
        if request.params.data.live_source != "none":
            self.tries += 1
            if self.tries <= 2:
                raise WebAppDown(f"simulated: down (try {self.tries})")
            raise SubmitRejected("-liveSource: not accepted here")
        return super().submit(request)


def test_a_streaming_job_refused_after_its_scan_ended_leaves_the_scan_to_the_batch_job(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig = Rig(tmp_path, DownThenRefusesStreaming(str(rec)), stream=STREAM)
    _start(rig)
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)  # the streaming job is still being submitted (the web side is down)
    rig.run(6.0, step_s=0.1)
    (job,) = records(rec)
    assert job["params"]["data"]["live_source"] == "none" and job["dedup_key"].endswith("_data_#06d.h5")
    row = rig.journal.get(job["dedup_key"])
    assert row.mode == jr.BATCH and row.status == jr.SUBMITTED
    assert "stream_failed_batch" in [e["kind"] for e in rig.journal.events()]

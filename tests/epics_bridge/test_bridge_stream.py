"""Streaming jobs opened by the bridge at a scan's start (issue 21), driven by hand (no EPICS): the start opens one
streaming job under the key the completion would use, the completion then queues nothing more; a streaming job
the web side refused leaves the completion to queue the batch job; a start seen only as a replay opens nothing; a
submission still failing at the end stays the scan's one job. Failover: a streaming job that failed (before any
frame, after frames, after the end was covered) is replaced by exactly one batch job, across bridge restarts at each
step; done, cancelled or deleted it covers the scan for good."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bridge_harness import records, wait_for
from recording_submitter import RecordingSubmitter, WebAppDown
from worker_rig import GEOM, Killed, LosesAnswer, Rig, connect_pvs, make_config, put_value

from epics_bridge import journal as jr
from epics_bridge.config import ConfigError
from epics_bridge.simdata import write_scan_files
from epics_bridge.state import BridgeState
from epics_bridge.submit import SubmitRejected
from epics_bridge.trigger import ValueEvent
from epics_bridge.worker import BridgeWorker

STREAM = {"enabled": True, "file_pattern": "{path}/{name}_live.h5", "values": {"data.live_finish_iterations": 7}}


class AnswersJobState(RecordingSubmitter):
    """Records submissions and answers ``job_state`` with what the test sets (the web side's job row; None: no
    such job), for one job (``jobs``) or any, noting when it was asked (``asked``: the rig's clock, when given)."""

    def __init__(self, path: str, state: dict[str, Any] | None = None, clock: Any = None, **kw: Any):
        super().__init__(path, **kw)
        self.state: dict[str, Any] | None = state if state is not None else {"status": "running", "live": {}}
        self.jobs: dict[str, dict[str, Any] | None] = {}
        self.clock = clock
        self.asked: list[float] = []

    def job_state(self, job_id: str) -> dict[str, Any] | None:
        self.asked.append(self.clock() if self.clock else 0.0)
        state = self.jobs.get(job_id, self.state)
        return None if state is None else dict(state)


class RefusesStreaming(AnswersJobState):
    """The web side refuses streaming jobs (e.g. an older server) and takes batch jobs."""

    def submit(self, request: Any) -> str:
        if request.params.data.live_source != "none":
            raise SubmitRejected("-liveSource: not accepted here")
        return super().submit(request)


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
    rig = Rig(tmp_path, AnswersJobState(str(rec)), stream=STREAM)
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
    row = rig.journal.get(key)  # its job still runs: followed until it ends
    assert row.mode == jr.STREAM and row.status == jr.FOLLOWING and row.job_id == "rec-1"
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
    rig = Rig(tmp_path, AnswersJobState(str(rec), fail_first=3), stream=STREAM)
    _start(rig)
    assert records(rec) == []  # the web side is down
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)
    rig.run(10.0, step_s=0.1)
    (job,) = records(rec)
    assert job["params"]["data"]["live_source"] == "swmr"


def test_a_start_seen_only_in_a_replay_opens_no_streaming_job(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig = Rig(tmp_path, AnswersJobState(str(rec)), stream=STREAM)
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


class DownThenRefusesStreaming(AnswersJobState):
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


# -- failover: a failed streaming job is replaced by one batch job, whenever it fails, across restarts -----------

FAILED_AFTER_FRAMES = {"status": "failed", "message": "LiveSourceError: frame 13 has another shape",
                       "live": {"frames_received": 12}}


def _restart(rig: Rig, submitter: Any) -> Rig:
    """The bridge process ends (its journal as committed) and a new one starts on the same journal."""
    rig.journal.close()
    return Rig(rig.tmp, submitter, stream=STREAM)


def _kinds(rig: Rig, key: str) -> list[str]:
    return [e["kind"] for e in rig.journal.events() if e["dedup_key"] == key]


RUNNING = {"status": "running", "live": {"frames_received": 6}}


def _streamed_and_ended(tmp_path: Path, submitter: Any) -> tuple[Rig, str]:
    """A scan whose streaming job was accepted at its start, ran while it acquired and ended complete; then the
    job's state is the one ``submitter`` was given. The rig and the key."""
    then, submitter.state = submitter.state, RUNNING
    rig = Rig(tmp_path, submitter, stream=STREAM)
    _start(rig)
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)
    submitter.state = then
    return rig, records(submitter.path)[0]["dedup_key"]


def _assert_one_batch_job(rec: Path, key: str) -> None:
    stream, batch = records(rec)
    assert stream["dedup_key"] == key and stream["params"]["data"]["live_source"] == "swmr"
    assert batch["dedup_key"] == key + jr.BATCH_SUFFIX and batch["params"]["data"]["live_source"] == "none"
    assert batch["params"]["data"]["file_pattern"].endswith("scan7_data_#06d.h5") and batch["files_complete"]


def test_a_streaming_job_that_failed_after_taking_frames_is_replaced_by_one_batch_job(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig, key = _streamed_and_ended(tmp_path, AnswersJobState(str(rec), FAILED_AFTER_FRAMES))
    rig.run(3.0)
    _assert_one_batch_job(rec, key)
    (why,) = [e["message"] for e in rig.journal.events("stream_failed_batch")]
    assert "failed after 12 frames (LiveSourceError: frame 13 has another shape)" in why and "#batch" in why
    row = rig.journal.get(key)
    assert row.mode == jr.BATCH_AFTER_STREAM and row.status == jr.SUBMITTED and row.job_id == "rec-2"
    rig.scan_ends()  # the same end seen again
    rig.run(3.0)
    assert len(records(rec)) == 2


@pytest.mark.parametrize("state", [{"status": "done", "live": {"frames_received": 6}},
                                   {"status": "cancelled", "live": {"frames_received": 3}}, None],
                         ids=["done", "cancelled", "deleted"])
def test_a_done_cancelled_or_deleted_streaming_job_covers_the_scan_for_good(tmp_path: Path,
                                                                            state: dict[str, Any] | None) -> None:
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec), {"status": "running", "live": {"frames_received": 2}})
    rig, key = _streamed_and_ended(tmp_path, submitter)
    submitter.state = state
    rig.run(2.0)
    assert rig.journal.get(key).status == jr.SUBMITTED and key not in rig.worker.tasks
    assert _kinds(rig, key)[-2:] == ["covered_by_stream", "stream_ended"]
    asked = len(submitter.asked)
    submitter.state = FAILED_AFTER_FRAMES  # not asked any more (a final state does not change)
    rig = _restart(rig, submitter)
    rig.run(3.0)
    assert len(records(rec)) == 1 and len(submitter.asked) == asked


def test_a_streaming_job_that_fails_after_its_scan_was_covered_is_replaced_by_one_batch_job(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec), {"status": "running", "live": {"frames_received": 6}})
    rig = Rig(tmp_path, submitter, stream=STREAM)
    submitter.clock = rig.clock
    _start(rig)
    write_scan_files(tmp_path, "scan7", GEOM)
    (stream,) = records(rec)
    key = stream["dedup_key"]
    assert rig.journal.get(key).status == jr.WATCHING
    rig.clock.t += 1
    rig.value("SMSG", "SCAN Complete")
    rig.value("BUSY", 0)
    while rig.journal.get(key).status == jr.WATCHING:  # up to the tick that classifies the end
        before = len(submitter.asked)
        rig.run(0.05)
    rig.run(20.0)  # finishing: covered, followed with back-off
    assert rig.journal.get(key).status == jr.FOLLOWING
    asked = submitter.asked[before:]  # the end's first question came in its tick
    gaps = [round(b - a, 2) for a, b in zip(asked, asked[1:], strict=False)]
    fc = rig.config.file_check
    step = 0.06  # the rig ticks every 0.05 s
    assert gaps[:3] == pytest.approx([fc.initial_backoff_s, 2 * fc.initial_backoff_s, fc.max_backoff_s], abs=step)
    assert max(gaps) <= fc.max_backoff_s + step and len(gaps) < 22 / fc.max_backoff_s
    submitter.state = FAILED_AFTER_FRAMES
    rig.run(3.0)
    _assert_one_batch_job(rec, key)
    assert _kinds(rig, key).count("stream_failed_batch") == 1 and "stream_ended" not in _kinds(rig, key)


def test_a_bridge_restarted_while_following_still_replaces_a_failed_streaming_job_once(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec), {"status": "queued", "live": {}})
    rig, key = _streamed_and_ended(tmp_path, submitter)
    assert rig.journal.get(key).status == jr.FOLLOWING
    rig = _restart(rig, submitter)  # the covered end is in the journal, not in a task of the old process
    assert rig.worker.tasks[key].stage == "follow"
    rig.run(2.0)
    assert len(records(rec)) == 1
    submitter.state = FAILED_AFTER_FRAMES
    rig.run(3.0)
    _assert_one_batch_job(rec, key)
    rig = _restart(rig, submitter)
    rig.run(3.0)
    assert len(records(rec)) == 2


class BatchDown(AnswersJobState):
    """Takes streaming jobs; the web side is down for batch jobs."""

    def submit(self, request: Any) -> str:
        if request.params.data.live_source == "none":
            raise WebAppDown("simulated: down for the batch job")
        return super().submit(request)


def test_a_bridge_restarted_before_the_batch_job_was_accepted_submits_it_once(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig, key = _streamed_and_ended(tmp_path, BatchDown(str(rec), FAILED_AFTER_FRAMES))
    rig.run(3.0)
    row = rig.journal.get(key)
    assert row.mode == jr.BATCH_AFTER_STREAM and row.status == jr.SUBMITTING and len(records(rec)) == 1
    rig = _restart(rig, AnswersJobState(str(rec), FAILED_AFTER_FRAMES))
    rig.run(3.0)
    _assert_one_batch_job(rec, key)


def test_a_bridge_restarted_while_the_streaming_job_was_still_submitted_at_the_end_replaces_it_once(
        tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig = Rig(tmp_path, AnswersJobState(str(rec), fail_first=1000), stream=STREAM)
    _start(rig)
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)  # the web side is down: the end is kept with the streaming row
    row = rig.journal.scans()[0]
    assert row.status == jr.SUBMITTING and row.end_json and records(rec) == []
    submitter = AnswersJobState(str(rec), {"status": "running", "live": {"frames_received": 6}})
    rig = _restart(rig, submitter)
    rig.run(3.0)
    assert len(records(rec)) == 1 and rig.journal.get(row.dedup_key).status == jr.FOLLOWING
    submitter.state = FAILED_AFTER_FRAMES
    rig.run(3.0)
    _assert_one_batch_job(rec, row.dedup_key)


def test_a_bridge_killed_between_the_refusal_and_the_batch_job_queues_it_at_its_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = tmp_path / "rec.jsonl"
    rig = Rig(tmp_path, DownThenRefusesStreaming(str(rec)), stream=STREAM)
    _start(rig)
    write_scan_files(tmp_path, "scan7", GEOM)
    to_batch = rig.journal.stream_to_batch

    def killed(key: str, *args: Any, **kw: Any) -> bool:  # right after the refusal was journalled
        if rig.journal.get(key).status == jr.REJECTED:
            raise Killed()
        return to_batch(key, *args, **kw)

    monkeypatch.setattr(rig.journal, "stream_to_batch", killed)
    with pytest.raises(Killed):
        _end(rig)  # the streaming job is still being submitted; refused a little later
        rig.run(6.0, step_s=0.1)
    (row,) = rig.journal.scans()
    assert row.mode == jr.STREAM and row.status == jr.REJECTED and records(rec) == []
    rig = _restart(rig, AnswersJobState(str(rec)))
    rig.run(3.0)
    (job,) = records(rec)
    assert job["dedup_key"] == row.dedup_key and job["params"]["data"]["live_source"] == "none"
    assert rig.journal.get(row.dedup_key).mode == jr.BATCH
    rig = _restart(rig, AnswersJobState(str(rec)))
    rig.run(3.0)
    assert len(records(rec)) == 1


def test_a_bridge_killed_before_the_covered_end_was_marked_classified_follows_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec), {"status": "running", "live": {"frames_received": 6}})
    rig = Rig(tmp_path, submitter, stream=STREAM)
    _start(rig)
    write_scan_files(tmp_path, "scan7", GEOM)

    def killed(*_a: Any, **_k: Any) -> None:
        raise Killed()

    monkeypatch.setattr(rig.journal, "finish_edge", killed)
    with pytest.raises(Killed):
        _end(rig)
    key = records(rec)[0]["dedup_key"]
    assert rig.journal.get(key).status == jr.FOLLOWING and len(rig.journal.open_edges()) == 1
    rig = _restart(rig, submitter)  # classifies the edge again: the row already follows its job
    assert rig.journal.open_edges() == [] and rig.worker.tasks[key].stage == "follow"
    assert _kinds(rig, key).count("covered_by_stream") == 1
    submitter.state = FAILED_AFTER_FRAMES
    rig.run(3.0)
    _assert_one_batch_job(rec, key)


def test_a_journal_of_an_older_bridge_gains_the_end_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE scans (dedup_key TEXT PRIMARY KEY, beamline TEXT NOT NULL, scan_number TEXT NOT NULL,"
               " file_pattern TEXT NOT NULL, label TEXT NOT NULL, params_json TEXT NOT NULL, status TEXT NOT NULL,"
               " attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',"
               " job_id TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, updated_at REAL NOT NULL)")
    db.execute("INSERT INTO scans VALUES ('k', 'BL', '7', 'f', 'l', '{}', 'submitted', 1, '', 'j1', 0, 0)")
    db.commit()
    db.close()
    journal = jr.Journal(path)
    (row,) = journal.scans()
    assert row.mode == jr.BATCH and row.end_json == "" and journal.ended_streams() == []
    assert not journal.follow("k", "{}")  # a batch row never follows


# -- while the scan acquires: a failed streaming job is noticed at once and replaced (file sources) --------------

def _watched(tmp_path: Path, submitter: AnswersJobState, stream: dict[str, Any] | None = None) -> tuple[Rig, str]:
    """A scan that started; its streaming job accepted and watched while it acquires. The rig and the key."""
    rig = Rig(tmp_path, submitter, stream=stream or STREAM)
    submitter.clock = rig.clock
    _start(rig)
    key = records(submitter.path)[0]["dedup_key"]
    assert rig.journal.get(key).status == jr.WATCHING and rig.worker.tasks[key].stage == "watch"
    return rig, key


def _run_until(rig: Rig, what: Any, limit_s: float = 30.0) -> float:
    """Tick until ``what()`` holds; the rig's time it took."""
    t0 = rig.clock.t
    while not what():
        assert rig.clock.t - t0 < limit_s, "not within the limit"
        rig.run(0.05)
    return rig.clock.t - t0


def test_a_streaming_job_that_fails_while_the_scan_acquires_is_replaced_at_once_and_the_replacement_covers_it(
        tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec), RUNNING)
    rig, key = _watched(tmp_path, submitter)
    rig.run(30.0)  # a long scan: asked with back-off, at most every max_backoff_s
    gaps = [b - a for a, b in zip(submitter.asked, submitter.asked[1:], strict=False)]
    fc = rig.config.file_check
    assert len(submitter.asked) < 31 / fc.max_backoff_s + 4 and max(gaps) <= fc.max_backoff_s + 0.06
    submitter.jobs["rec-1"] = FAILED_AFTER_FRAMES
    noticed_s = _run_until(rig, lambda: len(records(rec)) == 2)
    assert noticed_s <= fc.max_backoff_s + 0.06  # noticed and replaced within one question's interval
    first, replacement = records(rec)
    assert replacement["dedup_key"] == key + jr.RESTREAM_SUFFIX
    assert replacement["params"] == first["params"]  # the same live file, read from its first frame
    row = rig.journal.get(key)
    assert row.mode == jr.STREAM and row.status == jr.WATCHING and row.restreams == 1 and row.job_id == "rec-2"
    (said,) = rig.journal.events("stream_failed_during_scan")
    assert said["dedup_key"] == key
    for part in ("streaming job rec-1 failed while scan 7 acquired, after 12 frames",
                 "(LiveSourceError: frame 13 has another shape)", f"{key}#restream opened"):
        assert part in said["message"]
    state = rig.state.snapshot()
    assert state["counts"]["stream_failures"] == 1 and state["counts"]["restreams"] == 1
    assert state["errors"][0]["message"] == said["message"]
    assert state["last_scan_queued"]["submit_key"] == key + jr.RESTREAM_SUFFIX
    (line,) = [r for r in state["recent"] if r["key"] == key]
    assert line["status"] == "queued" and line["job_id"] == "rec-2"
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)  # the end follows the replacement
    assert rig.journal.get(key).status == jr.FOLLOWING and rig.worker.tasks[key].job_id == "rec-2"
    submitter.jobs["rec-2"] = {"status": "done", "live": {"frames_received": 6}}
    rig.run(3.0)
    assert len(records(rec)) == 2 and rig.journal.get(key).status == jr.SUBMITTED  # no batch job
    assert "stream_failed_batch" not in _kinds(rig, key) and _kinds(rig, key)[-1] == "stream_ended"


def test_a_replacement_that_fails_too_leaves_the_end_to_queue_the_one_batch_job(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec), RUNNING)
    rig, key = _watched(tmp_path, submitter)
    submitter.state = FAILED_AFTER_FRAMES  # every streaming job of the scan fails
    rig.run(3.0)
    assert [r["dedup_key"] for r in records(rec)] == [key, key + jr.RESTREAM_SUFFIX]
    row = rig.journal.get(key)
    assert row.status == jr.STREAM_FAILED and key not in rig.worker.tasks
    assert "no replacement left ([stream] restream_attempts = 1)" in row.last_error + \
        rig.journal.events("stream_failed_during_scan")[-1]["message"]
    rig.run(30.0)  # a failed job is not asked again
    asked = len(submitter.asked)
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)
    rig.run(3.0)
    jobs = records(rec)
    assert [r["dedup_key"] for r in jobs] == [key, key + jr.RESTREAM_SUFFIX, key + jr.BATCH_SUFFIX]
    assert jobs[2]["params"]["data"]["live_source"] == "none" and jobs[2]["files_complete"]
    assert len(submitter.asked) == asked and rig.journal.get(key).mode == jr.BATCH_AFTER_STREAM
    rig.scan_ends()  # the same end seen again, and a restart: nothing more
    rig = _restart(rig, submitter)
    rig.run(3.0)
    assert len(records(rec)) == 3


@pytest.mark.parametrize("source, attempts, keys", [
    ("swmr", 0, ["", "#batch"]),
    ("swmr", 2, ["", "#restream", "#restream2", "#batch"]),
    ("pva://sim:Pva1:Image?scan=sim:Scan:", None, ["", "#batch"]),
], ids=["swmr-no-replacement", "swmr-two-replacements", "pva-frames-went-past"])
def test_restream_attempts_bound_the_replacements_and_a_pva_stream_is_never_replaced(
        tmp_path: Path, source: str, attempts: int | None, keys: list[str]) -> None:
    rec = tmp_path / "rec.jsonl"
    stream = dict(STREAM, source=source, **({} if attempts is None else {"restream_attempts": attempts}))
    submitter = AnswersJobState(str(rec), RUNNING)
    rig, key = _watched(tmp_path, submitter, stream)
    submitter.state = FAILED_AFTER_FRAMES
    rig.run(5.0)
    said = rig.journal.events("stream_failed_during_scan")
    assert len(said) == len(keys) - 1 and rig.journal.get(key).status == jr.STREAM_FAILED
    if source.startswith("pva"):
        assert "its frames went past (a pvAccess source): not replaced" in said[-1]["message"]
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)
    rig.run(3.0)
    assert [r["dedup_key"] for r in records(rec)] == [key + k for k in keys]


def test_a_bad_restream_attempts_refuses_the_configuration(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[stream\] restream_attempts: expected 0 \(none\) to 10, got -1"):
        make_config(tmp_path, stream=dict(STREAM, restream_attempts=-1))
    with pytest.raises(ConfigError, match=r"\[stream\] restream_attempts: expected int, got 'once'"):
        make_config(tmp_path, stream=dict(STREAM, restream_attempts="once"))
    with pytest.raises(ConfigError, match=r"restream_attempts: a 'pva://IMG' source cannot be read again \(its "
                                          r"frames went past and buffer_mib = 0: the bridge holds none of them\)"):
        make_config(tmp_path, stream=dict(STREAM, source="pva://IMG", restream_attempts=1, buffer_mib=0))
    held = make_config(tmp_path, stream=dict(STREAM, source="pva://IMG", restream_attempts=1)).stream
    assert held.restream_attempts == 1 and held.keeps_for_replacement  # the buffer keeps them for the replacement
    assert make_config(tmp_path, stream=STREAM).stream.restream_attempts == 1
    assert make_config(tmp_path, stream=dict(STREAM, source="pva://IMG")).stream.restream_attempts == 0


def test_a_scan_that_ended_aborted_is_no_longer_watched_nor_its_failed_job_replaced(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec), RUNNING)
    rig, key = _watched(tmp_path, submitter)
    rig.clock.t += 1
    rig.value("SMSG", "SCAN aborted by user")
    rig.value("BUSY", 0)
    rig.run(2.0)
    assert key not in rig.worker.tasks and rig.journal.get(key).status == jr.SUBMITTED
    assert _kinds(rig, key)[-1] == "stream_scan_over"
    submitter.state = FAILED_AFTER_FRAMES
    rig.run(5.0)
    assert len(records(rec)) == 1 and rig.journal.events("stream_failed_during_scan") == []


# -- ... across bridge restarts -----------------------------------------------------------------------------------

def test_a_bridge_restarted_while_watching_asks_at_once_and_replaces_a_job_that_failed_meanwhile(
        tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec), RUNNING)
    rig, key = _watched(tmp_path, submitter)
    submitter.state = FAILED_AFTER_FRAMES  # fails while the bridge is down
    rig = _restart(rig, submitter)
    submitter.clock = rig.clock
    assert rig.worker.tasks[key].stage == "watch"
    rig.run(0.05)
    assert [r["dedup_key"] for r in records(rec)] == [key, key + jr.RESTREAM_SUFFIX]


def test_a_bridge_killed_between_noticing_the_failure_and_journalling_the_replacement_replaces_it_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec), RUNNING)
    rig, key = _watched(tmp_path, submitter)

    def killed(*_a: Any, **_k: Any) -> int:
        raise Killed()

    monkeypatch.setattr(rig.journal, "restream", killed)
    submitter.state = FAILED_AFTER_FRAMES
    with pytest.raises(Killed):
        rig.run(3.0)
    assert rig.journal.get(key).status == jr.WATCHING and len(records(rec)) == 1
    submitter.jobs["rec-2"] = RUNNING
    rig = _restart(rig, submitter)
    rig.run(3.0)
    assert [r["dedup_key"] for r in records(rec)] == [key, key + jr.RESTREAM_SUFFIX]
    assert len(rig.journal.events("stream_failed_during_scan")) == 1


def test_a_bridge_killed_before_the_replacements_answer_resends_it_under_the_same_key_once(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    web = AnswersJobState(str(rec), RUNNING)  # the replacement's answer is lost
    rig, key = _watched(tmp_path, LosesAnswer(web, lambda r: r.dedup_key.endswith(jr.RESTREAM_SUFFIX)))
    web.state = FAILED_AFTER_FRAMES
    with pytest.raises(Killed):
        rig.run(3.0)
    row = rig.journal.get(key)
    assert row.status == jr.SUBMITTING and row.restreams == 1 and row.job_id == ""
    submitter = AnswersJobState(str(rec), RUNNING)
    rig = _restart(rig, submitter)  # resumes the replacement: the same key, the same request
    rig.run(3.0)
    first, lost, again = records(rec)
    assert lost["dedup_key"] == again["dedup_key"] == key + jr.RESTREAM_SUFFIX and lost["params"] == again["params"]
    row = rig.journal.get(key)  # (the rig's restart replays BUSY 0: the scan ended while the bridge was down)
    assert row.status == jr.FOLLOWING and row.restreams == 1 and row.job_id == "rec-3"
    rig = _restart(rig, submitter)
    rig.run(3.0)
    assert len(records(rec)) == 3


def test_a_submitter_without_job_state_is_refused_by_a_streaming_bridge_and_kept_by_a_batch_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from epics_bridge.cli import main

    rec = tmp_path / "rec.jsonl"
    with pytest.raises(ConfigError, match=r"submitter recording_submitter\.RecordingSubmitter has no job_state "
                                          r"method.*add job_state\(self, job_id: str\)"):
        Rig(tmp_path, RecordingSubmitter(str(rec)), stream=STREAM)
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(f"""[bridge]\nbeamline = "BL"\njournal = "j.sqlite3"\n[trigger]\nkind = "sscan"\nbusy_pv = "BUSY"
[data]\npath_pv = "PATH"\nname_pv = "NAME"\nscan_number_pv = "NUM"\n[stream]\nenabled = true
[submit]\nkind = "callable"\ntarget = "recording_submitter:RecordingSubmitter"\noptions = {{path = "{rec}"}}
""")
    assert main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"error: {cfg}: [stream] enabled = true: the submitter recording_submitter.RecordingSubmitter" in err
    assert "Traceback" not in err
    rig = Rig(tmp_path, RecordingSubmitter(str(rec)))  # batch only: submit is all it needs
    write_scan_files(tmp_path, "scan7", GEOM)
    rig.scan_ends()
    rig.run(2.0)
    assert len(records(rec)) == 1


class HoldsJobState(AnswersJobState):
    """``job_state`` waits while ``hold`` is set, as a hung web server would (the worker must not wait with it)."""

    def __init__(self, path: str, state: dict[str, Any] | None = None, **kw: Any):
        super().__init__(path, state, **kw)
        self.hold, self.held = threading.Event(), threading.Event()

    def job_state(self, job_id: str) -> dict[str, Any] | None:
        if self.hold.is_set():
            self.held.set()
            while self.hold.is_set():
                time.sleep(0.01)
        return super().job_state(job_id)


def test_the_running_bridge_asks_on_its_own_thread_and_replaces_a_failed_job_within_one_interval(
        tmp_path: Path) -> None:
    """The worker thread keeps taking PV events while a question hangs; a job that fails mid-scan is replaced
    within ``max_backoff_s`` of its failure (plus the round trips)."""
    rec = tmp_path / "rec.jsonl"
    config = make_config(tmp_path, stream=STREAM)
    events: queue.Queue[Any] = queue.Queue()
    journal = jr.Journal(config.journal_path)
    submitter = HoldsJobState(str(rec), RUNNING)
    worker = BridgeWorker(config, events, journal, submitter, BridgeState("BL", config.pvs, None))

    worker.start()
    try:
        connect_pvs(events, tmp_path)
        put_value(events, "BUSY", 1)
        wait_for(lambda: len(submitter.asked) >= 3, 10, "the streaming job accepted and asked about")
        key = records(rec)[0]["dedup_key"]
        submitter.hold.set()
        wait_for(submitter.held.is_set, 5, "a question to hang")
        put_value(events, "SMSG", "point 12")
        wait_for(lambda: worker.state.snapshot()["pvs"]["SMSG"]["value"] == "point 12", 2,
                 "the worker to take an event while the question hangs")
        submitter.hold.clear()
        wait_for(lambda: len(submitter.asked) >= 8, 10, "the questions at their longest interval")
        submitter.state = FAILED_AFTER_FRAMES
        failed_s = time.monotonic()
        wait_for(lambda: len(records(rec)) == 2, 10, "the replacement")
        replaced_s = time.monotonic() - failed_s
        print(f"replacement submitted {replaced_s:.3f} s after the failure "
              f"(max_backoff_s {config.file_check.max_backoff_s})")
        assert records(rec)[1]["dedup_key"] == key + jr.RESTREAM_SUFFIX
        assert replaced_s <= config.file_check.max_backoff_s + 0.5
        wait_for(lambda: journal.get(key).status == jr.WATCHING, 5, "the replacement watched")
    finally:
        worker.stop()
        journal.close()


SHORT = {"status": "done", "live": {"partial": True, "outcome": "ended", "frames_received": 380,
                                    "frames_planned": 400, "frames_dropped": 20}}


def test_a_streaming_job_done_with_frames_missing_from_a_complete_scan_is_replaced_by_one_batch_job(
        tmp_path: Path) -> None:
    # a pvAccess job that connected after the detector's first frames (or dropped some) ends done but partial:
    # the scan's files are complete, so the scan gets its batch job, once
    rec = tmp_path / "rec.jsonl"
    rig, key = _streamed_and_ended(tmp_path, AnswersJobState(str(rec), SHORT))
    rig.run(3.0)
    _assert_one_batch_job(rec, key)
    (why,) = [e["message"] for e in rig.journal.events("stream_failed_batch")]
    assert "its result is partial (stream ended after 380 of 400 frames, 20 dropped)" in why
    rig.scan_ends()
    rig.run(3.0)
    assert len(records(rec)) == 2


def _watched_until_done_partial(tmp_path: Path, rec: Path, outcome: str, frames: int) -> tuple[Rig, str]:
    """A watched streaming job that ends done, partial with ``outcome`` after ``frames`` of 400, while its scan
    acquires; ticked until the bridge no longer watches it. The rig and the key."""
    submitter = AnswersJobState(str(rec), RUNNING)
    rig, key = _watched(tmp_path, submitter)
    submitter.jobs["rec-1"] = {"status": "done", "live": {"partial": True, "outcome": outcome,
                                                          "frames_received": frames, "frames_planned": 400}}
    _run_until(rig, lambda: key not in rig.worker.tasks)
    return rig, key


def test_a_streaming_job_that_stalled_while_the_scan_acquires_leaves_a_complete_end_to_the_batch_job(
        tmp_path: Path) -> None:
    # a stall (no frame for -liveStall s) ends the job done, partial; a replacement would read the same file and
    # stall the same way, so none is opened: a complete end queues the batch job, an abort nothing
    rec = tmp_path / "rec.jsonl"
    rig, key = _watched_until_done_partial(tmp_path, rec, "stalled", 40)
    (said,) = rig.journal.events("stream_failed_during_scan")
    for part in ("streaming job rec-1 ended while scan 7 acquired, but its result is partial (stream stalled "
                 "after 40 of 400 frames)", "a replacement would read the same frames: not replaced",
                 f"queues the batch job ({key}#batch)"):
        assert part in said["message"]
    assert len(records(rec)) == 1
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)
    rig.run(3.0)
    _assert_one_batch_job(rec, key)


def test_a_streaming_job_done_partial_because_its_scan_was_aborted_covers_it(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig, key = _watched_until_done_partial(tmp_path, rec, "aborted", 90)
    assert _kinds(rig, key)[-1] == "stream_ended" and not rig.journal.events("stream_failed_during_scan")
    rig.run(5.0)
    assert len(records(rec)) == 1


def test_a_pva_stream_job_names_the_bridge_buffer_and_a_bad_buffer_setting_is_refused_by_name(
        tmp_path: Path) -> None:
    pva = dict(STREAM, source="pva://sim:Pva1:Image?scan=sim:Scan:")
    st = make_config(tmp_path, stream=dict(pva, buffer_address="10.0.0.5:5079", buffer_clients=["10.0.0.0/24"])).stream
    assert st.buffered and st.buffer_mib == 1024.0
    assert st.job_source == (f"pva://sim:Pva1:Image?scan=sim:Scan:&buffer={st.buffer_pv}&buffer_at=10.0.0.5:5079")
    assert not make_config(tmp_path, stream=dict(pva, buffer_mib=0)).stream.buffered  # off: the address as given
    assert make_config(tmp_path, stream=dict(pva, buffer_mib=0)).stream.job_source == pva["source"]
    assert make_config(tmp_path, stream=STREAM).stream.job_source == "swmr"  # a file keeps every frame itself
    with pytest.raises(ConfigError, match=r"\[stream\] buffer_address: .*'host' is not HOST:PORT"):
        make_config(tmp_path, stream=dict(pva, buffer_address="host"))
    with pytest.raises(ConfigError, match=r"\[stream\] buffer_mib: expected 0 \(off\) or more MiB, got -1"):
        make_config(tmp_path, stream=dict(pva, buffer_mib=-1))


PVA_STREAM = dict(STREAM, source="pva://sim:Pva1:Image?scan=sim:Scan:", buffer_address="127.0.0.1:5079",
                  restream_attempts=1)


def test_a_failed_pva_streaming_job_is_replaced_mid_scan_by_one_bound_to_the_scans_series_in_the_bridge_buffer(
        tmp_path: Path) -> None:
    """With the buffer on and restream_attempts 1, a pvAccess streaming job that failed while its scan acquires is
    replaced at once under key#restream, its source naming the buffer's series of this scan (a replacement whose
    first frame is of a later scan fails instead of taking it), written in the journal's UPDATE that opens it (a
    restarted bridge resends the same request). Without a running buffer (no series to name) it is not replaced."""
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec), RUNNING)
    rig, key = _watched(tmp_path, submitter, PVA_STREAM)
    rig.worker.buffer_series = lambda: 1796644969123
    submitter.jobs["rec-1"] = FAILED_AFTER_FRAMES
    _run_until(rig, lambda: len(records(rec)) == 2)
    first, replacement = records(rec)
    assert replacement["dedup_key"] == key + jr.RESTREAM_SUFFIX
    source = first["params"]["data"]["live_source"]
    assert "&buffer=ptychopy:bridge:" in source and "series=" not in source
    assert replacement["params"]["data"]["live_source"] == source + "&series=1796644969123"
    row = rig.journal.get(key)
    assert row.status == jr.WATCHING and row.restreams == 1 and "&series=1796644969123" in row.params_json
    (said,) = rig.journal.events("stream_failed_during_scan")
    assert "it gets the frames before its own from the bridge's buffer" in said["message"], said

    rec2 = tmp_path / "rec2.jsonl"
    submitter2 = AnswersJobState(str(rec2), RUNNING)
    rig2, key2 = _watched(tmp_path / "nobuffer", submitter2, PVA_STREAM)  # buffer_series None: no buffer running
    submitter2.jobs["rec-1"] = FAILED_AFTER_FRAMES
    rig2.run(5.0)
    assert len(records(rec2)) == 1 and rig2.journal.get(key2).status == jr.STREAM_FAILED
    assert "its frames went past (a pvAccess source): not replaced" in \
        rig2.journal.events("stream_failed_during_scan")[-1]["message"]


def test_a_pva_scans_first_job_is_bound_to_its_series_and_failing_late_on_a_later_scan_leaves_one_batch_job(
        tmp_path: Path) -> None:
    """With the buffer on, the job opened at BUSY names the series the buffer gives for a scan started then
    (``&series=K``; before: none, so a job queued past its scan's end took the next scan's frames and covered this
    scan with them). Still queued at the end, it is followed; failing then (its first frame was of a later series)
    the end's batch job is queued once under key#batch. With ``buffer_mib = 0`` there is no series to name: the
    job's source is bound to the scan's start instead (``&started=T``, the next test)."""
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec), {"status": "queued", "live": {}})
    rig = Rig(tmp_path, submitter, stream=PVA_STREAM)
    asked: list[float] = []
    rig.worker.buffer_scan_series = lambda started_s: asked.append(started_s) or 1796644969124
    busy_s = rig.clock.t
    _start(rig)
    (first,) = records(rec)
    key = first["dedup_key"]
    assert first["params"]["data"]["live_source"].endswith("&buffer_at=127.0.0.1:5079&series=1796644969124")
    assert asked == [busy_s] and rig.clock.t > busy_s  # the time BUSY was seen, not the debounce's end
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)
    assert len(records(rec)) == 1 and rig.journal.get(key).status == jr.FOLLOWING  # still queued: followed
    submitter.state = {"status": "failed", "live": {"frames_received": 0},
                       "message": "LiveSourceError: uniqueId 1 is of the bridge's series 1796644969125, a later "
                                  "scan's, not of this job's scan's series 1796644969124"}
    rig.run(3.0)
    _stream, batch = records(rec)
    assert batch["dedup_key"] == key + jr.BATCH_SUFFIX and batch["params"]["data"]["live_source"] == "none"
    assert rig.journal.get(key).mode == jr.BATCH_AFTER_STREAM
    rig.run(3.0)
    assert len(records(rec)) == 2  # never both, never neither: the one batch job

    rec2 = tmp_path / "rec2.jsonl"
    rig2 = Rig(tmp_path / "nobuffer", AnswersJobState(str(rec2)),
               stream=dict(PVA_STREAM, buffer_mib=0, restream_attempts=0))
    rig2.worker.buffer_scan_series = lambda started_s: 1  # not asked: no buffer
    _start(rig2)
    (unbound,) = records(rec2)
    assert unbound["params"]["data"]["live_source"].startswith(PVA_STREAM["source"] + "&started=")
    assert "series=" not in unbound["params"]["data"]["live_source"]


def test_without_the_buffer_a_pva_scans_job_is_bound_to_its_start_time_and_failing_late_leaves_one_batch_job(
        tmp_path: Path) -> None:
    """``buffer_mib = 0``: the job opened at BUSY names the scan's start, BUSY's IOC time stamp (``&started=T``;
    before: nothing, so a job queued past its scan's end took the next scan's frames and covered this scan with
    them). Still queued at the end, it is followed; failing then (its source saw the scan's end before it
    subscribed) the end's batch job is queued once under key#batch. A source without a status PV cannot tell when
    the scan ended: its jobs' address is the one configured."""
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec), {"status": "queued", "live": {}})
    rig = Rig(tmp_path, submitter, stream=dict(PVA_STREAM, buffer_mib=0, restream_attempts=0))
    rig.worker.handle(ValueEvent("BUSY", 1, "1", rig.clock.t, timestamp=1796654000.25))
    rig.run(1.0)
    (first,) = records(rec)
    key = first["dedup_key"]
    assert first["params"]["data"]["live_source"] == PVA_STREAM["source"] + "&started=1796654000.250"
    write_scan_files(tmp_path, "scan7", GEOM)
    _end(rig)
    assert len(records(rec)) == 1 and rig.journal.get(key).status == jr.FOLLOWING  # still queued: followed
    submitter.state = {"status": "failed", "live": {},
                       "message": "LiveSourceError: PV sim:Pva1:Image (pvAccess): this job's scan (started "
                                  "2026-12-07 14:33:20.250 UTC, ...) ended before the job subscribed: ..."}
    rig.run(3.0)
    _stream, batch = records(rec)
    assert batch["dedup_key"] == key + jr.BATCH_SUFFIX and batch["params"]["data"]["live_source"] == "none"
    assert "ended before the job subscribed" in rig.journal.events("stream_failed_batch")[-1]["message"]
    rig.run(3.0)
    assert len(records(rec)) == 2  # never both, never neither: the one batch job

    rec2 = tmp_path / "rec2.jsonl"
    no_status = dict(PVA_STREAM, source="pva://sim:Pva1:Image", buffer_mib=0, restream_attempts=0)
    rig2 = Rig(tmp_path / "nostatus", AnswersJobState(str(rec2)), stream=no_status)
    _start(rig2)
    (unbound,) = records(rec2)
    assert unbound["params"]["data"]["live_source"] == "pva://sim:Pva1:Image"


def test_a_replacement_keeps_the_series_its_first_job_was_bound_to(tmp_path: Path) -> None:
    """A first job bound at BUSY that fails before its scan's first frame reached the bridge: the buffer is still
    on the earlier scan's series, and the replacement keeps the first job's series instead of that one (which
    would fail it on its own scan's first frame)."""
    rec = tmp_path / "rec.jsonl"
    submitter = AnswersJobState(str(rec), RUNNING)
    rig = Rig(tmp_path, submitter, stream=PVA_STREAM)
    submitter.clock = rig.clock
    rig.worker.buffer_scan_series = lambda started_s: 1796644969124
    rig.worker.buffer_series = lambda: 1796644969123  # the earlier scan's: no frame of this one yet
    _start(rig)
    submitter.jobs["rec-1"] = FAILED_AFTER_FRAMES
    _run_until(rig, lambda: len(records(rec)) == 2)
    first, replacement = records(rec)
    assert first["params"]["data"]["live_source"].endswith("&series=1796644969124")
    assert replacement["params"]["data"]["live_source"] == first["params"]["data"]["live_source"]

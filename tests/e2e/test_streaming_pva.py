"""Issue 21 end to end over pvAccess, real processes on loopback, embedded mode (``ptychopy serve`` with the bridge
and the worker inside it): ``simioc --live-pva`` streams each scan as an areaDetector NTNDArray with its positions,
plan and status PVs, the bridge opens the streaming job when ``scan2.BUSY`` rises with ``[stream] source =
"pva://ptysim:Pva1:Image?scan=ptysim:Scan:"``, the worker reconstructs as frames arrive, and a websocket viewer
(logged in, the live page's protocol) sees the image fill in with the frame counts. A 20 x 20 scan of 64^2 frames
at 200 frames/s: all 400 frames received, none dropped, the job done and not partial, exactly one job.

pvAccess keeps no history: a frame posted before the job's monitor connects is gone for it. Here, as at a beamline
whose detector starts with the scan, simioc posts the first frame right after ``BUSY`` rises (``sim:LiveWait`` = 0),
a second or more before the job's monitor connects (the debounce, the submit, the worker opening the source): the
bridge's standing subscriber (``[stream] buffer_mib``, ptychopy/pva_buffer.py) holds those frames and hands them to
the job (docs/streaming.md, "Frames before the job subscribed"). Without it (the tree before) the job lost them:
counted dropped, its result partial. A job queued past its scan's end is bound to the scan's series in that buffer
and takes none of the next scan's frames (the last test). The SWMR path is tests/e2e/test_streaming.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from benchmarks.latency.procs import wait_for
from benchmarks.latency.rig import Rig, RigOptions
from benchmarks.latency.stream import job_row
from tests.e2e.test_streaming import _pg_job, assert_the_replacement_covers_the_scan, stop_the_worker_mid_scan
from tests.support.frames import collect_frames

pytestmark = [pytest.mark.services, pytest.mark.epics, pytest.mark.slow, pytest.mark.timeout(180)]

ROWS, COLS = 20, 20
N = ROWS * COLS


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    opts = _pva_rig_options("embedded", tmp_path_factory.mktemp("stream-pva"), finish_iterations=10, stall_s=5.0)
    rig = Rig(opts)
    try:
        yield rig.start()
    finally:
        rig.stop()


def _pva_rig_options(mode: str, workdir: Path, **overrides) -> RigOptions:
    """A rig streaming a ROWS x COLS scan of 64^2 frames over pvAccess, its first frame posted at BUSY
    (``live_wait_s`` 0: before any job listens); ``overrides`` change any other RigOptions field."""
    fields = dict(mode=mode, workdir=workdir, rows=ROWS, cols=COLS, size_px=64, point_time_s=0.005, stream=True,
                  stream_pva=True, finish_iterations=5, stall_s=10.0, live_wait_s=0.0, log=lambda _: None)
    return RigOptions(**{**fields, **overrides})


def _play_scan(rig: Rig) -> tuple[int, dict]:
    """Play one scan: (the newest job id before it, its streaming job's row in the jobs table)."""
    last = max((j["id"] for j in rig.jobs_after(0)), default=0)
    rig.ioc_put("sim:Go", 1)
    return last, wait_for(lambda: rig.jobs_after(last), 30, "the streaming job (opened at BUSY 0 -> 1)")[0]


def _assert_every_frame_one_job(rig: Rig, last: int, job: dict) -> dict:
    """The job done with all N frames, none dropped, not partial; the scan covered by it alone. Its row."""
    job_id = int(job["id"])
    row = job_row(rig, job_id)
    live = row["live"]
    assert row["status"] == "done" and row["message"] == "", row
    assert live["outcome"] == "ended" and not live["partial"], live
    assert live["frames_received"] == N and live["frames_in_image"] == N and live["frames_dropped"] == 0, live
    assert row["parameters"]["data"]["live_source"].startswith("pva://ptysim:Pva1:Image?scan=ptysim:Scan:")
    assert rig.stream_verdict(str(job["dedup_key"])) == "stream_ended"  # decided: nothing more may come
    assert [j["id"] for j in rig.jobs_after(last)] == [job_id]
    assert "covered_by_stream" in rig.journal_events(str(job["dedup_key"]))
    return row


def test_a_scan_streamed_over_pvaccess_fills_the_image_in_a_viewer_with_every_frame_and_one_job(rig: Rig) -> None:
    last, job = _play_scan(rig)
    job_id = int(job["id"])
    frames = asyncio.run(collect_frames(rig.base_url, job_id, rig.cookie, rig.base_url, timeout=90))
    assert frames and frames[-1].status == "done", [f.header for f in frames[-3:]]
    lives = [f.header["live"] for f in frames if f.images and "live" in f.header]
    acquiring = [x for x in lives if x["phase"] == "acquiring"]
    in_image = [x["frames_in_image"] for x in acquiring]
    assert in_image == sorted(in_image) and len(set(in_image)) >= 3 and in_image[0] < N, in_image  # it grows
    received = [x["frames_received"] for x in lives]
    assert received == sorted(received) and all(x["frames_planned"] == N for x in lives), received
    assert all(x["frames_dropped"] == 0 for x in lives) and "(pvAccess)" in lives[-1]["source"]
    _assert_every_frame_one_job(rig, last, job)


def test_frames_posted_before_the_streaming_job_subscribed_reach_it_from_the_bridge_buffer_none_dropped(
        rig: Rig) -> None:
    last, job = _play_scan(rig)
    wait_for(lambda: job_row(rig, int(job["id"]))["status"] in ("done", "failed", "cancelled"), 90,
             f"job {job['id']} to finish")
    live = _assert_every_frame_one_job(rig, last, job)["live"]
    # the frames the bridge held: those posted before the job's first own frame (its monitor connected after
    # BUSY rose and the detector's first frames, about 2 s at 200 frames/s on these cores)
    assert 0 < live["frames_from_buffer"] < N, live


def test_on_the_production_stack_the_worker_process_gets_the_first_frames_from_the_bridge_process(
        tmp_path: Path) -> None:
    """Production (PostgreSQL, Redis, a worker process, the bridge process): the job's worker reaches the bridge's
    buffer in another process over pvAccess; the first frames, posted at BUSY while Dramatiq hands the job over,
    still reach it: every frame, none dropped, one job."""
    opts = _pva_rig_options("production", tmp_path)
    rig = Rig(opts)
    try:
        rig.start()
        last, job = _play_scan(rig)
        wait_for(lambda: _pg_job(rig, int(job["id"]))["status"] in ("done", "failed", "cancelled"), 90,
                 f"job {job['id']} to finish")
        row = _pg_job(rig, int(job["id"]))
        live = row["live"]
        assert row["status"] == "done" and row["message"] == "", row
        assert live["frames_received"] == N and live["frames_dropped"] == 0 and not live["partial"], live
        assert 0 < live["frames_from_buffer"] < N, live
        assert rig.stream_verdict(str(job["dedup_key"])) == "stream_ended"
        assert [j["id"] for j in rig.jobs_after(last)] == [int(job["id"])]
    finally:
        rig.stop()


def _bridge_over_api(tmp_path: Path, *, server_allows_buffer: bool) -> Rig:
    """An embedded server (SQLite, its worker in process) and the bridge as a process of its own submitting over the
    JSON API with a bridge token (the controls host: no database settings), simioc streaming over pvAccess with the
    first frames posted at BUSY; the server's PTYCHOPY_PVA_BUFFERS names the bridge's buffer or is unset."""
    opts = _pva_rig_options("embedded", tmp_path, embedded_bridge="process", submit="http",
                            server_allows_buffer=server_allows_buffer)
    return Rig(opts)


def _bridge_on_dashboard(rig: Rig) -> dict:
    """The bridge as the web dashboard shows it (``/dashboard/?format=json``, logged in): its published state."""
    req = urllib.request.Request(f"{rig.base_url}/dashboard/?format=json", headers={"Cookie": rig.cookie})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=30) as answer:
        bridges = json.loads(answer.read())["bridges"]
    return dict(bridges[0]) if bridges else {}


def test_a_bridge_submitting_over_the_api_hands_the_first_frames_to_the_job_when_the_server_allows_its_buffer(
        tmp_path: Path) -> None:
    """The production-like split: the bridge's buffer_at= passes the web server's PTYCHOPY_PVA_BUFFERS, the
    embedded worker reaches the bridge process's buffer and the job gets every frame, none dropped, one job."""
    rig = _bridge_over_api(tmp_path, server_allows_buffer=True)
    try:
        rig.start()
        assert "PTYCHOPY_PVA_BUFFERS" not in rig.bridge_env  # the server's setting, not the bridge's
        last, job = _play_scan(rig)
        job_id = int(job["id"])
        wait_for(lambda: job_row(rig, job_id)["status"] in ("done", "failed", "cancelled"), 90,
                 f"job {job_id} to finish")
        row = job_row(rig, job_id)
        live = row["live"]
        assert row["status"] == "done" and row["message"] == "", row
        assert live["frames_received"] == N and live["frames_dropped"] == 0 and not live["partial"], live
        assert 0 < live["frames_from_buffer"] < N, live
        assert "&buffer_at=" in row["parameters"]["data"]["live_source"], row["parameters"]["data"]
        key = rig.journal_key(job_id)  # an API job carries the scan's key only as its Idempotency-Key
        assert key and rig.stream_verdict(key) == "stream_ended"
        assert [j["id"] for j in rig.jobs_after(last)] == [job_id]
    finally:
        rig.stop()


def test_a_bridge_over_the_api_whose_buffer_the_server_does_not_allow_is_refused_and_the_scan_gets_its_batch_job(
        tmp_path: Path) -> None:
    """PTYCHOPY_PVA_BUFFERS unset on the web server: the streaming job's submit is refused (400) naming buffer_at=
    and the variable; the bridge journals and logs the refusal, the dashboard shows it, and at the scan's complete
    end the bridge queues the scan's batch job (exactly once: no streaming job, one batch job, done)."""
    rig = _bridge_over_api(tmp_path, server_allows_buffer=False)
    try:
        rig.start()
        last = max((j["id"] for j in rig.jobs_after(0)), default=0)
        rig.ioc_put("sim:Go", 1)
        rejected = wait_for(lambda: rig._journal_rows("SELECT dedup_key, message FROM events WHERE kind = ?",
                                                      ("rejected",)), 60, "the bridge to journal the refusal")
        key, message = str(rejected[0][0]), str(rejected[0][1])
        # the refusal says what to change: the bridge's address into the server's PTYCHOPY_PVA_BUFFERS
        buffer_at = rig.bridge_cfg["stream"]["buffer_address"]
        assert f"buffer_at={buffer_at}" in message and "PTYCHOPY_PVA_BUFFERS (none)" in message, message
        assert "needs its [stream] buffer_address there" in message, message
        bridge_log = next(p for p in rig.procs if p.name == "bridge").tail(400)
        assert "PTYCHOPY_PVA_BUFFERS" in bridge_log, bridge_log
        assert rig.stream_verdict(key) == "stream_failed_batch"
        jobs = wait_for(lambda: rig.jobs_after(last), 60, "the scan's batch job")
        batch = int(jobs[0]["id"])
        wait_for(lambda: job_row(rig, batch)["status"] in ("done", "failed", "cancelled"), 120,
                 f"batch job {batch} to finish")
        row = job_row(rig, batch)
        assert row["status"] == "done", row
        assert row["parameters"]["data"]["live_source"] == "none", row["parameters"]["data"]  # a batch job
        assert [j["id"] for j in rig.jobs_after(last)] == [batch]
        seen = wait_for(lambda: [e for e in _bridge_on_dashboard(rig).get("errors", [])
                                 if "PTYCHOPY_PVA_BUFFERS" in e["message"]], 60,
                        "the refusal on the dashboard")
        assert "buffer_at=" in seen[0]["message"], seen
    finally:
        rig.stop()


def test_a_pva_streaming_job_whose_worker_stopped_mid_scan_is_replaced_by_one_that_gets_every_frame_from_the_buffer(
        tmp_path: Path) -> None:
    """Production (PostgreSQL, Redis, a worker process, the bridge process), ``[stream] restream_attempts = 1``
    over pvAccess: the worker is stopped (SIGTERM) and started again while the scan acquires; its streaming job ends
    failed, the bridge opens one replacement (``<key>#restream``, its source naming the buffer's series of this
    scan), which subscribes mid-scan, gets the frames before its own from the bridge's buffer and ends done with
    all 400, none dropped; no batch job."""
    opts = _pva_rig_options("production", tmp_path, point_time_s=0.05, file_max_backoff_s=1.0, restream_attempts=1)
    rig = Rig(opts)
    try:
        rig.start()
        stream, _failed, again, done = stop_the_worker_mid_scan(rig)
        assert_the_replacement_covers_the_scan(rig, stream, again, done, N)  # no batch job
        # it subscribed mid-scan: the bridge held the frames before its own
        assert 40 <= done["live"]["frames_from_buffer"] < N, done["live"]
        assert "&series=" in _pg_parameters(rig, int(again["id"]))["data"]["live_source"]
        said = rig._journal_rows("SELECT message FROM events WHERE kind = 'stream_failed_during_scan'")
        assert "from the bridge's buffer" in said[0][0], said
    finally:
        rig.stop()


def _pg_parameters(rig: Rig, job_id: int) -> dict:
    """The job's parameters in the production database."""
    import psycopg

    with psycopg.connect(rig.database_url) as pg:
        row = pg.execute("SELECT parameters FROM jobs_job WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return dict(row[0] if isinstance(row[0], dict) else json.loads(row[0]))


def _scan_a_behind_a_long_job(rig: Rig) -> tuple[Any, int, dict]:
    """A long job holds the embedded worker while scan A (400 points, 4 s) plays and ends; A's streaming job waits
    in the queue behind it. (an API client, the long job's id, A's streaming job)."""
    from tests.support.stack import _last_token, small_sim_cmdstr
    from tests.support.web import ApiClient

    api = ApiClient(rig.base_url, _last_token(rig._manage(rig.bridge_env, "create_token", rig.username)))
    ahead = int(api.submit(small_sim_cmdstr(1_000_000, size=32, scan=4), label="ahead")["id"])
    api.wait_status(ahead, {"running"}, timeout=60)
    rig.ioc_put("sim:Go", 1)  # scan A
    job_a = wait_for(lambda: rig.jobs_after(ahead), 30, "scan A's streaming job")[0]
    wait_for(lambda: "covered_by_stream" in rig.journal_events(str(job_a["dedup_key"])), 60,
             "scan A's end (its job followed)")
    assert job_row(rig, int(job_a["id"]))["status"] == "queued"  # still behind the long job
    return api, ahead, job_a


def _assert_a_failed_late_and_was_batched_b_streamed_whole(rig: Rig, ahead: int, job_a: dict, job_b: dict,
                                                           why: str) -> dict:
    """Scan A's late streaming job failed (``why`` in its message) having taken no frame; A's batch job
    (``key#batch``) done; B's streaming job done with every frame; no other job. A's job row."""
    key_a = str(job_a["dedup_key"])
    wait_for(lambda: job_row(rig, int(job_a["id"]))["status"] in ("done", "failed", "cancelled"), 60,
             "scan A's streaming job to end")
    row_a = job_row(rig, int(job_a["id"]))
    assert row_a["status"] == "failed", json.dumps(row_a)
    assert why in row_a["message"], row_a["message"]
    assert not (row_a["live"] or {}).get("frames_received"), row_a["live"]  # none of B's frames taken
    assert rig.stream_verdict(key_a) == "stream_failed_batch"
    batch = wait_for(lambda: [j for j in rig.jobs_after(ahead) if j["dedup_key"] == key_a + "#batch"], 60,
                     "scan A's batch job")[0]
    for job in (job_b, batch):
        wait_for(lambda job=job: job_row(rig, int(job["id"]))["status"] in ("done", "failed", "cancelled"),
                 120, f"job {job['id']} to finish")
    row_batch = job_row(rig, int(batch["id"]))
    assert row_batch["status"] == "done" and row_batch["parameters"]["data"]["live_source"] == "none", row_batch
    row_b = job_row(rig, int(job_b["id"]))
    assert row_b["status"] == "done", json.dumps(row_b)
    live_b = row_b["live"]
    assert live_b["frames_received"] == N and live_b["frames_dropped"] == 0 and not live_b["partial"], live_b
    assert rig.stream_verdict(str(job_b["dedup_key"])) == "stream_ended"
    assert sorted(j["id"] for j in rig.jobs_after(ahead)) == sorted(int(j["id"]) for j in (job_a, job_b, batch))
    return row_a


def test_a_pva_streaming_job_queued_past_its_scans_end_takes_none_of_the_next_scans_frames_its_scan_gets_a_batch_job(
        tmp_path: Path) -> None:
    """Embedded (one in-process worker): a long job holds the worker, scan A's streaming job waits in the queue
    and scan A ends; scan B starts and the long job is cancelled, so A's job subscribes while B acquires. Bound to
    A's series in the bridge's buffer (``&series=K``), it fails on B's first frame naming both series, having taken
    none of B's frames (before: it took B's frames from the buffer and its own monitor, ended done and covered A
    with them); A's end queues A's batch job (``key#batch``), done from A's own files; B's job gets every frame of
    B. Exactly once: A has one batch job, B one streaming job, nothing more."""
    rig = Rig(_pva_rig_options("embedded", tmp_path, point_time_s=0.01))
    try:
        rig.start()
        api, ahead, job_a = _scan_a_behind_a_long_job(rig)
        rig.ioc_put("sim:PointTime", 0.05)  # scan B: 20 s, so that A's job subscribes while it acquires
        rig.ioc_put("sim:Go", 1)
        job_b = wait_for(lambda: rig.jobs_after(int(job_a["id"])), 30, "scan B's streaming job")[0]
        assert api.post(f"/api/v1/jobs/{ahead}/cancel/").status in (200, 202)
        row_a = _assert_a_failed_late_and_was_batched_b_streamed_whole(
            rig, ahead, job_a, job_b, "a later scan's, not of this job's scan's series")
        assert "&series=" in row_a["parameters"]["data"]["live_source"], row_a["parameters"]["data"]
    finally:
        rig.stop()


def test_without_the_buffer_a_pva_streaming_job_queued_past_its_scans_end_fails_bound_to_its_start_and_takes_no_frame(
        tmp_path: Path) -> None:
    """``[stream] buffer_mib = 0`` (no series to name): a long job holds the embedded worker while scan A acquires
    and ends; A's streaming job then subscribes between scans, and scan B starts while it listens. Bound to A's start
    (``&started=T``, the bridge's BUSY time), it fails at once on the status PV's end of A, having taken no frame
    (before: nothing bound it, it took all of B's frames, ended done and covered A with them). A's end queues A's
    batch job (``key#batch``), done from A's own files; B's job gets every frame of B. Exactly once."""
    rig = Rig(_pva_rig_options("embedded", tmp_path, point_time_s=0.01, stream_buffer_mib=0))
    try:
        rig.start()
        api, ahead, job_a = _scan_a_behind_a_long_job(rig)  # A's first frame at BUSY: no job listens
        key_a = str(job_a["dedup_key"])
        assert "&started=" in job_row(rig, int(job_a["id"]))["parameters"]["data"]["live_source"]
        # scan B's first frame waits for a client (a job listening): B's job runs after A's failed job and A's batch
        # job on the one embedded worker, which took over 10 s on a loaded 2-core machine (B's job then missed the
        # first 88 frames, which nothing buffers here)
        rig.ioc_put("sim:LiveWait", 40)
        assert api.post(f"/api/v1/jobs/{ahead}/cancel/").status in (200, 202)
        wait_for(lambda: job_row(rig, int(job_a["id"]))["status"] != "queued", 60, "scan A's job to start")
        time.sleep(2.0)  # A's job subscribed (and, bound, failed); unbound it would be listening for frames now
        rig.ioc_put("sim:Go", 1)  # scan B
        job_b = wait_for(lambda: [j for j in rig.jobs_after(int(job_a["id"])) if j["dedup_key"] != key_a + "#batch"],
                         30, "scan B's streaming job")[0]
        _assert_a_failed_late_and_was_batched_b_streamed_whole(rig, ahead, job_a, job_b,
                                                               "ended before the job subscribed")
    finally:
        rig.stop()


def test_the_first_frame_over_pvaccess_opens_the_streaming_job_without_a_busy_pv_every_frame_one_job(
        tmp_path: Path) -> None:
    """``[trigger] kind = "pva_frames"`` (a beamline whose detector streams over pvAccess alone: the bridge monitors
    no BUSY): simioc posts each scan's frames from its start (``sim:LiveWait`` 0); the bridge opens the streaming
    job at the first frame, the buffer hands it the frames before its own, the status PV's end ends the scan, and the
    complete end queues nothing more. Two scans back to back (the second's uniqueIds begin again at 1): two jobs,
    each done with all 400 frames, none dropped, each scan covered by its job alone."""
    rig = Rig(_pva_rig_options("embedded", tmp_path, frames_trigger=True))
    try:
        rig.start()
        assert rig.bridge_cfg["trigger"]["kind"] == "pva_frames"
        for _ in range(2):
            last, job = _play_scan(rig)
            wait_for(lambda job=job: job_row(rig, int(job["id"]))["status"] in ("done", "failed", "cancelled"), 90,
                     f"job {job['id']} to finish")
            wait_for(lambda job=job: rig.stream_verdict(str(job["dedup_key"])) == "stream_ended", 30,
                     "the scan's end (covered by its job)")
            live = _assert_every_frame_one_job(rig, last, job)["live"]
            assert 0 < live["frames_from_buffer"] < N, live  # posted before the job's monitor connected
            events = rig._journal_rows("SELECT message FROM events WHERE kind = 'stream_start' AND dedup_key = ?",
                                       (str(job["dedup_key"]),))
            assert "frames://ptysim:Pva1:Image#busy" in events[0][0], events
    finally:
        rig.stop()

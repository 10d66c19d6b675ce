"""Issue 21 end to end, real processes on loopback, embedded mode (``ptychopy serve`` with the bridge and the worker
inside it): ``simioc --live-file`` writes each scan into an SWMR file as it acquires, the bridge opens the streaming
job when ``scan2.BUSY`` rises, the worker reconstructs as frames arrive, Chromium (a websocket client) shows the
image filling in.

- The CPU target: a 40 x 40 scan of 64^2 frames at 200 frames/s: no frame dropped, the image in the browser lags
  the newest frame by <= 2 s (scaled by the machine's contention when it runs more than 2 cores' worth), the
  result written <= 2 s after the completion edge plus the finishing iterations, the final object within 5 % NRMSE
  of a batch reconstruction of the scan's row files, and exactly one job.
- An aborted scan (``sim:Abort``) keeps its partial result, labelled partial, and the completion queues nothing.
- Frames reaching the file out of order (``sim:LiveShuffle``: shuffled blocks of 16) are placed; the scan is
  complete and not partial.
- A stalled stream (the IOC killed mid-scan: its file stays 'acquiring') times out with its partial result.
- A streaming job that fails mid-scan after it took frames (``sim:LiveDark``: a dark frame in the live file) is
  replaced at once by one streaming job (``<key>#restream``), which meets the same dark frame and fails too; the
  scan's end then queues exactly one batch job (``<key>#batch``), from the scan's complete row files, which ends
  done.

A duplicate frame is in tests/webapp/test_webapp_streaming.py (a real writer process, the worker, the API) and
tests/ptychopy/test_live_runs.py; the bridge's exactly-once rules in tests/epics_bridge/test_bridge_stream.py.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.latency.procs import wait_for
from benchmarks.latency.rig import Rig, RigOptions
from benchmarks.latency.stream import batch_nrmse, job_row, play_and_watch

pytestmark = [pytest.mark.services, pytest.mark.epics, pytest.mark.browser, pytest.mark.slow,
              pytest.mark.timeout(240)]

FINISH = 10  # finishing iterations
LAG_S = 2.0  # issue 21: the image in the browser lags the newest frame by <= 2 s (on 2 free cores)


def _contention() -> float:
    """How many times over the 2 cores the machine is asked to run (the 1-minute load average / 2, at least 1):
    the timing targets are for 2 free cores (CI); on a machine shared with other work they are scaled by this,
    and the benchmark (python -m benchmarks.latency.stream) records the load with its figures."""
    return max(1.0, os.getloadavg()[0] / 2.0)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    opts = RigOptions(mode="embedded", workdir=tmp_path_factory.mktemp("stream"), rows=40, cols=40, size_px=64,
                      point_time_s=0.005, stream=True, finish_iterations=FINISH, stall_s=3.0, iterations=5,
                      log=lambda _: None)  # iterations: the batch job that replaces a failed streaming job
    rig = Rig(opts)
    try:
        yield rig.start()
    finally:
        rig.stop()


@pytest.fixture(scope="module")
def page(browser, rig: Rig):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=rig.base_url, viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.goto("/accounts/login/")
    pg.fill("input[name=username]", rig.username)
    pg.fill("input[name=password]", rig.password)
    pg.locator("form button[type=submit], form input[type=submit]").first.click()
    pg.wait_for_url(lambda url: "/accounts/login/" not in url, timeout=15000)
    yield pg
    context.close()


def _scan_dims(rig: Rig, rows: int, cols: int) -> None:
    rig.ioc_put("scan2.NPTS", rows)
    rig.ioc_put("scan1.NPTS", cols)


def _jobs_of_scan(rig: Rig, scan: str) -> list[int]:
    return [j["id"] for j in rig.jobs_after(0) if f"{scan}_" in str(j.get("dedup_key") or "")]


def test_cpu_target_40x40_at_200_frames_per_s_in_the_browser(rig: Rig, page) -> None:  # type: ignore[no-untyped-def]
    _scan_dims(rig, 40, 40)
    s = play_and_watch(rig, page)
    row = s.pop("_row")
    assert s["status"] == "done" and s["message"] == "", s
    assert s["frames_written"] == 1600 and s["write_rate_hz"] >= 190 / _contention(), s
    assert s["frames_received"] == 1600 and s["frames_dropped"] == 0 and s["outcome"] == "ended", s
    assert s["images_while_acquiring"] >= 5, s  # the image fills in while the scan runs
    assert s["lag_max_s"] <= LAG_S * _contention(), s
    assert s["overhead_s"] <= 2.0, s  # written <= 2 s after the edge plus the finishing iterations
    epochs = int(s["live_iterations"]) + int(s["finish_iterations"])
    nrmse, _batch_s = batch_nrmse(row, rig.data_dir, s["scan"], epochs)
    assert nrmse <= 0.05, (nrmse, s)
    key = next(iter(_keys(rig, s["scan"])))
    assert rig.stream_verdict(key) == "stream_ended"  # decided for good: nothing more may come after this
    assert _jobs_of_scan(rig, s["scan"]) == [s["job"]]
    assert rig.journal_events(key)["covered_by_stream"]


def _keys(rig: Rig, scan: str) -> list[str]:
    return [str(r[0]) for r in rig._journal_rows("SELECT dedup_key FROM scans WHERE dedup_key LIKE ?",
                                                  (f"%/{scan}_data_%",))]


def test_an_aborted_scan_keeps_its_partial_result_and_queues_nothing_more(rig: Rig, page) -> None:  # type: ignore[no-untyped-def]
    _scan_dims(rig, 20, 20)
    rig.ioc_put("sim:PointTime", 0.01)
    last = max((j["id"] for j in rig.jobs_after(0)), default=0)
    rig.ioc_put("sim:Go", 1)
    job_id = int(wait_for(lambda: rig.jobs_after(last), 30, "the streaming job")[0]["id"])
    page.goto(f"/jobs/{job_id}/")
    wait_for(lambda: job_row(rig, job_id)["live"].get("frames_received", 0) >= 50, 30, "50 frames in")
    rig.ioc_put("sim:Abort", 1)
    wait_for(lambda: job_row(rig, job_id)["status"] == "done", 60, f"job {job_id} to finish")
    row = job_row(rig, job_id)
    received = row["live"]["frames_received"]
    assert row["live"]["outcome"] == "aborted" and row["live"]["partial"] and 50 <= received < 400
    assert row["message"] == f"partial: scan aborted after {received} of 400 frames"
    page.wait_for_selector("#partial:not([hidden])", timeout=15000)
    assert "aborted" in (page.text_content("#st-phase") or "")
    assert rig.jobs_after(job_id) == []  # the aborted end queued no batch job
    rig.ioc_put("sim:PointTime", 0.005)


def test_frames_reaching_the_file_out_of_order_are_placed_and_the_scan_is_complete(rig: Rig) -> None:
    _scan_dims(rig, 20, 20)
    rig.ioc_put("sim:LiveShuffle", 16)
    try:
        last = max((j["id"] for j in rig.jobs_after(0)), default=0)
        rig.ioc_put("sim:Go", 1)
        job_id = int(wait_for(lambda: rig.jobs_after(last), 30, "the streaming job")[0]["id"])
        wait_for(lambda: job_row(rig, job_id)["status"] == "done", 90, f"job {job_id} to finish")
    finally:
        rig.ioc_put("sim:LiveShuffle", 0)
    row = job_row(rig, job_id)
    live = row["live"]
    assert live["outcome"] == "ended" and not live["partial"] and row["message"] == "", row
    assert live["frames_received"] == 400 and live["frames_dropped"] == 0 and live["out_of_order"] > 0, live
    (key,) = {str(j["dedup_key"]) for j in rig.jobs_after(job_id - 1) if j["id"] == job_id}
    assert rig.stream_verdict(key) == "stream_ended"
    assert rig.jobs_after(job_id) == []  # its complete end queued nothing more


def test_a_streaming_job_that_failed_mid_scan_and_its_replacement_too_leave_the_scan_to_one_batch_job(
        rig: Rig) -> None:
    _scan_dims(rig, 20, 20)
    rig.ioc_put("sim:PointTime", 0.02)  # an 8 s scan: the failure at point 100 is seen while it acquires
    rig.ioc_put("sim:LiveDark", 100)  # scan point 100 of 400 reaches the live file dark: the streaming job fails
    try:
        last = max((j["id"] for j in rig.jobs_after(0)), default=0)
        rig.ioc_put("sim:Go", 1)
        stream = wait_for(lambda: rig.jobs_after(last), 30, "the streaming job")[0]
        wait_for(lambda: job_row(rig, stream["id"])["status"] == "failed", 60, "the streaming job to fail")
        failed = job_row(rig, stream["id"])
        assert "frame index 100: no photons" in failed["message"] and failed["live"]["frames_received"] > 0, failed
        key = str(stream["dedup_key"])
        # the replacement reads the same file from its first frame, meets the same dark frame and fails too
        again = wait_for(lambda: rig.jobs_after(stream["id"]), 30, "the replacement streaming job")[0]
        assert again["dedup_key"] == key + "#restream"
        wait_for(lambda: job_row(rig, again["id"])["status"] == "failed", 60, "the replacement to fail")
    finally:
        rig.ioc_put("sim:LiveDark", -1)
        rig.ioc_put("sim:PointTime", 0.005)
    batch = wait_for(lambda: rig.jobs_after(again["id"]), 30, "the batch job")[0]
    assert batch["dedup_key"] == key + "#batch"
    wait_for(lambda: job_row(rig, batch["id"])["status"] in ("done", "failed"), 60, "the batch job to finish")
    done = job_row(rig, batch["id"])
    assert done["status"] == "done" and done["parameters"]["data"]["live_source"] == "none", done["message"]
    time.sleep(1.0)
    assert [j["id"] for j in rig.jobs_after(last)] == [stream["id"], again["id"], batch["id"]]
    events = rig.journal_events(key)
    assert "stream_failed_during_scan" in events and "stream_failed_batch" in events


def test_a_stalled_stream_times_out_with_its_partial_result(rig: Rig) -> None:
    _scan_dims(rig, 20, 20)
    rig.ioc_put("sim:PointTime", 0.02)
    last = max((j["id"] for j in rig.jobs_after(0)), default=0)
    rig.ioc_put("sim:Go", 1)
    job_id = int(wait_for(lambda: rig.jobs_after(last), 30, "the streaming job")[0]["id"])
    wait_for(lambda: job_row(rig, job_id)["live"].get("frames_received", 0) >= 30, 30, "30 frames in")
    simioc = next(p for p in rig.procs if p.name == "simioc")
    assert simioc.proc is not None
    os.killpg(simioc.proc.pid, signal.SIGKILL)  # the detector dies: its file stays 'acquiring'
    t_killed = time.monotonic()
    wait_for(lambda: job_row(rig, job_id)["status"] == "done", 60, f"job {job_id} to finish")
    row = job_row(rig, job_id)
    assert row["live"]["outcome"] == "stalled" and row["live"]["partial"]
    assert row["message"].startswith("partial: scan stalled after ")
    assert time.monotonic() - t_killed >= 3.0  # -liveStall (3 s in the rig's [stream] values)
    assert Path(row["result_path"]).is_file()


def _pg_job(rig: Rig, job_id: int) -> dict[str, Any]:
    """The job's row in the production database (status, message, live, dedup key, times)."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(rig.database_url, row_factory=dict_row) as pg:
        row = pg.execute("SELECT id, status, message, live, dedup_key, created, started, finished FROM jobs_job"
                         " WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return dict(row)


def stop_the_worker_mid_scan(rig: Rig) -> tuple[dict, dict, dict, dict]:
    """Play a scan on a production rig; once its streaming job took 40 frames stop the worker (SIGTERM: the job
    ends failed, not re-queued) and start it again; wait for the bridge's replacement (``<key>#restream``) to end.
    (the first job's jobs_after row, its final row, the replacement's jobs_after row, its final row)."""
    rig.ioc_put("sim:Go", 1)
    stream = wait_for(lambda: rig.jobs_after(0), 30, "the streaming job")[0]
    wait_for(lambda: (_pg_job(rig, stream["id"])["live"] or {}).get("frames_received", 0) >= 40, 30, "40 frames in")
    worker = next(p for p in rig.procs if p.name == "worker")
    worker.stop()
    failed = _pg_job(rig, stream["id"])
    assert failed["status"] == "failed" and "stopped while streaming" in failed["message"], failed
    worker.start()
    again = wait_for(lambda: rig.jobs_after(stream["id"]), 30, "the replacement streaming job")[0]
    assert again["dedup_key"] == str(stream["dedup_key"]) + "#restream"
    wait_for(lambda: _pg_job(rig, again["id"])["status"] in ("done", "failed"), 90, "the replacement to end")
    return stream, failed, again, _pg_job(rig, again["id"])


def assert_the_replacement_covers_the_scan(rig: Rig, stream: dict, again: dict, done: dict, n: int) -> None:
    """The replacement (final row ``done``) ended done with all ``n`` frames, none dropped, not partial; the bridge
    decided the scan is covered by it (no batch job); the scan's jobs are the failed first one and it."""
    live = done["live"]
    assert done["status"] == "done" and done["message"] == "", done
    assert live["frames_received"] == n and live["frames_dropped"] == 0 and live["outcome"] == "ended", live
    assert not live["partial"], live
    assert rig.stream_verdict(str(stream["dedup_key"])) == "stream_ended"
    assert [j["id"] for j in rig.jobs_after(0)] == [stream["id"], again["id"]]


def test_a_streaming_job_whose_worker_stopped_mid_scan_is_replaced_by_one_that_covers_the_scan(
        tmp_path: Path) -> None:
    """Production (PostgreSQL, Redis, a worker process, the bridge process): the worker is stopped (SIGTERM) and
    started again while the scan acquires; its streaming job ends failed, the bridge replaces it at once by one
    streaming job (``<key>#restream``) that reads the live file from its first frame and ends done with the
    complete scan, and no batch job is queued."""
    opts = RigOptions(mode="production", workdir=tmp_path, rows=20, cols=20, size_px=64, point_time_s=0.02,
                      stream=True, finish_iterations=5, stall_s=10.0, file_max_backoff_s=1.0, log=lambda _: None)
    rig = Rig(opts)
    try:
        rig.start()
        stream, failed, again, done = stop_the_worker_mid_scan(rig)
        key = str(stream["dedup_key"])
        assert_the_replacement_covers_the_scan(rig, stream, again, done, 400)
        events = rig.journal_events(key)
        assert "stream_failed_during_scan" in events and "stream_failed_batch" not in events
        noticed_s = events["stream_failed_during_scan"] - failed["finished"].timestamp()
        opened_s = done["created"].timestamp() - failed["finished"].timestamp()
        running_s = done["started"].timestamp() - failed["finished"].timestamp()
        print(f"streaming job {stream['id']} failed; the bridge noticed it {noticed_s:.2f} s later, the "
              f"replacement {again['id']} was created {opened_s:.2f} s and ran {running_s:.2f} s after the failure "
              f"(max_backoff_s {opts.file_max_backoff_s}; the worker restarted meanwhile; load "
              f"{os.getloadavg()[0]:.1f})")
        assert noticed_s <= 1.0 + 2.0 * _contention()  # one question's interval, plus a loaded machine's delays
    finally:
        rig.stop()


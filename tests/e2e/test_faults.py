"""The fault suite: real PostgreSQL, Redis, Daphne and worker processes, broken the way services break.

Each scenario asserts what a user sees through the JSON API: 0 jobs lost (every job ends ``done``, or
``cancelled`` when cancelled; a streaming job whose worker is stopped ends ``failed`` with its partial result, never
re-queued), 0 results duplicated (one result file per job, one run that wrote it), and every
job back to ``running`` or ``done`` within ``RECOVERY_S`` of the service returning. The measured recovery times
are printed (``-s``) and documented in docs/deploy.md ("Failures and recovery").

These tests own their PostgreSQL and Redis (restarting the session's servers would break other tests).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.services import PostgresServer, PrerequisiteMissing, RedisServer
from tests.support.stack import ProductionStack, User, small_sim_cmdstr
from tests.support.web import ApiClient

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(300)]

RECOVERY_S = 10.0
ALIVE = frozenset({"running", "done"})
FINAL = frozenset({"done", "failed", "cancelled"})


@dataclass
class Timeline:
    """Every job's (status, worker, iteration) as the API showed it, sampled every 0.1 s by a thread."""

    fetch: Callable[[int], dict]
    job_ids: list[int]
    samples: list[tuple[float, int, str, str, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Timeline:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            for job_id in self.job_ids:
                with contextlib.suppress(Exception):
                    job = self.fetch(job_id)
                    self.samples.append((time.monotonic(), job_id, str(job["status"]), str(job.get("worker", "")),
                                         int(job.get("iteration") or 0)))
            self._stop.wait(0.1)

    def first(self, job_id: int, after: float, *, statuses: frozenset[str] = ALIVE, not_worker: str = "",
              past_iteration: int = -1) -> float:
        """Seconds from ``after`` to the first sample of ``job_id`` in ``statuses`` (on a worker other than
        ``not_worker``, past ``past_iteration`` when running); inf when never."""
        for t, j, status, worker, iteration in self.samples:
            if j != job_id or t < after or status not in statuses:
                continue
            if status == "running" and (worker == not_worker or iteration <= past_iteration):
                continue
            return t - after
        return float("inf")

    def longest_idle_wait(self, after: float, workers: int) -> float:
        """The longest stretch after ``after`` during which a job was queued while fewer than ``workers`` jobs
        ran (a worker idle while a job waits): what a lost message looks like."""
        longest, since = 0.0, None
        for t in sorted({s[0] for s in self.samples if s[0] >= after}):
            latest: dict[int, str] = {}
            for ts, j, status, _, _ in self.samples:
                if ts <= t:
                    latest[j] = status
            waiting = "queued" in latest.values() and sum(v == "running" for v in latest.values()) < workers
            if waiting and since is None:
                since = t
            elif not waiting and since is not None:
                longest, since = max(longest, t - since), None
        if since is not None:
            longest = max(longest, max(s[0] for s in self.samples) - since)
        return longest


@dataclass
class FaultStack:
    postgres: PostgresServer
    redis: RedisServer
    stack: ProductionStack
    user: User
    api: ApiClient = field(init=False)

    def __post_init__(self) -> None:
        self.api = ApiClient(self.stack.base_url, self.user.token)

    def submit(self, iterations: int, label: str) -> int:
        return int(self.api.submit(small_sim_cmdstr(iterations, job_id=label), label=label)["id"])

    def job(self, job_id: int) -> dict:
        """The job as the API shows it; retried while the web process itself waits for the database."""
        deadline = time.monotonic() + 30
        while True:
            resp = self.api.get(f"/api/v1/jobs/{job_id}/")
            if resp.status == 200:
                return dict(resp.json())
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id}: the API answers {resp.status}: {resp.text[:300]}")
            time.sleep(0.2)

    def status(self, job_id: int) -> str:
        return str(self.job(job_id)["status"])

    def wait(self, job_id: int, statuses: frozenset[str], timeout_s: float) -> tuple[dict, float]:
        """(the job, the monotonic time it first showed one of ``statuses``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job, time.monotonic()
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not in {sorted(statuses)} after {timeout_s:.0f} s: "
                                     f"{ {k: job.get(k) for k in ('status', 'iteration', 'message')} }\n"
                                     f"{self.stack.logs()}")
            time.sleep(0.1)

    def wait_progress(self, job_id: int, past_iteration: int, timeout_s: float) -> float:
        """The monotonic time the job shows an iteration past ``past_iteration`` (or done)."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if job["status"] == "done" or (job["status"] == "running" and int(job["iteration"]) > past_iteration):
                return time.monotonic()
            if job["status"] in FINAL or time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} made no progress past iteration {past_iteration}: {job}\n"
                                     f"{self.stack.logs()}")
            time.sleep(0.1)

    def result_files(self, job_id: int) -> list[Path]:
        folder = self.stack.results_dir / f"job_{job_id}"
        return sorted(folder.iterdir()) if folder.is_dir() else []

    def assert_done_once(self, job_id: int, timeout_s: float = 120) -> dict:
        job, _ = self.wait(job_id, FINAL, timeout_s)
        assert job["status"] == "done", f"job {job_id} ended {job['status']}: {job.get('message')}"
        assert int(job["iteration"]) == int(job["iterations"]), job
        files = self.result_files(job_id)
        # the result and the scrubber's snapshots (webapp.jobs.snapshots): nothing else, no half-written file
        assert [f.name for f in files if f.name != "snapshots"] == ["result.h5"], (
            f"job {job_id}: result files {files} (debris or a copy)")
        snapshots = [f.name for f in (self.stack.results_dir / f"job_{job_id}" / "snapshots").glob("*")]
        assert all(re.fullmatch(r"it_\d{8}\.frame", name) for name in snapshots), (
            f"job {job_id}: snapshot folder holds {sorted(snapshots)} (debris)")
        return job

    def workers(self, n: int) -> None:
        """Exactly ``n`` live workers (the first ``n``)."""
        for i, w in enumerate(self.stack.workers):
            if i >= n and w.alive:
                w.stop()
        for i in range(n):
            self.stack.start_worker(i)

    def worker_running(self, job_id: int) -> int:
        """The index of the stack's worker that runs ``job_id`` (from the row's ``hostname:pid``)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job = self.job(job_id)
            pid_text = str(job.get("worker", "")).rpartition(":")[2]
            if job["status"] == "running" and pid_text.isdigit():
                for i, w in enumerate(self.stack.workers):
                    if w.alive and int(pid_text) in _process_group(w.pid):
                        return i
            time.sleep(0.1)
        raise AssertionError(f"no live worker of the stack runs job {job_id}: {self.job(job_id)}")


def _process_group(pgid: int) -> set[int]:
    """Pids in process group ``pgid`` (the dramatiq master and its worker child)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields_after_name = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields_after_name[2]) == pgid:
                pids.add(int(stat.parent.name))
    return pids


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    postgres, redis = PostgresServer(), RedisServer()
    try:
        postgres.start()
        redis.start()
    except PrerequisiteMissing as exc:
        pytest.fail(f"the fault suite needs PostgreSQL and Redis: {exc}", pytrace=False)
    stack = ProductionStack("faults", postgres.url("ptychopy"), redis.url(0), tmp_path_factory.mktemp("faults"))
    stack.env["PTYCHOPY_JOB_MEMORY_GIB"] = "6"  # the cap the oversized jobs of issue 15 were OOM-killed at
    try:
        stack.setup()
        user = stack.add_user("fay", "fay-pw-12345")
        stack.start_web()
        stack.start_worker(0)
        stack.start_worker(1)
        yield FaultStack(postgres, redis, stack, user)
    finally:
        stack.stop()
        redis.stop()
        postgres.stop()


def report(scenario: str, times_s: dict[str, float]) -> None:
    text = ", ".join(f"{k} {v:.1f} s" for k, v in times_s.items())
    print(f"\n[recovery] {scenario}: {text}")


@pytest.mark.parametrize("down_s", [0.3, 3.0])
def test_postgres_restart_mid_job_every_job_recovers_and_cancel_takes_effect(faults: FaultStack,
                                                                              down_s: float) -> None:
    faults.workers(2)
    finishing = faults.submit(200, f"pg{down_s}-finish")
    cancelled = faults.submit(100_000, f"pg{down_s}-cancel")
    queued = faults.submit(30, f"pg{down_s}-queued")
    for job_id in (finishing, cancelled):
        faults.wait_progress(job_id, 2, 60)
    assert faults.status(queued) == "queued"
    with Timeline(faults.job, [finishing, cancelled, queued]) as timeline:
        iteration_before = int(faults.job(finishing)["iteration"])
        back = faults.postgres.restart(down_s)
        resp = faults.api.post(f"/api/v1/jobs/{cancelled}/cancel/")
        assert resp.status == 202, resp
        job, _ = faults.wait(cancelled, FINAL, 60)
        assert job["status"] == "cancelled", job
        faults.assert_done_once(finishing)
        faults.assert_done_once(queued)
    times = {"running job progresses": timeline.first(finishing, back, past_iteration=iteration_before),
             "cancel takes effect": timeline.first(cancelled, back, statuses=frozenset({"cancelled"})),
             "queued job runs": timeline.first(queued, back)}
    report(f"PostgreSQL down {down_s} s", times)
    for what, took in times.items():
        assert took <= RECOVERY_S, f"{what}: {took:.1f} s after PostgreSQL came back (target {RECOVERY_S} s)"
    assert all(w.alive for w in faults.stack.workers[:2]), "a worker died of the database restart"


def test_redis_restart_with_jobs_queued_runs_them_all(faults: FaultStack) -> None:
    faults.workers(2)
    running = [faults.submit(100, f"redis-run{i}") for i in range(2)]
    for job_id in running:
        faults.wait(job_id, frozenset({"running"}), 60)
    queued = [faults.submit(20, f"redis-queued{i}") for i in range(3)]
    assert {faults.status(j) for j in queued} == {"queued"}
    with Timeline(faults.job, running + queued) as timeline:
        faults.redis.halt()  # no persistence: every queued message is gone
        t_down = time.monotonic()
        during = faults.submit(20, "redis-during")  # the row is committed; its message waits for the broker
        queued.append(during)
        timeline.job_ids.append(during)
        time.sleep(max(0.0, 2.0 - (time.monotonic() - t_down)))
        back = faults.redis.resume()
        for job_id in running + queued:
            faults.assert_done_once(job_id)
    # a queued job may wait for a busy worker; a worker idle while a job stays queued means a lost message
    times = {"longest wait with a worker idle": timeline.longest_idle_wait(back, workers=2),
             "last queued job running": max(timeline.first(j, back) for j in queued)}
    report("Redis down 2 s", times)
    assert times["longest wait with a worker idle"] <= RECOVERY_S, times
    faults.assert_done_once(faults.submit(10, "redis-after"), timeout_s=60)


def test_worker_sigkilled_mid_job_the_job_finishes_once(faults: FaultStack) -> None:
    faults.workers(2)
    job_id = faults.submit(200, "sigkill-once")
    faults.wait_progress(job_id, 2, 60)
    victim = faults.worker_running(job_id)
    old_worker = str(faults.job(job_id)["worker"])
    with Timeline(faults.job, [job_id]) as timeline:
        killed_at = time.monotonic()
        faults.stack.workers[victim].kill()  # the other worker's reconciler sees the pid gone, re-queues the job
        faults.assert_done_once(job_id)
    took = timeline.first(job_id, killed_at, not_worker=old_worker)
    report("worker SIGKILLed", {"job running again on the other worker": took})
    assert took <= RECOVERY_S


def test_a_job_that_kills_its_worker_twice_is_failed_not_redelivered_forever(faults: FaultStack) -> None:
    faults.workers(2)
    job_id = faults.submit(100_000, "killer")
    seen = ""
    for _ in range(2):  # an out-of-memory kill is a SIGKILL: the same job kills each worker that takes it
        deadline = time.monotonic() + 60
        while (job := faults.job(job_id))["status"] != "running" or job["worker"] == seen:
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        seen = str(job["worker"])
        faults.stack.workers[faults.worker_running(job_id)].kill()
    killed_at = time.monotonic()
    # no worker is alive now: the web process's reconciler tells the truth
    job, t_failed = faults.wait(job_id, FINAL, RECOVERY_S)
    report("a job that kills its worker twice", {"failed after the second kill": t_failed - killed_at})
    assert job["status"] == "failed", job
    assert "killed the worker twice (likely out of memory)" in job["message"], job
    faults.workers(2)
    time.sleep(3)  # restarted workers re-queue what is unfinished at start-up: not this one
    assert faults.status(job_id) == "failed"


def test_an_oversized_job_is_refused_up_front_and_no_worker_dies(faults: FaultStack) -> None:
    faults.workers(2)
    pids = [w.pid for w in faults.stack.workers[:2]]
    for flags in ("-scanDims=200,200 -size=256", "-size=8192", "-probeModes=64 -size=2048"):
        resp = faults.api.post("/api/v1/jobs/", {"cmdstr": f"./ptycho -simulate=1 {flags} -i=5"})
        assert resp.status == 400, (flags, resp)
        message = resp.json()["problems"][0]["message"]
        assert "GiB of host memory" in message and "more than the 6.00 GiB allowed" in message, message
    faults.assert_done_once(faults.submit(10, "after-oversized"), timeout_s=60)
    assert [w.pid for w in faults.stack.workers[:2]] == pids and all(w.alive for w in faults.stack.workers[:2])


def test_a_job_too_big_for_the_workers_memory_limit_is_refused_by_the_worker(faults: FaultStack) -> None:
    """Below the submit cap (6 GiB) but above the worker's own limit (a 1 GiB memory cgroup, as a container's
    limit): the worker plans before loading anything and fails the job with the reason; it is not OOM-killed."""
    from tests.support.cgroup import CgroupUnavailable, memory_cgroup, worker_in_cgroup

    faults.workers(0)
    try:
        with memory_cgroup(2**30) as group:
            boxed = worker_in_cgroup("faults-worker-1gib", faults.stack.env, group)
            try:
                boxed.start()
                # about 1.2 GiB planned: 1600 positions of 256^2, simulated
                job_id = int(faults.api.submit(small_sim_cmdstr(5, size=256, scan=40, job_id="too-big"))["id"])
                job, _ = faults.wait(job_id, FINAL, 60)
                assert job["status"] == "failed", job
                assert job["message"].startswith("Refused before it started"), job["message"]
                assert "left under this process's cgroup memory limit" in job["message"], job["message"]
                assert boxed.alive, "the worker died"
                faults.assert_done_once(faults.submit(10, "fits-in-1gib"), timeout_s=60)
                assert boxed.alive and boxed.starts == 1
            finally:
                boxed.kill()
    except CgroupUnavailable as exc:
        pytest.skip(f"no memory cgroup here ({exc}); the submit-time refusal above stands in")
    finally:
        faults.workers(2)


def test_an_idle_viewer_stays_connected_with_no_error_logged(faults: FaultStack) -> None:
    """Nothing to send for 13 s (a finished job): the websocket stays open; before the fix Redis' 5 s socket
    timeout met channels_redis' 5 s blocking read and Daphne closed the socket with 1011 and an ERROR."""
    import asyncio

    from websockets.exceptions import ConnectionClosed

    from tests.support.frames import open_viewer
    from tests.support.web import WebClient

    job_id = faults.submit(5, "idle-viewer")
    faults.wait(job_id, FINAL, 60)
    web = WebClient(faults.stack.base_url)
    web.login(faults.user.username, faults.user.password)
    log_before = len(faults.stack.web.log_text()) if faults.stack.web else 0

    async def watch() -> tuple[int, float]:
        frames = 0
        t0 = time.monotonic()
        async with await open_viewer(faults.stack.base_url, job_id, web.cookie_header(),
                                     faults.stack.origin) as ws:
            try:
                while time.monotonic() - t0 < 13:
                    try:
                        await asyncio.wait_for(ws.recv(), timeout=13 - (time.monotonic() - t0))
                        frames += 1
                    except TimeoutError:
                        break
            except ConnectionClosed as exc:
                raise AssertionError(f"the idle viewer was closed after {time.monotonic() - t0:.1f} s: "
                                     f"code {exc.rcvd.code if exc.rcvd else None}") from exc
            await ws.ping()  # still open and answering
        return frames, time.monotonic() - t0

    frames, open_s = asyncio.run(watch())
    assert frames >= 1 and open_s >= 12.5, (frames, open_s)
    new_log = faults.stack.web.log_text()[log_before:] if faults.stack.web else ""
    assert " ERROR " not in new_log and "Traceback" not in new_log, new_log[-3000:]


def test_a_worker_stopped_with_sigterm_mid_stream_fails_its_streaming_job_keeping_the_frames(faults: FaultStack):
    """``systemctl stop`` of a production worker (SIGTERM to ``python -m webapp.worker``) while a streaming job
    takes frames: the job stops at once, keeps the partial result of the frames that arrived and ends failed,
    never re-queued (docs/streaming.md, "A worker stopped while streaming")."""
    import subprocess
    import sys

    faults.workers(1)
    scan = "./ptycho -size=32 -scanDims=8,8 -step=150e-9,150e-9 -beamSize=500e-9 -photons=1e6 -seed=0"
    path = faults.stack.data_root / "stream_stop.h5"
    job_id = int(faults.api.submit(f"{scan} -sqrtData=1 -device=cpu -algorithm=ePIE -liveSource=swmr -fp={path} "
                                   "-liveFinish=50", label="stream-stop")["id"])
    writer = subprocess.Popen([sys.executable, "-m", "ptychopy", "simwrite", str(path), scan, "--rate", "10"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while int((faults.job(job_id).get("live") or {}).get("frames_received") or 0) < 5:
            assert time.monotonic() < deadline, faults.job(job_id)
            time.sleep(0.1)
        took = faults.stack.workers[0].stop()
    finally:
        writer.kill()
        writer.wait()
    job = faults.job(job_id)
    k = int(job["live"]["frames_received"])
    report("worker SIGTERMed mid-stream", {"worker stopped, the job failed with its partial result": took})
    assert job["status"] == "failed" and job["partial"] and 5 <= k < 64, job
    assert f"stopped while streaming, after {k} of 64 frames received (phase acquiring)" in job["message"]
    assert [f.name for f in faults.result_files(job_id) if f.name != "snapshots"] == ["result.h5"]
    assert took < 10, took

"""The reconciler, numbered claims and database outages on the StubBroker (real restarts: tests/e2e/test_faults.py)."""

import os
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone
from webapp_helpers import dead_pid, small_parameters

from webapp import dbretry
from webapp.jobs import queue, reconciler, runner, services
from webapp.jobs.models import Job, WorkerHeartbeat
from webapp.live import status
from webapp.workers.heartbeat import this_host

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def no_frames(monkeypatch):
    monkeypatch.setattr(runner, "publish_frame", lambda job_id, data: None)
    monkeypatch.setattr(status, "publish_frame", lambda job_id, data: None)


def running_job(worker: str, **fields) -> Job:
    return Job.objects.create(parameters=small_parameters().to_dict(), algorithm="ePIE", status="running",
                              worker=worker, started=timezone.now() - timedelta(seconds=60), attempts=1, **fields)


def test_a_claim_numbers_the_attempt_and_a_redelivered_message_does_nothing(broker, no_frames):
    job = services.submit_job(small_parameters(iterations=3))
    claimed = runner.claim(job.pk)
    assert isinstance(claimed, Job) and claimed.attempts == 1 and claimed.status == "running"
    from webapp.workers import heartbeat

    heartbeat.set_current_job(job.pk)
    try:
        assert runner.claim(job.pk) == "running elsewhere"  # same message again while this worker runs it
    finally:
        heartbeat.set_current_job(None)
    assert Job.objects.get(pk=job.pk).attempts == 1


def test_a_run_whose_attempt_was_taken_over_stops_and_writes_nothing(broker, no_frames):
    job = services.submit_job(small_parameters(iterations=3))
    claimed = runner.claim(job.pk)
    assert isinstance(claimed, Job)
    Job.objects.filter(pk=job.pk).update(attempts=2, worker="elsewhere:1", iteration=0)
    with pytest.raises(runner.JobTakenOver):
        runner.JobRun(claimed).update(iteration=5)
    assert Job.objects.get(pk=job.pk).iteration == 0


def test_a_running_job_of_a_dead_worker_is_requeued_then_failed_the_second_time(broker, no_frames, settings):
    settings.PTYCHOPY_MAX_WORKER_LOSSES = 2
    job = running_job(f"{this_host()}:{dead_pid()}")
    done = reconciler.reconcile_once(broker)
    assert done.requeued == [job.pk]
    job.refresh_from_db()
    assert job.status == "queued" and job.worker_losses == 1 and "stopped mid-run" in job.message
    assert reconciler.broker_job_ids(broker) == {job.pk}
    claimed = runner.claim(job.pk)  # the next worker takes it, and dies too
    assert isinstance(claimed, Job) and claimed.attempts == 2
    Job.objects.filter(pk=job.pk).update(worker=f"{this_host()}:{dead_pid()}",
                                         started=timezone.now() - timedelta(seconds=60))
    assert reconciler.reconcile_once(broker).failed == [job.pk]
    job.refresh_from_db()
    assert job.status == "failed" and job.finished is not None
    assert "killed the worker twice (likely out of memory)" in job.message
    assert runner.claim(job.pk) == "already finished"  # a message still in the broker does nothing


def test_a_redelivered_message_of_a_dead_workers_job_counts_the_loss(broker, no_frames, settings):
    settings.PTYCHOPY_MAX_WORKER_LOSSES = 2
    job = running_job(f"{this_host()}:{dead_pid()}", worker_losses=1)
    assert runner.claim(job.pk) == "failed: its workers died under it"
    assert "killed the worker twice" in Job.objects.get(pk=job.pk).message


def test_a_streaming_job_of_a_dead_worker_fails_at_once_naming_the_frames_received(broker, no_frames, settings):
    settings.PTYCHOPY_MAX_WORKER_LOSSES = 3
    params = small_parameters().to_dict()
    params["data"]["live_source"] = "swmr"
    job = running_job(f"{this_host()}:{dead_pid()}", live={"phase": "acquiring", "frames_planned": 36,
                                                          "frames_received": 14})
    Job.objects.filter(pk=job.pk).update(parameters=params)
    assert reconciler.reconcile_once(broker).failed == [job.pk]
    job.refresh_from_db()
    assert job.status == "failed" and job.finished is not None and job.worker_losses == 1
    assert "was lost while streaming, after 14 of 36 frames received (phase acquiring)" in job.message
    assert "not re-queued" in job.message and reconciler.broker_job_ids(broker) == set()
    assert runner.claim(job.pk) == "already finished"


def test_a_live_worker_that_no_longer_runs_its_job_gives_it_back(broker, no_frames, settings):
    settings.PTYCHOPY_HEARTBEAT_S = 1
    job = running_job("gpu-node-3:42")
    beat = WorkerHeartbeat.objects.create(worker_id="gpu-node-3:42", host="gpu-node-3", pid=42,
                                          last_seen=timezone.now(), current_job=job)
    assert reconciler.reconcile_once(broker).requeued == []  # it says it runs the job
    beat.current_job = None
    beat.save()
    assert reconciler.reconcile_once(broker).requeued == [job.pk]  # alive, idle, and the row says running


def test_a_job_running_on_this_live_worker_is_left_alone(broker, no_frames):
    job = running_job(f"{this_host()}:{os.getpid()}")
    from webapp.workers import heartbeat

    heartbeat.set_current_job(job.pk)
    try:
        assert not reconciler.reconcile_once(broker)
    finally:
        heartbeat.set_current_job(None)
    assert Job.objects.get(pk=job.pk).status == "running"


def test_submit_with_the_broker_down_leaves_the_job_to_the_reconciler(broker, monkeypatch, settings):
    import redis

    def refuse(*args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(queue, "send_message", refuse)
    job = services.submit_job(small_parameters())
    assert Job.objects.get(pk=job.pk).status == "queued"
    monkeypatch.undo()
    settings.PTYCHOPY_REQUEUE_AFTER_S = 0
    assert reconciler.reconcile_once(broker).resent == [job.pk]


def test_db_call_waits_for_the_database_and_gives_up_after_the_outage_limit(monkeypatch):
    monkeypatch.setattr(dbretry, "FIRST_BACKOFF_S", 0.01)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("server closed the connection unexpectedly")
        return "ok"

    assert dbretry.db_call(flaky, what="test", outage_s=5) == "ok" and len(calls) == 3

    def down():
        raise OperationalError("connection refused")

    with pytest.raises(OperationalError):
        dbretry.db_call(down, what="test", outage_s=0.05)


def test_frames_that_cannot_be_stored_do_not_fail_the_job(broker, no_frames, monkeypatch, settings):
    """A database outage mid-run: frame writes fail; the job goes on and finishes done."""
    settings.PTYCHOPY_FRAME_RATE_HZ = 1000  # a frame every iteration
    job = services.submit_job(small_parameters(iterations=12))
    claimed = runner.claim(job.pk)
    assert isinstance(claimed, Job)
    run = runner.JobRun(claimed)
    real_update = runner.JobRun.update
    outage = {"writes_left_failing": 6}

    def update(self, **fields):
        if "last_preview" in fields and outage["writes_left_failing"] > 0:
            outage["writes_left_failing"] -= 1
            raise OperationalError("terminating connection due to administrator command")
        return real_update(self, **fields)

    monkeypatch.setattr(runner.JobRun, "update", update)
    monkeypatch.setattr(runner, "db_call", lambda fn, **kw: fn())
    assert run.execute() == "done"
    job.refresh_from_db()
    assert job.status == "done" and job.iteration == 12 and outage["writes_left_failing"] == 0


def test_a_claim_that_outlasts_the_outage_is_retried_by_the_broker(settings):
    from webapp.jobs.tasks import retry_only_database_outages

    assert retry_only_database_outages(50, OperationalError("connection refused"))
    assert not retry_only_database_outages(0, ValueError("bad parameters"))


def test_a_forked_worker_publishes_on_its_own_loop_not_its_parents():
    """The dramatiq master publishes status frames at start-up (re-queued jobs), then forks its worker: the child
    must not reuse the parent's loop, whose thread does not exist there (every frame timed out)."""
    from webapp.live import publish

    parent_loop = publish._private_publishing_loop()
    assert publish._private_publishing_loop() is parent_loop
    publish._private_loop_pid = -1  # what a forked child sees: the loop was made by another process
    child_loop = publish._private_publishing_loop()
    assert child_loop is not parent_loop and publish._private_loop_pid == os.getpid()
    import asyncio

    async def answer() -> int:
        return 42

    assert asyncio.run_coroutine_threadsafe(answer(), child_loop).result(timeout=5) == 42  # a thread runs it


def test_a_claim_retried_after_the_database_dropped_its_answer_counts_no_worker_loss(broker, no_frames):
    job = services.submit_job(small_parameters(iterations=3))
    first = runner.claim(job.pk)  # the UPDATE committed, but say its answer was lost and db_call retries
    assert isinstance(first, Job)
    again = runner.claim(job.pk)
    assert isinstance(again, Job) and again.attempts == 2 and again.worker_losses == 0


def test_a_run_taken_over_during_an_outage_writes_no_result_file(broker, no_frames, settings, tmp_path,
                                                                 monkeypatch):
    settings.PTYCHOPY_RESULTS_DIR = tmp_path
    job = services.submit_job(small_parameters(iterations=4))
    claimed = runner.claim(job.pk)
    assert isinstance(claimed, Job)
    run = runner.JobRun(claimed)
    real_iterate = runner.JobRun.iterate

    def iterate_then_lose_the_job(self, rec):
        cancelled = real_iterate(self, rec)
        # meanwhile the reconciler gave the job to another worker, which claimed it as attempt 2
        Job.objects.filter(pk=job.pk).update(attempts=2, worker="elsewhere:7")
        return cancelled

    monkeypatch.setattr(runner.JobRun, "iterate", iterate_then_lose_the_job)
    with pytest.raises(runner.JobTakenOver):
        run.execute()
    assert not list(tmp_path.rglob("*.h5"))
    assert Job.objects.get(pk=job.pk).worker == "elsewhere:7"


def test_a_job_claimed_by_a_just_booted_worker_on_another_host_is_not_taken_back(broker, no_frames, monkeypatch):
    """A restarted container claims a job before its heartbeat thread has written a row: the web server's
    reconciler (another host) must see that worker alive, not count a second worker loss."""
    from webapp.workers import heartbeat

    job = services.submit_job(small_parameters(iterations=3))
    Job.objects.filter(pk=job.pk).update(worker_losses=1)  # its first worker already died under it
    monkeypatch.setattr(heartbeat, "this_host", lambda: "ptychopy-gpu0")
    claimed = runner.claim(job.pk)
    assert isinstance(claimed, Job) and claimed.worker.startswith("ptychopy-gpu0:")
    monkeypatch.undo()  # now judged from the web server's host
    assert WorkerHeartbeat.objects.filter(worker_id=claimed.worker).exists()
    done = reconciler.reconcile_once(broker)
    assert not done
    job.refresh_from_db()
    assert job.status == "running" and job.worker_losses == 1


def test_a_stopping_workers_heartbeat_row_stays_until_its_jobs_finished(broker):
    """A stop takes up to the shutdown grace (the job ends its iteration, a streaming job writes its partial
    result); until Dramatiq's after_worker_shutdown, a reconciler on another host must still read the worker as
    alive, or it re-queues the job that is still running."""
    from webapp.workers import heartbeat

    mw = heartbeat.HeartbeatMiddleware()
    heartbeat.beat()
    me = heartbeat.worker_id()
    mw.before_worker_shutdown(broker, None)  # the stop began: the worker threads still run their jobs
    assert WorkerHeartbeat.objects.filter(worker_id=me).exists()
    mw.after_worker_shutdown(broker, None)  # every worker thread joined
    assert not WorkerHeartbeat.objects.filter(worker_id=me).exists()

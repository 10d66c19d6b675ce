"""submit_job (dedup, race-safe), requeue_unfinished at start-up, cancel and delete."""

import os
import threading

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from webapp_helpers import dead_pid

from webapp.jobs import reconciler, services
from webapp.jobs.models import Job
from webapp.jobs.results import job_results_dir
from webapp.workers.heartbeat import this_host

pytestmark = pytest.mark.django_db(transaction=True)


def queued_ids(broker) -> list[int]:
    return [m.args[0] for m in _messages(broker)]


def _messages(broker):
    from dramatiq import Message

    queue = broker.queues.get("reconstruct")
    if queue is None:
        return []
    return [Message.decode(raw) for raw in list(queue.queue)]


def test_submit_creates_a_queued_row_and_sends_only_its_id(broker, small_params, user):
    job = services.submit_job(small_params, owner=user, label="scan 7")
    job.refresh_from_db()
    assert job.status == "queued" and job.owner == user and job.source == "web" and job.label == "scan 7"
    assert job.parameters == small_params.to_dict()
    assert job.algorithm == "ePIE" and job.iterations == small_params.reconstruction.iterations
    messages = _messages(broker)
    assert [tuple(m.args) for m in messages] == [(job.pk,)]
    assert messages[0].actor_name == "run_reconstruction" and messages[0].queue_name == "reconstruct"


def test_dedup_key_returns_the_existing_job_and_queues_nothing(broker, small_params):
    first = services.submit_job(small_params, source="epics", dedup_key="2-ID:scan152")
    again = services.submit_job(small_params, source="epics", dedup_key="2-ID:scan152")
    assert again.pk == first.pk
    assert Job.objects.count() == 1
    assert queued_ids(broker) == [first.pk]


def test_dedup_is_race_safe_across_threads(broker, small_params):
    barrier = threading.Barrier(6)
    ids: list[int] = []
    errors: list[BaseException] = []

    def submit():
        try:
            barrier.wait()
            ids.append(services.submit_job(small_params, source="epics", dedup_key="race").pk)
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 1 and Job.objects.filter(dedup_key="race").count() == 1
    assert queued_ids(broker) == ids[:1]


def test_requeue_on_start_up_resends_queued_and_orphaned_running_jobs(broker, small_params):
    queued = Job.objects.create(parameters=small_params.to_dict(), algorithm="ePIE", status="queued")
    dead_here = Job.objects.create(parameters=small_params.to_dict(), algorithm="ePIE", status="running",
                                   worker=f"{this_host()}:{dead_pid()}", iteration=5)
    dead_elsewhere = Job.objects.create(parameters=small_params.to_dict(), algorithm="ePIE", status="running",
                                        worker="gpu-node-7:1234")
    alive_here = Job.objects.create(parameters=small_params.to_dict(), algorithm="ePIE", status="running",
                                    worker=f"{this_host()}:{os.getppid()}")
    Job.objects.create(parameters=small_params.to_dict(), algorithm="ePIE", status="done")
    assert reconciler.requeue_unfinished() == 3
    assert sorted(queued_ids(broker)) == sorted([queued.pk, dead_here.pk, dead_elsewhere.pk])
    dead_here.refresh_from_db()
    assert dead_here.status == "queued"
    alive_here.refresh_from_db()
    assert alive_here.status == "running"


def test_cancel_queued_job_at_once_and_running_job_by_flag(broker, small_params, user, other_user, staff_user):
    job = services.submit_job(small_params, owner=user)
    with pytest.raises(PermissionDenied):
        services.cancel_job(job, other_user)
    job = services.cancel_job(job, user)
    assert job.status == "cancelled" and job.finished is not None and job.last_preview
    running = Job.objects.create(owner=user, parameters=small_params.to_dict(), algorithm="ePIE", status="running")
    running = services.cancel_job(running, staff_user)
    assert running.status == "running" and running.cancel_requested


def test_delete_removes_row_and_results(small_params, user, other_user, settings):
    job = Job.objects.create(owner=user, parameters=small_params.to_dict(), algorithm="ePIE", status="done")
    folder = job_results_dir(job.pk)
    folder.mkdir(parents=True)
    (folder / "result.h5").write_bytes(b"x")
    with pytest.raises(PermissionDenied):
        services.delete_job(job, other_user)
    services.delete_job(job, user)
    assert not Job.objects.filter(pk=job.pk).exists() and not folder.exists()


def test_unknown_source_is_refused(small_params):
    with pytest.raises(ValueError):
        services.submit_job(small_params, source="carrier-pigeon")


def test_requeue_leaves_jobs_of_live_or_late_workers_running(broker, small_params):
    from datetime import timedelta

    from django.utils import timezone

    from webapp.jobs.models import WorkerHeartbeat

    fresh = Job.objects.create(parameters=small_params.to_dict(), algorithm="ePIE", status="running",
                               worker="gpu-node-8:5")
    late = Job.objects.create(parameters=small_params.to_dict(), algorithm="ePIE", status="running",
                              worker="gpu-node-9:5")
    WorkerHeartbeat.objects.create(worker_id="gpu-node-8:5", host="gpu-node-8", pid=5)
    WorkerHeartbeat.objects.create(worker_id="gpu-node-9:5", host="gpu-node-9", pid=5,
                                   last_seen=timezone.now() - timedelta(seconds=8))
    assert reconciler.requeue_unfinished() == 1
    assert queued_ids(broker) == [late.pk]  # the actor looks again once that heartbeat is stale
    assert set(Job.objects.values_list("status", flat=True)) == {"running"}
    assert fresh.pk not in queued_ids(broker)

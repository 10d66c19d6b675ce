"""A queued job's position and estimated wait (webapp.jobs.queue_eta), computed from rows with known times."""

from datetime import timedelta

import pytest
from django.utils import timezone
from webapp_helpers import small_parameters

from webapp.jobs.models import Job, WorkerHeartbeat
from webapp.jobs.queue_eta import queue_estimate


def job(owner, status, *, iterations, iteration=0, started_ago_s=None, ran_s=None, created_ago_s=0.0, size=32,
        scan=4, source="web"):
    now = timezone.now()
    params = small_parameters(iterations=iterations).replace(
        {"preprocessing.size_px": size, "experiment.scan_dims": (scan, scan)})
    started = None if started_ago_s is None else now - timedelta(seconds=started_ago_s)
    finished = None if ran_s is None or started is None else started + timedelta(seconds=ran_s)
    return Job.objects.create(owner=owner, parameters=params.to_dict(), algorithm="ePIE", status=status,
                              iterations=iterations, iteration=iteration, started=started, finished=finished,
                              created=now - timedelta(seconds=created_ago_s), source=source)


@pytest.mark.django_db
def test_the_wait_adds_the_running_jobs_rest_at_its_own_rate_and_the_queue_ahead_at_the_recent_rate(user):
    # timed: 100 iterations of a 32 px, 4 x 4 scan in 100 s -> 1 s per iteration of that size
    job(user, Job.Status.DONE, iterations=100, iteration=100, started_ago_s=500, ran_s=100, created_ago_s=600)
    # running: 50 of 150 done in 20 s -> 100 left at 0.4 s each = 40 s
    job(user, Job.Status.RUNNING, iterations=150, iteration=50, started_ago_s=20, created_ago_s=300)
    # queued ahead: 200 iterations of a scan twice as wide (4 times the positions) -> 800 s
    job(user, Job.Status.QUEUED, iterations=200, scan=8, created_ago_s=200)
    mine = job(user, Job.Status.QUEUED, iterations=10, created_ago_s=100)
    behind = job(user, Job.Status.QUEUED, iterations=10, created_ago_s=50)

    est = queue_estimate(mine)
    assert est is not None
    assert (est.position, est.running, est.queued_ahead, est.workers) == (2, 1, 1, 1)
    assert est.wait_s == pytest.approx(40 + 800, rel=0.02)
    assert queue_estimate(behind).position == 3  # type: ignore[union-attr]
    assert queue_estimate(Job.objects.get(status=Job.Status.RUNNING)) is None

    for k in range(2):  # two live workers share the work ahead
        WorkerHeartbeat.objects.create(worker_id=f"h:{k}", host="h", pid=k + 1)
    est = queue_estimate(mine)
    assert est is not None and est.workers == 2 and est.wait_s == pytest.approx(420, rel=0.02)


@pytest.mark.django_db
def test_without_a_timed_job_there_is_a_position_but_no_wait(user):
    job(user, Job.Status.QUEUED, iterations=100, created_ago_s=20)
    mine = job(user, Job.Status.QUEUED, iterations=10, created_ago_s=10)
    est = queue_estimate(mine)
    assert est is not None and est.position == 2 and est.wait_s is None


@pytest.mark.django_db
def test_the_job_page_shows_the_position_and_the_estimate_for_a_queued_job(client, user):
    job(user, Job.Status.DONE, iterations=100, iteration=100, started_ago_s=500, ran_s=100, created_ago_s=600)
    # running but no iteration done yet: its 30 iterations at the recent rate (1 s each)
    job(user, Job.Status.RUNNING, iterations=30, started_ago_s=1, created_ago_s=20)
    mine = job(user, Job.Status.QUEUED, iterations=5, created_ago_s=10)
    client.force_login(user)
    html = client.get(f"/jobs/{mine.pk}/").content.decode()
    assert 'id="queue-position">1<' in html
    assert 'data-wait-s="30"' in html and "starts in about" in html and "Estimated from" in html


@pytest.mark.django_db
def test_a_running_or_queued_demo_does_not_count_for_a_persons_job(user):
    job(user, Job.Status.DONE, iterations=100, iteration=100, started_ago_s=500, ran_s=100, created_ago_s=600)
    job(user, Job.Status.RUNNING, iterations=12_000, iteration=50, started_ago_s=20, created_ago_s=300, source="demo")
    job(user, Job.Status.QUEUED, iterations=12_000, created_ago_s=200, source="demo")
    mine = job(user, Job.Status.QUEUED, iterations=10, created_ago_s=100)
    est = queue_estimate(mine)
    assert est is not None and (est.position, est.running, est.queued_ahead) == (1, 0, 0) and est.wait_s == 0

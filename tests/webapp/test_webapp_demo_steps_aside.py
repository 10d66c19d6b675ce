"""Embedded mode's one worker thread: the long demo steps aside for a person's queued job and runs again after it."""

import time

from webapp_helpers import small_parameters, wait_for

from webapp.jobs import runner, services
from webapp.jobs.models import Job
from webapp.live import status
from webapp.live.frames import decode_frame


def test_a_queued_job_starts_within_a_second_while_the_demo_runs_and_the_demo_runs_again_after_it(
        worker, broker, user, monkeypatch):
    sent: list = []
    monkeypatch.setattr(runner, "publish_frame", lambda job_id, data: sent.append((job_id, decode_frame(data)[0])))
    monkeypatch.setattr(status, "publish_frame", lambda job_id, data: sent.append((job_id, decode_frame(data)[0])))
    demo = services.submit_job(small_parameters(iterations=200_000), source="demo", label="Demo")
    wait_for(lambda: Job.objects.filter(pk=demo.pk, status="running", iteration__gt=2).exists(), 30)

    submitted = time.monotonic()
    mine = services.submit_job(small_parameters(iterations=5), owner=user)
    wait_for(lambda: Job.objects.get(pk=mine.pk).status == "done", 30)
    row = Job.objects.get(pk=mine.pk)
    waited_s = (row.started - row.created).total_seconds()
    assert waited_s < 1.0, f"the job waited {waited_s:.2f} s behind the demo"
    assert time.monotonic() - submitted < 10

    # the demo went back to the queue (its viewers were told), then runs again from the start
    demo_states = [h["status"] for job_id, h in sent if job_id == demo.pk]
    assert "queued" in demo_states
    assert any("stepped aside" in h.get("message", "") for job_id, h in sent if job_id == demo.pk)
    wait_for(lambda: Job.objects.filter(pk=demo.pk, status="running", attempts=2).exists(), 30)
    Job.objects.filter(pk=demo.pk).update(cancel_requested=True)
    wait_for(lambda: Job.objects.get(pk=demo.pk).is_finished, 30)


def test_a_job_that_is_not_a_demo_never_steps_aside(worker, broker, user):
    first = services.submit_job(small_parameters(iterations=60), owner=user)
    wait_for(lambda: Job.objects.filter(pk=first.pk, status="running", iteration__gt=1).exists(), 30)
    second = services.submit_job(small_parameters(iterations=3), owner=user)
    wait_for(lambda: Job.objects.get(pk=second.pk).status == "done", 60)
    a, b = Job.objects.get(pk=first.pk), Job.objects.get(pk=second.pk)
    assert a.status == "done" and a.attempts == 1 and b.started >= a.finished

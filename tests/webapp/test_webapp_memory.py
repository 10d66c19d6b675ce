"""Oversized jobs: refused at submit (API and form) against PTYCHOPY_JOB_MEMORY_GIB, and on the worker before any
data are loaded, with the bytes needed and allowed in the job's message."""

import json

import pytest
from webapp_helpers import small_parameters

from reconstruction import Parameters
from webapp.api.models import ApiToken
from webapp.jobs import runner, services
from webapp.jobs.models import Job
from webapp.live import status

pytestmark = pytest.mark.django_db(transaction=True)

OVERSIZED = "./ptycho -simulate=1 -scanDims=200,200 -size=256 -i=5"


def api_submit(client, user, cmdstr: str):
    key = ApiToken.objects.create(user=user).key
    return client.post("/api/v1/jobs/", json.dumps({"cmdstr": cmdstr}), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Token {key}")


def test_the_api_refuses_an_oversized_job_with_a_400_naming_the_sizes(client, user, settings):
    settings.PTYCHOPY_JOB_MEMORY_GIB = 6
    r = api_submit(client, user, OVERSIZED)
    assert r.status_code == 400, r.content
    problem = r.json()["problems"][0]
    assert problem["flag"] == "scanDims" and problem["value"] == [200, 200]
    assert "GiB of host memory" in problem["message"] and "more than the 6.00 GiB allowed" in problem["message"]
    assert not Job.objects.exists()


def test_the_form_refuses_an_oversized_job_on_the_page(client, user, settings):
    settings.PTYCHOPY_JOB_MEMORY_GIB = 6
    client.force_login(user)
    r = client.post("/jobs/new/", {"cmdstr": OVERSIZED})
    assert r.status_code == 200 and b"GiB of host memory" in r.content
    assert not Job.objects.exists()


def test_without_a_cap_the_web_lets_the_worker_judge(client, user, settings):
    settings.PTYCHOPY_JOB_MEMORY_GIB = 0
    assert api_submit(client, user, OVERSIZED).status_code == 201


def test_the_worker_refuses_an_oversized_job_before_loading_anything(broker, settings, monkeypatch):
    monkeypatch.setattr(runner, "publish_frame", lambda job_id, data: None)
    monkeypatch.setattr(status, "publish_frame", lambda job_id, data: None)
    settings.PTYCHOPY_JOB_MEMORY_GIB = 0  # accepted at submit (no cap there) ...
    job = services.submit_job(Parameters.from_cmdstr(OVERSIZED))
    settings.PTYCHOPY_JOB_MEMORY_GIB = 6  # ... judged by the worker against its own limit
    assert runner.run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.status == "failed" and job.message.startswith("Refused before it started: this ePIE run needs")
    assert "more than the 6.00 GiB allowed (PTYCHOPY_JOB_MEMORY_GIB)" in job.message
    small = services.submit_job(small_parameters(iterations=2))
    assert runner.run_job(small.pk) == "done"

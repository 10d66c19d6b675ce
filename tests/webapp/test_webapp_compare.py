"""The comparison page: two jobs' results aligned, with the FRC; clear refusals."""

import json
import re

import pytest
from webapp_helpers import small_parameters

from webapp.jobs import services
from webapp.jobs.models import Job


@pytest.mark.django_db(transaction=True)
def test_two_finished_jobs_are_compared_with_their_frc(worker, broker, client, user):
    jobs = [services.submit_job(small_parameters(iterations=15).replace({"reconstruction.seed": seed}), owner=user)
            for seed in (1, 2)]
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    a, b = (Job.objects.get(pk=j.pk) for j in jobs)
    assert a.status == b.status == "done"
    client.force_login(user)
    assert 'id="compare-form"' in client.get(f"/jobs/{a.pk}/").content.decode()
    response = client.get(f"/jobs/compare/?a={a.pk}&b={b.pk}")
    assert response.status_code == 200
    summary = response.context["summary"]
    pixel = small_parameters().pixel_size_m
    assert summary["pixel_m"] == pytest.approx(pixel) and pixel <= summary["resolution_m"] < 40 * pixel
    found = re.search(r'<script id="compare-data" type="application/json">(.*?)</script>', response.content.decode())
    assert found
    data = json.loads(found[1])
    assert [img["name"] for img in data["images"]] == ["phase_a", "phase_b", "phase_difference"]
    assert len(data["frc"]["frc"]) == len(data["frc"]["frequency_per_m"]) >= 8

    # the same job with itself: no shift, no difference, the FRC never falls
    same = client.get(f"/jobs/compare/?a={a.pk}&b={a.pk}").context["summary"]
    assert same["shift_px"] == [0.0, 0.0] and same["relative_difference"] == 0
    assert same["resolution_m"] == pytest.approx(pixel)


@pytest.mark.django_db
def test_a_job_without_a_result_or_a_bad_number_is_refused_with_the_reason(client, user):
    queued = Job.objects.create(owner=user, parameters=small_parameters().to_dict(), algorithm="ePIE")
    client.force_login(user)
    response = client.get(f"/jobs/compare/?a={queued.pk}&b={queued.pk}")
    assert response.status_code == 400
    assert response.context["error"] == f"job {queued.pk} has no result file yet (queued)"
    response = client.get(f"/jobs/compare/?a={queued.pk}&b=latest")
    assert response.status_code == 400 and response.context["error"] == "'b' must be a job number, got 'latest'"
    assert client.get(f"/jobs/compare/?a={queued.pk}&b=99999").status_code == 404

"""The comparison page: two jobs' results aligned, with the FRC; clear refusals."""

import json
import re

import pytest
from webapp_helpers import small_parameters

from reconstruction import Parameters
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
    failed = Job.objects.create(owner=user, parameters=small_parameters().to_dict(), algorithm="ePIE",
                                status="failed")
    client.force_login(user)
    response = client.get(f"/jobs/compare/?a={failed.pk}&b={failed.pk}")
    assert response.status_code == 400
    assert response.context["error"] == f"job {failed.pk} has no result file yet (failed)"
    response = client.get(f"/jobs/compare/?a={queued.pk}&b=latest")
    assert response.status_code == 400 and response.context["error"] == "'b' must be a job number, got 'latest'"
    assert client.get(f"/jobs/compare/?a={queued.pk}&b=99999").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_two_stored_iterations_of_one_job_are_compared_with_their_frc(worker, broker, client, user):
    job = services.submit_job(small_parameters(iterations=30), owner=user)
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    client.force_login(user)
    stored = client.get(f"/jobs/{job.pk}/snapshots/").json()["iterations"]
    assert len(stored) >= 3 and stored[-1] == 30
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="iteration-compare-form"' in page and f'action="/jobs/{job.pk}/compare-iterations/"' in page
    response = client.get(f"/jobs/{job.pk}/compare-iterations/?a={stored[-2]}&b={stored[-1]}")
    assert response.status_code == 200, response.context.get("error")
    summary = response.context["summary"]
    pixel = small_parameters().pixel_size_m  # 32 px probe, 6 x 6 scan: the preview is not strided
    assert summary["pixel_m"] == pytest.approx(pixel, rel=1e-5)  # frames keep 6 digits
    assert 0.999 * pixel <= summary["resolution_m"] < 40 * pixel
    assert max(abs(v) for v in summary["shift_px"]) < 0.5  # one run: late iterations barely move
    late = summary["relative_difference"]
    early = client.get(f"/jobs/{job.pk}/compare-iterations/?a={stored[0]}&b={stored[-1]}").context["summary"]
    assert early["relative_difference"] > late > 0  # the first stored iterate differs more from the last
    body = response.content.decode()
    assert f"iterations {stored[-2]} (A) and {stored[-1]} (B) of" in body and "8-bit" in body
    data = json.loads(re.search(r'<script id="compare-data" type="application/json">(.*?)</script>', body)[1])
    assert [img["name"] for img in data["images"]] == ["phase_a", "phase_b", "phase_difference"]
    assert len(data["frc"]["frc"]) >= 8
    same = client.get(f"/jobs/{job.pk}/compare-iterations/?a=30&b=30").context["summary"]
    assert same["shift_px"] == [0.0, 0.0] and same["relative_difference"] == 0

    missing = client.get(f"/jobs/{job.pk}/compare-iterations/?a=2&b=30")
    assert missing.status_code == 400 and missing.context["error"].startswith(
        f"job {job.pk} has no stored iteration 2 (stored: {stored[0]}, ")
    bad = client.get(f"/jobs/{job.pk}/compare-iterations/?a=first&b=30")
    assert bad.status_code == 400 and bad.context["error"] == "'a' must be a stored iteration number, got 'first'"


@pytest.mark.django_db(transaction=True)
def test_a_half_set_frc_runs_both_halves_and_reads_the_half_bit_resolution(worker, broker, client, user):
    job = services.submit_job(small_parameters(iterations=20), owner=user)
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    client.force_login(user)
    assert 'id="half-set-form"' in client.get(f"/jobs/{job.pk}/").content.decode()
    response = client.post(f"/jobs/{job.pk}/half-set/")
    halves = list(Job.objects.exclude(pk=job.pk).order_by("pk"))
    assert [Parameters.from_dict(h.parameters).data.half_set for h in halves] == [1, 2]
    assert [h.label for h in halves] == [f"half 1 of job {job.pk}", f"half 2 of job {job.pk}"]
    assert response.status_code == 302
    url = f"/jobs/compare/?a={halves[0].pk}&b={halves[1].pk}&threshold=half-bit"
    assert response["Location"] == url
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    done = client.get(url)
    assert done.status_code == 200, done.context.get("error")
    summary = done.context["summary"]
    pixel = small_parameters().pixel_size_m
    assert summary["criterion"] == "1/2-bit" and 0.17 < summary["threshold"] <= 1.0
    assert pixel <= summary["resolution_m"] < 40 * pixel and "half-set FRC" in done.content.decode()
    data = json.loads(re.search(r'<script id="compare-data" type="application/json">(.*?)</script>',
                                done.content.decode())[1])
    assert len(data["frc"]["threshold"]) == len(data["frc"]["frc"]) and data["frc"]["threshold"][1] > 0.5
    # a half is not halved again
    refused = client.post(f"/jobs/{halves[0].pk}/half-set/", follow=True)
    assert f"job {halves[0].pk} is already half 1 of a scan (-halfSet)" in refused.content.decode()
    assert Job.objects.count() == 3
    # a job that has not finished yet: the page waits for it and reloads
    queued = Job.objects.create(owner=user, parameters=small_parameters().to_dict(), algorithm="ePIE")
    waiting = client.get(f"/jobs/compare/?a={halves[0].pk}&b={queued.pk}&threshold=half-bit")
    assert waiting.status_code == 200 and 'http-equiv="refresh"' in waiting.content.decode()
    assert f'Waiting for <a href="/jobs/{queued.pk}/">job {queued.pk}</a> (queued)' in waiting.content.decode()

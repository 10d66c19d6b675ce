"""Idempotent submission (``Idempotency-Key``), bridge tokens and the bridge status endpoint of the JSON API."""

import pytest
from django.core.management import call_command
from webapp_helpers import api_post as post
from webapp_helpers import small_parameters

from webapp.api.models import BRIDGE_PERMISSION, ApiToken, IdempotencyKey, key_digest
from webapp.jobs.models import BridgeStatus, Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def bridge_token(capsys) -> str:
    call_command("create_token", "bridge-2idd", "--bridge", "--name", "2-ID-D bridge")
    return capsys.readouterr().out.strip()


def test_a_repeated_key_with_the_same_body_returns_the_original_job(client, token,
                                                                    django_capture_on_commit_callbacks):
    body = {"parameters": small_parameters(iterations=7).to_dict(), "label": "scan 12"}
    with django_capture_on_commit_callbacks() as first_sends:
        first = post(client, "/api/v1/jobs/", body, token, idempotency_key="2-ID-D:12:/data/scan12_#06d.h5")
    with django_capture_on_commit_callbacks() as repeat_sends:
        again = post(client, "/api/v1/jobs/", body, token, idempotency_key="2-ID-D:12:/data/scan12_#06d.h5")
    assert first.status_code == 201 and again.status_code == 200, again.content
    assert again.json()["id"] == first.json()["id"] and again["Idempotent-Replayed"] == "true"
    assert len(first_sends) == 1 and len(repeat_sends) == 0  # the repeat sends nothing to the workers
    assert Job.objects.count() == 1 and IdempotencyKey.objects.get().job_id == first.json()["id"]


def test_the_same_body_in_another_form_is_the_same_request(client, token):
    params = small_parameters(iterations=7)
    first = post(client, "/api/v1/jobs/", {"parameters": params.to_dict()}, token, idempotency_key="k1")
    again = post(client, "/api/v1/jobs/", {"cmdstr": params.to_cmdstr()}, token, idempotency_key="k1")
    assert (first.status_code, again.status_code) == (201, 200) and again.json()["id"] == first.json()["id"]


def test_a_key_reused_with_another_body_is_refused_naming_the_job_and_the_difference(client, token):
    first = post(client, "/api/v1/jobs/", {"parameters": small_parameters(iterations=7).to_dict()}, token, "k")
    other = post(client, "/api/v1/jobs/", {"parameters": small_parameters(iterations=9).to_dict()}, token, "k")
    assert other.status_code == 422
    msg = other.json()["error"]
    assert f"job {first.json()['id']}" in msg and "reconstruction.iterations" in msg and "new key" in msg
    assert other.json()["job"] == first.json()["id"] and Job.objects.count() == 1


def test_keys_are_unique_per_user_not_across_users(client, token, other_token):
    other = other_token
    body = {"parameters": small_parameters().to_dict()}
    a = post(client, "/api/v1/jobs/", body, token, idempotency_key="same")
    b = post(client, "/api/v1/jobs/", body, other, idempotency_key="same")
    assert (a.status_code, b.status_code) == (201, 201) and a.json()["id"] != b.json()["id"]
    assert {j.owner.username for j in Job.objects.all()} == {"alice", "bob"}


def test_a_refused_submission_stores_no_key_and_a_corrected_one_may_use_it(client, token):
    bad = post(client, "/api/v1/jobs/", {"cmdstr": "./ptycho -fp=../../secret_#06d.h5"}, token, idempotency_key="k")
    assert bad.status_code == 400 and "outside the data folders" in bad.json()["problems"][0]["message"]
    assert not IdempotencyKey.objects.exists() and not Job.objects.exists()
    good = post(client, "/api/v1/jobs/", {"parameters": small_parameters().to_dict()}, token, idempotency_key="k")
    assert good.status_code == 201


@pytest.mark.parametrize("key", ["", "x" * 201, "scan\u00e9"])
def test_a_malformed_key_is_refused_with_what_is_wrong(client, token, key):
    r = post(client, "/api/v1/jobs/", {"parameters": small_parameters().to_dict()}, token, idempotency_key=key)
    assert r.status_code == 400 and "Idempotency-Key header must be 1-200 printable ASCII" in r.json()["error"]
    assert not Job.objects.exists()


def test_source_epics_needs_a_bridge_token(client, token, bridge_token):
    body = {"parameters": small_parameters().to_dict(), "source": "epics"}
    r = post(client, "/api/v1/jobs/", body, token)
    assert r.status_code == 403 and BRIDGE_PERMISSION in r.json()["error"] and "--bridge" in r.json()["error"]
    provenance = {"reconstruction.iterations": {"source": "template", "value": 12}}
    r = post(client, "/api/v1/jobs/", dict(body, provenance=provenance), bridge_token, idempotency_key="TEST:1:f")
    assert r.status_code == 201 and r.json()["source"] == "epics" and r.json()["owner"] == "bridge-2idd"
    assert Job.objects.get(pk=r.json()["id"]).provenance == provenance
    # the same scan again without its provenance (a resumed scan from an older journal): still the same request
    again = post(client, "/api/v1/jobs/", body, bridge_token, idempotency_key="TEST:1:f")
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
    r = post(client, "/api/v1/jobs/", dict(body, provenance=[1]), bridge_token)
    assert r.status_code == 400 and "'provenance' must be an object" in r.json()["error"]
    r = post(client, "/api/v1/jobs/", dict(body, source="web"), bridge_token)
    assert r.status_code == 400 and "'source' must be one of api, epics" in r.json()["error"]


def test_create_token_bridge_makes_a_user_without_a_password(bridge_token, django_user_model):
    user = django_user_model.objects.get(username="bridge-2idd")
    assert not user.has_usable_password() and user.has_perm(BRIDGE_PERMISSION)
    assert ApiToken.objects.get(digest=key_digest(bridge_token)).name == "2-ID-D bridge"


def test_bridge_status_is_stored_for_the_dashboard_with_a_bridge_token_only(client, token, bridge_token):
    state = {"beamline": "2-ID-D", "running": True, "pvs": {"2idd:scan2.BUSY": {"connected": True}}}
    r = post(client, "/api/v1/bridges/status/", state, token)
    assert r.status_code == 403 and not BridgeStatus.objects.exists()
    r = post(client, "/api/v1/bridges/status/", state, bridge_token)
    assert r.status_code == 200 and r.json()["beamline"] == "2-ID-D"
    row = BridgeStatus.objects.get()
    assert row.state == state and row.age_s() < 30
    r = post(client, "/api/v1/bridges/status/", {"running": True}, bridge_token)
    assert r.status_code == 400 and "'beamline' must be a non-empty string" in r.json()["error"]
    r = client.post("/api/v1/bridges/status/", "[1]", content_type="application/json",
                    HTTP_AUTHORIZATION=f"Token {bridge_token}")
    assert r.status_code == 400 and "JSON object" in r.json()["error"]


def test_the_admin_lists_which_key_made_which_job(client, token, django_user_model):
    job = post(client, "/api/v1/jobs/", {"parameters": small_parameters().to_dict()}, token, "BL:9:/data/s9.h5")
    admin = django_user_model.objects.create_superuser("root", "root@example.org", "root-pw-12345-xyz")
    client.force_login(admin)
    page = client.get("/admin/api/idempotencykey/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "BL:9:/data/s9.h5" in html and f"job {job.json()['id']}" in html
    assert client.get("/admin/api/idempotencykey/add/").status_code == 403

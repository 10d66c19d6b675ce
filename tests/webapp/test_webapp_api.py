"""The JSON API: token auth, a token acts only as its user, submit by parameters or cmdstr, OpenAPI."""

import json
import re

import pytest
from django.core.management import call_command
from webapp_helpers import api_auth as auth
from webapp_helpers import api_post as post
from webapp_helpers import small_parameters

from webapp.api import urls as api_urls
from webapp.api.models import ApiToken, key_digest
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db


def test_requests_without_a_valid_token_get_401(client, user):
    assert client.get("/api/v1/jobs/").status_code == 401
    assert client.get("/api/v1/jobs/", HTTP_AUTHORIZATION="Token nope").status_code == 401
    client.force_login(user)  # a browser session is not an API credential
    assert client.post("/api/v1/jobs/", "{}", content_type="application/json").status_code == 401


def test_submit_by_parameters_and_read_it_back(client, token, user):
    params = small_parameters(iterations=21)
    response = post(client, "/api/v1/jobs/", {"parameters": params.to_dict(), "label": "api scan"}, token)
    assert response.status_code == 201, response.content
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert job.owner == user and job.source == "api" and job.label == "api scan" and job.iterations == 21
    assert response["Location"] == f"/api/v1/jobs/{job.pk}/"
    detail = client.get(f"/api/v1/jobs/{job.pk}/", **auth(token)).json()
    assert detail["parameters"] == params.to_dict() and detail["status"] == "queued"
    assert detail["owner"] == "alice" and detail["websocket"] == f"/ws/jobs/{job.pk}/"
    assert "-i=21" in detail["cmdstr"]


def test_submit_by_command_string_and_partial_parameters(client, token):
    r = post(client, "/api/v1/jobs/", {"cmdstr": "./ptycho -simulate=1 -size=32 -i=5 -algorithm=lsqml"}, token)
    assert r.status_code == 201 and r.json()["algorithm"] == "LSQML"
    partial = {"data": {"simulate": True}, "reconstruction": {"iterations": 9}}
    r = post(client, "/api/v1/jobs/", {"parameters": partial}, token)
    assert r.status_code == 201 and r.json()["iterations"] == 9


def test_invalid_submissions_say_what_is_wrong(client, token):
    r = post(client, "/api/v1/jobs/", {"parameters": {"reconstruction": {"iterations": -1}}}, token)
    assert r.status_code == 400 and r.json()["problems"][0]["path"] == "reconstruction.iterations"
    r = post(client, "/api/v1/jobs/", {"cmdstr": "./ptycho -fp=../../secret_#06d.h5"}, token)
    assert r.status_code == 400 and "outside the data folders" in r.json()["problems"][0]["message"]
    r = post(client, "/api/v1/jobs/", {"cmdstr": "./ptycho", "parameters": {}}, token)
    assert r.status_code == 400
    r = client.post("/api/v1/jobs/", "not json", content_type="application/json", **auth(token))
    assert r.status_code == 400
    assert Job.objects.count() == 0


def test_a_token_cannot_act_for_another_user(client, token, other_token, user, other_user):
    r = post(client, "/api/v1/jobs/", {"cmdstr": "./ptycho -simulate=1", "owner": "bob"}, token)
    assert r.status_code == 400 and Job.objects.count() == 0
    bobs = Job.objects.create(owner=other_user, parameters=small_parameters().to_dict(), algorithm="ePIE")
    r = client.post(f"/api/v1/jobs/{bobs.pk}/cancel/", **auth(token))
    assert r.status_code == 403
    bobs.refresh_from_db()
    assert bobs.status == "queued" and not bobs.cancel_requested
    r = client.post(f"/api/v1/jobs/{bobs.pk}/cancel/", **auth(other_token))
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    r = post(client, "/api/v1/jobs/", {"cmdstr": "./ptycho -simulate=1"}, other_token)
    assert Job.objects.get(pk=r.json()["id"]).owner == other_user


def test_list_filters_and_paginates(client, token, user, other_user):
    for k in range(5):
        Job.objects.create(owner=user if k % 2 else other_user, parameters={}, algorithm="DM" if k < 2 else "ePIE",
                           status="done" if k == 4 else "queued", label=f"scan {k}")
    body = client.get("/api/v1/jobs/?page_size=2", **auth(token)).json()
    assert body["count"] == 5 and body["pages"] == 3 and len(body["results"]) == 2
    assert client.get("/api/v1/jobs/?algorithm=DM", **auth(token)).json()["count"] == 2
    assert client.get("/api/v1/jobs/?owner=bob", **auth(token)).json()["count"] == 3
    assert client.get("/api/v1/jobs/?status=done", **auth(token)).json()["results"][0]["label"] == "scan 4"
    assert client.get("/api/v1/jobs/?q=scan 3", **auth(token)).json()["count"] == 1


def test_openapi_schema_is_json_and_lists_every_path(client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    schema = json.loads(r.content)
    assert schema["openapi"].startswith("3.")
    routes = {"/api/v1/" + re.sub(r"<int:(\w+)>", r"{\1}", str(p.pattern)) for p in api_urls.urlpatterns}
    assert set(schema["paths"]) == routes  # every route of webapp.api.urls, and nothing else
    assert "/api/v1/jobs/{job_id}/ws-ticket/" in routes
    assert set(schema["paths"]["/api/v1/jobs/"]) == {"get", "post"}
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    assert refs and refs <= set(schema["components"]["schemas"])
    groups = schema["components"]["schemas"]["Parameters"]["properties"]
    assert groups["reconstruction"]["properties"]["iterations"]["minimum"] == 0


def test_create_token_command_prints_a_working_key(client, user, capsys):
    call_command("create_token", "alice", "--name", "beamline")
    key = capsys.readouterr().out.strip()
    assert ApiToken.objects.get(digest=key_digest(key)).user == user
    assert client.get("/api/v1/jobs/", **auth(key)).status_code == 200

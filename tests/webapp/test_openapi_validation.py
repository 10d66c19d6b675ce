"""The OpenAPI document against the code: it is a valid OpenAPI 3.0 document; every URL under /api/v1/ is in it with
every method it answers (an undocumented method gets 405); and the response check that every API test runs
through (tests/support/openapi_check.py, installed in tests/conftest.py) refuses what the document lacks."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_spec_validator import validate

from tests.support.openapi_check import ApiAnswerMismatch, check_api_answer, document

METHODS = ("get", "post", "put", "patch", "delete")


def api_routes() -> set[str]:
    """Every URL of the whole URLconf under /api/v1/, path converters written as OpenAPI ``{name}``."""
    found: set[str] = set()

    def walk(patterns: list, prefix: str) -> None:
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                walk(p.url_patterns, route)
            elif isinstance(p, URLPattern) and route.startswith("api/v1/"):
                found.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))

    walk(get_resolver().url_patterns, "")
    return found


def test_the_document_is_valid_openapi_3() -> None:
    validate(document())  # raises, naming the first problem


def test_every_api_url_is_documented_and_every_documented_path_exists() -> None:
    routes, documented = api_routes(), set(document()["paths"])
    assert routes - documented == set(), f"API URLs the OpenAPI document lacks: {sorted(routes - documented)}"
    assert documented - routes == set(), f"documented paths no URL serves: {sorted(documented - routes)}"


@pytest.mark.django_db
def test_every_method_an_api_url_answers_is_documented(token) -> None:
    client = Client()
    for path, item in document()["paths"].items():
        url = path.replace("{job_id}", "999999")
        for method in METHODS:
            resp = getattr(client, method)(url, HTTP_AUTHORIZATION=f"Token {token}", content_type="application/json")
            if method in item:
                assert resp.status_code != 405, f"{method.upper()} {path} is documented but answers 405"
            else:
                assert resp.status_code == 405, (
                    f"{method.upper()} {path} answers {resp.status_code}, but the document has no such operation")


def job(**extra: object) -> bytes:
    return json.dumps({"id": 3, "status": "done", "algorithm": "ePIE", "iteration": 5, "iterations": 5,
                       **extra}).encode()


def test_the_check_accepts_a_documented_answer() -> None:
    check_api_answer("GET", "/api/v1/jobs/3/", {}, 200, "application/json", job(parameters={}, provenance=None))


@pytest.mark.parametrize(("method", "path", "status", "body", "message"), [
    ("GET", "/api/v1/jobs/3/", 200, job(iteration="five"), r"InvalidData.*'five' is not of type 'integer'"),
    ("GET", "/api/v1/jobs/3/", 200, job(secret="x"), r"keys the OpenAPI document does not name: \['secret'\]"),
    ("GET", "/api/v1/jobs/", 200, json.dumps({"count": 1, "results": [json.loads(job(extra=1))]}).encode(),
     r"does not name: \['results\[0\]\.extra'\]"),
    ("GET", "/api/v1/jobs/3/", 418, b'{"error": "teapot"}', r"answered 418 .*ResponseNotFound"),
    ("GET", "/api/v1/workers/", 200, b"{}", r"PathNotFound"),
    ("POST", "/api/v1/jobs/3/cancel/", 202, b'{"id": 3}', r"'status' is a required property"),
])
def test_the_check_refuses_what_the_document_does_not_describe(method, path, status, body, message) -> None:
    with pytest.raises(ApiAnswerMismatch, match=message):
        check_api_answer(method, path, {}, status, "application/json", body)


@pytest.mark.django_db
def test_the_test_client_runs_the_check_on_api_answers(client, monkeypatch) -> None:
    """The hook is live: with a document that forgets a JobList key, an ordinary API call in a test fails."""
    from tests.support import openapi_check

    broken = json.loads(json.dumps(document()))
    del broken["components"]["schemas"]["JobList"]["properties"]["pages"]
    monkeypatch.setattr(openapi_check, "document", lambda: broken)
    from django.contrib.auth.models import User

    from webapp.api.models import ApiToken

    key = ApiToken.objects.create(user=User.objects.create_user("dora"), name="t").key
    with pytest.raises(ApiAnswerMismatch, match=r"does not name: \['pages'\]"):
        client.get("/api/v1/jobs/", HTTP_AUTHORIZATION=f"Token {key}")

"""Every answer of ``/api/v1/`` in the tests checked against the OpenAPI document the API serves.

``check_api_answer`` validates one answer with openapi-core (the path, the method, the status code and the body
against that operation's response schema) and, stricter than the document's own ``additionalProperties``
defaults, refuses a key in a JSON object that the document does not name. ``install`` hooks it into Django's
test ``Client`` (tests/conftest.py calls it once per session); ``tests.support.web.WebClient`` calls it for
the end-to-end tests over real HTTP. A 405 for a method the path does not offer is not checked (Django answers
it before any view)."""

from __future__ import annotations

import functools
import json
from typing import Any

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

API_PREFIX = "/api/v1/"


class ApiAnswerMismatch(AssertionError):
    """An API answer that the OpenAPI document does not describe."""


@functools.cache
def document() -> dict[str, Any]:
    from webapp.api.openapi import schema

    return schema("/")


@functools.cache
def _openapi() -> OpenAPI:
    return OpenAPI.from_dict(document())


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document()["components"]["schemas"][name]
    return schema


def undocumented_keys(value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Keys of ``value``'s objects that ``schema`` (``$ref`` and ``allOf`` followed) does not name."""
    schema = _resolve(schema)
    parts = [_resolve(p) for p in schema.get("allOf", [])] or [schema]
    props: dict[str, Any] = {}
    for part in parts:
        props.update(part.get("properties", {}))
    open_ended = any("additionalProperties" in p for p in parts) or not props
    found: list[str] = []
    if isinstance(value, dict) and not open_ended:
        for key, item in value.items():
            if key not in props:
                found.append(f"{where}.{key}" if where else key)
            else:
                found += undocumented_keys(item, props[key], f"{where}.{key}" if where else key)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += undocumented_keys(item, schema["items"], f"{where}[{i}]")
    return found


def _operation(method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """``(template, operation)`` of the document for this request, or None when the path has no such method."""
    for template, item in document()["paths"].items():
        parts, real = template.strip("/").split("/"), path.strip("/").split("/")
        if len(parts) == len(real) and all(p == r or (p.startswith("{") and r) for p, r in zip(parts, real,
                                                                                                  strict=True)):
            op = item.get(method.lower())
            return (template, op) if op else None
    return None


def check_api_answer(method: str, path: str, query: dict[str, Any], status: int, content_type: str,
                     body: bytes, host_url: str = "http://testserver") -> None:
    """Raise :class:`ApiAnswerMismatch` when this answer of ``/api/v1/...`` is not one the document describes."""
    if not path.startswith(API_PREFIX):
        return
    found = _operation(method, path)
    if found is None and status == 405:
        return
    request = MockRequest(host_url, method, path, args=query)
    response = MockResponse(body, status_code=status, content_type=(content_type or "").split(";")[0].lower())
    try:
        _openapi().validate_response(request, response)
    except Exception as exc:
        detail = getattr(exc, "__cause__", None) or ""
        raise ApiAnswerMismatch(f"{method} {path} answered {status} {body[:300]!r}, which the OpenAPI document "
                                f"does not describe: {type(exc).__name__}: {exc} {detail}") from None
    if found and "json" in (content_type or ""):
        content = found[1]["responses"][str(status)].get("content", {})
        schema = content.get("application/json", {}).get("schema")
        extra = undocumented_keys(json.loads(body), schema) if schema else []
        if extra:
            raise ApiAnswerMismatch(f"{method} {path} answered {status} with keys the OpenAPI document does not "
                                    f"name: {extra}")


def install() -> None:
    """Check every ``/api/v1/`` answer of Django's test ``Client`` (and so of pytest-django's ``client``)."""
    from django.test.client import Client

    if getattr(Client.request, "checks_openapi", False):
        return
    original = Client.request

    @functools.wraps(original)
    def request(self: Client, **kwargs: Any) -> Any:
        response = original(self, **kwargs)
        wsgi = getattr(response, "wsgi_request", None)
        if wsgi is not None and wsgi.path.startswith(API_PREFIX) and not getattr(response, "streaming", False):
            check_api_answer(wsgi.method or "GET", wsgi.path, dict(wsgi.GET.items()), response.status_code,
                             response.get("Content-Type", ""), response.content)
        return response

    request.checks_openapi = True  # type: ignore[attr-defined]
    Client.request = request  # type: ignore[method-assign]

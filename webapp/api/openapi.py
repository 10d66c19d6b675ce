"""The OpenAPI 3 description of ``/api/v1/`` (paths written by hand; the parameter object from its specs)."""

from __future__ import annotations

import re
from typing import Any

from reconstruction.parameters import GROUP_TITLES, FieldSpec, input_specs
from reconstruction.parameters.cmdstr import MAX_CMDSTR_CHARS

STATUSES = ["queued", "running", "done", "failed", "cancelled"]
FORMATS = ["h5", "tiff", "png", "csv"]


def _leaf_schema(spec: FieldSpec) -> dict[str, Any]:
    simple: dict[str, dict[str, Any]] = {
        "str": {"type": "string"},
        "int": {"type": "integer"},
        "float": {"type": "number"},
        "bool": {"type": "boolean"},
        "choice": {"type": "string", "enum": list(spec.choices)},
    }
    base: dict[str, Any] = dict(simple.get(spec.kind, {}))
    if spec.kind == "choice" and spec.open_prefix:  # e.g. -liveSource: a choice or pva://<PV> (docs/streaming.md)
        base = {"type": "string", "anyOf": [{"enum": list(spec.choices)},
                                            {"pattern": "^" + re.escape(spec.open_prefix) + ".+"}]}
    elif spec.kind in ("pair_int", "pair_float"):
        item: dict[str, Any] = {"type": "integer" if spec.kind == "pair_int" else "number"}
        if spec.min is not None:
            item["minimum"] = spec.min
        if spec.max is not None:
            item["maximum"] = spec.max
        base = {"type": "array", "items": item, "minItems": 2, "maxItems": 2}
    elif spec.kind in ("int", "float"):
        if spec.min is not None:
            base["minimum"] = spec.min
        if spec.max is not None:
            base["maximum"] = spec.max
    unit = f" Unit: {spec.unit}." if spec.unit else ""
    default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
    described = {**base, "description": f"{spec.hint}{unit} Flag: -{spec.flag}."}
    return described if default is None else {**described, "default": default}  # -energy has none


def parameters_schema() -> dict[str, Any]:
    groups: dict[str, dict[str, Any]] = {}
    for spec in input_specs():  # the leaves and -energy (energy_kev), which becomes the wavelength
        group = groups.setdefault(spec.group, {"type": "object", "title": GROUP_TITLES.get(spec.group, spec.group),
                                               "additionalProperties": False, "properties": {}})
        group["properties"][spec.name] = _leaf_schema(spec)
    return {
        "type": "object",
        "description": "Parameters.to_dict() form: {group: {name: value}}. Leaves left out keep their defaults.",
        "additionalProperties": False,
        "properties": groups,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _job_id() -> dict[str, Any]:
    return {"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer"}}


def schema(server_url: str = "/") -> dict[str, Any]:
    """The whole OpenAPI document."""
    errors = {
        "400": _json(_ref("Error"), "Invalid request or parameters"),
        "413": _json(_ref("Error"), "Request body larger than the server accepts"),
        "401": _json(_ref("Error"), "Missing, unknown or expired token (the error says which)"),
    }
    nullable_time = {"type": "string", "format": "date-time", "nullable": True}
    job_summary = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "url": {"type": "string", "description": "This job in the API"},
            "page": {"type": "string", "description": "The live view in the browser"},
            "websocket": {"type": "string", "description": "Binary frames of the running job"},
            "owner": {"type": "string", "nullable": True},
            "label": {"type": "string"},
            "scan": {"type": "string"},
            "source": {"type": "string", "enum": ["web", "api", "epics", "demo"]},
            "algorithm": {"type": "string"},
            "status": {"type": "string", "enum": STATUSES},
            "cancel_requested": {"type": "boolean"},
            "created": {"type": "string", "format": "date-time"},
            "started": nullable_time,
            "finished": nullable_time,
            "duration_s": {"type": "number", "nullable": True},
            "iteration": {"type": "integer"},
            "iterations": {"type": "integer"},
            "final_error": {"type": "number", "nullable": True},
            "device": {"type": "string"},
            "worker": {"type": "string"},
            "message": {"type": "string", "description": "Why it failed or stopped early"},
            "streaming": {"type": "boolean", "description": "Reconstructs while its scan acquires (-liveSource; "
                                                            "docs/streaming.md)"},
            "partial": {"type": "boolean", "description": "A streaming job whose scan was aborted, stalled, "
                                                          "cancelled or ended short of its plan: the result holds "
                                                          "the frames that arrived"},
            "live": {"type": "object", "nullable": True, "additionalProperties": True,
                     "description": "A streaming job's stream: source, phase or outcome, frames planned, received "
                                    "and dropped, duplicates, out of order, partial; null for a batch job"},
            "downloads": {"type": "object", "additionalProperties": {"type": "string"},
                          "description": "Result download URLs by format (a session login or the same API token)"},
        },
        "required": ["id", "status", "algorithm", "iteration", "iterations"],
    }
    job_detail = {
        "allOf": [
            _ref("JobSummary"),
            {"type": "object", "properties": {
                "parameters": _ref("Parameters"),
                "cmdstr": {"type": "string", "nullable": True},
                "error_history": {"type": "array", "items": {"type": "number"}},
                "provenance": {"type": "object", "nullable": True, "additionalProperties": {"type": "object"},
                               "description": "Where each parameter came from, as submitted; null when not given"},
                "run_plan": {"type": "object", "nullable": True, "additionalProperties": True,
                             "description": "How the worker runs the job and why (implementation, residency, "
                                            "devices and a reason for each; docs/performance.md); null until "
                                            "a worker planned it"},
            }},
        ]
    }
    submit = {
        "type": "object",
        "description": "Exactly one of parameters or cmdstr.",
        "properties": {
            "parameters": _ref("Parameters"),
            "cmdstr": {"type": "string", "maxLength": MAX_CMDSTR_CHARS,
                       "example": "./ptycho -simulate=1 -size=64 -scanDims=10,10 -i=200"},
            "label": {"type": "string", "maxLength": 200},
            "notify_email": {"type": "boolean", "default": False},
            "source": {"type": "string", "enum": ["api", "epics"], "default": "api",
                       "description": "'epics' needs a bridge token (manage.py create_token USER --bridge)"},
            "provenance": {"type": "object", "additionalProperties": {"type": "object"},
                           "description": "Where each parameter came from, {\"group.name\": {\"source\": "
                                          "\"pv\"|\"template\"|..., \"pv\": ..., ...}}; shown on the job page. "
                                          "Not part of what an Idempotency-Key repeat must match."},
        },
        "additionalProperties": False,
    }
    error = {
        "type": "object",
        "properties": {
            "error": {"type": "string"},
            "job": {"type": "integer", "description": "422: the job this Idempotency-Key created"},
            "more_problems": {"type": "integer", "description": "400: how many problems were left out of the list"},
            "problems": {"type": "array", "items": {"type": "object", "properties": {
                "path": {"type": "string"}, "flag": {"type": "string"}, "value": {},
                "message": {"type": "string"}}}},
        },
        "required": ["error"],
    }
    job_list = {
        "type": "object",
        "properties": {
            "count": {"type": "integer"}, "page": {"type": "integer"}, "pages": {"type": "integer"},
            "results": {"type": "array", "items": _ref("JobSummary")},
        },
    }
    query = [
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": STATUSES}},
        {"name": "algorithm", "in": "query", "schema": {"type": "string"}},
        {"name": "owner", "in": "query", "schema": {"type": "string"}, "description": "username"},
        {"name": "source", "in": "query", "schema": {"type": "string"}},
        {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "free-text search"},
        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
    ]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ptychopy API",
            "version": "1",
            "description": "Submit, follow and cancel ptychography reconstructions. Authenticate with "
                           "'Authorization: Token <key>': make a token on the page /accounts/tokens/ (or with "
                           "manage.py create_token <user>); its key is shown once and may expire. A token acts "
                           "only as its own user, and also downloads results (the jobs' download URLs). Live "
                           "frames: websocket /ws/jobs/<id>/ with a session login, or with a ticket from "
                           "POST /api/v1/jobs/<id>/ws-ticket/ offered as a subprotocol, never in the URL "
                           "(see docs/webapp.md).",
        },
        "servers": [{"url": server_url.rstrip("/") or "/"}],
        "security": [{"token": []}],
        "paths": {
            "/api/v1/jobs/": {
                "get": {
                    "summary": "The shared job history (all users), newest first",
                    "operationId": "listJobs",
                    "parameters": query,
                    "responses": {"200": _json(_ref("JobList"), "A page of jobs"), **errors},
                },
                "post": {
                    "summary": "Submit a reconstruction as the token's user",
                    "description": "With an Idempotency-Key header a repeat of the same request (a retry after a "
                                   "lost answer) returns the job it created (200, header Idempotent-Replayed: "
                                   "true) instead of a second job; the same key with a different body gets 422. "
                                   "Keys are unique per user.",
                    "operationId": "submitJob",
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                                    "description": "The client's name for this submission, e.g. beamline, scan "
                                                   "number and file; printable ASCII"}],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Submit")}}},
                    "responses": {"201": _json(_ref("JobDetail"), "The queued job"),
                                  "200": _json(_ref("JobDetail"), "The job this Idempotency-Key created before"),
                                  "403": _json(_ref("Error"), "source 'epics' without a bridge token"),
                                  "422": _json(_ref("Error"), "The Idempotency-Key was used with another body "
                                                              "(error names the job and what differs)"),
                                  **errors},
                },
            },
            "/api/v1/jobs/{job_id}/": {
                "get": {
                    "summary": "One job, with its parameters and error history",
                    "operationId": "getJob",
                    "parameters": [_job_id()],
                    "responses": {"200": _json(_ref("JobDetail"), "The job"), **errors,
                                  "404": _json(_ref("Error"), "No such job")},
                },
            },
            "/api/v1/jobs/{job_id}/cancel/": {
                "post": {
                    "summary": "Cancel a job (its owner or staff); a running job stops between iterations",
                    "operationId": "cancelJob",
                    "parameters": [_job_id()],
                    "responses": {"202": _json(_ref("JobSummary"), "Cancelled, or cancel requested"), **errors,
                                  "403": _json(_ref("Error"), "Not the owner's token"),
                                  "404": _json(_ref("Error"), "No such job")},
                },
            },
            "/api/v1/jobs/{job_id}/ws-ticket/": {
                "post": {
                    "summary": "A ticket that opens the job's live websocket as the token's user",
                    "description": "Open the returned 'websocket' path (/ws/jobs/<id>/) within 60 s, offering the "
                                   "returned 'subprotocols' (header Sec-WebSocket-Protocol: ptychopy.v1, "
                                   "ptychopy.ticket.<ticket>); the server answers with ptychopy.v1 and never "
                                   "echoes the ticket. A ticket opens one socket, for this job only; one sent "
                                   "in the URL (?ticket=) is refused and used up. The socket's Origin header "
                                   "must still be this site's address (scheme, host and port).",
                    "operationId": "createWebsocketTicket",
                    "parameters": [_job_id()],
                    "responses": {"201": _json({"type": "object",
                                                "required": ["ticket", "expires_in_s", "websocket", "subprotocols"],
                                                "properties": {
                                                    "ticket": {"type": "string"},
                                                    "expires_in_s": {"type": "integer", "example": 60},
                                                    "websocket": {"type": "string",
                                                                  "description": "Path to open (no ticket in it)"},
                                                    "subprotocols": {
                                                        "type": "array", "items": {"type": "string"},
                                                        "description": "Offer these when opening it: "
                                                                       "ptychopy.v1, ptychopy.ticket.<ticket>"}}},
                                               "The ticket"), **errors,
                                  "404": _json(_ref("Error"), "No such job")},
                },
            },
            "/api/v1/bridges/status/": {
                "post": {
                    "summary": "An EPICS bridge reports its state (heartbeat) for the dashboard; bridge token",
                    "operationId": "reportBridgeStatus",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["beamline"], "additionalProperties": True,
                        "properties": {"beamline": {"type": "string", "maxLength": 200}},
                        "description": "The bridge's state snapshot (epics_bridge.state.BridgeState)"}}}},
                    "responses": {"200": _json({"type": "object", "properties": {
                        "beamline": {"type": "string"}, "last_seen": {"type": "string", "format": "date-time"}}},
                        "Stored"), **errors, "403": _json(_ref("Error"), "Not a bridge token")},
                },
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3 document",
                                          "content": {"application/json": {"schema": {"type": "object"}}}}},
                },
            },
        },
        "components": {
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "Authorization",
                                          "description": "'Token <key>'"}},
            "schemas": {
                "Parameters": parameters_schema(),
                "Submit": submit,
                "JobSummary": job_summary,
                "JobDetail": job_detail,
                "JobList": job_list,
                "Error": error,
            },
        },
    }

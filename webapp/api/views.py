"""``/api/v1/``: list, submit (idempotently with an ``Idempotency-Key``), read and cancel jobs with a token, a
ticket for a job's live websocket, and an EPICS bridge's status report. Logic lives in ``webapp.jobs.services``,
:mod:`webapp.api.idempotency` and :mod:`webapp.accounts.tickets`."""

from __future__ import annotations

import json

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from reconstruction import ParameterError, Parameters
from reconstruction.parameters.model import MAX_REPORTED_PROBLEMS
from webapp.accounts import tickets
from webapp.accounts.auth import error, token_required
from webapp.jobs import serialize, services
from webapp.jobs.history import filter_jobs
from webapp.jobs.memory import check_at_submit
from webapp.jobs.models import Job
from webapp.live import subprotocol
from webapp.scans.paths import check_submission
from webapp.workers.bridge_status import record_bridge_status

from . import idempotency
from .models import BRIDGE_PERMISSION
from .openapi import schema

SUBMIT_KEYS = {"parameters", "cmdstr", "label", "notify_email", "source", "provenance"}
MAX_PROVENANCE_ENTRIES = 1000
#: what a submission may name as its source; "epics" needs the bridge permission
SUBMIT_SOURCES = ("api", "epics")
MAX_BEAMLINE_CHARS = 200


@require_http_methods(["GET", "POST"])
@token_required
def jobs(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        return _submit(request)
    try:
        page_size = min(max(int(request.GET.get("page_size", 50)), 1), 200)
        page_number = max(int(request.GET.get("page", 1)), 1)
    except ValueError:
        return error(400, "page and page_size must be integers")
    paginator = Paginator(filter_jobs(request.GET), page_size)
    page = paginator.get_page(page_number)
    return JsonResponse({
        "count": paginator.count, "page": page.number, "pages": paginator.num_pages,
        "results": [serialize.job_summary(j) for j in page.object_list],
    })


def _json_object(request: HttpRequest, what: str = "a JSON object") -> dict | JsonResponse:
    """The request body as a dict, or the 400 answer that says why it is not one."""
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return error(400, "the body must be JSON")
    if not isinstance(body, dict):
        return error(400, f"the body must be {what}")
    return body


def _submit(request: HttpRequest) -> JsonResponse:
    body = _json_object(request)
    if isinstance(body, JsonResponse):
        return body
    unknown = sorted(set(body) - SUBMIT_KEYS)
    if unknown:
        return error(400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(SUBMIT_KEYS))}")
    if ("parameters" in body) == ("cmdstr" in body):
        return error(400, "give exactly one of 'parameters' (an object) or 'cmdstr' (a command string)")
    label = body.get("label", "")
    if not isinstance(label, str):
        return error(400, "'label' must be a string")
    notify_email = body.get("notify_email", False)
    if not isinstance(notify_email, bool):
        return error(400, f"'notify_email' must be true or false, not {json.dumps(notify_email)[:40]}")
    source = body.get("source", "api")
    if source not in SUBMIT_SOURCES:
        return error(400, f"'source' must be one of {', '.join(SUBMIT_SOURCES)}, not {json.dumps(source)[:40]}")
    if source == "epics" and not request.user.has_perm(BRIDGE_PERMISSION):
        return error(403, f"source 'epics' needs a bridge token: user {request.user.get_username()!r} lacks the "
                          f"permission {BRIDGE_PERMISSION} (manage.py create_token USER --bridge)")
    provenance = body.get("provenance", {})
    if not isinstance(provenance, dict) or len(provenance) > MAX_PROVENANCE_ENTRIES or not all(
            isinstance(v, dict) for v in provenance.values()):
        return error(400, "'provenance' must be an object {\"group.name\": {\"source\": ..., ...}} of at most "
                          f"{MAX_PROVENANCE_ENTRIES} entries")
    try:
        key = idempotency.read_key(request.headers.get(idempotency.HEADER))
    except idempotency.BadKey as exc:
        return error(400, str(exc))
    try:
        if "cmdstr" in body:
            if not isinstance(body["cmdstr"], str):
                return error(400, "'cmdstr' must be a string")
            params = Parameters.from_cmdstr(body["cmdstr"])
        else:
            if not isinstance(body["parameters"], dict):
                return error(400, "'parameters' must be an object like Parameters.to_dict()")
            params = Parameters.from_dict(body["parameters"])
    except ParameterError as exc:
        return _invalid(exc)
    # what a repeat must match; not the provenance: it describes the values, not the job (an older bridge's journal
    # kept none, so its resumed scans come without it)
    normalised = {"parameters": params.to_dict(), "label": label[:200], "source": source,
                  "notify_email": notify_email}

    def create() -> Job:
        checked = check_submission(params)
        check_at_submit(checked)  # an oversized run: 400 with the bytes needed and allowed
        return services.submit_job(checked, owner=request.user, source=source, label=label,
                                   notify_email=notify_email, provenance=provenance)

    try:
        if key is None:
            job, created = create(), True
        else:
            job, created = idempotency.submit_once(request.user, key, normalised, create)
    except ParameterError as exc:
        return _invalid(exc)
    except idempotency.KeyReused as exc:
        return error(422, exc.message, job=exc.job.pk)
    response = JsonResponse(serialize.job_detail(job), status=201 if created else 200)
    response["Location"] = serialize.job_summary(job)["url"]
    if not created:
        response["Idempotent-Replayed"] = "true"
    return response


def _invalid(exc: ParameterError) -> JsonResponse:
    problems = [{"path": p.path, "flag": p.flag, "value": _jsonable(p.value), "message": p.message}
                for p in exc.problems[:MAX_REPORTED_PROBLEMS]]
    more = len(exc.problems) - len(problems)
    return error(400, "invalid parameters", problems=problems, **({"more_problems": more} if more else {}))


@require_POST
@token_required
def bridge_status(request: HttpRequest) -> JsonResponse:
    """An EPICS bridge's state (its heartbeat: PV connections, recent scans, errors), shown on the dashboard."""
    if not request.user.has_perm(BRIDGE_PERMISSION):
        return error(403, f"reporting a bridge's status needs a bridge token: user "
                          f"{request.user.get_username()!r} lacks the permission {BRIDGE_PERMISSION} "
                          "(manage.py create_token USER --bridge)")
    state = _json_object(request, "a JSON object (the bridge's state)")
    if isinstance(state, JsonResponse):
        return state
    beamline = state.get("beamline")
    if not isinstance(beamline, str) or not beamline.strip() or len(beamline) > MAX_BEAMLINE_CHARS:
        return error(400, f"'beamline' must be a non-empty string of at most {MAX_BEAMLINE_CHARS} characters, "
                          f"not {json.dumps(beamline)[:60]}")
    row = record_bridge_status(beamline, state)
    return JsonResponse({"beamline": row.beamline, "last_seen": row.last_seen.isoformat()})


@require_GET
@token_required
def job(request: HttpRequest, job_id: int) -> JsonResponse:
    return JsonResponse(serialize.job_detail(get_object_or_404(Job, pk=job_id)))


@require_POST
@token_required
def cancel(request: HttpRequest, job_id: int) -> JsonResponse:
    target = get_object_or_404(Job, pk=job_id)
    try:
        target = services.cancel_job(target, request.user)
    except PermissionDenied as exc:
        return error(403, str(exc))
    return JsonResponse(serialize.job_summary(target), status=202)


@require_POST
@token_required
def ws_ticket(request: HttpRequest, job_id: int) -> JsonResponse:
    """A ticket that opens the job's live websocket as the token's user, once, within 60 s (webapp.accounts.tickets),
    offered as a subprotocol (webapp.live.subprotocol), never in the URL."""
    target = get_object_or_404(Job, pk=job_id)
    ticket = tickets.issue(request.user.pk, target.pk)
    return JsonResponse({"ticket": ticket, "expires_in_s": tickets.TICKET_TTL_S,
                         "websocket": serialize.job_summary(target)["websocket"],
                         "subprotocols": [subprotocol.PROTOCOL, subprotocol.ticket_protocol(ticket)]}, status=201)


@require_GET
def openapi(request: HttpRequest) -> JsonResponse:
    return JsonResponse(schema(request.build_absolute_uri("/")))


def _jsonable(value: object) -> object:
    if isinstance(value, str) and len(value) > 200:
        return f"{value[:200]}... ({len(value)} characters)"
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)[:200]

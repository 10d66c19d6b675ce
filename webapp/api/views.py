"""``/api/v1/``: list, submit, read and cancel jobs with a token. Logic lives in ``webapp.jobs.services``."""

from __future__ import annotations

import json

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from reconstruction import ParameterError, Parameters
from reconstruction.parameters.model import MAX_REPORTED_PROBLEMS
from webapp.jobs import serialize, services
from webapp.jobs.history import filter_jobs
from webapp.jobs.memory import check_at_submit
from webapp.jobs.models import Job
from webapp.jobs.paths import check_submission

from .auth import error, token_required
from .openapi import schema

SUBMIT_KEYS = {"parameters", "cmdstr", "label", "notify_email"}


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


def _submit(request: HttpRequest) -> JsonResponse:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return error(400, "the body must be JSON")
    if not isinstance(body, dict):
        return error(400, "the body must be a JSON object")
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
    try:
        if "cmdstr" in body:
            if not isinstance(body["cmdstr"], str):
                return error(400, "'cmdstr' must be a string")
            params = Parameters.from_cmdstr(body["cmdstr"])
        else:
            if not isinstance(body["parameters"], dict):
                return error(400, "'parameters' must be an object like Parameters.to_dict()")
            params = Parameters.from_dict(body["parameters"])
        params = check_submission(params)
        check_at_submit(params)  # an oversized run: 400 with the bytes needed and allowed
    except ParameterError as exc:
        problems = [{"path": p.path, "flag": p.flag, "value": _jsonable(p.value), "message": p.message}
                    for p in exc.problems[:MAX_REPORTED_PROBLEMS]]
        more = len(exc.problems) - len(problems)
        return error(400, "invalid parameters", problems=problems, **({"more_problems": more} if more else {}))
    job = services.submit_job(params, owner=request.user, source="api", label=label, notify_email=notify_email)
    response = JsonResponse(serialize.job_detail(job), status=201)
    response["Location"] = serialize.job_summary(job)["url"]
    return response


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

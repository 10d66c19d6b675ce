"""JSON answers for ``/api/`` where Django would send an HTML page: a body over the size limit (413) and a
missing object (404). Pages outside ``/api/`` are left alone."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

from reconstruction.parameters.cmdstr import MAX_CMDSTR_CHARS

API_PREFIX = "/api/"


def body_limit_bytes() -> int:
    """The largest request body the API reads (Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``)."""
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440)


def too_large() -> JsonResponse:
    limit = body_limit_bytes()
    return JsonResponse({"error": f"the request body is larger than the {limit:,} bytes the API accepts "
                                  f"(a command string may have at most {MAX_CMDSTR_CHARS:,} characters)"}, status=413)


class ApiJsonErrors:
    """For ``/api/`` requests: refuse a declared body over the limit before it is read, and turn the
    body-too-big and not-found exceptions into JSON."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(API_PREFIX):
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return JsonResponse({"error": "the Content-Length header is not a number"}, status=400)
            if declared > body_limit_bytes():
                return too_large()
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith(API_PREFIX):
            return None
        if isinstance(exception, RequestDataTooBig):
            return too_large()
        if isinstance(exception, Http404):
            return JsonResponse({"error": str(exception) or "not found"}, status=404)
        return None

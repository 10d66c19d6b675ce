"""The API documentation page: Swagger UI (vendored in frontend/static/vendor/swagger-ui, no CDN) drawing the
OpenAPI document of ``/api/v1/openapi.json``. No login needed, as for the document itself."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET


@require_GET
def api_docs(request: HttpRequest) -> HttpResponse:
    return render(request, "api/docs.html", {"spec_url": reverse("api:openapi")})

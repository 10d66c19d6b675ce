"""Token authentication for the JSON API (no sessions, hence no CSRF)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from webapp.logs import add_log_context

from .models import ApiToken


def token_user(request: HttpRequest):
    """The active user whose token is in the ``Authorization`` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "token" or not key:
        return None
    token = ApiToken.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used=timezone.now())
    return token.user


def error(status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def token_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``view`` with ``request.user`` set to the token's user; 401 without a valid token."""

    @csrf_exempt
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any):
        user = token_user(request)
        if user is None:
            response = error(401, "send a valid API token: 'Authorization: Token <key>'")
            response["WWW-Authenticate"] = "Token"
            return response
        request.user = user
        add_log_context(user=user.get_username())  # log lines of this request name the token's user
        return view(request, *args, **kwargs)

    return wrapped

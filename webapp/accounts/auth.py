"""Token authentication for the JSON API and the download links (no sessions, hence no CSRF)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from webapp.api.models import LAST_USED_RESOLUTION, ApiToken, key_digest
from webapp.logs import add_log_context

MISSING = "send a valid API token: 'Authorization: Token <key>'"


class TokenRefused(Exception):
    """The request's token cannot be used; the message says why (unknown, expired, inactive user)."""


def presented_key(request: HttpRequest) -> str | None:
    """The key in an ``Authorization: Token <key>`` header, or None when the request sends no token."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "token" and key else None


def token_for_key(key: str) -> ApiToken:
    """The usable token whose key is ``key``; :class:`TokenRefused` saying why not. Notes the use (at most once
    per :data:`~webapp.api.models.LAST_USED_RESOLUTION` per token)."""
    token = ApiToken.objects.select_related("user").filter(digest=key_digest(key)).first()
    if token is None or not token.matches(key):
        raise TokenRefused(MISSING)
    now = timezone.now()
    if token.expired(now):
        raise TokenRefused(f"this API token ({token.prefix}…) expired at {token.expires:%Y-%m-%d %H:%M} UTC: "
                           "make a new one on the API tokens page")
    if not token.user.is_active:
        raise TokenRefused(f"the user of this API token ({token.user.get_username()!r}) is deactivated")
    if token.last_used is None or now - token.last_used >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used=now)
        token.last_used = now
    return token


def error(status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def unauthorized(message: str = MISSING) -> JsonResponse:
    response = error(401, message)
    response["WWW-Authenticate"] = "Token"
    return response


def authenticate(request: HttpRequest) -> JsonResponse | None:
    """Set ``request.user`` to the user of the request's token; the 401 answer saying why when it has none."""
    key = presented_key(request)
    if key is None:
        return unauthorized()
    try:
        user = token_for_key(key).user
    except TokenRefused as exc:
        return unauthorized(str(exc))
    request.user = user
    add_log_context(user=user.get_username())  # log lines of this request name the token's user
    return None


def token_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``view`` with ``request.user`` set to the token's user; 401 without a valid token."""

    @csrf_exempt
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any):
        refused = authenticate(request)
        return refused if refused is not None else view(request, *args, **kwargs)

    return wrapped


def login_or_token_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """For pages a script also fetches (result downloads): a request with an ``Authorization: Token`` header runs
    as the token's user (401 when the token is refused); one without needs a session login, as
    ``login_required``."""
    browser_view = login_required(view)

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any):
        if presented_key(request) is None:
            return browser_view(request, *args, **kwargs)
        refused = authenticate(request)
        return refused if refused is not None else view(request, *args, **kwargs)

    return wrapped

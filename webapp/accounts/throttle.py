"""Login throttling: django-axes with this site's policy (settings ``AXES_*``, docs/deploy.md).

A (username, client address) pair is locked for ``PTYCHOPY_LOGIN_COOLOFF_S`` after ``PTYCHOPY_LOGIN_FAILURES``
wrong passwords in a row, on ``/accounts/login/`` and ``/admin/login/`` alike (one count, kept in the database,
so every Daphne process sees it). While locked, a login from that pair is answered 429 with the time to retry,
before any password is hashed and without writing anything.
"""

from __future__ import annotations

import math
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_client_username, get_cool_off
from axes.models import AccessAttempt
from django.db.models import Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone


class LoginThrottleBackend(AxesStandaloneBackend):
    """First in ``AUTHENTICATION_BACKENDS``: refuses a locked pair before the password backend hashes anything.

    ``authenticate()`` without a request (a script or the test client's ``login()``) is not a login from the
    network and is not throttled.
    """

    def authenticate(self, request: HttpRequest | None, username: str | None = None,  # type: ignore[override]
                     password: str | None = None, **kwargs: Any) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def lockout_response(request: HttpRequest, *args: Any) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE``: HTTP 429, a page saying until when, and ``Retry-After`` in seconds."""
    credentials = getattr(request, "axes_credentials", None)
    username = get_client_username(request, credentials) or ""
    cool_off = get_cool_off(request)
    now = timezone.now()
    last = AccessAttempt.objects.filter(username=username, ip_address=getattr(request, "axes_ip_address", None)) \
        .aggregate(last=Max("attempt_time"))["last"] or now
    retry_at = last + cool_off if cool_off else now
    wait_s = max(1, math.ceil((retry_at - now).total_seconds()))
    response = render(request, "registration/locked_out.html", {
        "username": username, "retry_at": retry_at, "wait_s": wait_s, "wait_min": math.ceil(wait_s / 60),
        "address": getattr(request, "axes_ip_address", None) or "your address",
    }, status=429)
    response["Retry-After"] = str(wait_s)
    return response

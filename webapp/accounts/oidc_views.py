"""The two OpenID Connect views (mozilla-django-oidc's, through ``OIDC_AUTHENTICATE_CLASS`` and
``OIDC_CALLBACK_CLASS``) with the provider's endpoints from discovery (:mod:`webapp.accounts.oidc_discovery`),
and a provider that is down or misconfigured shown to the user as a 503 page naming it, not a 500."""

from __future__ import annotations

import logging

import requests
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from .oidc_discovery import ProviderUnavailable, endpoint, provider_name, why

log = logging.getLogger(__name__)


def provider_unavailable(request: HttpRequest, exc: ProviderUnavailable) -> HttpResponse:
    """503: sign-in with the provider (its label and address) cannot go on now, and why; the password form is
    still there."""
    log.warning("OIDC sign-in stopped: %s", exc)
    return render(request, "registration/oidc_unavailable.html",
                  {"label": settings.PTYCHOPY_OIDC_LABEL, "provider": exc.provider, "reason": exc.reason},
                  status=503)


class OidcLoginView(OIDCAuthenticationRequestView):
    """``/oidc/authenticate/`` (the login page's button): to the provider's authorization endpoint."""

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            self.OIDC_OP_AUTH_ENDPOINT = endpoint("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except ProviderUnavailable as exc:
            return provider_unavailable(request, exc)
        return super().get(request)


class OidcCallbackView(OIDCAuthenticationCallbackView):
    """``/oidc/callback/``: the code redeemed at the provider (webapp.accounts.oidc.OidcBackend)."""

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            return super().get(request)
        except ProviderUnavailable as exc:
            return provider_unavailable(request, exc)
        except requests.RequestException as exc:  # the token, keys or userinfo endpoint failed
            url = str(getattr(exc.request, "url", "") or "").split("?")[0]
            reason = why(exc, settings.OIDC_TIMEOUT) + (f" at {url}" if url else "")
            return provider_unavailable(request, ProviderUnavailable(provider_name(), reason))

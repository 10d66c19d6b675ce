"""OpenID Connect discovery: the provider's endpoints from ``<issuer>/.well-known/openid-configuration``, so a site
configures only ``OIDC_OP_ISSUER`` (docs/deploy.md "Single sign-on").

The document is fetched on the first sign-in that needs it (never at start-up: a provider that is down must not
stop the site), within ``OIDC_TIMEOUT`` seconds, and kept for the life of the process; a failed fetch is not
kept, so the next sign-in tries again. Its ``issuer`` must equal the configured one exactly (OpenID Connect
Discovery 1.0, section 4.3), else nothing is taken from it. An endpoint set in its own variable wins over the
document's.
"""

from __future__ import annotations

import logging
import threading

import requests
from django.conf import settings

log = logging.getLogger(__name__)
WELL_KNOWN = "/.well-known/openid-configuration"
#: setting -> the discovery document's key
ENDPOINTS = {"OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
             "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
             "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
             "OIDC_OP_JWKS_ENDPOINT": "jwks_uri"}

_discovered: dict[str, dict[str, str]] = {}
_lock = threading.Lock()


class ProviderUnavailable(Exception):
    """Sign-in through the provider cannot go on now; ``provider`` is its address, ``reason`` says why (short
    enough for the user's error page)."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"the OpenID Connect provider {provider}: {reason}")
        self.provider, self.reason = provider, reason


class IssuerMismatch(ProviderUnavailable):
    """The discovery document names another issuer than the configured one."""


def discovery_url(issuer: str) -> str:
    """Where ``issuer`` publishes its configuration (a trailing ``/`` of the issuer dropped first)."""
    return issuer.rstrip("/") + WELL_KNOWN


def why(exc: requests.RequestException, timeout_s: float) -> str:
    """A short reason for a failed call to the provider (the exception itself goes to the log)."""
    if isinstance(exc, requests.Timeout):
        return f"it did not answer within {timeout_s:g} s"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"it answered HTTP {exc.response.status_code}"
    if isinstance(exc, requests.ConnectionError):
        return "it cannot be reached"
    return f"its answer was not usable ({type(exc).__name__})"


def fetch(issuer: str, *, timeout_s: float, verify: bool = True) -> dict[str, str]:
    """The four endpoints (setting name -> URL) from ``issuer``'s discovery document; :class:`ProviderUnavailable`
    when it cannot be read or lacks one, :class:`IssuerMismatch` when it names another issuer."""
    url = discovery_url(issuer)
    try:
        resp = requests.get(url, timeout=timeout_s, verify=verify, headers={"Accept": "application/json"})
        resp.raise_for_status()
        doc = resp.json()
    except requests.RequestException as exc:  # JSON errors included
        log.warning("OIDC discovery at %s failed: %s", url, exc)
        raise ProviderUnavailable(issuer, f"its discovery document {url} could not be read: "
                                          f"{why(exc, timeout_s)}") from exc
    named = doc.get("issuer") if isinstance(doc, dict) else None
    if named != issuer:
        raise IssuerMismatch(issuer, f"its discovery document {url} names the issuer {named!r}, not the "
                                     f"configured OIDC_OP_ISSUER {issuer!r}: they must be equal, character for "
                                     f"character")
    missing = [key for key in ENDPOINTS.values() if not isinstance(doc.get(key), str) or not doc[key]]
    if missing:
        raise ProviderUnavailable(issuer, f"its discovery document {url} has no {', '.join(missing)}")
    return {name: doc[key] for name, key in ENDPOINTS.items()}


def discovered() -> dict[str, str]:
    """The configured issuer's endpoints, fetched once per process (:func:`fetch`; a failure is raised, not kept)."""
    issuer = settings.OIDC_OP_ISSUER
    with _lock:
        if issuer not in _discovered:
            _discovered[issuer] = fetch(issuer, timeout_s=settings.OIDC_TIMEOUT, verify=settings.OIDC_VERIFY_SSL)
            log.info("OIDC provider %s discovered: %s", issuer, _discovered[issuer])
        return _discovered[issuer]


def endpoint(name: str) -> str:
    """The URL of endpoint setting ``name`` (a key of :data:`ENDPOINTS`): its own variable when set, else the
    issuer's discovery document (:func:`discovered`)."""
    return str(getattr(settings, name, "") or "") or discovered()[name]


def provider_name() -> str:
    """The provider's address for messages: the issuer, else the configured token endpoint."""
    return settings.OIDC_OP_ISSUER or settings.OIDC_OP_TOKEN_ENDPOINT

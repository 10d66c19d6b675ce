"""The websocket Origin check: a viewer's page must come from this very site, scheme, host and port alike.

Channels' ``AllowedHostsOriginValidator`` compares host names only, so a page on another port of an allowed
host (another service on the same machine) could open a logged-in viewer's socket. Here the Origin must equal
the address the socket was opened on (its Host header, a host in ``ALLOWED_HOSTS``, with the scheme the
browser used, default ports filled in), or be listed exactly in ``CSRF_TRUSTED_ORIGINS``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope.get("headers", [])}


def _scheme(scope: dict[str, Any], headers: dict[str, str]) -> str:
    """http or https: what the browser used (a TLS proxy's forwarded header counts when it is configured)."""
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, secure_value = proxy
        header = name.lower().removeprefix("http_").replace("_", "-")
        if headers.get(header, "").split(",")[0].strip() == secure_value:
            return "https"
    return "https" if scope.get("scheme") in ("wss", "https") else "http"


def _address(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    host, port = split_domain_port(netloc.lower())
    if not host:
        return None
    try:
        number = int(port) if port else DEFAULT_PORTS[scheme]
    except (ValueError, KeyError):
        return None
    return scheme, host, number


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether the websocket in ``scope`` was opened by a page of this site (see the module docstring)."""
    headers = _headers(scope)
    origin = headers.get("origin", "").strip()
    if not origin or origin == "null":
        return False
    trusted = {o.rstrip("/").lower() for o in getattr(settings, "CSRF_TRUSTED_ORIGINS", [])}
    if origin.rstrip("/").lower() in trusted:
        return True
    host = headers.get("host", "")
    if not host or not validate_host(split_domain_port(host.lower())[0], settings.ALLOWED_HOSTS):
        return False
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS:
        return False
    return _address(parts.scheme, parts.netloc) == _address(_scheme(scope, headers), host)


class SameOriginValidator:
    """ASGI middleware: refuse (403) a websocket whose Origin is not this site's scheme, host and port."""

    def __init__(self, application: Any):
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope.get("type") == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)

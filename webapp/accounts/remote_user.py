"""Single sign-on through the facility's reverse proxy: the proxy authenticates (Kerberos, Shibboleth, basic auth,
its own OIDC client, ...) and names the user in a header, e.g. ``X-Remote-User``.

Off unless ``PTYCHOPY_REMOTE_USER_HEADER`` names the header. Even then the header is believed only on requests
whose peer (the address that opened the connection to Daphne) is one of ``PTYCHOPY_TRUSTED_PROXIES``: from
anyone else it is removed before Django's ``RemoteUserMiddleware`` looks, and a warning is logged, so a client
that reaches Daphne directly cannot log in as someone by sending the header. The proxy must set (overwrite) the
header on every request it forwards, so a client cannot pass its own through it either.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.backends import RemoteUserBackend
from django.contrib.auth.middleware import RemoteUserMiddleware
from django.http import HttpRequest

from .client_ip import _trusted

log = logging.getLogger(__name__)


def meta_key(header: str) -> str:
    """``X-Remote-User`` -> ``HTTP_X_REMOTE_USER``, the ``request.META`` key Django files the header under."""
    return "HTTP_" + header.strip().upper().replace("-", "_")


def from_trusted_proxy(request: HttpRequest) -> bool:
    """True when the request's peer address is one of ``PTYCHOPY_TRUSTED_PROXIES``."""
    peer = (request.META.get("REMOTE_ADDR") or "").strip()
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in _trusted(tuple(settings.PTYCHOPY_TRUSTED_PROXIES)))


class ProxyRemoteUserMiddleware(RemoteUserMiddleware):
    """Django's ``RemoteUserMiddleware`` on the configured header, from trusted proxies only; inert when off."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)
        name = settings.PTYCHOPY_REMOTE_USER_HEADER
        self.header = meta_key(name) if name else ""

    def __call__(self, request: HttpRequest) -> Any:
        if not self.header:
            return self.get_response(request)
        if self.header in request.META and not from_trusted_proxy(request):
            log.warning("%s header from %s ignored: not a trusted proxy (PTYCHOPY_TRUSTED_PROXIES)",
                        settings.PTYCHOPY_REMOTE_USER_HEADER, request.META.get("REMOTE_ADDR", "?"))
            del request.META[self.header]
        return super().__call__(request)

    def process_request(self, request: HttpRequest) -> None:
        if request.META.get(self.header, "").strip() == "":
            request.META.pop(self.header, None)  # an empty header (the proxy let someone through unnamed) is none
        return super().process_request(request)

    async def aprocess_request(self, request: HttpRequest) -> None:  # type: ignore[override]
        if request.META.get(self.header, "").strip() == "":
            request.META.pop(self.header, None)
        return await super().aprocess_request(request)  # type: ignore[misc]


class ProxyRemoteUserBackend(RemoteUserBackend):
    """Users named by the proxy; unknown names become new (unprivileged) accounts unless
    ``PTYCHOPY_REMOTE_USER_CREATE`` is off, when only existing accounts can sign in this way."""

    @property
    def create_unknown_user(self) -> bool:  # type: ignore[override]
        return bool(settings.PTYCHOPY_REMOTE_USER_CREATE)

    def configure_user(self, request: HttpRequest, user: Any, created: bool = True) -> Any:
        """A new account has no password: it signs in through the proxy only (an admin may give it one)."""
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
            log.info("new account %r from the proxy's %s header", user.get_username(),
                     settings.PTYCHOPY_REMOTE_USER_HEADER)
        return user

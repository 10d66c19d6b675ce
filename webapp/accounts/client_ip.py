"""The client's address for login throttling, trusting ``X-Forwarded-For`` only from configured proxies.

``PTYCHOPY_TRUSTED_PROXIES`` (settings ``PTYCHOPY_TRUSTED_PROXIES``: addresses or networks, e.g.
``127.0.0.1,10.0.5.0/24``) names the reverse proxies in front of Daphne. A request whose peer is not one of them
is attributed to its peer, whatever headers it sends. From a trusted peer, ``X-Forwarded-For`` is read from the
right (each proxy appends the address it saw) and the first hop that is not a trusted proxy is the client: the
left-hand entries, which the client itself may have written, are never used.

Run Daphne *without* ``--proxy-headers`` (its client address is the first, client-written, entry); the peer it
reports is then the proxy, which this module checks.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Sequence

from django.conf import settings
from django.http import HttpRequest

from webapp.site_security import Network, parse_networks

log = logging.getLogger(__name__)

@functools.lru_cache(maxsize=8)
def _trusted(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(entries)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from a header entry: ``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:80``, ``::1``; None if malformed."""
    value = text.strip()
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def client_address(peer: str, forwarded_for: str, trusted: Sequence[Network]) -> str | None:
    """The client address of a request from ``peer`` carrying ``X-Forwarded-For: forwarded_for``."""
    address = _address(peer) if peer else None
    if address is None:
        return None
    for hop in reversed([h for h in forwarded_for.split(",") if h.strip()]):
        if not any(address in net for net in trusted):
            break  # ``address`` was written by a trusted proxy (or is the peer) and is no proxy: the client
        nxt = _address(hop)
        if nxt is None:
            log.warning("X-Forwarded-For from trusted proxy %s holds %r, not an address: using the proxy's",
                        address, hop.strip()[:60])
            break
        address = nxt
    return str(address)


def client_ip(request: HttpRequest) -> str | None:
    """``AXES_CLIENT_IP_CALLABLE``: the client address of ``request`` (see the module docstring)."""
    trusted = _trusted(tuple(getattr(settings, "PTYCHOPY_TRUSTED_PROXIES", ())))
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "") if trusted else ""
    return client_address(request.META.get("REMOTE_ADDR", ""), forwarded, trusted)

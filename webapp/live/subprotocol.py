"""The live websocket's subprotocols (``Sec-WebSocket-Protocol``): every client offers the plain
:data:`PROTOCOL`, and a token client adds its ticket as ``ptychopy.ticket.<ticket>`` (:func:`ticket_protocol`)
beside it. The server accepts with :data:`PROTOCOL` only and never echoes the ticket. The ticket travels in a
header, not in the URL, so it stays out of the reverse proxy's and Daphne's access logs and the browser history.
"""

from __future__ import annotations

from collections.abc import Sequence

PROTOCOL = "ptychopy.v1"
TICKET_PREFIX = "ptychopy.ticket."


def ticket_protocol(ticket: str) -> str:
    """The subprotocol that carries ``ticket`` (offer it beside :data:`PROTOCOL`)."""
    return TICKET_PREFIX + ticket


def ticket_of(offered: Sequence[str]) -> str:
    """The ticket among the offered subprotocols, '' when none carries one."""
    for name in offered:
        if name.startswith(TICKET_PREFIX):
            return name[len(TICKET_PREFIX):]
    return ""


def accepted(offered: Sequence[str]) -> str | None:
    """The subprotocol the server answers with: :data:`PROTOCOL` when it was offered, else none."""
    return PROTOCOL if PROTOCOL in offered else None

"""Websocket tickets: a token client cannot send a header with a browser-style websocket, so it asks
``POST /api/v1/jobs/<id>/ws-ticket/`` for a ticket and opens ``/ws/jobs/<id>/?ticket=<ticket>``.

A ticket is signed with ``SECRET_KEY`` (Django's signing), names the user and the job, is valid for
:data:`TICKET_TTL_S` seconds and is accepted once: Django's cache notes its nonce (Redis in production, shared by
every web process; the embedded mode's single process keeps it in memory).
"""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core import signing
from django.core.cache import cache

TICKET_TTL_S = 60
SALT = "ptychopy.api.ws-ticket"


class TicketRefused(Exception):
    """The ticket cannot open this socket; the message says why."""


def issue(user_id: int, job_id: int) -> str:
    """A ticket for user ``user_id`` to watch job ``job_id`` (URL-safe text)."""
    return signing.dumps({"u": user_id, "j": job_id, "n": secrets.token_urlsafe(12)}, salt=SALT, compress=False)


def redeem(ticket: str, job_id: int):
    """The active user the ticket was issued to for job ``job_id``; :class:`TicketRefused` when it is forged,
    older than :data:`TICKET_TTL_S`, for another job, used before or its user is deactivated."""
    try:
        data = signing.loads(ticket, salt=SALT, max_age=TICKET_TTL_S)
    except signing.SignatureExpired:
        raise TicketRefused(f"the websocket ticket is older than {TICKET_TTL_S} s: ask for a new one") from None
    except signing.BadSignature:
        raise TicketRefused("the websocket ticket is not one this server issued") from None
    if data.get("j") != job_id:
        raise TicketRefused(f"the websocket ticket is for job {data.get('j')}, not job {job_id}")
    if not cache.add(f"ws-ticket:{data['n']}", True, timeout=TICKET_TTL_S + 5):
        raise TicketRefused("the websocket ticket was used before: ask for a new one")
    user = get_user_model().objects.filter(pk=data.get("u"), is_active=True).first()
    if user is None:
        raise TicketRefused("the websocket ticket's user no longer exists or is deactivated")
    return user

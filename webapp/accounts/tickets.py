"""Websocket tickets: a token client cannot send an ``Authorization`` header with a browser-style websocket, so
it asks ``POST /api/v1/jobs/<id>/ws-ticket/`` for a ticket and offers it as the subprotocol
``ptychopy.ticket.<ticket>`` when it opens ``/ws/jobs/<id>/`` (:mod:`webapp.live.subprotocol`), never in the URL.

A ticket is signed with ``SECRET_KEY`` (Django's signing, ``.`` between its parts so that it is a valid
subprotocol token), names the user and the job, is valid for :data:`TICKET_TTL_S` seconds and is accepted once:
Django's cache notes its nonce (Redis in production, shared by every web process; the embedded mode's single
process keeps it in memory).
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


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=SALT, sep=".")


def issue(user_id: int, job_id: int) -> str:
    """A ticket for user ``user_id`` to watch job ``job_id`` (letters, digits, ``-``, ``_`` and ``.`` only)."""
    return _signer().sign_object({"u": user_id, "j": job_id, "n": secrets.token_urlsafe(12)}, compress=False)


def _note_used(nonce: str) -> bool:
    """Note the ticket ``nonce`` as used; False when it was noted before."""
    return bool(cache.add(f"ws-ticket:{nonce}", True, timeout=TICKET_TTL_S + 5))


def spend(ticket: str) -> None:
    """Use ``ticket`` up without opening anything (one that leaked, e.g. sent in a logged URL); forged or expired
    tickets are ignored: they open nothing anyway."""
    try:
        data = _signer().unsign_object(ticket, max_age=TICKET_TTL_S)
    except signing.BadSignature:
        return
    _note_used(str(data.get("n")))


def redeem(ticket: str, job_id: int):
    """The active user the ticket was issued to for job ``job_id``; :class:`TicketRefused` when it is forged,
    older than :data:`TICKET_TTL_S`, for another job, used before or its user is deactivated."""
    try:
        data = _signer().unsign_object(ticket, max_age=TICKET_TTL_S)
    except signing.SignatureExpired:
        raise TicketRefused(f"the websocket ticket is older than {TICKET_TTL_S} s: ask for a new one") from None
    except signing.BadSignature:
        raise TicketRefused("the websocket ticket is not one this server issued") from None
    if data.get("j") != job_id:
        raise TicketRefused(f"the websocket ticket is for job {data.get('j')}, not job {job_id}")
    if not _note_used(str(data.get("n"))):
        raise TicketRefused("the websocket ticket was used before: ask for a new one")
    user = get_user_model().objects.filter(pk=data.get("u"), is_active=True).first()
    if user is None:
        raise TicketRefused("the websocket ticket's user no longer exists or is deactivated")
    return user

"""The live view's websocket: ``/ws/jobs/<id>/`` sends binary frames (see :mod:`webapp.live.frames`) to a
logged-in browser, or to a script that offers a ticket from ``POST /api/v1/jobs/<id>/ws-ticket/``
(:mod:`webapp.accounts.tickets`) as the subprotocol ``ptychopy.ticket.<ticket>`` beside ``ptychopy.v1``
(:mod:`webapp.live.subprotocol`). Either way the Origin must be this site's (:mod:`webapp.live.origin`).

A ticket in the URL (``?ticket=``, the old way) is refused: it is used up (it is in some access log now), and
the socket is accepted only to say so, a text message ``{"error": ...}`` and the close code
:data:`CLOSE_BAD_REQUEST` with the same reason (Daphne drops close reasons, hence the message)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from webapp.accounts import tickets
from webapp.jobs.models import Job

from . import frames, subprotocol, viewer_choice
from .publish import group_name
from .status import status_frame

MAX_MESSAGE_CHARS = 1024  # a viewer's text message longer than this is ignored unread
CHOICES_PER_S = 10.0  # position choices a socket may make per second (a burst of as many), each a cache write
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
TICKET_IN_URL = (f"a websocket ticket in the URL is refused, and this one is used up: ask for a new one and offer "
                 f"it as the subprotocol '{subprotocol.TICKET_PREFIX}<ticket>' beside '{subprotocol.PROTOCOL}' "
                 f"(header Sec-WebSocket-Protocol), with no ?ticket= in the URL")
TICKET_WITHOUT_PROTOCOL = (f"offer the subprotocol '{subprotocol.PROTOCOL}' beside "
                           f"'{subprotocol.TICKET_PREFIX}<ticket>': the server answers with it, never with the ticket")
log = logging.getLogger(__name__)


def url_ticket(scope: dict) -> str | None:
    """The ``?ticket=`` in the socket's URL (None when the URL names none)."""
    tickets_in_url = parse_qs(scope.get("query_string", b"").decode("latin1"), keep_blank_values=True).get("ticket")
    return tickets_in_url[0] if tickets_in_url else None


@database_sync_to_async
def ticket_user(ticket: str, job_id: int):
    """The user of the ticket the socket offered, or None (a refused ticket: logged)."""
    try:
        return tickets.redeem(ticket, job_id)
    except tickets.TicketRefused as exc:
        log.info("websocket for job %s refused: %s", job_id, exc)
        return None


@database_sync_to_async
def latest_frame(job_id: int) -> bytes | None:
    """The job's current state as a frame, or None when there is no such job."""
    job = Job.objects.filter(pk=job_id).first()
    return None if job is None else status_frame(job)


@dataclass
class TokenBucket:
    """At most ``rate_per_s`` takes a second on average, ``rate_per_s`` at once (a burst)."""

    rate_per_s: float
    tokens: float = -1.0
    at_s: float = 0.0

    def take(self, now_s: float) -> bool:
        """Whether one more is allowed at ``now_s`` (monotonic seconds); counts it if so."""
        if self.tokens < 0:
            self.tokens, self.at_s = self.rate_per_s, now_s
        self.tokens = min(self.rate_per_s, self.tokens + (now_s - self.at_s) * self.rate_per_s)
        self.at_s = now_s
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class JobFramesConsumer(AsyncWebsocketConsumer):
    """Join group ``job_<id>``, send the latest stored frame, then every newer frame (latest wins)."""

    group: str = ""
    sent_seq: int = -1
    job_id: int = 0

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._choices = TokenBucket(CHOICES_PER_S)  # this socket's diffraction-position choices

    async def connect(self) -> None:
        job_id = self.job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
        offered = list(self.scope.get("subprotocols") or [])
        in_url = url_ticket(self.scope)
        if in_url is not None:
            await database_sync_to_async(tickets.spend)(in_url)
            log.info("websocket for job %s refused: a ticket in the URL", job_id)
            await self._refuse(offered, TICKET_IN_URL)
            return
        ticket = subprotocol.ticket_of(offered)
        if ticket and subprotocol.accepted(offered) is None:
            await self._refuse(offered, TICKET_WITHOUT_PROTOCOL)
            return
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            user = await ticket_user(ticket, job_id) if ticket else None
            if user is None:
                await self.close(code=CLOSE_UNAUTHENTICATED)
                return
            self.scope["user"] = user
        # Join first, then read the row: a frame sent in between is not lost, and older ones are dropped.
        self.group = group_name(job_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        frame = await latest_frame(job_id)
        if frame is None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = ""
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.accept(subprotocol=subprotocol.accepted(offered))
        await self._send_frame(frame)

    async def _refuse(self, offered: list[str], reason: str) -> None:
        """Open the socket only to say why it closes: a text message ``{"error": reason}``, then the close code
        :data:`CLOSE_BAD_REQUEST` with ``reason``."""
        await self.accept(subprotocol=subprotocol.accepted(offered))
        await self.send(text_data=json.dumps({"error": reason}))
        await self.close(code=CLOSE_BAD_REQUEST, reason=reason)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """A viewer may send ``{"diffraction_position": k}`` (text): the scan position the job's diffraction panel
        shows from the next frame on (:mod:`webapp.live.viewer_choice`); it is answered with a text message
        ``{"diffraction_position": k}``, or ``{"error": ...}`` naming what was wrong. Anything else is ignored."""
        if not text_data or len(text_data) > MAX_MESSAGE_CHARS:  # a choice is a few dozen characters
            return
        try:
            message = json.loads(text_data)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            return
        if not isinstance(message, dict) or "diffraction_position" not in message:
            return
        if not self._choices.take(time.monotonic()):
            await self.send(text_data=json.dumps({"error": f"too many position choices: at most "
                                                           f"{CHOICES_PER_S:g} a second; this one was not taken"}))
            return
        try:
            position = viewer_choice.parse_position(message["diffraction_position"])
        except ValueError as exc:
            await self.send(text_data=json.dumps({"error": str(exc)}))
            return
        await database_sync_to_async(viewer_choice.choose_position)(self.job_id, position)
        await self.send(text_data=json.dumps({"diffraction_position": position}))

    async def job_frame(self, event: dict) -> None:
        await self._send_frame(event["frame"], event.get("seq"))

    async def _send_frame(self, frame: bytes, seq: int | None = None) -> None:
        if seq is None:
            seq = int(frames.decode_header(frame)[0].get("seq", 0))
        if seq <= self.sent_seq:  # a frame published while this viewer joined arrives twice: send it once
            return
        self.sent_seq = seq
        await self.send(bytes_data=frame)

"""The live view's websocket: ``/ws/jobs/<id>/`` sends binary frames (see :mod:`webapp.live.frames`) to a
logged-in browser, or to a script that opens ``/ws/jobs/<id>/?ticket=<ticket>`` with a ticket from
``POST /api/v1/jobs/<id>/ws-ticket/`` (:mod:`webapp.accounts.tickets`). Either way the Origin must be this site's
(:mod:`webapp.live.origin`)."""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from webapp.accounts import tickets
from webapp.jobs.models import Job

from . import frames, viewer_choice
from .publish import group_name
from .status import status_frame

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
log = logging.getLogger(__name__)


@database_sync_to_async
def ticket_user(scope: dict, job_id: int):
    """The user of the ``?ticket=`` in the socket's URL, or None (no ticket, or a refused one: logged)."""
    ticket = parse_qs(scope.get("query_string", b"").decode("latin1")).get("ticket", [""])[0]
    if not ticket:
        return None
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


class JobFramesConsumer(AsyncWebsocketConsumer):
    """Join group ``job_<id>``, send the latest stored frame, then every newer frame (latest wins)."""

    group: str = ""
    sent_seq: int = -1
    job_id: int = 0

    async def connect(self) -> None:
        job_id = self.job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            user = await ticket_user(self.scope, job_id)
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
        await self.accept()
        await self._send_frame(frame)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """A viewer may send ``{"diffraction_position": k}`` (text): the scan position the job's diffraction panel
        shows from the next frame on (:mod:`webapp.live.viewer_choice`); it is answered with a text message
        ``{"diffraction_position": k}``, or ``{"error": ...}`` naming what was wrong. Anything else is ignored."""
        if not text_data:
            return
        try:
            message = json.loads(text_data)
        except ValueError:
            return
        if not isinstance(message, dict) or "diffraction_position" not in message:
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

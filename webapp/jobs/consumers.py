"""The live view's websocket: ``/ws/jobs/<id>/`` sends binary frames (see :mod:`webapp.jobs.frames`)."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from . import frames
from .models import Job
from .publish import group_name

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


@database_sync_to_async
def latest_frame(job_id: int) -> bytes | None:
    """The job's current state as a frame, or None when there is no such job."""
    from .services import status_frame

    job = Job.objects.filter(pk=job_id).first()
    return None if job is None else status_frame(job)


class JobFramesConsumer(AsyncWebsocketConsumer):
    """Join group ``job_<id>``, send the latest stored frame, then every newer frame (latest wins)."""

    group: str = ""
    sent_seq: int = -1

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
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
        """Viewers send nothing; anything received is ignored."""

    async def job_frame(self, event: dict) -> None:
        await self._send_frame(event["frame"], event.get("seq"))

    async def _send_frame(self, frame: bytes, seq: int | None = None) -> None:
        if seq is None:
            seq = int(frames.decode_header(frame)[0].get("seq", 0))
        if seq <= self.sent_seq:  # a frame published while this viewer joined arrives twice: send it once
            return
        self.sent_seq = seq
        await self.send(bytes_data=frame)

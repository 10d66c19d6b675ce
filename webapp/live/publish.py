"""Send a frame to the viewers of a job (channel group ``job_<id>``) from any thread.

Embedded mode schedules the send onto the server's event loop (the in-memory layer is bound to it); a
production worker process uses one long-lived private event loop thread for channels_redis, never a fresh
loop per call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

from channels.layers import get_channel_layer
from django.conf import settings

from webapp.workers import heartbeat

from . import frames
from .server_loop import server_loop

log = logging.getLogger(__name__)

_private_loop: asyncio.AbstractEventLoop | None = None
_private_loop_pid = 0
_private_lock = threading.Lock()
_failing = False  # the last publish failed (logged once until one succeeds)


def group_name(job_id: int) -> str:
    return f"job_{job_id}"


def publish_frame(job_id: int, frame: bytes, timeout_s: float = 5.0) -> None:
    """Deliver ``frame`` to group ``job_<id>``; losing a frame is harmless (the row keeps the latest)."""
    layer = get_channel_layer()
    if layer is None:
        return
    loop = _publishing_loop()
    if loop is None:
        return  # embedded and no server loop yet: nobody can be watching
    seq = int(frames.decode_header(frame)[0].get("seq", 0))
    coro = layer.group_send(group_name(job_id), {"type": "job.frame", "frame": frame, "seq": seq})
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        loop.create_task(coro)
        return
    global _failing
    try:
        asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=timeout_s)
    except Exception as exc:  # a viewer missing one frame must never fail a reconstruction
        if not _failing:  # once per outage (Redis restarting), not once per frame
            log.warning("could not publish a frame of job %s (%s: %s); frames are dropped until the channel "
                        "layer answers again", job_id, type(exc).__name__, str(exc)[:200])
        _failing = True
    else:
        heartbeat.note_frame_published()
        if _failing:
            log.info("frames are published again (job %s)", job_id)
        _failing = False


def _publishing_loop() -> asyncio.AbstractEventLoop | None:
    layer_backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    if layer_backend.endswith("InMemoryChannelLayer"):
        loop = server_loop()
        return loop if loop is not None and loop.is_running() else None
    return _private_publishing_loop()


def _private_publishing_loop() -> asyncio.AbstractEventLoop:
    """This process's publishing loop; a forked child (the ``dramatiq`` master publishes status frames at start-up,
    then forks its worker) starts its own, since the parent's loop thread does not exist there."""
    global _private_loop, _private_loop_pid
    with _private_lock:
        if _private_loop is None or _private_loop.is_closed() or _private_loop_pid != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="ptychopy-frame-publisher", daemon=True).start()
            _private_loop, _private_loop_pid = loop, os.getpid()
        return _private_loop

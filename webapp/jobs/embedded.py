"""Embedded mode: the Dramatiq worker thread inside the ASGI process, and the server's event loop.

The in-memory channel layer lives in one process and one event loop, so frames from the worker thread are
scheduled onto the server loop (see :mod:`webapp.jobs.publish`). The loop is recorded by the launcher
(``webapp.cli``) or, under a plain ``daphne`` command, by :class:`EmbeddedStarter` on the first ASGI call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_server_loop: asyncio.AbstractEventLoop | None = None
_worker: Any = None


def set_server_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    global _server_loop
    _server_loop = loop


def server_loop() -> asyncio.AbstractEventLoop | None:
    return _server_loop


def worker_running() -> bool:
    return _worker is not None


def start_worker(*, requeue: bool = True) -> Any:
    """Start the one in-process worker thread (idempotent) and re-queue jobs a previous run left behind."""
    global _worker
    import dramatiq
    from dramatiq import Worker

    import reconstruction.driver  # noqa: F401  (imported now, not when the first job starts)
    import reconstruction.io.scan  # noqa: F401
    import reconstruction.multigpu  # noqa: F401

    from . import tasks
    from .services import requeue_unfinished

    with _lock:
        if _worker is not None:
            return _worker
        broker = dramatiq.get_broker()
        broker.emit_after("process_boot")
        worker = Worker(broker, queues={tasks.QUEUE}, worker_threads=1, worker_timeout=100)
        worker.start()
        _worker = worker
        _sweeper_stop.clear()
        threading.Thread(target=_sweep_forever, args=(broker,), name="ptychopy-queue-sweeper", daemon=True).start()
    log.info("embedded Dramatiq worker started")
    if requeue:
        n = requeue_unfinished()
        if n:
            log.info("re-queued %d unfinished job(s)", n)
    return _worker


def stop_worker() -> None:
    global _worker
    with _lock:
        worker, _worker = _worker, None
    _sweeper_stop.set()
    if worker is not None:
        from .runner import clear_stop, request_stop

        request_stop()  # the running job stops after its current iteration and goes back to the queue
        try:
            worker.stop(timeout=10_000)
        finally:
            clear_stop()


# -- jobs queued by other processes ------------------------------------------------------------------------
# The StubBroker lives in this process: a job row created elsewhere (an EPICS bridge or a manage.py command
# running as its own process) has no message here. The sweeper sends one, once per job, for every row that has
# been queued for a while without a message in this process's queues.
SWEEP_EVERY_S = 2.0
SWEEP_MIN_AGE_S = 5.0
_sweeper_stop = threading.Event()
_swept: set[int] = set()


def pending_job_ids(broker: Any) -> set[int]:
    """Job ids of the messages waiting in this process's StubBroker queues (main and delay)."""
    from dramatiq import Message

    from . import tasks

    ids: set[int] = set()
    for name in (tasks.QUEUE, f"{tasks.QUEUE}.DQ"):
        queue = getattr(broker, "queues", {}).get(name)
        if queue is None:
            continue
        for raw in list(queue.queue):
            try:
                ids.add(int(Message.decode(raw).args[0]))
            except Exception:
                continue
    return ids


def sweep_once(broker: Any, min_age_s: float = SWEEP_MIN_AGE_S) -> list[int]:
    """Send a message for each queued job that has none here (each job at most once); the ids sent."""
    from datetime import timedelta

    from django.utils import timezone

    from . import heartbeat
    from .models import Job
    from .services import enqueue

    cutoff = timezone.now() - timedelta(seconds=min_age_s)
    queued = set(Job.objects.filter(status=Job.Status.QUEUED, created__lt=cutoff).values_list("pk", flat=True))
    missing = sorted(queued - pending_job_ids(broker) - _swept - {heartbeat.current_job()})
    for job_id in missing:
        _swept.add(job_id)
        enqueue(job_id)
    return missing


def _sweep_forever(broker: Any) -> None:
    from django.db import connection

    try:
        while not _sweeper_stop.wait(SWEEP_EVERY_S):
            try:
                sent = sweep_once(broker)
                if sent:
                    log.info("queued job(s) %s created by another process", sent)
            except Exception:
                log.warning("queue sweep failed", exc_info=True)
                connection.close()
    finally:
        connection.close()


class EmbeddedStarter:
    """ASGI wrapper that records the server loop and starts the embedded worker on the first call."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        loop = asyncio.get_running_loop()
        if _server_loop is not loop:
            set_server_loop(loop)
        if _worker is None and getattr(settings, "PTYCHOPY_EMBEDDED_WORKER", False):
            await sync_to_async(start_worker, thread_sensitive=False)()
        return await self.app(scope, receive, send)

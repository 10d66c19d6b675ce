"""Embedded mode: the Dramatiq worker thread inside the ASGI process, started with the server's event loop.

The in-memory channel layer lives in one process and one event loop, so frames from the worker thread are
scheduled onto the server loop (:mod:`webapp.live.server_loop`, :mod:`webapp.live.publish`). The loop is recorded
by the launcher (``webapp.cli``) or, under a plain ``daphne`` command, by :class:`EmbeddedStarter` on the first
ASGI call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from webapp.live.server_loop import server_loop, set_server_loop

from .queue import QUEUE
from .reconciler import Reconciler, requeue_unfinished
from .runner import clear_stop, request_stop

__all__ = ["EmbeddedStarter", "server_loop", "set_server_loop", "start_worker", "stop_worker", "worker_running"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_worker: Any = None


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

    from . import tasks  # noqa: F401  (registers the actor on the broker when the worker starts, not on import)

    with _lock:
        if _worker is not None:
            return _worker
        broker = dramatiq.get_broker()
        broker.emit_after("process_boot")
        worker = Worker(broker, queues={QUEUE}, worker_threads=1, worker_timeout=100)
        worker.start()
        _worker = worker
        _start_reconciler(broker)
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
    _stop_reconciler()
    if worker is not None:
        request_stop()  # the running job stops after its current iteration: back to the queue (a streaming job: failed)
        try:
            worker.stop(timeout=10_000)
        finally:
            clear_stop()


# -- jobs queued by other processes, and jobs stranded -----------------------------------------------------------
# The StubBroker lives in this process: a job row created elsewhere (an EPICS bridge or a manage.py command running
# as its own process) has no message here. The reconciler (webapp.jobs.reconciler) sends one for every row queued
# for PTYCHOPY_REQUEUE_AFTER_S without a message in this process's queues, and takes back running jobs whose worker
# is gone.
_reconciler: Any = None


def _start_reconciler(broker: Any) -> None:
    global _reconciler
    _reconciler = Reconciler(broker).start()


def _stop_reconciler() -> None:
    global _reconciler
    reconciler, _reconciler = _reconciler, None
    if reconciler is not None:
        reconciler.stop()


class EmbeddedStarter:
    """ASGI wrapper that records the server loop and starts the embedded worker on the first call."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        loop = asyncio.get_running_loop()
        if server_loop() is not loop:
            set_server_loop(loop)
        if _worker is None and getattr(settings, "PTYCHOPY_EMBEDDED_WORKER", False):
            await sync_to_async(start_worker, thread_sensitive=False)()
        return await self.app(scope, receive, send)

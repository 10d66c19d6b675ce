"""The Dramatiq middleware that tells a running streaming job its worker is shutting down.

A production worker (``python -m webapp.worker``) given SIGTERM (``systemctl stop``/``restart``, a deploy, ``docker
stop``) lets its running batch job finish within the stop timeout; a streaming job would go on taking frames for
as long as its scan lasts, so it is told at once (:func:`webapp.jobs.runner.shutting_down`): it stops taking
frames, keeps the partial result of those that arrived and ends failed, never re-queued (docs/streaming.md). The
embedded worker's stop (``ptychopy serve``) goes through the same hook. Loaded from ``settings.DRAMATIQ_BROKER``
before the app registry is ready, so the runner is imported in the hooks.
"""

from __future__ import annotations

import dramatiq


class StreamingShutdownMiddleware(dramatiq.Middleware):
    """``before_worker_shutdown``: running streaming jobs stop now; ``before_worker_boot``: a new worker runs them
    (before its threads start: at ``after_worker_boot`` a thread may already have taken a waiting job, which then
    read the last worker's stop and failed at once).
    """

    def before_worker_boot(self, broker, worker) -> None:
        from .runner import shutting_down

        shutting_down(False)

    def before_worker_shutdown(self, broker, worker) -> None:
        from .runner import shutting_down

        shutting_down(True)

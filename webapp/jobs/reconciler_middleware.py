"""The Dramatiq middleware that runs a :class:`~webapp.jobs.reconciler.Reconciler` in every production worker
process.

Dramatiq middleware is loaded from ``settings.DRAMATIQ_BROKER`` while Django builds its app registry, before any
model can be imported; the reconciler (which works on the job rows) is imported once the worker boots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dramatiq

if TYPE_CHECKING:
    from .reconciler import Reconciler


class ReconcilerMiddleware(dramatiq.Middleware):
    """Runs a :class:`Reconciler` in every production worker process."""

    def __init__(self) -> None:
        self._reconciler: Reconciler | None = None

    def after_worker_boot(self, broker, worker) -> None:
        from django.conf import settings as django_settings

        if not django_settings.REDIS_URL:
            return  # embedded mode starts its own (:mod:`webapp.jobs.embedded`)
        from .reconciler import Reconciler  # the app registry is ready once a worker boots

        self._reconciler = Reconciler(broker).start()

    def before_worker_shutdown(self, broker, worker) -> None:
        if self._reconciler is not None:
            self._reconciler.stop()
            self._reconciler = None

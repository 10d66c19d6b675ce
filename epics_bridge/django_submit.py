"""The ``kind = "django"`` submitter: ``webapp.jobs.services.submit_job`` called in this process (``ptychopy serve
--bridge``, the embedded server). The only bridge module that imports Django or ``webapp``; ``load_submitter``
loads it by name, so the bridge's own path (``kind = "http"``) never does (import contracts, pyproject.toml).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from reconstruction import ParameterError

from .submit import SubmitRejected, SubmitRequest

log = logging.getLogger("epics_bridge.submit")  # the name operators and tests know these lines by


class DjangoSubmitter:
    """Calls ``webapp.jobs.services.submit_job`` in this process (production process or embedded server)."""

    def __init__(self, settings_module: str = "webapp.settings"):
        self.settings_module = settings_module
        self._submit_job: Any = None
        self._warned_no_worker = False

    def _setup(self) -> Any:
        if self._submit_job is None:
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", self.settings_module)
            import django
            from django.apps import apps

            if not apps.ready:
                django.setup()
            from webapp.jobs.services import submit_job

            self._submit_job = submit_job
        return self._submit_job

    def submit(self, request: SubmitRequest) -> str:
        submit_job = self._setup()
        from django.core.exceptions import ValidationError
        from django.db import close_old_connections, connection

        close_old_connections()
        try:
            job = submit_job(request.params, owner=None, source=request.source, dedup_key=request.dedup_key,
                             label=request.label, provenance=request.provenance)
        except (ParameterError, ValidationError, ValueError) as exc:  # bad parameters or source: for good
            raise SubmitRejected(str(exc)) from exc
        except Exception:
            connection.close()  # a broken connection must not poison the next attempt
            raise
        self._warn_if_no_worker_hears(job)
        return str(getattr(job, "pk", job))

    def _warn_if_no_worker_hears(self, job: Any) -> None:
        """Once: a process with neither Redis nor an in-process worker (a bridge beside an embedded server,
        writing to its SQLite) queues its jobs into a broker no worker reads; the server finds them only with its
        reconciler, seconds later."""
        from django.conf import settings

        from webapp.jobs import embedded

        if self._warned_no_worker or settings.REDIS_URL or embedded.worker_running():
            return
        self._warned_no_worker = True
        log.warning("job %s is queued in the database, but this process has no worker and no Redis: a server "
                    "starts it only when its reconciler finds it (PTYCHOPY_REQUEUE_AFTER_S, seconds later). Run "
                    "the bridge inside the server (ptychopy serve --bridge) or submit over the API "
                    "([submit] kind = \"http\", docs/epics_bridge.md)", getattr(job, "pk", job))

    def job_state(self, job_id: str) -> dict[str, Any] | None:
        """A job's ``status``, ``message`` and ``live`` (a streaming job's frames); None when there is no such job."""
        self._setup()
        from django.db import close_old_connections

        from webapp.jobs.models import Job

        close_old_connections()
        return Job.objects.filter(pk=int(job_id)).values("status", "message", "live").first()

    def publish_state(self, state: dict[str, Any]) -> None:
        """Store the bridge's state (its heartbeat) for the web dashboard."""
        self._setup()
        from django.db import close_old_connections, connection

        from webapp.workers.bridge_status import record_bridge_status

        close_old_connections()
        try:
            record_bridge_status(str(state.get("beamline", "")), state)
        except Exception:
            connection.close()
            raise

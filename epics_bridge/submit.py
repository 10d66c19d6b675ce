"""Handing a completed scan to the web app: the :class:`Submitter` protocol and its implementations.

A submitter raises :class:`SubmitRejected` when the web side refuses the job for good (bad parameters) and any
other exception when it cannot be reached; the worker keeps the scan in the journal and retries those with
back-off until one is accepted. Both paths are idempotent on the scan's dedup key (``submit_job``'s dedup key;
the API's ``Idempotency-Key``, :mod:`epics_bridge.http_submit`), so a retry after a lost reply cannot make a
second job.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconstruction import ParameterError, Parameters

from .config import SubmitConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitRequest:
    """One job to create: parameters, dedup key, label and the scan description."""

    params: Parameters
    dedup_key: str
    label: str
    source: str = "epics"
    scan: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # {"group.name": {"source": "pv"|"template", ...}}


class SubmitRejected(Exception):
    """The web side refused this job for good; retrying cannot help."""


class Submitter(Protocol):
    def submit(self, request: SubmitRequest) -> str:
        """Create (or find, by dedup key) the job; return its id."""
        ...


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

    def publish_state(self, state: dict[str, Any]) -> None:
        """Store the bridge's state (its heartbeat) for the web dashboard."""
        self._setup()
        from django.db import close_old_connections, connection

        from webapp.jobs.services import record_bridge_status

        close_old_connections()
        try:
            record_bridge_status(str(state.get("beamline", "")), state)
        except Exception:
            connection.close()
            raise


def load_submitter(config: SubmitConfig) -> Submitter:
    """The submitter the configuration names: the one place that decides how jobs reach the web app (``http``:
    the JSON API with a token; ``django``: ``submit_job`` in this process, the embedded server's path)."""
    if config.kind == "http":
        from .http_submit import HttpSubmitter

        return HttpSubmitter(config.url, config.token, config.timeout_s)
    if config.kind == "django":
        return DjangoSubmitter(config.settings_module)
    module_name, _, attr = config.target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(**dict(config.options))  # type: ignore[no-any-return]

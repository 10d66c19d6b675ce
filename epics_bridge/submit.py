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
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconstruction import Parameters

from .config import ConfigError, SubmitConfig

log = logging.getLogger(__name__)

DJANGO_SUBMITTER_MODULE = "epics_bridge.django_submit"  # kind = "django": submit_job in this process


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
    """What the bridge needs of a submitter: ``submit``; with ``[stream] enabled`` also ``job_state``
    (:class:`StreamingSubmitter`: the bridge follows each streaming job it opened, :func:`check_submitter`).
    Optional: ``publish_state(state: dict)`` (the dashboard's data)."""

    def submit(self, request: SubmitRequest) -> str:
        """Create (or find, by dedup key) the job; return its id."""
        ...


class StreamingSubmitter(Submitter, Protocol):
    """A submitter for a bridge that opens streaming jobs: it also tells a job's state."""

    def job_state(self, job_id: str) -> dict[str, Any] | None:
        """The job's ``status`` (queued, running, finishing, done, failed, cancelled), ``message`` and ``live``
        (a streaming job's ``frames_received``, ...); None when the web side has no such job. Raises when the web
        side cannot answer now (asked again later)."""
        ...


def check_submitter(submitter: object, streaming: bool) -> None:
    """Refuse (:class:`ConfigError`, naming the class and what to add) a submitter a bridge with ``[stream]
    enabled`` cannot use: one without ``job_state``, whose streaming jobs the bridge could not follow (a failed
    one would leave its scan unreconstructed, silently). A batch-only bridge needs ``submit`` only."""
    if streaming and not callable(getattr(submitter, "job_state", None)):
        cls = type(submitter)
        raise ConfigError(
            f"[stream] enabled = true: the submitter {cls.__module__}.{cls.__qualname__} has no job_state method, so "
            "the bridge could not see its streaming jobs fail; add job_state(self, job_id: str) -> dict | None "
            "returning the job's {'status', 'message', 'live'} (None: no such job; raise when the web side cannot "
            "answer), as epics_bridge.http_submit.HttpSubmitter does, or set [stream] enabled = false")


def load_submitter(config: SubmitConfig) -> Submitter:
    """The submitter the configuration names: the one place that decides how jobs reach the web app (``http``:
    the JSON API with a token; ``django``: ``submit_job`` in this process, the embedded server's path)."""
    if config.kind == "http":
        from .http_submit import HttpSubmitter

        return HttpSubmitter(config.url, config.token, config.timeout_s)
    if config.kind == "django":
        # by name, like any other target: no module of the bridge's own path imports Django or webapp (the
        # import contracts in pyproject.toml check it), so a bridge in its own process never loads them
        factory = importlib.import_module(DJANGO_SUBMITTER_MODULE).DjangoSubmitter
        return factory(config.settings_module)  # type: ignore[no-any-return]
    module_name, _, attr = config.target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(**dict(config.options))  # type: ignore[no-any-return]

"""Log lines: one handler on the root logger (``settings.LOGGING``), plain text or, with
``PTYCHOPY_LOG_FORMAT=json``, one JSON object per line carrying the job id, the scan and the user where known.

The context comes from :func:`log_context` (the worker around a job, :class:`RequestLogContext` around a web
request); a record's own ``extra={"job_id": ...}`` wins. Context variables follow a request into the thread
Django runs a synchronous view on.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse

CONTEXT_FIELDS = ("job_id", "scan", "user")
FORMATS = ("plain", "json")
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("ptychopy_log_context",
                                                                                 default=None)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Within the block, every log record of this context carries ``fields`` (job_id, scan, user; None: unset)."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v not in (None, "")}})
    try:
        yield
    finally:
        _context.reset(token)


def add_log_context(**fields: Any) -> None:
    """Add fields to the current context (until the enclosing :func:`log_context` ends)."""
    _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v not in (None, "")}})


class ContextFilter(logging.Filter):
    """Puts the current context's job_id, scan and user on each record (None where unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get() or {}
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, context.get(name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, process, thread, job_id, scan,
    user (those three only where known), exc (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "process": record.process, "thread": record.threadName,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["exc"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class RequestLogContext:
    """Middleware (after authentication): the request's user, and the job of a ``/jobs/<job_id>/...`` URL."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        name = user.get_username() if user is not None and user.is_authenticated else None
        with log_context(user=name):
            return self.get_response(request)

    def process_view(self, request: HttpRequest, view: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if "job_id" in kwargs:
            add_log_context(job_id=kwargs["job_id"])


def logging_config(fmt: str, level: str) -> dict[str, Any]:
    """``settings.LOGGING``: one console handler on the root logger, so a record is printed once in every
    process (a Dramatiq worker process too: a handler on ``webapp`` besides Dramatiq's on the root printed each
    ``webapp.*`` line twice). ``webapp`` and ``epics_bridge`` at ``level``, Dramatiq and Daphne at INFO, the
    rest at WARNING; Django's own console and mail handlers are dropped (they would print django.* twice)."""
    if fmt not in FORMATS:
        raise ValueError(f"PTYCHOPY_LOG_FORMAT={fmt!r}: expected one of {', '.join(FORMATS)}")
    level = level.upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ValueError(f"PTYCHOPY_LOG_LEVEL={level!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "webapp.logs.ContextFilter"}},
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
                       "json": {"()": "webapp.logs.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": fmt, "filters": ["context"]}},
        "root": {"handlers": ["console"], "level": "WARNING"},
        "loggers": {
            "webapp": {"level": level},
            "epics_bridge": {"level": level},
            "dramatiq": {"level": "INFO"},
            "daphne": {"level": "INFO"},
            "django": {"handlers": [], "level": "INFO"},
        },
    }

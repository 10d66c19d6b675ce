"""Database calls that outlive a database restart.

A PostgreSQL restart breaks every open connection: the next query on it raises ``OperationalError`` (or
``InterfaceError`` once psycopg knows it is closed), and Django keeps handing out the broken connection in a
thread that never ends a request (a worker, the heartbeat, the reconciler). :func:`forget_connection` drops it so
the next query opens a fresh one; :func:`db_call` retries a call with backoff until the database answers again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors that mean "the database is not reachable right now", never "this query is wrong".
DB_UNREACHABLE = (OperationalError, InterfaceError)
#: Backoff between tries: starts here, doubles, stays at the cap (so a returning database is seen within 1 s).
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 1.0


def is_db_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached (a retry may succeed)."""
    return isinstance(exc, DB_UNREACHABLE)


def forget_connection() -> None:
    """Close this thread's database connection (broken or not); the next query opens a new one."""
    with contextlib.suppress(Exception):
        connection.close()


def db_call(fn: Callable[[], T], *, what: str, outage_s: float | None = None) -> T:
    """``fn()``, retried with backoff while the database is unreachable, for at most ``outage_s`` seconds.

    ``outage_s`` defaults to ``settings.PTYCHOPY_DB_OUTAGE_S``. After that the last error is raised. ``what``
    names the call in the log ("claim job 12").
    """
    from django.conf import settings

    limit_s = float(settings.PTYCHOPY_DB_OUTAGE_S if outage_s is None else outage_s)
    deadline = time.monotonic() + limit_s
    backoff = FIRST_BACKOFF_S
    warned = False
    while True:
        try:
            result = fn()
        except DB_UNREACHABLE as exc:
            forget_connection()
            if time.monotonic() + backoff > deadline:
                raise
            if not warned:
                log.warning("database unreachable during %s (%s); retrying for up to %.0f s",
                            what, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                            limit_s)
                warned = True
            time.sleep(backoff)
            backoff = min(2 * backoff, MAX_BACKOFF_S)
            continue
        if warned:
            log.info("database back: %s done", what)
        return result

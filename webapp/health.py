"""Liveness and readiness: ``/livez`` (the process answers) and ``/readyz`` (what it needs works).

``/readyz`` runs its checks in parallel, each on its own thread and each given at most
``PTYCHOPY_READYZ_TIMEOUT_S`` (default 0.8 s), so a hung database or Redis cannot hold the probe (or Daphne's
one thread for synchronous views) longer than that. A check still running from an earlier probe is not started
again: it reports that it is still waiting. The checks:

- ``database``: ``SELECT 1``;
- ``broker``: Redis ``PING`` (production); the in-process broker in the embedded mode;
- ``workers``: at least one worker heartbeat younger than ``PTYCHOPY_HEARTBEAT_STALE_S``;
- ``bridges``: every EPICS bridge that has not stopped cleanly beats and sees its trigger PV (none: ok).

Which of them decide readiness (HTTP 503 when one fails) is ``PTYCHOPY_READYZ_REQUIRE`` (default
``database,broker``); the others are reported in the body and listed under ``degraded``. Bodies name what
failed and why by exception class and a short message with any URL password removed; no settings, keys or
tokens.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

CHECK_NAMES = ("database", "broker", "workers", "bridges")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]*@")
_running: dict[str, threading.Thread] = {}
_running_lock = threading.Lock()


class CheckFailed(Exception):
    """A check that ran and found a fault (the message says which)."""


def safe_reason(exc: BaseException) -> str:
    """``ClassName: first line`` of an exception, cut to 160 characters, with passwords in URLs replaced."""
    first = (str(exc).strip().splitlines() or [""])[0]
    text = _URL_PASSWORD.sub(r"\1***@", first)[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_database() -> str:
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # this thread is the probe's: no connection left behind
    return f"{connection.vendor} answers"


def check_broker() -> str:
    if not settings.REDIS_URL:
        return "in-process (embedded mode)"
    import redis

    timeout_s = float(settings.PTYCHOPY_READYZ_TIMEOUT_S)
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
    finally:
        client.close()
    return "redis answers PING"


def check_workers() -> str:
    from django.db import connection

    from webapp.jobs.models import WorkerHeartbeat

    try:
        ages = sorted(beat.age_s() for beat in WorkerHeartbeat.objects.only("last_seen"))
    finally:
        connection.close()
    stale_s = float(settings.PTYCHOPY_HEARTBEAT_STALE_S)
    alive = [a for a in ages if a < stale_s]
    if not alive:
        newest = f"; newest heartbeat {ages[0]:.0f} s old" if ages else ""
        raise CheckFailed(f"no worker heartbeat in the last {stale_s:.0f} s{newest}")
    return f"{len(alive)} worker(s) alive, newest heartbeat {alive[0]:.1f} s old"


def check_bridges() -> str:
    from django.db import connection

    from webapp.workers.bridges import bridge_views

    try:
        views = bridge_views()
    finally:
        connection.close()
    active = [v for v in views if v.level != "stopped"]
    bad = [f"{v.beamline}: {v.level} ({v.why})" for v in active if v.level in ("crashed", "red")]
    if bad:
        raise CheckFailed("; ".join(bad))
    return f"{len(active)} active bridge(s) beating" if active else "no active bridge"


CHECKS: dict[str, Callable[[], str]] = {"database": check_database, "broker": check_broker,
                                        "workers": check_workers, "bridges": check_bridges}


def _run_check(name: str, check: Callable[[], str], box: dict[str, Any]) -> None:
    try:
        box["detail"] = check()
        box["ok"] = True
    except CheckFailed as exc:
        box["detail"] = str(exc)
    except Exception as exc:  # the probe reports, never raises
        box["detail"] = safe_reason(exc)
    finally:
        with _running_lock:
            _running.pop(name, None)


def run_checks(names: tuple[str, ...], timeout_s: float) -> dict[str, dict[str, Any]]:
    """Run the named checks in parallel; each result is ``{"ok", "detail", "ms"}`` (``ok`` False on a timeout)."""
    started = time.monotonic()
    boxes: dict[str, dict[str, Any]] = {}
    threads: dict[str, threading.Thread] = {}
    for name in names:
        box: dict[str, Any] = {"ok": False}
        boxes[name] = box
        with _running_lock:
            if name in _running:
                box["detail"] = "an earlier check has not finished yet (hung?)"
                continue
            thread = threading.Thread(target=_run_check, args=(name, CHECKS[name], box),
                                      name=f"readyz-{name}", daemon=True)
            _running[name] = thread
        thread.start()
        threads[name] = thread
    for name, thread in threads.items():
        thread.join(max(0.0, timeout_s - (time.monotonic() - started)))
        if thread.is_alive():
            boxes[name] = {"ok": False, "detail": f"no answer within {timeout_s:.1f} s"}
    for name, box in boxes.items():
        box.setdefault("detail", "")
        box["ms"] = round((time.monotonic() - started) * 1000, 1) if name in threads else 0.0
    return boxes


def required_checks() -> tuple[str, ...]:
    return tuple(settings.PTYCHOPY_READYZ_REQUIRE)


def readiness() -> tuple[bool, dict[str, Any]]:
    """``(ready, body)``: every check run, readiness from the required ones."""
    required = required_checks()
    results = run_checks(CHECK_NAMES, float(settings.PTYCHOPY_READYZ_TIMEOUT_S))
    checks = {name: {**result, "required": name in required} for name, result in results.items()}
    failed = [name for name in CHECK_NAMES if not checks[name]["ok"] and name in required]
    degraded = [name for name in CHECK_NAMES if not checks[name]["ok"] and name not in required]
    body = {"status": "ready" if not failed else "not ready", "failed": failed, "degraded": degraded,
            "mode": "embedded" if settings.EMBEDDED else "production", "checks": checks}
    return not failed, body


@never_cache
@require_GET
def livez(request: HttpRequest) -> JsonResponse:
    """The process answers HTTP; nothing else is looked at (restart it when this fails)."""
    return JsonResponse({"status": "alive"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Database, broker, workers and bridges (module docstring); 503 when a required one fails."""
    ready, body = readiness()
    return JsonResponse(body, status=200 if ready else 503)

"""Who this worker is, whether another worker is alive, and the Dramatiq middleware that says we are.

A worker is ``hostname:pid`` of the process that runs the actor. Every ``PTYCHOPY_HEARTBEAT_S`` seconds a
thread upserts its :class:`~webapp.jobs.models.WorkerHeartbeat` row with the job it is running; the dashboard
and the crash-recovery logic read those rows. After each row written it also touches :func:`beat_file`, which
the worker container's healthcheck (``docker/healthcheck.py worker``) reads without a database.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
from pathlib import Path

import dramatiq

log = logging.getLogger(__name__)

_current_job_id: int | None = None


def this_host() -> str:
    return socket.gethostname()


def worker_id() -> str:
    return f"{this_host()}:{os.getpid()}"


def gpu_label() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"GPU {visible}" if visible not in (None, "") else "any (not pinned)"


def beat_file(pid: int | None = None) -> Path:
    """``$TMPDIR/ptychopy-heartbeats/<pid>``: touched after every heartbeat written (docker/healthcheck.py
    computes the same folder)."""
    return Path(tempfile.gettempdir()) / "ptychopy-heartbeats" / str(os.getpid() if pid is None else pid)


def _touch_beat_file() -> None:
    path = beat_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        log.debug("could not touch %s", path, exc_info=True)


def set_current_job(job_id: int | None) -> None:
    global _current_job_id
    _current_job_id = job_id
    if job_id is None:
        _counters["iterations_per_s"] = 0.0


_counters: dict[str, float] = {"iterations_per_s": 0.0, "frames_published": 0}


def note_rate(iterations_per_s: float | None) -> None:
    """The running job's latest iteration rate (the runner, with each frame)."""
    _counters["iterations_per_s"] = float(iterations_per_s or 0.0)


def note_frame_published() -> None:
    """One live frame sent to the channel layer (a counter for the life of this process)."""
    _counters["frames_published"] += 1


def gpu_memory() -> dict[str, int]:
    """Used and total bytes of this process's GPU, only where CuPy is already loaded (never imports it)."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return {}
    try:
        free, total = cupy.cuda.runtime.memGetInfo()
    except Exception:  # no device, or a driver error: report nothing
        return {}
    return {"gpu_memory_used_bytes": int(total - free), "gpu_memory_total_bytes": int(total)}


def stats() -> dict[str, float]:
    """What this worker's heartbeat row carries for /metrics (``WorkerHeartbeat.stats``)."""
    return {**_counters, **gpu_memory()}


def current_job() -> int | None:
    return _current_job_id


def worker_state(wid: str) -> str:
    """"alive", "dead" or "unsure" (a heartbeat late but not yet stale) for worker ``wid``.

    On this host the pid decides; elsewhere the heartbeat row: fresh (younger than 2.5 periods) is alive,
    older than ``PTYCHOPY_HEARTBEAT_STALE_S`` (or missing) is dead.
    """
    from django.conf import settings

    from webapp.jobs.models import WorkerHeartbeat

    if not wid:
        return "dead"
    host, _, pid_text = wid.rpartition(":")
    if host == this_host() and pid_text.isdigit():
        if int(pid_text) == os.getpid():
            return "alive"
        return "alive" if _pid_alive(int(pid_text)) else "dead"
    beat = WorkerHeartbeat.objects.filter(worker_id=wid).first()
    if beat is None:
        return "dead"
    age = beat.age_s()
    if age < 2.5 * float(settings.PTYCHOPY_HEARTBEAT_S):
        return "alive"
    return "unsure" if age < float(settings.PTYCHOPY_HEARTBEAT_STALE_S) else "dead"


def worker_is_alive(wid: str) -> bool:
    """Whether worker ``wid`` may still be running (alive, or not yet known to be dead)."""
    return worker_state(wid) != "dead"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed but not reaped) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def beat() -> None:
    """Record that this worker is alive now, with the job it is running."""
    from django.utils import timezone

    from webapp.jobs.models import WorkerHeartbeat

    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id(),
        defaults={"host": this_host(), "pid": os.getpid(), "gpu": gpu_label(), "last_seen": now,
                  "current_job_id": _current_job_id, "stats": stats()},
        create_defaults={"host": this_host(), "pid": os.getpid(), "gpu": gpu_label(), "last_seen": now,
                         "started": now, "current_job_id": _current_job_id, "stats": stats()},
    )


def prune(max_age_s: float = 24 * 3600) -> int:
    """Forget workers known to be gone: dead pids on this host, and rows silent for ``max_age_s``."""
    from datetime import timedelta

    from django.utils import timezone

    from webapp.jobs.models import WorkerHeartbeat

    gone = [b.pk for b in WorkerHeartbeat.objects.filter(host=this_host()).exclude(pid=os.getpid())
            if not _pid_alive(b.pid)]
    old = WorkerHeartbeat.objects.filter(last_seen__lt=timezone.now() - timedelta(seconds=max_age_s))
    return WorkerHeartbeat.objects.filter(pk__in=gone).delete()[0] + old.delete()[0]


class HeartbeatMiddleware(dramatiq.Middleware):
    """Starts the heartbeat thread when a Dramatiq worker boots and removes the row once it has stopped.

    The row goes only in ``after_worker_shutdown``, when the worker's threads have finished their jobs: a stop
    takes up to the shutdown grace (a streaming job writes its partial result, a batch job ends its iteration),
    and a reconciler on another host must keep reading this worker as alive until then (deleting the row at
    ``before_worker_shutdown`` made every deploy look like a worker death there: the job re-queued while it still
    ran, and two deploys failed it as killed twice).
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker, worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ptychopy-heartbeat", daemon=True)
        self._thread.start()

    def after_worker_shutdown(self, broker, worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            from webapp.jobs.models import WorkerHeartbeat

            WorkerHeartbeat.objects.filter(worker_id=worker_id()).delete()
        except Exception:
            log.debug("could not remove the heartbeat row", exc_info=True)
        beat_file().unlink(missing_ok=True)

    def _run(self) -> None:
        from django.conf import settings
        from django.db import connection

        from webapp.dbretry import forget_connection

        period = float(settings.PTYCHOPY_HEARTBEAT_S)
        try:
            try:
                prune()
            except Exception:
                log.warning("could not prune old heartbeats", exc_info=True)
            failing = False
            while not self._stop.is_set():
                try:
                    beat()
                except Exception as exc:  # the database restarting: drop the connection, beat again later
                    if not failing:
                        log.warning("heartbeat failed (%s: %s); retrying every %.1f s", type(exc).__name__,
                                    str(exc).strip()[:200], period)
                    failing = True
                    forget_connection()
                else:
                    _touch_beat_file()
                    if failing:
                        log.info("heartbeat written again")
                    failing = False
                self._stop.wait(period)
        finally:
            connection.close()

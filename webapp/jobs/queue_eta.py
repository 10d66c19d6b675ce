"""Where a queued job stands in the queue and about when it starts (the job page shows it).

The queue order is the submission order (``created``, then the id), which is the order the broker hands jobs
out. The wait is the work ahead divided by the live workers:

- a running job's remaining iterations at its own rate so far (elapsed / iterations done), or at the recent rate
  when it has not finished an iteration yet;
- each queued job ahead: its iterations at the recent rate;
- demo jobs do not count for a job that is not a demo: they step aside for it.

The recent rate is the median of ``seconds / (iterations x positions x pattern pixels)`` over the last
``RECENT_JOBS`` jobs that ran (done or cancelled), so a 256 px scan counts sixteen times a 64 px one. With no
job timed yet there is a position but no wait.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .models import Job, WorkerHeartbeat

RECENT_JOBS = 10
BASIS = ("the work ahead (running jobs' remaining iterations at their own rate, queued jobs' iterations at the "
         "recent rate per position and pattern pixel, median of the last {n} finished jobs) over {w} live "
         "worker{s}")


@dataclass(frozen=True)
class QueueEstimate:
    """``position`` 1 means next; ``wait_s`` None when no job has been timed yet."""

    position: int
    running: int
    queued_ahead: int
    workers: int
    wait_s: float | None
    basis: str


def _work_units(parameters: dict[str, Any]) -> float:
    """Positions x pattern pixels of one iteration (the cost unit of the rate)."""
    rows, cols = (parameters.get("experiment") or {}).get("scan_dims") or (12, 12)
    size = (parameters.get("preprocessing") or {}).get("size_px") or 256
    return float(rows) * float(cols) * float(size) ** 2


def recent_seconds_per_unit(limit: int = RECENT_JOBS) -> tuple[float | None, int]:
    """Median seconds per (iteration x position x pattern pixel) of the last ``limit`` jobs that ran, and how many
    jobs it comes from."""
    rows = (Job.objects.filter(status__in=(Job.Status.DONE, Job.Status.CANCELLED), iteration__gt=0,
                               started__isnull=False, finished__isnull=False)
            .order_by("-finished").only("parameters", "iteration", "started", "finished")[:limit])
    rates = [(job.duration_s or 0.0) / (job.iteration * _work_units(job.parameters)) for job in rows]
    rates = [r for r in rates if r > 0]
    return (statistics.median(rates) if rates else None), len(rates)


def live_workers() -> int:
    """Workers whose heartbeat is fresh (at least 1: a queue is served by someone, embedded mode included)."""
    fresh = timezone.now() - timedelta(seconds=float(settings.PTYCHOPY_HEARTBEAT_STALE_S))
    return max(1, WorkerHeartbeat.objects.filter(last_seen__gte=fresh).count())


def queue_estimate(job: Job) -> QueueEstimate | None:
    """Position and estimated wait of a queued ``job``; None for a job that is not queued."""
    if job.status != Job.Status.QUEUED:
        return None
    queued = Job.objects.filter(status=Job.Status.QUEUED)
    running_jobs = Job.objects.filter(status=Job.Status.RUNNING)
    if job.source != Job.Source.DEMO:  # a demo steps aside for this job (webapp.jobs.runner.DemoStepsAside)
        queued, running_jobs = queued.exclude(source=Job.Source.DEMO), running_jobs.exclude(source=Job.Source.DEMO)
    ahead = list(queued.filter(Q(created__lt=job.created) | Q(created=job.created, pk__lt=job.pk))
                 .only("parameters", "iterations"))
    running = list(running_jobs.only("parameters", "iteration", "iterations", "started"))
    per_unit, timed = recent_seconds_per_unit()
    workers = live_workers()
    wait: float | None = 0.0
    for run in running:
        left = max(0, run.iterations - run.iteration)
        if run.iteration > 0 and run.duration_s:
            wait = None if wait is None else wait + left * run.duration_s / run.iteration
        elif per_unit is not None and wait is not None:
            wait += left * per_unit * _work_units(run.parameters)
        else:
            wait = None
    for queued in ahead:
        iterations = queued.iterations or int((queued.parameters.get("reconstruction") or {}).get("iterations") or 0)
        if per_unit is None or wait is None:
            wait = None
            break
        wait += iterations * per_unit * _work_units(queued.parameters)
    if (running or ahead) and per_unit is None:
        wait = None
    basis = BASIS.format(n=timed, w=workers, s="" if workers == 1 else "s")
    return QueueEstimate(len(ahead) + 1, len(running), len(ahead), workers,
                         None if wait is None else wait / workers, basis)

"""What the dashboard shows: workers (heartbeats, current job), running jobs, the queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webapp.jobs.models import Job, WorkerHeartbeat

from .bridges import BridgeView, bridge_views
from .bridges import as_json as bridge_json


@dataclass
class Snapshot:
    workers: list[WorkerHeartbeat]
    running: list[Job]
    queued: list[Job]
    queue_depth: int
    unassigned_running: list[Job]
    bridges: list[BridgeView]


def snapshot(queue_preview: int = 20) -> Snapshot:
    jobs = Job.objects.select_related("owner").defer("last_preview", "error_history", "parameters")
    running = list(jobs.filter(status=Job.Status.RUNNING).order_by("started"))
    queued_qs = jobs.filter(status=Job.Status.QUEUED).order_by("created", "id")
    workers = list(WorkerHeartbeat.objects.select_related("current_job"))
    known = {w.worker_id for w in workers}
    return Snapshot(
        workers=workers,
        running=running,
        queued=list(queued_qs[:queue_preview]),
        queue_depth=queued_qs.count(),
        unassigned_running=[j for j in running if j.worker not in known],
        bridges=bridge_views(),
    )


def as_json(s: Snapshot) -> dict[str, Any]:
    return {
        "queue_depth": s.queue_depth,
        "workers": [
            {"worker": w.worker_id, "host": w.host, "gpu": w.gpu, "alive": w.alive, "age_s": round(w.age_s(), 1),
             "job": w.current_job_id}
            for w in s.workers
        ],
        "running": [{"id": j.pk, "worker": j.worker, "iteration": j.iteration, "iterations": j.iterations}
                    for j in s.running],
        "queued": [j.pk for j in s.queued],
        "bridges": [bridge_json(b) for b in s.bridges],
    }

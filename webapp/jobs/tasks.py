"""The Dramatiq actor: a message carries only a job id; the job row says what to do."""

from __future__ import annotations

import dramatiq

from .runner import run_job

QUEUE = "reconstruct"
_THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=_THIRTY_DAYS_MS)
def run_reconstruction(job_id: int) -> None:
    """Run job ``job_id``; a job already finished, or running on another live worker, is left alone."""
    run_job(int(job_id))

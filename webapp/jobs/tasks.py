"""The Dramatiq actor: a message carries only a job id; the job row says what to do."""

from __future__ import annotations

import dramatiq

from webapp.dbretry import is_db_unreachable

from .queue import ACTOR_NAME, QUEUE
from .runner import run_job

_THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000


def retry_only_database_outages(retries: int, exc: BaseException) -> bool:
    """Dramatiq's ``retry_when``: a message whose claim outlasted a database outage (``PTYCHOPY_DB_OUTAGE_S``) is
    sent again later, without limit; any other failure is not retried (the job row records it)."""
    return is_db_unreachable(exc)


@dramatiq.actor(actor_name=ACTOR_NAME, queue_name=QUEUE, time_limit=_THIRTY_DAYS_MS,
                retry_when=retry_only_database_outages, min_backoff=1000, max_backoff=30_000)
def run_reconstruction(job_id: int) -> None:
    """Run job ``job_id``; a job already finished, or running on another live worker, is left alone."""
    run_job(int(job_id))

"""The queue transport: a job's message is its id, sent to the ``reconstruct`` queue for the actor
``run_reconstruction`` (:mod:`webapp.jobs.tasks`).

The sender addresses the actor by its name and queue, the two things a stored message carries, so sending needs
neither the actor's module nor the runner behind it (the runner itself re-queues jobs). Both names are fixed: a
message queued before an upgrade must still find its actor after it.
"""

from __future__ import annotations

import logging

import dramatiq
from django.utils import timezone

from .models import Job

log = logging.getLogger(__name__)

#: The Dramatiq queue the workers consume.
QUEUE = "reconstruct"
#: The actor every job message names (stored in queued messages: never rename it).
ACTOR_NAME = "run_reconstruction"


def enqueue(job_id: int, delay_ms: int | None = None) -> None:
    """Send the job id to the ``reconstruct`` queue (the message carries nothing else) and note the time."""
    Job.objects.filter(pk=job_id).update(enqueued_at=timezone.now())
    send_message(job_id, delay_ms)


def send_message(job_id: int, delay_ms: int | None = None) -> None:
    """The broker send itself (the message :data:`ACTOR_NAME` sends, with the job id as its one argument); a broker
    that just restarted gets one more try on a fresh connection."""
    broker = dramatiq.get_broker()
    broker.declare_queue(QUEUE)  # as declaring the actor does; a no-op once it is declared
    for attempt in (1, 2):
        try:
            message: dramatiq.Message[None] = dramatiq.Message(
                queue_name=QUEUE, actor_name=ACTOR_NAME, args=(job_id,), kwargs={}, options={})
            broker.enqueue(message, delay=delay_ms or None)
            return
        except Exception as exc:
            if attempt == 2 or not broker_connection_error(exc):
                raise


def enqueue_or_leave_to_reconciler(job_id: int) -> None:
    """Send job ``job_id`` after its row is committed; with the broker unreachable the row stays queued and the
    reconciler (:mod:`webapp.jobs.reconciler`) sends it once the broker is back, so a submit never fails for it."""
    try:
        enqueue(job_id)
    except Exception as exc:
        if not broker_connection_error(exc):
            raise
        log.warning("job %s is queued, but the broker is unreachable (%s); the reconciler sends it once the "
                    "broker is back", job_id, exc)


def broker_connection_error(exc: BaseException) -> bool:
    import redis
    from dramatiq.errors import BrokerConnectionError

    return isinstance(exc, redis.ConnectionError | redis.TimeoutError | BrokerConnectionError | OSError)

"""The reconciler: puts every unfinished job back in the hands of a worker, whatever restarted.

The job row is the truth; the broker's messages and the workers' heartbeats are what should agree with it. Every
``PTYCHOPY_RECONCILE_S`` seconds each worker process (and the embedded server) compares them:

- a ``queued`` job with no message in the broker (Redis restarted without persistence, a send that failed, a
  message dropped) whose last message was sent more than ``PTYCHOPY_REQUEUE_AFTER_S`` ago gets a new one;
- a ``running`` job whose worker is dead, or alive but no longer running it, is re-queued, or failed once its
  workers have died under it ``PTYCHOPY_MAX_WORKER_LOSSES`` times (an out-of-memory kill repeats forever);
- a ``running`` streaming job (``-liveSource``) whose worker was lost is failed at once, its message naming the
  frames received so far: the frames went past, and the one owner of a new reconstruction of its scan is the EPICS
  bridge, which replaces it once it sees the failure (a ``#restream`` streaming job while a file-source scan
  acquires, else the scan's batch job: docs/streaming.md, "Exactly once"); a re-queued
  copy here could reconstruct the scan a second time beside it.

Every change is a conditional UPDATE on what was seen (status, worker, attempt, send time), so any number of
reconcilers (one per worker) act once per job; a second message for a job is harmless, since only one worker can
claim it (:func:`webapp.jobs.runner.claim`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dramatiq
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from webapp.dbretry import forget_connection
from webapp.live.status import announce_status
from webapp.workers import heartbeat

from . import queue
from .models import Job, WorkerHeartbeat

log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    """What one pass did: job ids re-sent (queued without a message), re-queued (worker gone) and failed."""

    resent: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.resent or self.requeued or self.failed)


def killed_twice_message(losses: int, worker: str) -> str:
    return (f"its worker died while running it {losses} times (last {worker}): killed the worker "
            f"{'twice' if losses == 2 else f'{losses} times'} (likely out of memory); not re-queued again. "
            "Reduce the size of the run (positions, 'size', probe modes) or give the workers more memory, "
            "then clone the job.")


def streaming_ended_by_worker_message(worker: str, live: dict[str, Any] | None, *, how: str = "was lost",
                                      kept: bool = False) -> str:
    """The message of a streaming job whose worker ``how`` ('was lost', 'stopped') mid-stream, never re-queued:
    the frames received (``live``: the job's live header) and what happens next; ``kept``: the partial result of
    those frames was written."""
    live = live or {}
    planned = int(live.get("frames_planned") or 0)
    received = f"{int(live.get('frames_received') or 0)}{f' of {planned}' if planned else ''}"
    result = "; the partial result of those frames was kept" if kept else ""
    return (f"its worker {worker} {how} while streaming, after {received} frames received (phase "
            f"{live.get('phase') or 'waiting'}){result}; not re-queued (the frames went past): for a scan the "
            "EPICS bridge opened, the bridge opens a replacement that reads the live file from its first frame "
            "while a file-source scan acquires, else the batch job once the data files are complete; otherwise "
            "clone the job.")


def lost_while_streaming_message(job: Job) -> str:
    """The message of a streaming job whose worker was lost (the frames as of the last frame the worker stored)."""
    return streaming_ended_by_worker_message(job.worker, job.live)


def recover_abandoned(job: Job, *, send: bool, worker_died: bool = True) -> str:
    """Take back ``job``, left ``running`` by a worker that is gone: "requeued", "failed" or "" (someone else
    moved it first). The count of workers lost under it decides (a streaming job fails at the first loss);
    ``send`` sends the new message; ``worker_died=False`` (this very process left it, e.g. a claim interrupted by
    the database) counts no loss."""
    losses = job.worker_losses + (1 if worker_died else 0)
    seen = Q(pk=job.pk, status=Job.Status.RUNNING, worker=job.worker, attempts=job.attempts)
    now = timezone.now()
    streaming = worker_died and job.is_streaming
    if streaming or (worker_died and losses >= int(settings.PTYCHOPY_MAX_WORKER_LOSSES)):
        moved = Job.objects.filter(seen).update(
            status=Job.Status.FAILED, finished=now, worker_losses=F("worker_losses") + 1,
            message=lost_while_streaming_message(job) if streaming else killed_twice_message(losses, job.worker))
        if moved:
            log.warning("job %s failed: %s", job.pk, "its worker was lost while streaming" if streaming else
                        f"its worker died under it {losses} times")
            _announce(job.pk)
        return "failed" if moved else ""
    moved = Job.objects.filter(seen).update(
        status=Job.Status.QUEUED, worker_losses=F("worker_losses") + (1 if worker_died else 0), enqueued_at=now,
        message=f"re-queued: its worker {job.worker} stopped mid-run")
    if not moved:
        return ""
    log.warning("job %s re-queued: its worker %s stopped mid-run", job.pk, job.worker)
    _announce(job.pk)
    if send:
        queue.send_message(job.pk)
    return "requeued"


def _announce(job_id: int) -> None:
    job = Job.objects.filter(pk=job_id).first()
    if job is not None:
        announce_status(job)


def running_job_abandoned(job: Job) -> bool:
    """Whether ``job`` (status running) has no worker running it: its worker is dead, or alive and reporting
    another job (or none) in a heartbeat written well after the claim."""
    state = heartbeat.worker_state(job.worker)
    if state == "dead":
        return True
    if state != "alive" or job.started is None:
        return False
    grace = timedelta(seconds=2 * float(settings.PTYCHOPY_HEARTBEAT_S))
    if job.worker == heartbeat.worker_id():
        return heartbeat.current_job() != job.pk and timezone.now() - job.started > grace
    beat = WorkerHeartbeat.objects.filter(worker_id=job.worker).first()
    return beat is not None and beat.last_seen - job.started > grace and beat.current_job_id != job.pk


def broker_job_ids(broker: Any) -> set[int] | None:
    """Job ids that have a message in ``broker`` (waiting, delayed or being processed); None when the broker
    cannot be read that way (then queued jobs are not judged)."""
    names = (queue.QUEUE, f"{queue.QUEUE}.DQ")
    raws: list[Any] = []
    if hasattr(broker, "client") and hasattr(broker, "namespace"):  # dramatiq's RedisBroker
        for name in names:
            raws.extend(broker.client.hvals(f"{broker.namespace}:{name}.msgs"))
    elif hasattr(broker, "queues") and isinstance(broker.queues, dict):  # StubBroker (embedded)
        for name in names:
            stub_queue = broker.queues.get(name)
            if stub_queue is not None:
                raws.extend(list(stub_queue.queue))
    else:
        return None
    ids: set[int] = set()
    for raw in raws:
        with contextlib.suppress(Exception):
            ids.add(int(json.loads(raw)["args"][0]))
    return ids


def reconcile_once(broker: Any | None = None) -> Reconciled:
    """One pass over the unfinished jobs (see the module docstring); what it changed."""
    broker = broker if broker is not None else dramatiq.get_broker()
    done = Reconciled()
    for job in Job.objects.filter(status=Job.Status.RUNNING).order_by("created", "id"):
        if running_job_abandoned(job):
            outcome = recover_abandoned(job, send=True)
            if outcome == "requeued":
                done.requeued.append(job.pk)
            elif outcome == "failed":
                done.failed.append(job.pk)
    now = timezone.now()
    cutoff = now - timedelta(seconds=float(settings.PTYCHOPY_REQUEUE_AFTER_S))
    stale = Job.objects.filter(status=Job.Status.QUEUED).filter(
        Q(enqueued_at__lt=cutoff) | Q(enqueued_at__isnull=True, created__lt=cutoff))
    candidates = list(stale.order_by("created", "id").values_list("pk", "enqueued_at"))
    if not candidates:
        return done
    present = broker_job_ids(broker)
    if present is None:
        return done
    for job_id, sent_at in candidates:
        if job_id in present or job_id == heartbeat.current_job():
            continue
        # one reconciler wins the right to send: the send time it saw is still the row's
        if Job.objects.filter(pk=job_id, status=Job.Status.QUEUED, enqueued_at=sent_at).update(enqueued_at=now):
            queue.send_message(job_id)
            done.resent.append(job_id)
    if done.resent:
        log.warning("re-sent job(s) %s: queued without a message in the broker", done.resent)
    return done


def requeue_unfinished() -> int:
    """Re-send every job left queued, and every job left running by a worker that is gone (worker start-up).

    Sending a job twice is harmless: only one worker can claim it. A job whose workers died under it too often is
    failed instead (see :func:`recover_abandoned`).
    """
    count = 0
    for job in Job.objects.filter(status__in=Job.UNFINISHED).order_by("created", "id"):
        if job.status == Job.Status.RUNNING:
            state = heartbeat.worker_state(job.worker)
            if state == "alive":
                continue
            if state == "unsure":  # the actor looks again once that worker's heartbeat is stale
                queue.enqueue(job.pk)
                count += 1
                continue
            if recover_abandoned(job, send=True) == "requeued":
                count += 1
            continue
        queue.enqueue(job.pk)
        count += 1
    return count


class Reconciler:
    """A daemon thread that runs :func:`reconcile_once` every ``PTYCHOPY_RECONCILE_S`` seconds; a failed pass
    (database or broker unreachable) is logged once per outage and tried again on the next tick."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Reconciler:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="ptychopy-reconciler", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    def _run(self) -> None:
        period_s = float(settings.PTYCHOPY_RECONCILE_S)
        failing = False
        try:
            while not self._stop.wait(period_s):
                try:
                    reconcile_once(self.broker)
                    forget_connection()  # a pooled connection (web process) goes back to the pool between passes
                except Exception as exc:
                    forget_connection()
                    if not failing:
                        log.warning("reconcile pass failed (%s: %s); trying again every %.1f s",
                                    type(exc).__name__, str(exc).strip()[:200], period_s)
                    failing = True
                else:
                    if failing:
                        log.info("reconcile passes work again")
                    failing = False
        finally:
            forget_connection()


_web_reconciler: Reconciler | None = None


def start_in_web_process() -> Reconciler:
    """Start the web process's reconciler (once): it keeps the rows truthful while no worker is alive."""
    global _web_reconciler
    if _web_reconciler is None:
        _web_reconciler = Reconciler(dramatiq.get_broker()).start()
    return _web_reconciler

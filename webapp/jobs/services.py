"""What can happen to a job, in one place: submit, re-queue, cancel, delete, clone.

Views, the JSON API, the EPICS bridge and the launcher all call these; none of them touches the broker.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from reconstruction import Parameters

from . import frames
from .models import BridgeStatus, Job
from .publish import publish_frame

log = logging.getLogger(__name__)


def submit_job(
    params: Parameters,
    *,
    owner=None,
    source: str = "web",
    dedup_key: str | None = None,
    label: str = "",
    notify_email: bool = False,
    provenance: dict | None = None,
) -> Job:
    """Create a queued job and send its id to the workers.

    ``provenance`` (``{"group.name": {"source": ..., ...}}``) says where each parameter came from; the job page
    shows it.

    With a ``dedup_key`` that already exists the existing job is returned and nothing is queued; the unique
    constraint on ``dedup_key`` makes this safe against concurrent submitters.
    """
    if source not in Job.Source.values:
        raise ValueError(f"unknown job source {source!r}")
    if dedup_key:
        existing = Job.objects.filter(dedup_key=dedup_key).first()
        if existing is not None:
            return existing
    try:
        with transaction.atomic():
            job = Job.objects.create(
                owner=owner if getattr(owner, "is_authenticated", False) else None,
                label=label[:200],
                source=source,
                parameters=params.to_dict(),
                algorithm=params.reconstruction.algorithm,
                iterations=params.reconstruction.iterations,
                dedup_key=dedup_key or None,
                notify_email=notify_email,
                provenance=dict(provenance or {}),
            )
    except IntegrityError:
        if dedup_key:
            return Job.objects.get(dedup_key=dedup_key)
        raise
    job_id = job.pk
    transaction.on_commit(lambda: enqueue_or_leave_to_reconciler(job_id))
    log.info("job %s submitted (%s, %s)", job.pk, source, job.algorithm)
    return job


def enqueue(job_id: int, delay_ms: int | None = None) -> None:
    """Send the job id to the ``reconstruct`` queue (the message carries nothing else) and note the time."""
    Job.objects.filter(pk=job_id).update(enqueued_at=timezone.now())
    send_message(job_id, delay_ms)


def send_message(job_id: int, delay_ms: int | None = None) -> None:
    """The broker send itself; a broker that just restarted gets one more try on a fresh connection."""
    from .tasks import run_reconstruction

    for attempt in (1, 2):
        try:
            if delay_ms:
                run_reconstruction.send_with_options(args=(job_id,), delay=delay_ms)
            else:
                run_reconstruction.send(job_id)
            return
        except Exception as exc:
            if attempt == 2 or not _broker_connection_error(exc):
                raise


def enqueue_or_leave_to_reconciler(job_id: int) -> None:
    """Send job ``job_id`` after its row is committed; with the broker unreachable the row stays queued and the
    reconciler (:mod:`webapp.jobs.reconciler`) sends it once the broker is back, so a submit never fails for it."""
    try:
        enqueue(job_id)
    except Exception as exc:
        if not _broker_connection_error(exc):
            raise
        log.warning("job %s is queued, but the broker is unreachable (%s); the reconciler sends it once the "
                    "broker is back", job_id, exc)


def _broker_connection_error(exc: BaseException) -> bool:
    import redis
    from dramatiq.errors import BrokerConnectionError

    return isinstance(exc, redis.ConnectionError | redis.TimeoutError | BrokerConnectionError | OSError)


def requeue_unfinished() -> int:
    """Re-send every job left queued, and every job left running by a worker that is gone (worker start-up).

    Sending a job twice is harmless: only one worker can claim it. A job whose workers died under it too often is
    failed instead (see :func:`webapp.jobs.reconciler.recover_abandoned`).
    """
    from .heartbeat import worker_state
    from .reconciler import recover_abandoned

    count = 0
    for job in Job.objects.filter(status__in=Job.UNFINISHED).order_by("created", "id"):
        if job.status == Job.Status.RUNNING:
            state = worker_state(job.worker)
            if state == "alive":
                continue
            if state == "unsure":  # the actor looks again once that worker's heartbeat is stale
                enqueue(job.pk)
                count += 1
                continue
            if recover_abandoned(job, send=True) == "requeued":
                count += 1
            continue
        enqueue(job.pk)
        count += 1
    return count


def cancel_job(job: Job, user) -> Job:
    """Cancel a job for ``user`` (its owner or staff): at once when queued, between iterations when running."""
    if not job.can_manage(user):
        raise PermissionDenied("only the job's owner or staff can cancel it")
    if job.status == Job.Status.QUEUED:
        moved = Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
            status=Job.Status.CANCELLED, cancel_requested=True, finished=timezone.now(),
            message=cancelled_while_queued(job),
        )
        if moved:
            job.refresh_from_db()
            announce_status(job)
            return job
    if not job.is_finished:
        Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    job.refresh_from_db()
    return job


def cancelled_while_queued(job: Job) -> str:
    """The message of a queued job cancelled before a worker took it: a job that had already run (and was
    re-queued, e.g. after its worker stopped) says so, with the iteration it had reached."""
    if job.started is None:
        return "cancelled before it started"
    return (f"cancelled while waiting to run again (it had run to iteration {job.iteration} of {job.iterations} "
            "before it was re-queued)")


def delete_job(job: Job, user) -> None:
    """Delete a job and its result files (owner or staff); a running job is told to stop first."""
    if not job.can_manage(user):
        raise PermissionDenied("only the job's owner or staff can delete it")
    Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    folder = job_results_dir(job.pk)
    job.delete()
    shutil.rmtree(folder, ignore_errors=True)


def clone_parameters(job: Job) -> Parameters:
    """The parameters of ``job`` as a fresh object (for "clone into a new job")."""
    return Parameters.from_dict(job.parameters)


def job_results_dir(job_id: int) -> Path:
    return Path(settings.PTYCHOPY_RESULTS_DIR) / f"job_{job_id}"


def status_frame(job: Job) -> bytes:
    """The frame that tells viewers the job's current state: the latest images with the row's status."""
    changes = {"status": job.status, "message": job.message, "iteration": job.iteration,
               "iterations": job.iterations, "error": job.final_error}
    if job.last_preview:
        return frames.with_header(bytes(job.last_preview), **changes)
    xs, errors = frames.downsample_errors(list(job.error_history or []))
    header = {"job": job.pk, "seq": job.last_seq, "rate_per_s": None, "eta_s": None, "errors": errors,
              "error_iterations": xs, **changes}
    return frames.encode_frame(header, [])


def announce_status(job: Job) -> None:
    """Store and send the frame that announces ``job``'s current status (after every status change)."""
    seq = job.last_seq + 1
    data = frames.with_header(status_frame(job), seq=seq)
    Job.objects.filter(pk=job.pk).update(last_preview=data, last_seq=seq)
    job.last_seq, job.last_preview = seq, data
    publish_frame(job.pk, data)


def record_bridge_status(beamline: str, state: dict) -> BridgeStatus:
    """Store the latest state an EPICS bridge published (its heartbeat); the dashboard shows it."""
    row, _ = BridgeStatus.objects.update_or_create(
        beamline=beamline[:200], defaults={"state": state, "last_seen": timezone.now()})
    return row


class BridgeStillRunning(Exception):
    """A bridge that still beats cannot be retired (its next heartbeat would bring it back)."""


def retire_bridge(row: BridgeStatus, user) -> None:
    """Remove a stopped or crashed bridge from the dashboard (staff only). Raises ``PermissionDenied`` for
    anyone else and :class:`BridgeStillRunning` while it is alive (stop it first)."""
    from .bridges import bridge_view

    if not getattr(user, "is_staff", False):
        raise PermissionDenied("only staff can retire a bridge")
    view = bridge_view(row)
    if not view.retirable:
        raise BridgeStillRunning(f"the {row.beamline} bridge is {view.level_title} ({view.why}): stop it first")
    log.info("bridge %s retired by %s (%s)", row.beamline, user, view.why)
    row.delete()

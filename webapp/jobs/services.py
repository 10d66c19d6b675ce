"""What can be done to a job, in one place: submit, cancel, delete, clone.

Views, the JSON API, the EPICS bridge and the launcher all call these; none of them touches the broker (the queue
transport is :mod:`webapp.jobs.queue`; re-queueing what a restart left is :mod:`webapp.jobs.reconciler`).
"""

from __future__ import annotations

import logging
import shutil

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from reconstruction import Parameters
from webapp.live.status import announce_status

from .models import Job
from .queue import enqueue_or_leave_to_reconciler
from .results import job_results_dir

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



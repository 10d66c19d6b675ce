"""A half-set FRC for one job: two independent reconstructions of its scan's interleaved halves (``-halfSet=1``
and ``-halfSet=2``: positions 0, 2, 4, ... and 1, 3, 5, ...), run as two ordinary jobs on request, then compared
with the 1/2-bit threshold on the comparison page (:mod:`webapp.jobs.comparison`)."""

from __future__ import annotations

from typing import Any

from reconstruction import Parameters

from . import services
from .models import Job


class HalfSetRefused(ValueError):
    """Why a job's half-set FRC cannot be run, said to the user."""


def half_set_parameters(job: Job) -> tuple[Parameters, Parameters]:
    """The two halves' parameters: the job's own, each with its ``-halfSet``; HalfSetRefused naming the job and
    why (already a half, a streaming job, parameters that no longer validate)."""
    try:
        params = Parameters.from_dict(job.parameters)
    except Exception as exc:
        raise HalfSetRefused(f"job {job.pk}'s parameters no longer validate: {exc}") from None
    if params.data.half_set:
        raise HalfSetRefused(f"job {job.pk} is already half {params.data.half_set} of a scan (-halfSet)")
    if params.data.live_source != "none":
        raise HalfSetRefused(f"job {job.pk} reconstructs a live stream (-liveSource): its halves are not stored")
    return params.replace({"data.half_set": 1}), params.replace({"data.half_set": 2})


def half_set_key(job: Job, half: int) -> str:
    """The dedup key of ``job``'s half ``half`` (1 or 2): one pair per job at a time."""
    return f"half-set:{job.pk}:{half}"


def submit_half_sets(job: Job, owner: Any) -> tuple[Job, Job]:
    """Queue the two half-data reconstructions of ``job`` for ``owner``; returns the two new jobs. While an earlier
    pair of ``job`` (anyone's) is queued, running or done, that pair is returned and nothing is queued: each pair
    costs a reconstruction of the whole scan, and a double click, a reload or a script must not queue another. A
    pair of which one failed, was cancelled or was deleted is let go (its keys cleared) and a new pair queued."""
    first, second = half_set_parameters(job)
    keys = [half_set_key(job, 1), half_set_key(job, 2)]
    earlier = {j.dedup_key: j for j in Job.objects.filter(dedup_key__in=keys)}
    if len(earlier) == 2 and not any(j.status in (Job.Status.FAILED, Job.Status.CANCELLED) for j in earlier.values()):
        return earlier[keys[0]], earlier[keys[1]]
    Job.objects.filter(dedup_key__in=keys).update(dedup_key=None)
    label = job.label or f"job {job.pk}"
    return (services.submit_job(first, owner=owner, label=f"half 1 of {label}"[:200], dedup_key=keys[0]),
            services.submit_job(second, owner=owner, label=f"half 2 of {label}"[:200], dedup_key=keys[1]))
